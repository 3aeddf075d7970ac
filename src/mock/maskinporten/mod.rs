//! A mock Maskinporten on loopback that enforces the real rules for JWT grants and answers like
//! Maskinporten does: a JWT access token, or `{error, error_description, error_uri}` with MP codes.
//! Used by `portvakt demo` and the tests; it counts and records every grant it sees.

mod grant_keys;
mod refusal;
mod rules;
mod selfservice;
mod token;

pub use selfservice::SelfServiceCall;

use crate::keys::SigningKey;
use crate::server::CallerBody;
use crate::support::sync::lock;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::DecodingKey;
use refusal::{refuse, Refusal};
use rules::check_grant;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const SIGNING_KID: &str = "mock-maskinporten-1";

/// A client registered with the mock, as in Samarbeidsportalen.
#[derive(Debug, Clone)]
pub struct MockClient {
    pub client_id: String,
    pub org: String,
    /// kid -> (n, e) base64url
    pub keys: HashMap<String, (String, String)>,
    pub scopes: HashSet<String>,
    /// (consumer org, scope) pairs the consumer delegated to this client's organisation.
    pub delegations: HashSet<(String, String)>,
    /// Altinn system users of this client's system: org -> the externalRef it was created with.
    pub system_users: HashMap<String, Option<String>>,
    /// Registered keys more than a year old, which Maskinporten refuses with MP-121.
    pub expired_kids: HashSet<String>,
    /// What the self-service API knows of each registered key.
    pub registered: HashMap<String, Registered>,
}

/// A key as the self-service API holds it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The public JWK as posted (`kty, use, alg, n, e`).
    pub jwk: Value,
    /// Unix seconds; the token endpoint answers MP-121 from then on.
    pub exp: i64,
    /// Unix seconds; before it the token endpoint does not know the kid yet (propagation).
    pub usable_from: i64,
}

impl MockClient {
    pub fn new(client_id: &str, org: &str) -> Self {
        MockClient {
            client_id: client_id.into(),
            org: org.into(),
            keys: HashMap::new(),
            scopes: HashSet::new(),
            delegations: HashSet::new(),
            system_users: HashMap::new(),
            expired_kids: HashSet::new(),
            registered: HashMap::new(),
        }
    }

    /// Registers the public half of `key` under its kid.
    pub fn key(self, key: &SigningKey) -> Self {
        self.public_jwk(&key.public_jwk())
    }

    /// Registers a public JWK as uploaded to Samarbeidsportalen (`kid`, `n`, `e`).
    pub fn public_jwk(mut self, jwk: &Value) -> Self {
        let part = |name: &str| jwk[name].as_str().unwrap_or_default().to_string();
        self.keys.insert(part("kid"), (part("n"), part("e")));
        self.registered.insert(
            part("kid"),
            Registered {
                jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "n": part("n"), "e": part("e")}),
                exp: crate::support::time::unix_now() as i64 + 365 * 86_400,
                usable_from: 0,
            },
        );
        self
    }

    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    pub fn delegation(mut self, consumer_org: &str, scope: &str) -> Self {
        self.delegations.insert((consumer_org.into(), scope.into()));
        self
    }

    /// Marks the registered key `kid` as past its one-year life.
    pub fn expired(mut self, kid: &str) -> Self {
        self.expired_kids.insert(kid.into());
        self
    }

    /// A system user that organisation `org` created for this client's system in Altinn, with the
    /// `externalRef` it was created with, if any (a grant must then name it).
    pub fn system_user(mut self, org: &str, external_ref: Option<&str>) -> Self {
        self.system_users
            .insert(org.into(), external_ref.map(str::to_string));
        self
    }
}

/// How the mock behaves, switchable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Answers every token request with this 5xx/429 status.
    Failing(u16),
    /// Answers with this status and `Retry-After: <seconds>`.
    Throttling(u16, u64),
    /// Answers 200 with a body that is not JSON.
    Garbage,
    /// Answers 200 with JSON that holds no `access_token`.
    NoAccessToken,
}

/// A grant as it reached the mock, for tests to inspect.
#[derive(Debug, Clone)]
pub struct RecordedGrant {
    pub header: Value,
    pub claims: Map<String, Value>,
    /// `None` when accepted, else the error code it got.
    pub rejected: Option<String>,
}

