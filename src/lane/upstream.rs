//! The caller's own connection to its route's upstream: connecting, sending a request and reading
//! the answer's head, relaying the answer's body to the caller.

use super::response::{self, Answer, Framing, Rewrite};
use super::{pool, read, write, Caller, BUF, MAX_ANSWER_HEAD, STREAM_BUF};
use crate::direct::{IdleConns, LocalTarget, ParkTicket, Stream};
use crate::upstream::Fault;
use http::uri::Authority;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::time::timeout;

/// The caller's own connection to its route's upstream.
pub(super) struct Upstream {
    pub(super) authority: Authority,
    pub(super) stream: Stream,
    /// What the upstream sent and the lane has not relayed yet.
    pub(super) buf: Vec<u8>,
    /// Held while the connection waits for the caller's next request.
    pub(super) parked: Option<ParkTicket>,
    /// Where the connection goes when its caller leaves while it waits.
    home: Arc<IdleConns>,
}

/// A connection to `target` (`LocalTarget::connection`). True with one another caller left.
pub(super) async fn connect(target: &LocalTarget, idle: bool) -> io::Result<(Upstream, bool)> {
    let (stream, reused) = target.connection(idle).await?;
    let conn = Upstream {
        authority: target.authority.clone(),
        stream,
        buf: Vec::new(),
        parked: None,
        home: Arc::clone(&target.idle),
    };
    Ok((conn, reused))
}

impl Upstream {
    /// Whether the kept connection became readable while it waited (`Stream::stirred`).
    pub(super) fn stirred(&mut self) -> bool {
        self.stream.stirred()
    }

    /// Leaves a connection that waits for its caller's next request (it holds a parking ticket,
    /// and nothing of an answer is unread) to the next caller; any other is closed.
    pub(super) fn release(self) {
        if let (Some(ticket), true) = (self.parked, self.buf.is_empty()) {
            self.home.put(self.stream, ticket);
        }
    }
}

pub(super) enum HeadError {
    /// Not a byte of an answer came back.
    Unanswered(io::Error),
    Io(io::Error),
    Invalid(response::Invalid),
}

/// Writes the request and reads the answer's head (skipping 1xx answers), writing the caller's
/// head into `out`. The answer's first body bytes stay in the connection's buffer.
pub(super) async fn exchange_head(
    conn: &mut Upstream,
    request: &[u8],
    how: &Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<Answer, HeadError> {
    // Over TLS, what the write left in rustls goes out with the flush.
    let sent = match conn.stream.write_all(request).await {
        Ok(()) => conn.stream.flush().await,
        Err(e) => Err(e),
    };
    sent.map_err(HeadError::Unanswered)?;
    if conn.buf.capacity() == 0 {
        conn.buf = pool::take();
    }
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, how, out).map_err(HeadError::Invalid)? {
                response::Parsed::Answer(answer) => {
                    conn.buf.drain(..answer.len);
                    return Ok(answer);
                }
                response::Parsed::Informational(len) => {
                    conn.buf.drain(..len);
                    continue;
                }
                response::Parsed::Partial if conn.buf.len() >= MAX_ANSWER_HEAD => {
                    return Err(HeadError::Invalid(response::Invalid("head too large")));
                }
                response::Parsed::Partial => {}
            }
        }
        conn.buf.reserve(BUF);
        match read(&mut conn.stream, &mut conn.buf).await {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before it answered",
                );
                return Err(if answered {
                    HeadError::Io(e)
                } else {
                    HeadError::Unanswered(e)
                });
            }
            Ok(_) => answered = true,
            Err(e) if answered => return Err(HeadError::Io(e)),
            Err(e) => return Err(HeadError::Unanswered(e)),
        }
    }
}

/// Which side broke a body off.
pub(super) enum Broken {
    Upstream(Fault),
    Caller,
}

/// Sends the caller the answer's head (in `out`) and its body as it comes, each read and write
/// within the route's idle timeout.
pub(super) async fn relay(
    caller: &mut Caller,
    conn: &mut Upstream,
    answer: &mut Answer,
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), Broken> {
    let (n, mut done) = answer
        .framing
        .take(&conn.buf)
        .map_err(|_| Broken::Upstream(Fault::Protocol))?;
    // A small answer goes in one write with its head.
    out.extend_from_slice(&conn.buf[..n]);
    conn.buf.drain(..n);
    write(&mut caller.stream, out, idle)
        .await
        .map_err(|()| Broken::Caller)?;
    while !done {
        if conn.buf.capacity() < STREAM_BUF {
            conn.buf.reserve(STREAM_BUF);
        }
        let got = match timeout(idle, read(&mut conn.stream, &mut conn.buf)).await {
            Err(_) => return Err(Broken::Upstream(Fault::Timeout)),
            Ok(Err(e)) => return Err(Broken::Upstream(Fault::of(&e, false))),
            Ok(Ok(got)) => got,
        };
        if got == 0 {
            return match answer.framing {
                Framing::UntilClose => Ok(()),
                _ => Err(Broken::Upstream(Fault::Reset)),
            };
        }
        let (n, end) = answer
            .framing
            .take(&conn.buf)
            .map_err(|_| Broken::Upstream(Fault::Protocol))?;
        done = end;
        write(&mut caller.stream, &conn.buf[..n], idle)
            .await
            .map_err(|()| Broken::Caller)?;
        conn.buf.drain(..n);
    }
    Ok(())
}
