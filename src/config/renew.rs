//! `selfservice` (Digdir's self-service API and its administration client) and `clients.<name>.renew`
//! (how a client's keyset is renewed), both read only by the renewer.

use super::reader::{join, Reader};
use super::Environment;
use crate::keys::{KeySource, SigningKey};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DAY: u64 = 86_400;
/// Digdir keeps a posted key at most a year.
pub const MAX_KEY_LIFETIME_DAYS: u64 = 365;

/// Digdir's self-service API and the administration client that may change this organisation's clients.
#[derive(Debug)]
pub struct SelfService {
    /// `prod`, `test` or `custom`.
    pub environment: String,
    /// Up to and including `/api/v1`, without a trailing slash.
    pub base_url: String,
    pub client_id: String,
    pub key: Arc<SigningKey>,
    pub source: KeySource,
    pub scopes: Vec<String>,
}

/// How one client's keys are renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    /// The `exp` sent to Digdir, from the time of posting.
    pub key_lifetime: Duration,
    /// A new key when the active one is this old ...
    pub rotate_after: Duration,
    /// ... or when Digdir's `exp` for it is this close.
    pub renew_before: Duration,
    /// A new key signs only this long after it was registered (and after a grant with it worked).
    pub activate_after: Duration,
    /// The old key stays registered this long after its successor became active.
    pub overlap: Duration,
    pub bits: usize,
    /// Kids are `<prefix>.<YYYY-MM-DD>.<random>`.
    pub kid_prefix: String,
    /// The writer keeps the keyset in this Secret (the replicas mount it at `key.keyset`).
    pub kubernetes_secret: Option<SecretRef>,
    /// `portvakt run` makes the renewal passes itself, on one replica at a time.
    pub background: bool,
    pub background_interval: Duration,
}

/// A Kubernetes Secret holding a keyset under one of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
    pub api: KubeAccess,
}

/// How to reach the Kubernetes API: by default, as the pod's service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeAccess {
    /// `None`: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub server: Option<String>,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// A client whose keyset portvakt renews: read even when its keyset has no active key yet, so that
/// `portvakt rotate` can make the first one.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub client: String,
    pub client_id: String,
    pub keyset: PathBuf,
    pub renew: Renew,
}

pub(super) fn selfservice(r: &mut Reader, v: Option<&Value>, base: &Path) -> Option<SelfService> {
    let path = "selfservice";
    let m = r.mapping(v?, path, &super::schema::SELFSERVICE.keys())?;
    let env_path = join(path, "environment");
    let url_path = join(path, "base_url");
    let environment = r.required_string(m.get("environment"), &env_path)?;
    let base_url = match (environment.as_str(), m.get("base_url")) {
        ("prod" | "test", Some(_)) => {
            r.issue(
                &url_path,
                format!("is fixed by environment {environment}: use environment: custom to set your own"),
            );
            return None;
        }
        ("prod", None) => "https://api.samarbeid.digdir.no/api/v1".to_string(),
        ("test", None) => "https://api.test.samarbeid.digdir.no/api/v1".to_string(),
        ("custom", _) => {
            let url = r.required_string(m.get("base_url"), &url_path)?;
            let uri = super::values::http_url(r, &url, &url_path)?;
            if uri.scheme_str() == Some("http") && !super::is_loopback(&uri) {
                r.issue(
                    &url_path,
                    format!("`{url}` is plain http:// to another machine: the self-service API is reached over https://"),
                );
            }
            url.trim_end_matches('/').to_string()
        }
        (other, _) => {
            r.issue(
                &env_path,
                format!("unknown environment `{other}`: use prod, test or custom"),
            );
            return None;
        }
    };
    let client_id = r.required_string(m.get("client_id"), &join(path, "client_id"));
    let scopes = match m.get("scopes") {
        None => vec!["idporten:dcr.read".into(), "idporten:dcr.modify".into()],
        Some(v) => {
            let scopes = r.string_list(Some(v), &join(path, "scopes"))?;
            if scopes.is_empty() {
                r.issue(
                    &join(path, "scopes"),
                    "must name at least idporten:dcr.read and idporten:dcr.modify",
                );
                return None;
            }
            scopes
        }
    };
    let key_path = join(path, "key");
    let Some(k) = m.get("key") else {
        r.issue(&key_path, "is required: the administration client's key, normally the virksomhetssertifikat (pkcs12 + password)");
        return None;
    };
    if k.get("keyset").is_some() {
        r.issue(
            &join(&key_path, "keyset"),
            "the administration client's key is not renewed by portvakt: use pkcs12, pem + kid, a jwk form or pkcs11",
        );
        return None;
    }
    let (source, key) = super::key::key(r, k, &key_path, base)?;
    Some(SelfService {
        environment,
        base_url,
        client_id: client_id?,
        key: Arc::new(key),
        source,
        scopes,
    })
}

/// A key must live longer than it waits to be rotated or renewed, and no longer than Digdir keeps it.
fn lifetimes_agree(
    r: &mut Reader,
    path: &str,
    lifetime: u64,
    rotate_after: u64,
    renew_before: u64,
) {
    if lifetime > MAX_KEY_LIFETIME_DAYS {
        r.issue(
            &join(path, "key_lifetime_days"),
            format!("is {lifetime}: Digdir keeps a key at most {MAX_KEY_LIFETIME_DAYS} days"),
        );
    }
    for (key, value) in [
        ("rotate_after_days", rotate_after),
        ("renew_before_days", renew_before),
    ] {
        if value >= lifetime {
            r.issue(
                &join(path, key),
                format!("is {value}, not less than key_lifetime_days ({lifetime}): the key would run out before it is renewed"),
            );
        }
    }
}

