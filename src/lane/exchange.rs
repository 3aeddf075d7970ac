//! One request through the lane: the token, the upstream call, the 401 retry, the answer relayed,
//! or portvakt's own answer when something fails; recorded as the general path records it.

use super::response::{Answer, Rewrite};
use super::upstream::{connect, exchange_head, relay, Broken, HeadError, Upstream};
use super::{head, pool, write, Buffers, Caller, Request};
use crate::direct::{LocalTarget, ParkTicket};
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::request_id;
use crate::route::Route;
use crate::upstream::Fault;
use http::Method;
use std::io;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

/// One request on its way through the lane.
pub(super) struct Exchange<'a> {
    pub(super) proxy: &'a Proxy,
    pub(super) request: &'a Request,
    /// The caller's connection closes after the answer.
    pub(super) close: bool,
    pub(super) started: std::time::Instant,
}

impl Exchange<'_> {
    /// Forwards the request and relays the answer, or answers with the error. False when the
    /// caller's connection cannot carry another request.
    pub(super) async fn run(
        &self,
        caller: &mut Caller,
        upstream: &mut Option<Upstream>,
        buffers: &mut Buffers,
    ) -> bool {
        let (route, id) = (&self.request.route, &self.request.id);
        let id_str = request_id::as_str(id);
        // A caller that goes away while the answer is awaited takes its request with it, as
        // under hyper: the upstream call is dropped and the concurrency permit freed.
        let forwarded = tokio::select! {
            biased;
            forwarded = self.forward(upstream, buffers) => forwarded,
            () = gone(&caller.stream) => {
                *upstream = None;
                return false;
            }
        };
        let mut answer = match forwarded {
            Ok(answer) => answer,
            Err(error) => {
                *upstream = None;
                return self.refuse(caller, &mut buffers.answer, &error).await;
            }
        };
        self.proxy.finish(
            Some(&route.name),
            &self.request.method,
            self.started,
            id_str,
            Ok(http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::BAD_GATEWAY)),
        );
        let Some(mut conn) = upstream.take() else {
            return false;
        };
        match relay(
            caller,
            &mut conn,
            &mut answer,
            &mut buffers.answer,
            route.idle_timeout,
        )
        .await
        {
            Ok(()) => {}
            Err(Broken::Upstream(fault)) => {
                self.proxy.metrics.count_upstream_error(&route.name, fault);
                return false;
            }
            Err(Broken::Caller) => return false,
        }
        // Kept for the caller's next request, if the upstream keeps it and there is room.
        if answer.reusable && conn.buf.is_empty() {
            conn.parked = ParkTicket::take();
            if conn.parked.is_some() {
                pool::give(std::mem::take(&mut conn.buf));
                *upstream = Some(conn);
            }
        }
        !answer.close
    }

    /// Answers with `error`, as the general path would, and records it. False when the caller is
    /// gone.
    pub(super) async fn refuse(
        &self,
        caller: &mut Caller,
        out: &mut Vec<u8>,
        error: &ProxyError,
    ) -> bool {
        let (route, id) = (&self.request.route, &self.request.id);
        write_problem(out, error, self);
        self.proxy.finish(
            Some(&route.name),
            &self.request.method,
            self.started,
            request_id::as_str(id),
            Err(error),
        );
        write(&mut caller.stream, out, route.idle_timeout)
            .await
            .is_ok()
    }

    /// Gets the token, sends the request and reads the answer's head; after a 401, once more with
    /// a fresh token, as the general path does.
    async fn forward(
        &self,
        upstream: &mut Option<Upstream>,
        buffers: &mut Buffers,
    ) -> Result<Answer, ProxyError> {
        let Request {
            route, slot, id, ..
        } = self.request;
        let target = route
            .local
            .as_ref()
            .ok_or_else(|| ProxyError::Internal("the route has no local upstream target".into()))?;
        let how = Rewrite {
            head_request: self.request.method == Method::HEAD,
            request_id: id.as_bytes(),
            close: self.close,
        };
        let unsigned = buffers.request.len();
        let mut token = request_id::scope(id.clone(), slot.get()).await?;
        let mut retried = false;
        loop {
            // The token's lines and the body go last, so a retry replaces only them.
            buffers.request.truncate(unsigned);
            head::finish_upstream(
                &mut buffers.request,
                token.bearer().as_bytes(),
                id.as_bytes(),
            );
            buffers.request.extend_from_slice(&buffers.body);
            let answer = self
                .send(
                    upstream,
                    target,
                    &buffers.request,
                    &how,
                    &mut buffers.answer,
                )
                .await?;
            // The lane keeps every request it serves whole, so it can always be sent again: once.
            if retried
                || answer.status != 401
                || route.retry_body_max.is_none()
                || !self
                    .proxy
                    .unauthorized(route, slot, &token, true, request_id::as_str(id))
            {
                return Ok(answer);
            }
            retried = true;
            // The 401's body is not read: its connection goes.
            *upstream = None;
            token = request_id::scope(id.clone(), slot.get()).await?;
        }
    }

    /// Sends `request` on the caller's upstream connection (or a new one) and reads the answer's
    /// head, within the route's time limit. A kept connection the upstream closed meanwhile is
    /// replaced once, for a method that may be sent twice.
    async fn send(
        &self,
        upstream: &mut Option<Upstream>,
        target: &LocalTarget,
        request: &[u8],
        how: &Rewrite<'_>,
        answer_head: &mut Vec<u8>,
    ) -> Result<Answer, ProxyError> {
        let route = &self.request.route;
        let deadline = Instant::now() + route.timeout;
        let timed_out = || ProxyError::UpstreamTimeout {
            upstream: route.upstream.to_string(),
            after: route.timeout,
        };
        let mut kept = upstream.take().and_then(|mut conn| {
            if conn.authority != target.authority {
                conn.release();
                None
            } else {
                (!conn.stirred()).then_some(conn)
            }
        });
        let mut retried = false;
        loop {
            let (mut conn, reused) = match kept.take() {
                Some(conn) => (conn, true),
                // After a kept connection failed, a new one: not another that waited as long.
                None => timeout_at(deadline, connect(target, !retried))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| unreachable(route, &e))?,
            };
            conn.parked = None;
            answer_head.clear();
            let result = timeout_at(
                deadline,
                exchange_head(&mut conn, request, how, answer_head),
            )
            .await;
            match result {
                Err(_) => return Err(timed_out()),
                Ok(Ok(answer)) => {
                    *upstream = Some(conn);
                    return Ok(answer);
                }
                // Closed before a byte of an answer: once more, on a new connection.
                Ok(Err(HeadError::Unanswered(_))) if reused && idempotent(&self.request.method) => {
                    retried = true;
                }
                Ok(Err(HeadError::Unanswered(e) | HeadError::Io(e))) => {
                    return Err(ProxyError::UpstreamFailed {
                        upstream: route.upstream.to_string(),
                        reason: crate::error::chain(&e),
                        fault: Fault::of(&e, false),
                    })
                }
                Ok(Err(HeadError::Invalid(e))) => {
                    return Err(ProxyError::UpstreamFailed {
                        upstream: route.upstream.to_string(),
                        reason: e.to_string(),
                        fault: Fault::Protocol,
                    })
                }
            }
        }
    }
}

