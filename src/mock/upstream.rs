//! An echo upstream on loopback that records what reached it and checks the Bearer token against
//! the mock Maskinporten's key. `GET .../bytes/N` streams N bytes back; any other request is echoed
//! as JSON (method, path, query, headers, body size and SHA-256, token check and claims). A path
//! with `/delay/MS/` in it has its answer's head held back MS milliseconds; one with `/pause/MS/`
//! before `/bytes/N` has its body stop after the first 64 KiB until MS milliseconds after the head.

use crate::server::CallerBody;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use jsonwebtoken::DecodingKey;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The connecting side's address: one value for many requests shows a reused connection.
    pub peer: SocketAddr,
    pub method: String,
    pub version: http::Version,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
    /// Whether the Bearer token verified (signature, and `exp` still in the future on arrival).
    pub token_valid: bool,
    pub token_error: Option<String>,
    pub token_claims: Option<Map<String, Value>>,
    /// 200, or 401 when the token was revoked.
    pub status: u16,
}

struct Inner {
    /// Keys a token may be signed with (the mock Maskinporten's, the mock Altinn's).
    verify_with: Vec<DecodingKey>,
    records: Mutex<Vec<Recorded>>,
    /// `jti`s of tokens it no longer accepts, as an API does after a revocation.
    revoked: Mutex<std::collections::HashSet<String>>,
    /// Refuses every token, fresh or not.
    reject_all: std::sync::atomic::AtomicBool,
}

pub struct EchoUpstream {
    addr: SocketAddr,
    scheme: &'static str,
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

impl EchoUpstream {
    /// Starts on 127.0.0.1 on a free port; tokens are verified with `verify_with` when given.
    pub async fn start(verify_with: Option<DecodingKey>) -> std::io::Result<Self> {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await?, verify_with)
    }

    pub fn start_on(
        listener: TcpListener,
        verify_with: Option<DecodingKey>,
    ) -> std::io::Result<Self> {
        Self::start_with(listener, None, verify_with.into_iter().collect())
    }

    /// Starts on 127.0.0.1 on a free port, accepting tokens signed with any of `keys`.
    pub async fn start_trusting(keys: Vec<DecodingKey>) -> std::io::Result<Self> {
        Self::start_with(TcpListener::bind("127.0.0.1:0").await?, None, keys)
    }

    /// Starts an HTTPS upstream (ALPN h2 and http/1.1) with the PEM certificate chain and key given.
    pub async fn start_tls(
        verify_with: Option<DecodingKey>,
        cert_pem: &Path,
        key_pem: &Path,
    ) -> std::io::Result<Self> {
        Self::start_tls_offering(verify_with, cert_pem, key_pem, &[b"h2", b"http/1.1"]).await
    }

    /// As [`EchoUpstream::start_tls`], offering the protocols in `alpn` (HTTP/1.1 only, for one).
    pub async fn start_tls_offering(
        verify_with: Option<DecodingKey>,
        cert_pem: &Path,
        key_pem: &Path,
        alpn: &[&[u8]],
    ) -> std::io::Result<Self> {
        let acceptor = super::tls_acceptor_offering(cert_pem, key_pem, alpn)?;
        Self::start_with(
            TcpListener::bind("127.0.0.1:0").await?,
            Some(acceptor),
            verify_with.into_iter().collect(),
        )
    }