/// The size of the keys portvakt makes (2048 unless set).
fn bits(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<usize> {
    match v {
        None => Some(2048),
        Some(v) => match r.positive_u64(Some(v), path) {
            Some(b @ (2048 | 3072 | 4096)) => Some(b as usize),
            Some(other) => {
                r.issue(path, format!("is {other}: choose 2048, 3072 or 4096"));
                None
            }
            None => None,
        },
    }
}

/// What the kids of new keys start with: `kid_prefix`, else the client's name and environment.
fn kid_prefix(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    name: &str,
    environment: Option<Environment>,
) -> Option<String> {
    let env = match environment {
        Some(Environment::Prod) => "PROD",
        Some(Environment::Test) => "TEST",
        _ => "CUSTOM",
    };
    let kid_prefix = r.string(v, path).unwrap_or_else(|| format!("{name}-{env}"));
    if kid_prefix.is_empty() || !crate::keys::in_kid_alphabet(&kid_prefix) {
        r.issue(
            path,
            "may hold only letters, digits, `.`, `_` and `-` (Digdir's rule for kids)",
        );
        return None;
    }
    Some(kid_prefix)
}

/// `clients.<name>.renew`, for a client whose key is `keyset`.
pub(super) fn renew(
    r: &mut Reader,
    v: &Value,
    path: &str,
    name: &str,
    environment: Option<Environment>,
) -> Option<Renew> {
    let m = r.mapping(v, path, &super::schema::RENEW.keys())?;
    let days = |r: &mut Reader, key: &str, default: u64| {
        r.positive_u64(m.get(key), &join(path, key))
            .unwrap_or(default)
    };
    let lifetime = days(r, "key_lifetime_days", 90);
    let rotate_after = days(r, "rotate_after_days", 60);
    let renew_before = days(r, "renew_before_days", 30);
    lifetimes_agree(r, path, lifetime, rotate_after, renew_before);
    let activate_after = r
        .u64_or_zero(
            m.get("activate_after_seconds"),
            &join(path, "activate_after_seconds"),
        )
        .unwrap_or(600);
    let overlap = r
        .u64_or_zero(m.get("overlap_seconds"), &join(path, "overlap_seconds"))
        .unwrap_or(7 * DAY);
    let bits = bits(r, m.get("bits"), &join(path, "bits"));
    let kid_prefix = kid_prefix(
        r,
        m.get("kid_prefix"),
        &join(path, "kid_prefix"),
        name,
        environment,
    );
    let kubernetes_secret = match m.get("kubernetes_secret") {
        None => Some(None),
        Some(v) => secret_ref(r, v, &join(path, "kubernetes_secret")).map(Some),
    };
    let background = r
        .boolean(m.get("background"), &join(path, "background"))
        .unwrap_or(false);
    let background_interval = r
        .positive_u64(
            m.get("background_interval_seconds"),
            &join(path, "background_interval_seconds"),
        )
        .unwrap_or(6 * 3600);
    Some(Renew {
        kubernetes_secret: kubernetes_secret?,
        background,
        background_interval: Duration::from_secs(background_interval),
        bits: bits?,
        key_lifetime: Duration::from_secs(lifetime * DAY),
        rotate_after: Duration::from_secs(rotate_after * DAY),
        renew_before: Duration::from_secs(renew_before * DAY),
        activate_after: Duration::from_secs(activate_after),
        overlap: Duration::from_secs(overlap),
        kid_prefix: kid_prefix?,
    })
}

fn secret_ref(r: &mut Reader, v: &Value, path: &str) -> Option<SecretRef> {
    let m = r.mapping(v, path, &super::schema::SECRET.keys())?;
    let namespace = r.required_string(m.get("namespace"), &join(path, "namespace"));
    let name = r.required_string(m.get("name"), &join(path, "name"));
    let key = r
        .string(m.get("key"), &join(path, "key"))
        .unwrap_or_else(|| "keyset.json".into());
    let server = r.string(m.get("api_server"), &join(path, "api_server"));
    if let Some(s) = &server {
        let uri = super::values::http_url(r, s, &join(path, "api_server"))?;
        if uri.scheme_str() == Some("http") && !super::is_loopback(&uri) {
            r.issue(
                &join(path, "api_server"),
                format!("`{s}` is plain http:// to another machine: the API server is reached over https://"),
            );
        }
    }
    let token_file = r
        .string(m.get("token_file"), &join(path, "token_file"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT).join("token"));
    // The API server is trusted by this CA alone: the service account's, unless one is given.
    let ca_file = Some(
        r.string(m.get("ca_file"), &join(path, "ca_file"))
            .map_or_else(|| Path::new(SERVICE_ACCOUNT).join("ca.crt"), PathBuf::from),
    );
    Some(SecretRef {
        namespace: namespace?,
        name: name?,
        key,
        api: KubeAccess {
            server,
            token_file,
            ca_file,
        },
    })
}
