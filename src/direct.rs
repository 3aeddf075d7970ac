//! Connections straight to a route's upstream, held by portvakt itself rather than the pooled
//! client: the caller's own (the lane, `affinity.rs`) and those idle between callers. TCP, with
//! TLS for an https:// upstream that speaks HTTP/1.1.
//!
//! An https:// upstream is spoken to over HTTP/2 when it offers it by ALPN, through the pooled
//! client, unless its route says `upstream_http2: false`. Whether it does is learned once per
//! configuration, by a handshake at load ([`LocalTarget::probe`]) and from every answer the
//! pooled client gets ([`LocalTarget::learn`]); until an upstream is known to speak HTTP/1.1 only,
//! its requests take the pooled client.

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Uri, Version};
use rustls_pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Idle upstream connections parked by all callers together; beyond this an idle one is closed,
/// so ten thousand idle callers do not hold ten thousand upstream connections.
const MAX_PARKED: usize = 256;
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// How long a connection may wait among [`IdleConns`]: the pooled client's idle timeout.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// What an https:// upstream speaks, as far as portvakt knows.
const UNKNOWN: u8 = 0;
const HTTP1_ONLY: u8 = 1;
const HTTP2: u8 = 2;
/// Unknown, and the handshake that will tell is under way.
const PROBING: u8 = 3;

/// Where a route's upstream can be reached on a connection portvakt holds itself.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    pub authority: Authority,
    /// `Host`, which the pooled client would set from the URI.
    pub host: HeaderValue,
    pub connect_timeout: Duration,
    tls: Option<Tls>,
    /// [`UNKNOWN`], [`PROBING`], [`HTTP1_ONLY`] (always for http://) or [`HTTP2`].
    speaks: Arc<AtomicU8>,
    /// Told when a probe ends, for callers that wait for it.
    probed: Arc<Notify>,
    /// Connections left idle by callers that went away, for the next caller.
    pub idle: Arc<IdleConns>,
}

/// TLS to an https:// upstream, verified as the pooled client verifies it (the same roots and
/// `ca_file`).
#[derive(Clone)]
struct Tls {
    /// Offers only HTTP/1.1 by ALPN: what portvakt's own connections speak.
    http1: TlsConnector,
    /// Offers HTTP/2 and HTTP/1.1, as the pooled client does, to learn which the upstream picks.
    probe: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.name.to_str())
    }
}

