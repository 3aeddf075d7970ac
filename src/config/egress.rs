//! Outbound HTTP proxies (`egress_proxy`, `maskinporten.proxy`, `routes[].proxy`) and the rule that
//! tokens travel in clear only to loopback (`insecure_http`).

use super::reader::{join, Reader};
use crate::support::secret::Secret;
use http::Uri;
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// How a client reaches the internet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Egress {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from the environment, if set.
    #[default]
    Environment,
    /// Straight out, whatever the environment says (`proxy: none`).
    Direct,
    /// Through this proxy, with CONNECT.
    Proxy(ProxyServer),
}

/// An outbound HTTP proxy that tunnels with CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyServer {
    /// `http://host:port`, without credentials.
    pub url: Uri,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Hosts reached directly, in `NO_PROXY` syntax (`.nav.no,10.0.0.0/8,localhost`).
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Egress::Environment => f.write_str("from the environment (HTTPS_PROXY/NO_PROXY)"),
            Egress::Direct => f.write_str("direct"),
            Egress::Proxy(p) => write!(f, "via {}", p.url),
        }
    }
}

/// A `proxy` value: a URL, `none`, or a mapping with credentials. `None` when absent.
pub(super) fn egress(r: &mut Reader, v: Option<&Value>, path: &str, base: &Path) -> Option<Egress> {
    let v = v?;
    let (url, m) = match v {
        Value::Object(_) => {
            let m = r.mapping(v, path, &super::schema::PROXY.keys())?;
            (
                r.required_string(m.get("url"), &join(path, "url"))?,
                Some(m),
            )
        }
        Value::Null => return None,
        _ => (r.string(Some(v), path)?, None),
    };
    if url == "none" {
        if m.is_some() {
            r.issue(
                &join(path, "url"),
                "none means no proxy: write proxy: none on its own",
            );
        }
        return Some(Egress::Direct);
    }
    let url_path = if m.is_some() {
        join(path, "url")
    } else {
        path.to_string()
    };
    let uri = match url.parse::<Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => u,
        _ => {
            r.issue(
                &url_path,
                format!("`{}` is not a proxy URL: write http://proxy.example:3128 (portvakt tunnels to the proxy with CONNECT over plain HTTP), or none", redact(&url)),
            );
            return None;
        }
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        r.issue(&url_path, "has credentials in the URL: move them to username and password_file so they stay out of logs");
        return None;
    }
    let mut server = ProxyServer {
        url: uri,
        username: None,
        password: None,
        no_proxy: None,
    };
    if let Some(m) = m {
        server.username = r.string(m.get("username"), &join(path, "username"));
        server.password = match (m.get("password"), m.get("password_file")) {
            (Some(_), Some(_)) => {
                r.issue(path, "has both password and password_file: keep one");
                None
            }
            (Some(p), None) => r.string(Some(p), &join(path, "password")),
            (None, Some(f)) => {
                let at = join(path, "password_file");
                r.required_string(Some(f), &at)
                    .and_then(|f| super::headers::secret_file(r, &base.join(f), &at))
            }
            (None, None) => None,
        }
        .map(Secret::new);
        if server.password.is_some() != server.username.is_some() {
            r.issue(path, "needs both username and a password, or neither");
        }
        server.no_proxy = r.string(m.get("no_proxy"), &join(path, "no_proxy"));
    }
    Some(Egress::Proxy(server))
}

/// A URL with any `user:pass@` cut out, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Whether `uri` names this machine: tokens may go there over plain HTTP.
pub fn is_loopback(uri: &Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Refuses `http://` to another machine unless the entry says `insecure_http: true`: a bearer
/// token in clear on a network is the organisation's identity for anyone listening.
pub(super) fn check_plain_http(
    r: &mut Reader,
    uri: &Uri,
    path: &str,
    insecure: bool,
    insecure_key: &str,
) {
    if uri.scheme_str() == Some("http") && !is_loopback(uri) && !insecure {
        r.issue(
            path,
            format!(
                "`{uri}` is plain http:// to another machine, so the token would cross the network in clear: use https://, or set {insecure_key}: true if the network in between is trusted"
            ),
        );
    }
}
