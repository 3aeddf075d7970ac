//! The few Kubernetes API calls the renewer makes: read and update one Secret (with
//! `resourceVersion`, so that an update made on a stale read is refused), and take or give back one
//! Lease. Over the shared reqwest/rustls stack with the service account's token and CA; a client
//! crate (kube) would bring a second HTTP stack for four calls (`docs/dependencies.md`).

use crate::config::KubeAccess;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("the object changed since it was read (409)")]
    Conflict,
    #[error("{0} does not exist (404)")]
    NotFound(String),
    #[error("the API server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("{0}")]
    Failed(String),
}

/// What the API server's certificate must chain to: the service account's CA, or the `ca_file`
/// given for it, and nothing else. The service account's token and the keyset's writes go there;
/// a publicly issued certificate for the API server's name must not receive them.
pub fn trust(access: &KubeAccess) -> Result<rustls::RootCertStore, KubeError> {
    use rustls_pki_types::pem::PemObject;
    let Some(ca) = &access.ca_file else {
        return Err(KubeError::Failed(
            "no CA for the API server: set kubernetes_secret.ca_file".into(),
        ));
    };
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            KubeError::Failed(format!("kubernetes_secret.ca_file {}: {e}", ca.display()))
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            KubeError::Failed(format!(
                "kubernetes_secret.ca_file {}: not a usable CA certificate: {e}",
                ca.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(KubeError::Failed(format!(
            "kubernetes_secret.ca_file {} holds no certificate",
            ca.display()
        )));
    }
    Ok(roots)
}

/// A Lease held by another replica as this one last saw it, and when (by this replica's clock):
/// a Lease is free once it has stayed unchanged for its duration since, whatever the clocks of
/// the API server or of its holder say (client-go's leader election judges it so).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    record: Value,
    since: tokio::time::Instant,
}

/// A Secret's data, decoded, and its version.
pub struct SecretData {
    pub resource_version: String,
    pub data: HashMap<String, Vec<u8>>,
}

pub struct Kubernetes {
    http: reqwest::Client,
    server: String,
    token_file: PathBuf,
}