impl LocalTarget {
    /// `upstream` reached directly, with `tls` (the route's client configuration) for https://.
    /// Without `http2`, an https:// upstream is spoken to over HTTP/1.1 whatever it offers.
    pub fn new(
        upstream: &Uri,
        connect_timeout: Duration,
        tls: &rustls::ClientConfig,
        http2: bool,
    ) -> Option<Self> {
        let authority = upstream.authority()?.clone();
        let tls = match upstream.scheme() {
            Some(s) if *s == Scheme::HTTP => None,
            Some(s) if *s == Scheme::HTTPS => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let connector = |alpn: &[&[u8]]| {
                    let mut config = tls.clone();
                    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                    TlsConnector::from(Arc::new(config))
                };
                Some(Tls {
                    http1: connector(&[b"http/1.1"]),
                    probe: connector(&[b"h2", b"http/1.1"]),
                    name: ServerName::try_from(host).ok()?.to_owned(),
                })
            }
            _ => return None,
        };
        let speaks = if tls.is_some() && http2 {
            UNKNOWN
        } else {
            HTTP1_ONLY
        };
        Some(LocalTarget {
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            authority,
            connect_timeout,
            tls,
            speaks: Arc::new(AtomicU8::new(speaks)),
            probed: Arc::default(),
            idle: Arc::default(),
        })
    }

    /// Whether requests may go on portvakt's own HTTP/1.1 connections: always for http://, and
    /// for https:// once the upstream is known not to offer HTTP/2.
    pub fn speaks_http1_only(&self) -> bool {
        self.speaks.load(Ordering::Relaxed) == HTTP1_ONLY
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the handshake that learns if the upstream offers HTTP/2 is under way.
    pub fn probing(&self) -> bool {
        self.speaks.load(Ordering::Relaxed) == PROBING
    }

    /// Waits, at most the connect timeout, for the probe under way to end. A caller that came
    /// before then would otherwise go to hyper for the whole life of its connection.
    pub async fn probe_ended(&self) {
        let notified = self.probed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.probing() {
            let _ = tokio::time::timeout(self.connect_timeout, notified).await;
        }
    }

    /// What the pooled client's answer from this upstream came over (or the probe negotiated):
    /// HTTP/2 if the upstream offers it by ALPN, else HTTP/1.1. Written only when it changes, as
    /// every pooled answer tells it.
    pub fn learn(&self, version: Version) {
        if self.tls.is_none() {
            return;
        }
        let speaks = if version == Version::HTTP_2 {
            HTTP2
        } else {
            HTTP1_ONLY
        };
        if self.speaks.load(Ordering::Relaxed) != speaks
            && self.speaks.swap(speaks, Ordering::Relaxed) == PROBING
        {
            self.probed.notify_waiters();
        }
    }

    /// For an https:// upstream, a TLS handshake in the background that learns whether it offers
    /// HTTP/2. One that does not keeps the connection for the first caller. A failed handshake
    /// teaches nothing: the pooled client's first answer will.
    pub fn probe(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Only an https:// upstream whose answer is not known yet starts as UNKNOWN.
        let started =
            self.speaks
                .compare_exchange(UNKNOWN, PROBING, Ordering::Relaxed, Ordering::Relaxed);
        if started.is_err() {
            return;
        }
        let target = self.clone();
        runtime.spawn(async move {
            match target.connect(true).await {
                Ok(Stream::Tls(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    target.learn(if h2 { Version::HTTP_2 } else { Version::HTTP_11 });
                    if let (false, Some(ticket)) = (h2, ParkTicket::take()) {
                        target.idle.put(Stream::Tls(tls), ticket);
                    }
                }
                failed => {
                    if let Err(e) = failed {
                        tracing::debug!(upstream = %target.authority, error = %e, "could not learn whether the upstream offers HTTP/2");
                    }
                    // Unless an answer taught it meanwhile.
                    let _ = target.speaks.compare_exchange(
                        PROBING,
                        UNKNOWN,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            target.probed.notify_waiters();
        });
    }

    /// A connection to the upstream: one another caller left idle (when `idle` allows it), or a
    /// new one. True with one left.
    pub async fn connection(&self, idle: bool) -> io::Result<(Stream, bool)> {
        match idle.then(|| self.idle.take()).flatten() {
            Some(stream) => Ok((stream, true)),
            None => Ok((self.connect(false).await?, false)),
        }
    }

    /// A new connection within the connect timeout, with `TCP_NODELAY`, and for https:// TLS
    /// offering HTTP/1.1 only, or as the pooled client does for the `probe`.
    async fn connect(&self, probe: bool) -> io::Result<Stream> {
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        // As a string, so an IPv6 literal keeps its brackets and parses.
        let addr = format!(
            "{}:{}",
            self.authority.host(),
            self.authority.port_u16().unwrap_or(default_port)
        );
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())??;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let connector = if probe { &tls.probe } else { &tls.http1 };
        // Boxed: a TLS handshake's state is kilobytes, and inline it would make every caller's
        // task that large for its whole life, idle or not (10,000 silent callers: +12 MB).
        let handshake = Box::pin(connector.connect(tls.name.clone(), tcp));
        let stream = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| timed_out())??;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// A connection to an upstream: TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle connection became readable while it waited: the upstream closed it (or sent
    /// what it should not have). Read off tokio's readiness, without a system call; a request on
    /// such a connection would fail, and one that is not idempotent cannot be sent again. Over TLS,
    /// records that carry no data (a TLS 1.3 server's session tickets) are read and leave it usable.
    pub fn stirred(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            Stream::Plain(tcp) => tcp.poll_read_ready(&mut cx).is_ready(),
            Stream::Tls(tls) => {
                if tls.get_ref().0.poll_read_ready(&mut cx).is_pending() {
                    return false;
                }
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                Pin::new(&mut **tls).poll_read(&mut cx, &mut buf).is_ready()
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A place among the idle upstream connections parked across all callers (at most
/// [`MAX_PARKED`]), given back when dropped.
pub struct ParkTicket(());

impl ParkTicket {
    pub fn take() -> Option<Self> {
        if PARKED.fetch_add(1, Ordering::Relaxed) >= MAX_PARKED {
            PARKED.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ParkTicket(()))
    }
}

impl Drop for ParkTicket {
    fn drop(&mut self) {
        PARKED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle keep-alive connections to one upstream that outlived their caller's connection. Without
/// them a caller that opens a connection per request (common for legacy systems) costs a new
/// upstream connection per request, and the upstream side's ephemeral ports, held in TIME_WAIT
/// for a minute each, run out at a few hundred requests a second.
#[derive(Default)]
pub struct IdleConns(Mutex<Idle>);

#[derive(Default)]
struct Idle {
    conns: Vec<IdleConn>,
    /// A task closes the expired and the upstream-closed while any wait.
    reaping: bool,
}

struct IdleConn {
    stream: Stream,
    since: tokio::time::Instant,
    _ticket: ParkTicket,
}

impl IdleConn {
    /// Not idle too long, and not closed by the upstream.
    fn usable(&mut self) -> bool {
        self.since.elapsed() < IDLE_FOR && !self.stream.stirred()
    }
}

impl IdleConns {
    /// The most recently left connection that is still usable.
    pub fn take(&self) -> Option<Stream> {
        let mut idle = crate::sync::lock(&self.0);
        while let Some(mut conn) = idle.conns.pop() {
            if conn.usable() {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Keeps `stream`, idle with nothing unread, for the next caller.
    pub fn put(self: &Arc<Self>, stream: Stream, ticket: ParkTicket) {
        let mut idle = crate::sync::lock(&self.0);
        idle.conns.push(IdleConn {
            stream,
            since: tokio::time::Instant::now(),
            _ticket: ticket,
        });
        if !idle.reaping {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                idle.reaping = true;
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }
}

/// Closes what can no longer be used, so a quiet upstream is not held open (nor its half-closed
/// connections kept) until the next caller; ends with the last idle connection, or its route.
async fn reap(conns: std::sync::Weak<IdleConns>) {
    loop {
        tokio::time::sleep(IDLE_FOR / 6).await;
        let Some(conns) = conns.upgrade() else {
            return;
        };
        let mut idle = crate::sync::lock(&conns.0);
        idle.conns.retain_mut(IdleConn::usable);
        if idle.conns.is_empty() {
            idle.reaping = false;
            return;
        }
    }
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleConns({})", crate::sync::lock(&self.0).conns.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    fn len(conns: &IdleConns) -> usize {
        crate::sync::lock(&conns.0).conns.len()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_the_upstream_closed_or_that_waited_too_long_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(IdleConns::default());
        let mut far_ends = Vec::new();
        for _ in 0..2 {
            let near = TcpStream::connect(addr).await.unwrap();
            far_ends.push(listener.accept().await.unwrap().0);
            conns.put(Stream::Plain(near), ParkTicket::take().unwrap());
        }
        // The upstream closes the first; the reaper's next round closes it on portvakt's side.
        drop(far_ends.remove(0));
        tokio::time::sleep(IDLE_FOR / 6 + Duration::from_secs(1)).await;
        assert_eq!(len(&conns), 1);
        assert!(crate::sync::lock(&conns.0).reaping);
        // The second waits out IDLE_FOR, and is closed: its far end reads the end.
        tokio::time::sleep(IDLE_FOR).await;
        assert_eq!(len(&conns), 0);
        assert!(!crate::sync::lock(&conns.0).reaping, "the reaper ended");
        let mut byte = [0u8; 1];
        assert_eq!(far_ends[0].read(&mut byte).await.unwrap(), 0);
        assert!(conns.take().is_none());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod learning {
    use super::*;

    fn target(uri: &str, http2: bool) -> LocalTarget {
        let tls = crate::app::tls_config(&[]).unwrap();
        LocalTarget::new(&uri.parse().unwrap(), Duration::from_secs(1), &tls, http2).unwrap()
    }

    #[test]
    fn an_https_upstream_takes_the_lane_only_while_it_is_known_to_offer_no_http2() {
        let t = target("https://api.example.no/", true);
        assert!(!t.speaks_http1_only(), "unknown at first");
        t.learn(Version::HTTP_11);
        assert!(t.speaks_http1_only());
        t.learn(Version::HTTP_2);
        assert!(!t.speaks_http1_only(), "it offers HTTP/2 now");
        assert!(target("https://api.example.no/", false).speaks_http1_only());
        let plain = target("http://127.0.0.1:8080/", true);
        plain.learn(Version::HTTP_2);
        assert!(plain.speaks_http1_only() && !plain.is_tls());
    }
}
