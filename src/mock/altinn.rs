//! A mock of Altinn's token exchange (`GET /authentication/api/v1/exchange/maskinporten`) on
//! loopback: it accepts only a valid token from the mock Maskinporten, answers with an Altinn JWT
//! of its own lifetime, bare or as a JSON string in quotes (Altinn has done both), and counts calls.
//! With a consent store it also takes consent requests (`POST`
//! [`CONSENT_REQUESTS_PATH`], scope `altinn:consentrequests.write`), and plays the person who
//! answers one: `POST /mock/consentrequests/{id}/accept` or `.../revoke` (the mock's own paths).

use crate::keys::SigningKey;
use crate::server::CallerBody;
use crate::support::sync::lock;
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
pub const CONSENT_REQUESTS_PATH: &str = "/accessmanagement/api/v1/enterprise/consentrequests/";
/// The scope Altinn asks of a data consumer that requests consents.
pub const CONSENT_WRITE_SCOPE: &str = "altinn:consentrequests.write";
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
    consents: Mutex<Option<super::ConsentStore>>,
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
            consents: Mutex::new(None),
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
    /// Takes consent requests into `store`: the mock Maskinporten's
    /// ([`super::MockMaskinporten::consents`]), so that it knows them.
    pub fn serve_consents(&self, store: super::ConsentStore) {
        *lock(&self.inner.consents) = Some(store);
    }
}

impl Drop for MockAltinn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    crate::request::body::full(status, content_type, body)
}

async fn handle(inner: Arc<Inner>, request: Request<CallerBody>) -> Answer {
    let store = lock(&inner.consents).clone();
    if let Some(store) = store {
        let path = request.uri().path();
        if request.method() == Method::POST
            && (path == CONSENT_REQUESTS_PATH
                || path == CONSENT_REQUESTS_PATH.trim_end_matches('/'))
        {
            return consent_request(&inner, &store, request).await;
        }
        if let Some(rest) = path.strip_prefix("/mock/consentrequests/") {
            if request.method() == Method::POST {
                let done = match rest.split_once('/') {
                    Some((id, "accept")) => store.accept(id),
                    Some((id, "revoke")) => store.revoke(id),
                    _ => false,
                };
                let status = if done {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                };
                return answer(status, "text/plain", String::new());
            }
        }
    }
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
    let mut altinn = altinn;
    if let Some(details) = claims.get("authorization_details") {
        altinn["authorization_details"] = details.clone();
    }
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

/// `POST .../consentrequests/`: a data consumer asks a person (or organisation) for consent, with
/// a Maskinporten token for `altinn:consentrequests.write` naming the consumer.
async fn consent_request(
    inner: &Inner,
    store: &super::ConsentStore,
    request: Request<CallerBody>,
) -> Answer {
    use http_body_util::BodyExt as _;
    let problem = |status: u16, detail: String| {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({ "status": status.as_u16(), "title": status.canonical_reason(), "detail": detail });
        answer(status, "application/problem+json", body.to_string())
    };
    let claims = super::bearer(request.headers())
        .and_then(|token| super::verify(token, &inner.maskinporten).ok());
    let Some(claims) = claims else {
        return answer(StatusCode::UNAUTHORIZED, "text/plain", String::new());
    };
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split_whitespace().any(|s| s == CONSENT_WRITE_SCOPE) {
        return problem(403, format!("the token lacks scope {CONSENT_WRITE_SCOPE}"));
    }
    let consumer = claims["consumer"]["ID"]
        .as_str()
        .and_then(|id| id.strip_prefix("0192:"))
        .unwrap_or_default()
        .to_string();
    let body = match http_body_util::Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return problem(400, "unreadable or too large body".into()),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return problem(400, "the body is not JSON".into());
    };
    match store.request(&body, &consumer, &format!("http://{}/", inner_addr(inner))) {
        Ok(created) => answer(StatusCode::CREATED, "application/json", created.to_string()),
        Err((status, detail)) => problem(status, detail),
    }
}

/// The mock's `host:port`, from its issuer URL.
fn inner_addr(inner: &Inner) -> &str {
    inner
        .issuer
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}