struct Inner {
    issuer: String,
    signing: SigningKey,
    clients: Mutex<HashMap<String, MockClient>>,
    expires_in: AtomicU64,
    delay_ms: AtomicU64,
    /// Seconds the mock's clock is ahead of the machine's (negative: behind).
    clock_offset: std::sync::atomic::AtomicI64,
    mode: Mutex<Mode>,
    token_requests: AtomicUsize,
    jtis: Mutex<HashSet<String>>,
    grants: Mutex<Vec<RecordedGrant>>,
    /// CA certificates (DER) a virksomhetssertifikat in `x5c` must chain to.
    trusted_cas: Mutex<Vec<rustls_pki_types::CertificateDer<'static>>>,
    /// Seconds after a POST before the token endpoint accepts a new kid.
    key_propagation: AtomicU64,
    selfservice_calls: Mutex<Vec<SelfServiceCall>>,
    /// The next N self-service calls answer this status.
    selfservice_failures: Mutex<Option<(u16, u32)>>,
    /// Altinn's consents, as Maskinporten looks them up for a grant that names one.
    consents: super::ConsentStore,
}

/// A running mock Maskinporten.
pub struct MockMaskinporten {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

impl MockMaskinporten {
    /// Starts on 127.0.0.1 on a free port, issuing tokens that live `expires_in` seconds.
    pub async fn start(clients: Vec<MockClient>, expires_in: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, clients, expires_in)
    }

    pub fn start_on(
        listener: TcpListener,
        clients: Vec<MockClient>,
        expires_in: u64,
    ) -> std::io::Result<Self> {
        Self::start_with(listener, None, clients, expires_in)
    }

    /// Starts on HTTPS with the PEM certificate and key given; the issuer is `https://127.0.0.1:PORT/`.
    pub async fn start_tls(
        clients: Vec<MockClient>,
        expires_in: u64,
        cert_pem: &std::path::Path,
        key_pem: &std::path::Path,
    ) -> std::io::Result<Self> {
        let acceptor = super::tls_acceptor(cert_pem, key_pem)?;
        Self::start_with(
            TcpListener::bind("127.0.0.1:0").await?,
            Some(acceptor),
            clients,
            expires_in,
        )
    }

