//! How a route's calls travel: time limits, the caller's body, the 401 rule, TLS trust, the
//! outbound proxy, HTTP/2, and the caller's address sent upstream.

use super::egress::egress;
use super::inbound::body_pace;
use super::reader::{join, Reader};
use super::values::ca_file;
use super::{CaFile, CallerAddress, Egress};
use serde_json::{Map, Value};
use std::time::Duration;

/// A request body up to this size is kept so the request can be sent again after an upstream 401.
pub(super) const DEFAULT_RETRY_BODY_MAX_BYTES: u64 = 64 * 1024;

/// A route's transport settings, as they go into its `RouteConfig`.
pub(super) struct Transport {
    pub timeout: Duration,
    pub ca_file: Option<CaFile>,
    pub retry_on_401: bool,
    pub retry_body_max_bytes: u64,
    pub max_body_bytes: Option<u64>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub proxy: Egress,
    pub upstream_http2: bool,
    pub min_body_rate: Option<u64>,
    pub body_rate_grace: Option<Duration>,
    pub body_deadline: Option<Duration>,
    pub forward_caller_address: Option<CallerAddress>,
}

/// The route's transport settings, with their defaults.
pub(super) fn transport(
    r: &mut Reader,
    m: &Map<String, Value>,
    path: &str,
    base: &std::path::Path,
    egress_proxy: &Egress,
) -> Transport {
    let p = |k: &str| join(path, k);
    let retry_on_401 = r
        .boolean(m.get("retry_on_401"), &p("retry_on_401"))
        .unwrap_or(true);
    let forward_caller_address = r
        .string(
            m.get("forward_caller_address"),
            &p("forward_caller_address"),
        )
        .and_then(|s| caller_address(r, &s, &p("forward_caller_address")));
    let upstream_http2 = r
        .boolean(m.get("upstream_http2"), &p("upstream_http2"))
        .unwrap_or(true);
    let retry_body_max_bytes = match m.get("retry_body_max_bytes") {
        Some(Value::Number(n)) if n.as_u64() == Some(0) => 0,
        v => r
            .positive_u64(v, &p("retry_body_max_bytes"))
            .unwrap_or(DEFAULT_RETRY_BODY_MAX_BYTES),
    };
    let ca_file = r
        .string(m.get("ca_file"), &p("ca_file"))
        .and_then(|f| ca_file(r, &base.join(f), &p("ca_file")));
    let timeout = r
        .positive_u64(m.get("timeout_seconds"), &p("timeout_seconds"))
        .unwrap_or(30);
    let max_body_bytes = r.positive_u64(m.get("max_body_bytes"), &p("max_body_bytes"));
    let connect_timeout = r
        .positive_u64(
            m.get("connect_timeout_seconds"),
            &p("connect_timeout_seconds"),
        )
        .unwrap_or(10);
    let idle_timeout = r
        .positive_u64(m.get("idle_timeout_seconds"), &p("idle_timeout_seconds"))
        .unwrap_or(60);
    let proxy =
        egress(r, m.get("proxy"), &p("proxy"), base).unwrap_or_else(|| egress_proxy.clone());
    let (min_body_rate, body_rate_grace, body_deadline) = body_pace(r, m, path);
    Transport {
        timeout: Duration::from_secs(timeout),
        ca_file,
        retry_on_401,
        retry_body_max_bytes,
        max_body_bytes,
        connect_timeout: Duration::from_secs(connect_timeout),
        idle_timeout: Duration::from_secs(idle_timeout),
        proxy,
        upstream_http2,
        min_body_rate,
        body_rate_grace,
        body_deadline,
        forward_caller_address,
    }
}

/// `forward_caller_address`: how the caller's address goes upstream.
fn caller_address(r: &mut Reader, s: &str, path: &str) -> Option<CallerAddress> {
    match s {
        "forwarded" => Some(CallerAddress::Forwarded),
        "x-forwarded-for" => Some(CallerAddress::XForwardedFor),
        other => {
            r.issue(
                path,
                format!("`{other}` is not a way to send the caller's address: write `forwarded` (RFC 7239) or `x-forwarded-for`, or leave it out to send none"),
            );
            None
        }
    }
}
