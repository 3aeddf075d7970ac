//! A stand-in for the Kubernetes API server, for the renewer's tests (no cluster runs here): Secrets
//! and Leases in namespaces, a bearer token required, and `metadata.resourceVersion` enforced on
//! every update as the real server does (a PUT naming another version is 409 Conflict).

use crate::server::CallerBody;
use crate::support::sync::lock;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Answer = Response<Full<Bytes>>;

struct Inner {
    token: String,
    /// (kind, namespace, name) -> object
    objects: Mutex<HashMap<(String, String, String), Value>>,
    version: AtomicU64,
    /// Every write that was refused for a stale resourceVersion.
    conflicts: AtomicU64,
    holders: Mutex<Vec<String>>,
}

pub struct MockKubernetes {
    addr: SocketAddr,
    inner: Arc<Inner>,
    tls: bool,
    _shutdown: watch::Sender<bool>,
}

impl MockKubernetes {
    /// Starts on 127.0.0.1, accepting `token` as the service account's.
    pub async fn start(token: &str) -> std::io::Result<MockKubernetes> {
        Self::start_on(token, None).await
    }

    /// The same over HTTPS with the certificate and key in `cert_pem` and `key_pem`.
    pub async fn start_tls(
        token: &str,
        cert_pem: &std::path::Path,
        key_pem: &std::path::Path,
    ) -> std::io::Result<MockKubernetes> {
        Self::start_on(token, Some(super::tls_acceptor(cert_pem, key_pem)?)).await
    }

    async fn start_on(
        token: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<MockKubernetes> {
        let tls_url = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            token: token.to_string(),
            objects: Mutex::new(HashMap::new()),
            version: AtomicU64::new(100),
            conflicts: AtomicU64::new(0),
            holders: Mutex::new(Vec::new()),
        });
        let state = Arc::clone(&inner);
        let shutdown = super::serve(listener, tls, move |req, _peer| {
            handle(Arc::clone(&state), req)
        });
        Ok(MockKubernetes {
            addr,
            inner,
            tls: tls_url,
            _shutdown: shutdown,
        })
    }

    pub fn url(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }

    /// Creates an empty Secret, as an administrator would before the renewer's first pass.
    pub fn create_secret(&self, namespace: &str, name: &str) {
        let version = self
            .inner
            .version
            .fetch_add(1, Ordering::SeqCst)
            .to_string();
        lock(&self.inner.objects).insert(
            ("secrets".into(), namespace.into(), name.into()),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
                   "data": {}}),
        );
    }

    /// One key of a Secret, decoded.
    pub fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let objects = lock(&self.inner.objects);
        let value = objects
            .get(&("secrets".into(), namespace.into(), name.into()))?
            .get("data")?
            .get(key)?
            .as_str()?
            .to_string();
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    }

    /// Another writer changes the Secret: its version moves on, so a write based on an older read fails.
    pub fn touch_secret(&self, namespace: &str, name: &str) {
        let version = self
            .inner
            .version
            .fetch_add(1, Ordering::SeqCst)
            .to_string();
        if let Some(s) =
            lock(&self.inner.objects).get_mut(&("secrets".into(), namespace.into(), name.into()))
        {
            s["metadata"]["resourceVersion"] = json!(version);
            s["metadata"]["annotations"] = json!({"touched": version});
        }
    }

    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::SeqCst)
    }

    /// Another replica holds the Lease (`None`: nobody), renewed now for `seconds`.
    pub fn set_lease(&self, namespace: &str, name: &str, holder: Option<&str>, seconds: u64) {
        self.set_lease_renewed(
            namespace,
            name,
            holder,
            seconds,
            crate::support::time::unix_now() as i64,
        );
    }

    /// As [`Self::set_lease`], with the holder's `renewTime` at `renewed` (Unix seconds): a
    /// holder whose clock runs ahead writes times in the future.
    pub fn set_lease_renewed(
        &self,
        namespace: &str,
        name: &str,
        holder: Option<&str>,
        seconds: u64,
        renewed: i64,
    ) {
        let version = self
            .inner
            .version
            .fetch_add(1, Ordering::SeqCst)
            .to_string();
        let stamp = crate::support::time::micro_time(renewed);
        lock(&self.inner.objects).insert(
            ("leases".into(), namespace.into(), name.into()),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "renewTime": stamp}}),
        );
    }

    /// Every holder the Lease has had, in order, as the stand-in saw its updates.
    pub fn lease_holders(&self) -> Vec<String> {
        lock(&self.inner.holders).clone()
    }

    /// A Lease's holder, if any.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Option<String> {
        lock(&self.inner.objects)
            .get(&("leases".into(), namespace.into(), name.into()))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }
}

fn answer(status: StatusCode, body: &Value) -> Answer {
    crate::request::body::full(status, "application/json", body.to_string())
}

fn status(code: StatusCode, reason: &str, message: &str) -> Answer {
    answer(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// An object as written: at its new version, its Lease holder (if any) noted.
fn store(inner: &Inner, mut object: Value, version: String) -> Value {
    object["metadata"]["resourceVersion"] = json!(version);
    if let Some(holder) = object["spec"]["holderIdentity"].as_str() {
        lock(&inner.holders).push(holder.to_string());
    }
    object
}

async fn handle(inner: Arc<Inner>, request: Request<CallerBody>) -> Answer {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", inner.token).as_str());
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let path = request.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/secrets[/NAME] or /apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]
    let (kind, namespace, name) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
            ("secrets", *ns, rest.first().copied())
        }
        ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", rest @ ..] => {
            ("leases", *ns, rest.first().copied())
        }
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    };
    let method = request.method().clone();
    let body: Value = match Limited::new(request.into_body(), 1024 * 1024)
        .collect()
        .await
    {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let mut objects = lock(&inner.objects);
    let key = |name: &str| (kind.to_string(), namespace.to_string(), name.to_string());
    let next = || inner.version.fetch_add(1, Ordering::SeqCst).to_string();
    match (method, name) {
        (Method::GET, Some(name)) => match objects.get(&key(name)) {
            Some(o) => answer(StatusCode::OK, o),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{kind} \"{name}\" not found"),
            ),
        },
        (Method::POST, None) => {
            let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name is required",
                );
            };
            if objects.contains_key(&key(&name)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{kind} \"{name}\" already exists"),
                );
            }
            let object = store(&inner, body, next());
            objects.insert(key(&name), object.clone());
            answer(StatusCode::CREATED, &object)
        }
        (Method::PUT, Some(name)) => {
            let Some(current) = objects.get(&key(name)) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{kind} \"{name}\" not found"),
                );
            };
            let sent = body["metadata"]["resourceVersion"].as_str();
            if sent.is_some() && sent != current["metadata"]["resourceVersion"].as_str() {
                inner.conflicts.fetch_add(1, Ordering::SeqCst);
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!("Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                );
            }
            let object = store(&inner, body, next());
            objects.insert(key(name), object.clone());
            answer(StatusCode::OK, &object)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the stand-in",
        ),
    }
}
