//! A mock of Altinn's token exchange (`GET /authentication/api/v1/exchange/maskinporten`) on
//! loopback: it accepts only a valid token from the mock Maskinporten, answers with an Altinn JWT
//! of its own lifetime, bare or as a JSON string in quotes (Altinn has done both), and counts calls.

use crate::keys::SigningKey;
use crate::server::CallerBody;
use crate::sync::lock;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const EXCHANGE_PATH: &str = "/authentication/api/v1/exchange/maskinporten";
const SIGNING_KID: &str = "mock-altinn-1";

struct Inner {
    issuer: String,
    /// The mock Maskinporten's key: only its tokens are exchanged.
    maskinporten: DecodingKey,
    signing: SigningKey,
    lifetime: AtomicU64,
    quoted: AtomicBool,
    /// Answer every exchange with this status instead (0: normal).
    failing: AtomicU16,
    exchanges: AtomicUsize,
    /// The claims of each Maskinporten token exchanged.
    seen: Mutex<Vec<Map<String, Value>>>,
}

pub struct MockAltinn {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

impl MockAltinn {
    /// Starts on 127.0.0.1 on a free port, exchanging tokens the mock Maskinporten signed (its
    /// [`super::MockMaskinporten::decoding_key`]) for Altinn tokens that live `lifetime` seconds.
    pub async fn start(maskinporten: DecodingKey, lifetime: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let signing = SigningKey::from_pem(super::MOCK_ALTINN_KEY_PEM.as_bytes(), SIGNING_KID)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let inner = Arc::new(Inner {
            issuer: format!("http://{addr}/authentication/api/v1/openid/"),
            maskinporten,
            signing,
            lifetime: AtomicU64::new(lifetime),
            quoted: AtomicBool::new(false),
            failing: AtomicU16::new(0),
            exchanges: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let state = Arc::clone(&inner);
        let shutdown = super::serve(listener, None, move |req, _peer| {
            handle(Arc::clone(&state), req)
        });
        Ok(MockAltinn {
            addr,
            inner,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT/`: what a route's `altinn_exchange` names (the path is added).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    /// Exchange requests received, accepted or not.
    pub fn exchanges(&self) -> usize {
        self.inner.exchanges.load(Ordering::SeqCst)
    }
    /// The Maskinporten token claims of each exchange.
    pub fn seen(&self) -> Vec<Map<String, Value>> {
        lock(&self.inner.seen).clone()
    }
    /// Answer with the token as a JSON string in quotes (true) or bare (false).
    pub fn set_quoted(&self, quoted: bool) {
        self.inner.quoted.store(quoted, Ordering::SeqCst);
    }
    pub fn set_lifetime(&self, seconds: u64) {
        self.inner.lifetime.store(seconds, Ordering::SeqCst);
    }
    /// Answer every exchange with `status` (None: work normally).
    pub fn set_failing(&self, status: Option<u16>) {
        self.inner
            .failing
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }
    /// The key its Altinn tokens are signed with, for upstreams that verify them.
    pub fn decoding_key(&self) -> DecodingKey {
        super::decoding_key(&self.inner.signing)
    }
}

impl Drop for MockAltinn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    crate::body::full(status, content_type, body)
}

async fn handle(inner: Arc<Inner>, request: Request<CallerBody>) -> Answer {
    if request.method() != Method::GET || request.uri().path() != EXCHANGE_PATH {
        return answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    inner.exchanges.fetch_add(1, Ordering::SeqCst);
    let failing = inner.failing.load(Ordering::SeqCst);
    if failing != 0 {
        let status = StatusCode::from_u16(failing).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return answer(status, "text/plain", String::new());
    }
    let claims = super::bearer(request.headers())
        .and_then(|token| super::verify(token, &inner.maskinporten).ok());
    let Some(claims) = claims else {
        return answer(StatusCode::UNAUTHORIZED, "text/plain", String::new());
    };
    lock(&inner.seen).push(claims.clone());
    let now = crate::token::grant::unix_now();
    let org = claims["consumer"]["ID"]
        .as_str()
        .and_then(|id| id.strip_prefix("0192:"))
        .unwrap_or_default()
        .to_string();
    let altinn = json!({
        "iss": inner.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + inner.lifetime.load(Ordering::SeqCst),
        "jti": uuid::Uuid::new_v4().to_string(),
        "scope": claims.get("scope"),
        "client_id": claims.get("client_id"),
        "consumer": claims.get("consumer"),
        "urn:altinn:orgNumber": org,
        "urn:altinn:authenticatemethod": "maskinporten",
        "urn:altinn:authlevel": 3,
        "token_type": "altinn",
    });
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some(SIGNING_KID.into());
    let signed = inner
        .signing
        .encoding_key()
        .map(|key| jsonwebtoken::encode(&header, &altinn, key));
    let Some(Ok(jwt)) = signed else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            String::new(),
        );
    };
    if inner.quoted.load(Ordering::SeqCst) {
        answer(StatusCode::OK, "application/json", format!("\"{jwt}\""))
    } else {
        answer(StatusCode::OK, "text/plain", jwt)
    }
}