impl Kubernetes {
    pub fn new(access: &KubeAccess) -> Result<Kubernetes, KubeError> {
        let server = match &access.server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    KubeError::Failed("not running in Kubernetes (KUBERNETES_SERVICE_HOST is unset): set kubernetes_secret.api_server".into())
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        // Plain http:// is allowed only to loopback (a test's stand-in): no CA to read there.
        let roots = if server.starts_with("https://") {
            trust(access)?
        } else {
            rustls::RootCertStore::empty()
        };
        let tls = crate::build::tls_config_trusting(roots)
            .map_err(|e| KubeError::Failed(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .timeout(std::time::Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KubeError::Failed(e.to_string()))?;
        Ok(Kubernetes {
            http,
            server,
            token_file: access.token_file.clone(),
        })
    }

    /// Sends one call with the service account's token, read afresh (projected tokens rotate).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, KubeError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            KubeError::Failed(format!(
                "cannot read the service account token {}: {e}",
                self.token_file.display()
            ))
        })?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server))
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = request.send().await.map_err(|e| {
            KubeError::Failed(format!(
                "cannot reach the API server {}: {}",
                self.server,
                crate::support::cause::chain(&e)
            ))
        })?;
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(value),
            404 => Err(KubeError::NotFound(path.to_string())),
            409 => Err(KubeError::Conflict),
            _ => Err(KubeError::Status {
                status,
                message: value["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(300)
                    .collect(),
            }),
        }
    }

    fn secret_path(namespace: &str, name: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/secrets/{name}")
    }

    pub async fn get_secret(&self, namespace: &str, name: &str) -> Result<SecretData, KubeError> {
        let secret = self
            .call(reqwest::Method::GET, &Self::secret_path(namespace, name), None)
            .await
            .map_err(|e| match e {
                KubeError::NotFound(_) => KubeError::NotFound(format!(
                    "Secret {namespace}/{name}: create it first (kubectl -n {namespace} create secret generic {name})"
                )),
                other => other,
            })?;
        read_secret(&secret)
    }

    /// Sets one key of a Secret, if it is still at `version`; gives the new version.
    pub async fn update_secret_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        base64_value: &str,
        version: Option<&str>,
    ) -> Result<String, KubeError> {
        let path = Self::secret_path(namespace, name);
        // The whole object goes back (a Secret may hold other keys), with the version this pass
        // read: the API server refuses it if anyone wrote in between.
        let mut secret = self.call(reqwest::Method::GET, &path, None).await?;
        if let Some(version) = version {
            secret["metadata"]["resourceVersion"] = json!(version);
        }
        if !secret["data"].is_object() {
            secret["data"] = json!({});
        }
        secret["data"][key] = json!(base64_value);
        let updated = self
            .call(reqwest::Method::PUT, &path, Some(&secret))
            .await?;
        Ok(read_secret(&updated)?.resource_version)
    }

    fn lease_path(namespace: &str, name: &str) -> String {
        format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    }

    /// Takes the Lease for `holder` if it is free, or another's record of it has stayed unchanged
    /// for its duration since this replica first saw it (`seen`, kept from one call to the next);
    /// false when another holds it.
    pub async fn take_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        seconds: u64,
        seen: &mut Option<Observed>,
    ) -> Result<bool, KubeError> {
        let now = crate::support::time::unix_now() as i64;
        let stamp = crate::support::time::micro_time(now);
        let spec = json!({
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "acquireTime": stamp,
            "renewTime": stamp,
        });
        let path = Self::lease_path(namespace, name);
        match self.call(reqwest::Method::GET, &path, None).await {
            Err(KubeError::NotFound(_)) => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": spec,
                });
                let create = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
                match self
                    .call(reqwest::Method::POST, &create, Some(&lease))
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(KubeError::Conflict) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
            Ok(mut lease) => {
                let held_by = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
                if !held_by.is_empty() && held_by != holder {
                    let duration = lease["spec"]["leaseDurationSeconds"].as_u64().unwrap_or(0);
                    let record = lease["spec"].clone();
                    let at = tokio::time::Instant::now();
                    let since = match seen {
                        Some(o) if o.record == record => o.since,
                        _ => {
                            *seen = Some(Observed { record, since: at });
                            at
                        }
                    };
                    if at < since + std::time::Duration::from_secs(duration) {
                        return Ok(false);
                    }
                }
                lease["spec"] = spec;
                match self.call(reqwest::Method::PUT, &path, Some(&lease)).await {
                    Ok(_) => Ok(true),
                    Err(KubeError::Conflict) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease back, if `holder` still holds it.
    pub async fn release_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
    ) -> Result<(), KubeError> {
        let path = Self::lease_path(namespace, name);
        let mut lease = self.call(reqwest::Method::GET, &path, None).await?;
        if lease["spec"]["holderIdentity"].as_str() != Some(holder) {
            return Ok(());
        }
        lease["spec"]["holderIdentity"] = Value::Null;
        lease["spec"]["leaseDurationSeconds"] = json!(1);
        self.call(reqwest::Method::PUT, &path, Some(&lease))
            .await
            .map(drop)
    }
}

fn read_secret(secret: &Value) -> Result<SecretData, KubeError> {
    use base64::Engine as _;
    let resource_version = secret["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| KubeError::Failed("the Secret has no resourceVersion".into()))?
        .to_string();
    let mut data = HashMap::new();
    if let Some(map) = secret["data"].as_object() {
        for (k, v) in map {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .map_err(|_| KubeError::Failed(format!("the Secret's {k} is not base64")))?;
            data.insert(k.clone(), bytes);
        }
    }
    Ok(SecretData {
        resource_version,
        data,
    })
}
