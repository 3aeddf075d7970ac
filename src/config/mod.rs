//! The validated configuration: what `portvakt run` and `portvakt check` build everything from.
//! `load` reads the YAML file, checks every field and loads every key, and reports all problems at once.

mod egress;
mod headers;
mod inbound;
mod inbound_tls;
mod key;
mod reader;
mod renew;
mod route_parties;
mod route_transport;
mod routes;
pub mod schema;
mod telemetry;
mod validate;
mod values;

pub use crate::observe::telemetry::Telemetry;
pub use egress::{is_loopback, Egress, ProxyServer};
pub use inbound::{AllowList, ApiKey, BodyPace, Inbound};
pub use inbound_tls::InboundTls;
pub use reader::Issue;
pub use renew::{KubeAccess, Renew, Renewal, SecretRef, SelfService};

use crate::keys::{KeySource, SigningKey};
use crate::support::secret::Secret;
use http::{HeaderName, HeaderValue, Uri};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The checked configuration. Built only by [`load`] (or [`from_str`]), so a `Config` is always valid.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub maskinporten: Maskinporten,
    pub clients: Vec<Client>,
    pub routes: Vec<RouteConfig>,
    /// How often key, certificate and password files are checked for changes; default 5 s.
    pub watch_interval: Duration,
    /// Who may call, over what, and how much at once.
    pub inbound: Inbound,
    /// How long shutdown waits for requests under way; default 30 s.
    pub shutdown_grace: Duration,
    /// Trace export; `None` when not configured.
    pub telemetry: Option<Telemetry>,
    /// Digdir's self-service API, for key renewal; `None` when not configured.
    pub selfservice: Option<SelfService>,
    /// The clients whose keysets portvakt renews.
    pub renewals: Vec<Renewal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Prod,
    Test,
    Custom,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Prod => "prod",
            Environment::Test => "test",
            Environment::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maskinporten {
    pub environment: Environment,
    /// The grant's `aud`, exactly as Maskinporten publishes its issuer (with the trailing slash).
    pub issuer: String,
    pub token_endpoint: String,
    /// Overall time for one token request; default 10 s.
    pub timeout: Duration,
    /// Time to open a connection to the token endpoint; default 5 s.
    pub connect_timeout: Duration,
    /// How token requests (and Altinn exchanges) reach the internet.
    pub proxy: Egress,
    /// Extra CA certificates trusted for the token endpoint, besides the Mozilla roots.
    pub ca_file: Option<CaFile>,
}

/// A Maskinporten client (an integration registered in Samarbeidsportalen) and its signing key.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub client_id: String,
    /// The key as loaded at startup; [`crate::keys::watch`] reloads it from `source` when its files change.
    pub key: Arc<SigningKey>,
    pub source: KeySource,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Normalised: starts with `/`, no trailing `/` unless it is `/` itself.
    pub prefix: String,
    pub upstream: Uri,
    pub client: String,
    pub scopes: Vec<String>,
    /// The consumer organisation the token is for when the caller picks none (delegation).
    pub consumer_org: Option<String>,
    /// Consumer organisations a caller may pick per call in `consumer_org_header`.
    pub consumer_orgs: Vec<String>,
    pub consumer_org_header: HeaderName,
    /// The Altinn system user the token is for when the caller picks none.
    pub systemuser: Option<SystemUser>,
    /// System users a caller may pick per call in `systemuser_org_header`.
    pub systemusers: Vec<SystemUser>,
    pub systemuser_org_header: HeaderName,
    /// Sent as configured: a string stays a string, a list stays a list.
    pub resource: Option<serde_json::Value>,
    pub authorization_details: Vec<serde_json::Value>,
    pub headers: Vec<(HeaderName, Secret<HeaderValue>)>,
    /// How long to wait for the upstream's response headers; default 30 s.
    pub timeout: Duration,
    /// Extra CA certificates trusted for this upstream, besides the Mozilla roots.
    pub ca_file: Option<CaFile>,
    /// Exchange the Maskinporten token for an Altinn token and send that instead.
    pub altinn_exchange: Option<AltinnExchange>,
    /// Fetch a fresh token and send the request again once when the upstream answers 401.
    pub retry_on_401: bool,
    /// The largest request body kept for that second attempt; 0 keeps none.
    pub retry_body_max_bytes: u64,
    /// Caller addresses let in on this route, within `inbound.allow`; `None` adds no limit.
    pub allow: Option<AllowList>,
    /// Keys a caller must send in `api_key_header`; empty means none is asked for.
    pub api_keys: Vec<ApiKey>,
    pub api_key_header: HeaderName,
    /// The largest request body accepted; larger gets 413.
    pub max_body_bytes: Option<u64>,
    /// Time to open a connection to the upstream; default 10 s.
    pub connect_timeout: Duration,
    /// Longest pause inside a request or response body before the call is cut; default 60 s.
    pub idle_timeout: Duration,
    /// How this route's calls reach the upstream.
    pub proxy: Egress,
    /// Speak HTTP/2 to an https:// upstream that offers it by ALPN; false keeps HTTP/1.1 (the
    /// pooled client then offers only `http/1.1`).
    pub upstream_http2: bool,
    /// The route's own body pace, where it sets one (else `inbound`'s).
    pub min_body_rate: Option<u64>,
    pub body_rate_grace: Option<Duration>,
    pub body_deadline: Option<Duration>,
    /// Whether portvakt tells the upstream the caller's address, and in which header.
    pub forward_caller_address: Option<CallerAddress>,
    /// Whether the route takes an Altinn consent per call (`consent_per_call`), and the headers it
    /// comes in (`consent_id_header`, `consent_from_header`).
    pub consent: crate::consent::ConsentRule,
    /// The most consent tokens the route keeps (`consent_tokens_max`); the least recently used go.
    pub consent_tokens_max: usize,
}