    fn start_with(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        verify_with: Vec<DecodingKey>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let inner = Arc::new(Inner {
            verify_with,
            records: Mutex::new(Vec::new()),
            revoked: Mutex::new(std::collections::HashSet::new()),
            reject_all: std::sync::atomic::AtomicBool::new(false),
        });
        let state = Arc::clone(&inner);
        let shutdown = super::serve(listener, tls, move |req, peer| {
            handle(Arc::clone(&state), req, peer)
        });
        Ok(EchoUpstream {
            addr,
            scheme,
            inner,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }
    pub fn records(&self) -> Vec<Recorded> {
        crate::support::sync::lock(&self.inner.records).clone()
    }
    /// From now on answers 401 to every token it has seen so far; new tokens are accepted.
    pub fn revoke_seen_tokens(&self) {
        let jtis: Vec<String> = self
            .records()
            .iter()
            .filter_map(|r| {
                r.token_claims
                    .as_ref()?
                    .get("jti")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        crate::support::sync::lock(&self.inner.revoked).extend(jtis);
    }
    /// Answers 401 to every request (true) or works normally (false).
    pub fn set_reject_all(&self, reject: bool) {
        self.inner
            .reject_all
            .store(reject, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Responses: JSON, or N streamed bytes.
pub enum EchoBody {
    Json(Option<Bytes>),
    Pattern {
        sent: u64,
        total: u64,
        /// Waited out after the first chunk.
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

/// The byte at offset `i` of a `/bytes/N` answer, so tests can recompute the hash.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 13)) as u8
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this {
            EchoBody::Json(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            EchoBody::Pattern { sent, total, .. } if *sent >= *total => Poll::Ready(None),
            EchoBody::Pattern { sent, total, pause } => {
                if let Some(sleep) = pause.as_mut().filter(|_| *sent > 0) {
                    std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
                    *pause = None;
                }
                const CHUNK: u64 = 64 * 1024;
                let n = (*total - *sent).min(CHUNK);
                let chunk: Vec<u8> = (*sent..*sent + n).map(pattern_byte).collect();
                *sent += n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EchoBody::Json(body) => body.is_none(),
            EchoBody::Pattern { sent, total, .. } => sent >= total,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EchoBody::Json(Some(b)) => SizeHint::with_exact(b.len() as u64),
            EchoBody::Json(None) => SizeHint::with_exact(0),
            EchoBody::Pattern { sent, total, .. } => SizeHint::with_exact(total - sent),
        }
    }
}

fn check_token(
    inner: &Inner,
    headers: &HeaderMap,
) -> (bool, Option<String>, Option<Map<String, Value>>) {
    let Some(token) = super::bearer(headers) else {
        return (false, Some("no Bearer token".into()), None);
    };
    let claims: Option<Map<String, Value>> =
        jsonwebtoken::dangerous::insecure_decode_claims(token).ok();
    if inner.verify_with.is_empty() {
        return (false, Some("not verified".into()), claims);
    }
    let mut error = None;
    for key in &inner.verify_with {
        match super::verify(token, key) {
            Ok(_) => return (true, None, claims),
            Err(e) => error = Some(e.to_string()),
        }
    }
    (false, error, claims)
}

async fn handle(
    inner: Arc<Inner>,
    request: Request<CallerBody>,
    peer: SocketAddr,
) -> Response<EchoBody> {
    let (parts, mut body) = request.into_parts();
    let (token_valid, token_error, token_claims) = check_token(&inner, &parts.headers);
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    body_len += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let body_sha256 = hex(hasher.finish().as_ref());
    let revoked = inner.reject_all.load(std::sync::atomic::Ordering::SeqCst)
        || token_claims
            .as_ref()
            .and_then(|c| c.get("jti")?.as_str())
            .is_some_and(|jti| crate::support::sync::lock(&inner.revoked).contains(jti));
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let record = Recorded {
        peer,
        method: parts.method.to_string(),
        version: parts.version,
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len,
        body_sha256: body_sha256.clone(),
        token_valid,
        token_error: token_error.clone(),
        token_claims: token_claims.clone(),
        status: if revoked { 401 } else { 200 },
    };
    crate::support::sync::lock(&inner.records).push(record);
    if revoked {
        let mut response = Response::new(EchoBody::Json(Some(Bytes::from_static(
            b"{\"error\":\"invalid_token\"}\n",
        ))));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return response;
    }

    let millis_after = |marker: &str| -> Option<std::time::Duration> {
        let (_, rest) = parts.uri.path().split_once(marker)?;
        let ms = rest.split('/').next()?.parse::<u64>().ok()?;
        Some(std::time::Duration::from_millis(ms.min(10_000)))
    };
    if let Some(delay) = millis_after("/delay/") {
        tokio::time::sleep(delay).await;
    }
    if let Some(n) = parts
        .uri
        .path()
        .rsplit_once("/bytes/")
        .and_then(|(_, n)| n.parse::<u64>().ok())
    {
        let mut response = Response::new(EchoBody::Pattern {
            sent: 0,
            total: n,
            pause: millis_after("/pause/").map(|p| Box::pin(tokio::time::sleep(p))),
        });
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION)
        .map(|(name, value)| {
            (
                name.to_string(),
                json!(String::from_utf8_lossy(value.as_bytes())),
            )
        })
        .collect();
    let echo = json!({
        "method": parts.method.as_str(),
        "target": target,
        "headers": headers,
        "body": { "bytes": body_len, "sha256": body_sha256 },
        "token": { "verified": token_valid, "error": token_error, "claims": token_claims },
    });
    let text = serde_json::to_string_pretty(&echo).unwrap_or_default() + "\n";
    let mut response = Response::new(EchoBody::Json(Some(Bytes::from(text))));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