    fn start_with(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        clients: Vec<MockClient>,
        expires_in: u64,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let signing = SigningKey::from_pem(super::MOCK_SIGNING_KEY_PEM.as_bytes(), SIGNING_KID)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let inner = Arc::new(Inner {
            issuer: format!("{scheme}://{addr}/"),
            signing,
            clients: Mutex::new(
                clients
                    .into_iter()
                    .map(|c| (c.client_id.clone(), c))
                    .collect(),
            ),
            expires_in: AtomicU64::new(expires_in),
            delay_ms: AtomicU64::new(0),
            clock_offset: std::sync::atomic::AtomicI64::new(0),
            mode: Mutex::new(Mode::Normal),
            token_requests: AtomicUsize::new(0),
            jtis: Mutex::new(HashSet::new()),
            grants: Mutex::new(Vec::new()),
            trusted_cas: Mutex::new(Vec::new()),
            key_propagation: AtomicU64::new(0),
            selfservice_calls: Mutex::new(Vec::new()),
            selfservice_failures: Mutex::new(None),
            consents: super::ConsentStore::default(),
        });
        let state = Arc::clone(&inner);
        let shutdown = super::serve(listener, tls, move |req, _peer| {
            handle(Arc::clone(&state), req)
        });
        Ok(MockMaskinporten {
            addr,
            inner,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT/`: the grant's `aud`.
    pub fn issuer(&self) -> String {
        self.inner.issuer.clone()
    }
    pub fn token_endpoint(&self) -> String {
        format!("{}token", self.inner.issuer)
    }
    /// POSTs to `/token`, accepted or not.
    pub fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }
    pub fn grants(&self) -> Vec<RecordedGrant> {
        lock(&self.inner.grants).clone()
    }
    /// Trusts the CA certificates in `pem` as issuers of virksomhetssertifikat, as Maskinporten
    /// trusts Buypass and Commfides.
    pub fn trust_ca_pem(&self, pem: &[u8]) -> std::io::Result<()> {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        lock(&self.inner.trusted_cas).extend(certs);
        Ok(())
    }
    /// Registers another client while the mock runs (or replaces one with the same client_id).
    pub fn add_client(&self, client: MockClient) {
        lock(&self.inner.clients).insert(client.client_id.clone(), client);
    }
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
    }
    pub fn set_expires_in(&self, seconds: u64) {
        self.inner.expires_in.store(seconds, Ordering::SeqCst);
    }
    /// Delays every token answer, so tests can pile requests onto one fetch.
    pub fn set_delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    /// Runs the mock's clock `seconds` ahead of this machine's (negative: behind), as a
    /// Maskinporten would look from a machine whose clock is off. Its `Date` header follows.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.inner.clock_offset.store(seconds, Ordering::SeqCst);
    }
    /// The key its access tokens are signed with, for upstreams that verify them.
    pub fn decoding_key(&self) -> DecodingKey {
        super::decoding_key(&self.inner.signing)
    }
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.inner.signing.public_jwk()] })
    }
    /// How long after a POST to the self-service API the token endpoint accepts a new kid.
    pub fn set_key_propagation(&self, delay: Duration) {
        self.inner
            .key_propagation
            .store(delay.as_secs(), Ordering::SeqCst);
    }

    /// The self-service API answers the next `times` calls with `status`.
    pub fn fail_selfservice(&self, status: u16, times: u32) {
        *lock(&self.inner.selfservice_failures) = (times > 0).then_some((status, times));
    }

    /// Every call the self-service API got, in order.
    pub fn selfservice_calls(&self) -> Vec<SelfServiceCall> {
        lock(&self.inner.selfservice_calls).clone()
    }

    /// The client's registered keys as `GET /jwks` lists them.
    pub fn registered_jwks(&self, client_id: &str) -> Value {
        selfservice::listing(&self.inner, client_id)
    }

    /// Someone removes a key in Samarbeidsportalen.
    pub fn remove_key(&self, client_id: &str, kid: &str) {
        if let Some(c) = lock(&self.inner.clients).get_mut(client_id) {
            c.keys.remove(kid);
            c.registered.remove(kid);
        }
    }

    /// The registered kids of a client, sorted.
    pub fn registered_kids(&self, client_id: &str) -> Vec<String> {
        let mut kids: Vec<String> = lock(&self.inner.clients)
            .get(client_id)
            .map(|c| c.keys.keys().cloned().collect())
            .unwrap_or_default();
        kids.sort();
        kids
    }

    /// The Altinn consents this Maskinporten checks grants against: give the mock Altinn the
    /// same store ([`super::MockAltinn::serve_consents`]), or fill it directly in a test.
    pub fn consents(&self) -> super::ConsentStore {
        self.inner.consents.clone()
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for MockMaskinporten {
    fn drop(&mut self) {
        self.stop();
    }
}

type Answer = Response<Full<Bytes>>;

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    crate::request::body::full(status, "application/json", body.to_string())
}

/// The mock's own time, which tests may set off from the machine's.
fn now(inner: &Inner) -> i64 {
    crate::token::grant::unix_now() as i64 + inner.clock_offset.load(Ordering::SeqCst)
}

async fn handle(inner: Arc<Inner>, request: Request<CallerBody>) -> Answer {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/token") => token::token(&inner, request).await,
        (&Method::GET, "/jwk") => json_answer(
            StatusCode::OK,
            &json!({ "keys": [inner.signing.public_jwk()] }),
        ),
        (&Method::GET, "/.well-known/oauth-authorization-server") => json_answer(
            StatusCode::OK,
            &json!({
                "issuer": inner.issuer,
                "token_endpoint": format!("{}token", inner.issuer),
                "jwks_uri": format!("{}jwk", inner.issuer),
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }),
        ),
        (_, path) if path.starts_with("/api/v1/clients/") && path.ends_with("/jwks") => {
            let id = path["/api/v1/clients/".len()..path.len() - "/jwks".len()].to_string();
            selfservice::handle(&inner, request, &id).await
        }
        (_, "/stats") => json_answer(
            StatusCode::OK,
            &json!({ "token_requests": inner.token_requests.load(Ordering::SeqCst) }),
        ),
        _ => json_answer(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
    }
}