/// The header in which portvakt writes the caller's address (`forward_caller_address`); the
/// caller's own address headers never travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerAddress {
    /// RFC 7239: `Forwarded: for=192.0.2.7` (an IPv6 address quoted in brackets).
    Forwarded,
    /// The de facto `X-Forwarded-For: 192.0.2.7`.
    XForwardedFor,
}

impl RouteConfig {
    /// Every consumer organisation the route may act for: its default, then its per-call list.
    pub fn allowed_consumers(&self) -> impl Iterator<Item = &str> + Clone {
        self.consumer_org
            .as_deref()
            .into_iter()
            .chain(self.consumer_orgs.iter().map(String::as_str))
    }

    /// Every system user the route may act as: its default, then its per-call list.
    pub fn allowed_systemusers(&self) -> impl Iterator<Item = &SystemUser> + Clone {
        self.systemuser.iter().chain(self.systemusers.iter())
    }

    /// Whether a caller must name a party: the route lists parties to pick from but has no default.
    pub fn needs_party(&self) -> bool {
        (!self.consumer_orgs.is_empty() && self.consumer_org.is_none())
            || (!self.systemusers.is_empty() && self.systemuser.is_none())
    }
}

/// An Altinn system user (systembruker) of an organisation, as the grant names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// 9 digits, without the `0192:` prefix.
    pub org: String,
    /// Required by Maskinporten when the system user was created with one (else MP-303).
    pub external_ref: Option<String>,
}

impl SystemUser {
    /// The `urn:altinn:systemuser` entry of the grant's `authorization_details`.
    pub fn authorization_detail(&self) -> serde_json::Value {
        let mut detail = serde_json::json!({
            "type": "urn:altinn:systemuser",
            "systemuser_org": {
                "authority": "iso6523-actorid-upis",
                "ID": format!("0192:{}", self.org),
            },
        });
        if let Some(external_ref) = &self.external_ref {
            detail["externalRef"] = serde_json::json!(external_ref);
        }
        detail
    }
}

/// Where a route exchanges its Maskinporten token for an Altinn token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltinnExchange {
    /// As configured: `tt02`, `prod` or a URL.
    pub name: String,
    /// The exchange endpoint (`GET`, Bearer the Maskinporten token).
    pub url: String,
}

/// A PEM file of CA certificates, loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaFile({}, {} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// Every problem found in one configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "{} has {n} problem{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.issues {
            write!(f, "\n  {}: {issue}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, checks and loads the configuration at `path` with the process environment for `${NAME}`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    from_str(&text, path, base, &|name| std::env::var(name).ok())
}

/// Like [`load`], for the renewer (`portvakt rotate`, `portvakt keys`): the keysets of clients with
/// `renew` are not loaded, since a keyset may have no active key yet.
pub fn load_for_renewal(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate::validate(&text, base, &|name| std::env::var(name).ok(), true).map_err(|issues| {
        ConfigError {
            file: path.to_path_buf(),
            issues,
        }
    })
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        issues: vec![Issue {
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }],
    })
}

/// Checks a configuration text. `file` names it in errors; relative key paths resolve against `base`.
pub fn from_str(
    text: &str,
    file: &Path,
    base: &Path,
    env: reader::EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    validate::validate(text, base, env, false).map_err(|issues| ConfigError {
        file: file.to_path_buf(),
        issues,
    })
}