fn unreachable(route: &Route, e: &io::Error) -> ProxyError {
    ProxyError::UpstreamUnreachable {
        upstream: route.upstream.to_string(),
        reason: crate::error::chain(e),
        fault: Fault::of(e, true),
    }
}

/// Methods a client may repeat without changing the outcome (RFC 9110 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Reads the request's body of `len` bytes into `body`: what came with the head first, then
/// from the socket, each read within the route's idle timeout. `Err(None)`: the caller left.
pub(super) async fn read_body(
    caller: &mut Caller,
    len: usize,
    idle: Duration,
    body: &mut Vec<u8>,
) -> Result<(), Option<ProxyError>> {
    let have = caller.buf.len().min(len);
    body.extend_from_slice(&caller.buf[..have]);
    caller.buf.drain(..have);
    while body.len() < len {
        let left = len - body.len();
        body.reserve(left);
        // Never past the body: what follows it is the caller's next request.
        let mut rest = (&mut caller.stream).take(left as u64);
        match timeout(idle, rest.read_buf(body)).await {
            Err(_) => return Err(Some(ProxyError::RequestBodyTimeout(idle))),
            Ok(Ok(0) | Err(_)) => return Err(None),
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}

/// Resolves when the caller closes its connection (or it breaks). Bytes it sends meanwhile (a
/// pipelined request) are left for later, and then closing can no longer be told here.
async fn gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if let Ok(1..) = stream.peek(&mut byte).await {
        std::future::pending::<()>().await;
    }
}

/// One of portvakt's own answers, as the general path would write it.
fn write_problem(out: &mut Vec<u8>, error: &ProxyError, exchange: &Exchange<'_>) {
    let (route, id) = (&exchange.request.route, exchange.request.id.as_bytes());
    let problem = error.problem(Some(&route.name));
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(problem.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(problem.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    head::line(out, b"content-type", b"application/problem+json");
    if let Some(secs) = problem.retry_after {
        head::line(out, b"retry-after", secs.to_string().as_bytes());
    }
    head::line(
        out,
        b"content-length",
        problem.body.len().to_string().as_bytes(),
    );
    head::line(out, request_id::HEADER.as_str().as_bytes(), id);
    head::line(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    if exchange.close {
        head::line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    // An answer to HEAD says how long the body would be, and sends none.
    if exchange.request.method != Method::HEAD {
        out.extend_from_slice(problem.body.as_bytes());
    }
}
