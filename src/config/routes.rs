//! The `routes` list: each route's fields, checked with their YAML paths.

use super::egress::{check_plain_http, egress};
use super::inbound::{allow_list, api_keys};
use super::reader::{index, join, Reader};
use super::validate::{ca_file, http_url};
use super::{AltinnExchange, Egress, Environment, RouteConfig, SystemUser};
use crate::secret::Secret;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

const ROUTE: &[&str] = &[
    "name",
    "prefix",
    "upstream",
    "client",
    "scopes",
    "consumer_org",
    "resource",
    "authorization_details",
    "headers",
    "timeout_seconds",
    "ca_file",
    "consumer_orgs",
    "consumer_org_header",
    "systemuser_org",
    "externalRef",
    "systemuser_orgs",
    "systemuser_org_header",
    "altinn_exchange",
    "retry_on_401",
    "retry_body_max_bytes",
    "allow",
    "api_keys",
    "api_key_header",
    "max_body_bytes",
    "connect_timeout_seconds",
    "idle_timeout_seconds",
    "proxy",
    "insecure_http",
    "upstream_http2",
];
const SYSTEMUSER: &[&str] = &["org", "externalRef"];
/// A secret value read from a file: `{value_file: path}`.
const VALUE_FILE: &[&str] = &["value_file"];

/// Altinn's token exchange, by environment (maskinporten.md section 6).
const ALTINN_EXCHANGE_PATH: &str = "authentication/api/v1/exchange/maskinporten";
const ALTINN_TT02: &str = "https://platform.tt02.altinn.no/";
const ALTINN_PROD: &str = "https://platform.altinn.no/";
/// A request body up to this size is kept so the request can be sent again after an upstream 401.
const DEFAULT_RETRY_BODY_MAX_BYTES: u64 = 64 * 1024;

/// Headers portvakt owns on the way upstream; a route may not set them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// What routes are checked against: the declared clients (with the organisation of those that
/// sign with a virksomhetssertifikat), the Maskinporten environment and the config file's folder.
pub(super) struct Context<'c> {
    pub clients: &'c [&'c str],
    pub client_orgs: HashMap<String, String>,
    pub environment: Option<Environment>,
    /// The top-level `egress_proxy`, for routes without their own `proxy`.
    pub egress_proxy: &'c Egress,
    pub base: &'c Path,
}

pub(super) fn routes(r: &mut Reader, v: Option<&Value>, cx: &Context) -> Vec<RouteConfig> {
    let Some(v) = v else {
        r.issue(
            "routes",
            "is required: at least one route with name, prefix, upstream, client and scopes",
        );
        return Vec::new();
    };
    let Value::Array(items) = v else {
        r.issue("routes", "expected a list of routes");
        return Vec::new();
    };
    if items.is_empty() {
        r.issue("routes", "is empty: add at least one route");
    }
    let mut out = Vec::new();
    let (mut names, mut prefixes) = (HashSet::new(), HashSet::new());
    for (i, item) in items.iter().enumerate() {
        let path = index("routes", i);
        let Some(route) = route(r, item, &path, cx) else {
            continue;
        };
        if !names.insert(route.name.clone()) {
            r.issue(
                &join(&path, "name"),
                format!(
                    "`{}` is used by an earlier route: names must be unique",
                    route.name
                ),
            );
        }
        if !prefixes.insert(route.prefix.clone()) {
            r.issue(
                &join(&path, "prefix"),
                format!(
                    "`{}` is used by an earlier route: prefixes must be unique",
                    route.prefix
                ),
            );
        }
        out.push(route);
    }
    out
}

fn route(r: &mut Reader, v: &Value, path: &str, cx: &Context) -> Option<RouteConfig> {
    let (clients, base) = (cx.clients, cx.base);
    let m = r.mapping(v, path, ROUTE)?;
    let p = |k: &str| join(path, k);
    let name = r.required_string(m.get("name"), &p("name"));
    let prefix = r
        .required_string(m.get("prefix"), &p("prefix"))
        .and_then(|s| prefix(r, &s, &p("prefix")));
    let upstream = r
        .required_string(m.get("upstream"), &p("upstream"))
        .and_then(|s| upstream(r, &s, &p("upstream")));
    let client = r
        .required_string(m.get("client"), &p("client"))
        .and_then(|c| {
            if clients.contains(&c.as_str()) {
                Some(c)
            } else {
                let known = if clients.is_empty() {
                    "none".to_string()
                } else {
                    clients.join(", ")
                };
                r.issue(
                    &p("client"),
                    format!("unknown client \"{c}\" (known: {known})"),
                );
                None
            }
        });
    let scopes = scopes(r, m.get("scopes"), &p("scopes"));
    let own_org = client.as_deref().and_then(|c| cx.client_orgs.get(c));
    let consumer_org = r
        .string(m.get("consumer_org"), &p("consumer_org"))
        .and_then(|org| consumer(r, org, &p("consumer_org"), own_org));
    let consumer_orgs: Vec<String> = r
        .string_list(m.get("consumer_orgs"), &p("consumer_orgs"))
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, org)| consumer(r, org, &index(&p("consumer_orgs"), i), own_org))
        .collect();
    let systemuser = m
        .get("systemuser_org")
        .and_then(|v| systemuser(r, v, &p("systemuser_org")))
        .map(|mut user| {
            user.external_ref = r.string(m.get("externalRef"), &p("externalRef"));
            user
        });
    if m.contains_key("externalRef") && !m.contains_key("systemuser_org") {
        r.issue(
            &p("externalRef"),
            "goes with systemuser_org: it names the system user's external reference",
        );
    }
    let systemusers = systemusers(r, m.get("systemuser_orgs"), &p("systemuser_orgs"));
    if !consumer_orgs.is_empty() && !systemusers.is_empty() {
        r.issue(
            path,
            "has both consumer_orgs and systemuser_orgs: a route picks one kind of party per call; make two routes",
        );
    }
    let consumer_org_header = selector_header(
        r,
        m.get("consumer_org_header"),
        &p("consumer_org_header"),
        "portvakt-consumer-org",
    );
    let systemuser_org_header = selector_header(
        r,
        m.get("systemuser_org_header"),
        &p("systemuser_org_header"),
        "portvakt-systemuser-org",
    );
    let altinn_exchange = r
        .string(m.get("altinn_exchange"), &p("altinn_exchange"))
        .and_then(|s| altinn_exchange(r, &s, &p("altinn_exchange"), cx.environment));
    let retry_on_401 = r
        .boolean(m.get("retry_on_401"), &p("retry_on_401"))
        .unwrap_or(true);
    let upstream_http2 = r
        .boolean(m.get("upstream_http2"), &p("upstream_http2"))
        .unwrap_or(true);
    let retry_body_max_bytes = match m.get("retry_body_max_bytes") {
        Some(Value::Number(n)) if n.as_u64() == Some(0) => 0,
        v => r
            .positive_u64(v, &p("retry_body_max_bytes"))
            .unwrap_or(DEFAULT_RETRY_BODY_MAX_BYTES),
    };
    let resource = resource(r, m.get("resource"), &p("resource"));
    let authorization_details = authorization_details(
        r,
        m.get("authorization_details"),
        &p("authorization_details"),
    );
    let headers = headers(r, m.get("headers"), &p("headers"), base);
    if systemuser.is_some() || !systemusers.is_empty() {
        if let Some(i) = authorization_details.iter().position(is_systemuser_detail) {
            r.issue(
                &index(&p("authorization_details"), i),
                "is a urn:altinn:systemuser entry, and systemuser_org or systemuser_orgs builds one too: keep one of them",
            );
        }
    }
    for (name, _) in &headers {
        for (selector, field) in [
            (&consumer_org_header, "consumer_org_header"),
            (&systemuser_org_header, "systemuser_org_header"),
        ] {
            if name == selector {
                r.issue(
                    &join(&p("headers"), name.as_str()),
                    format!("is the route's {field}, which portvakt removes before forwarding"),
                );
            }
        }
    }
    let ca_file = r
        .string(m.get("ca_file"), &p("ca_file"))
        .and_then(|f| ca_file(r, &base.join(f), &p("ca_file")));
    let timeout = r
        .positive_u64(m.get("timeout_seconds"), &p("timeout_seconds"))
        .unwrap_or(30);
    let insecure = r
        .boolean(m.get("insecure_http"), &p("insecure_http"))
        .unwrap_or(false);
    if let Some(u) = &upstream {
        check_plain_http(r, u, &p("upstream"), insecure, "insecure_http");
    }
    if let Some(a) = &altinn_exchange {
        if let Ok(u) = a.url.parse::<Uri>() {
            check_plain_http(r, &u, &p("altinn_exchange"), insecure, "insecure_http");
        }
    }
    let allow = allow_list(r, m.get("allow"), &p("allow"));
    let api_keys = api_keys(r, m.get("api_keys"), &p("api_keys"), base);
    let api_key_header = selector_header(
        r,
        m.get("api_key_header"),
        &p("api_key_header"),
        "portvakt-api-key",
    );
    if m.contains_key("api_key_header") && api_keys.is_empty() {
        r.issue(
            &p("api_key_header"),
            "goes with api_keys: list the keys callers must send",
        );
    }
    for (name, _) in &headers {
        if *name == api_key_header && !api_keys.is_empty() {
            r.issue(
                &join(&p("headers"), name.as_str()),
                "is the route's api_key_header, which portvakt removes before forwarding",
            );
        }
    }
    if !api_keys.is_empty()
        && (api_key_header == consumer_org_header || api_key_header == systemuser_org_header)
    {
        r.issue(
            &p("api_key_header"),
            "is also a party header: pick another name",
        );
    }
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
        egress(r, m.get("proxy"), &p("proxy"), base).unwrap_or_else(|| cx.egress_proxy.clone());
    Some(RouteConfig {
        name: name?,
        prefix: prefix?,
        upstream: upstream?,
        client: client?,
        scopes: scopes?,
        consumer_org,
        consumer_orgs,
        consumer_org_header,
        systemuser,
        systemusers,
        systemuser_org_header,
        resource,
        authorization_details,
        headers,
        timeout: Duration::from_secs(timeout),
        ca_file,
        altinn_exchange,
        retry_on_401,
        retry_body_max_bytes,
        allow,
        api_keys,
        api_key_header,
        max_body_bytes,
        connect_timeout: Duration::from_secs(connect_timeout),
        idle_timeout: Duration::from_secs(idle_timeout),
        proxy,
        upstream_http2,
    })
}

/// A consumer organisation for delegation: a valid org number that is not the client's own.
fn consumer(r: &mut Reader, org: String, path: &str, own_org: Option<&String>) -> Option<String> {
    if !is_org_number(&org) {
        r.issue(
            path,
            format!("`{org}` is not an organisation number: 9 digits with a valid check digit"),
        );
        return None;
    }
    if own_org == Some(&org) {
        r.issue(
            path,
            format!("`{org}` is the client's own organisation (from its virksomhetssertifikat): delegation is for acting on behalf of another organisation; leave it out"),
        );
        return None;
    }
    Some(org)
}

/// An org number as written for Altinn: bare, or with the ISO 6523 `0192:` prefix.
fn systemuser_org(r: &mut Reader, raw: &str, path: &str) -> Option<String> {
    let org = raw.strip_prefix("0192:").unwrap_or(raw);
    if is_org_number(org) {
        Some(org.to_string())
    } else {
        r.issue(
            path,
            format!("`{raw}` is not an organisation number: 9 digits with a valid check digit (the 0192: prefix is optional)"),
        );
        None
    }
}

/// `systemuser_orgs` entries: an org number, or `{org, externalRef}`.
fn systemuser(r: &mut Reader, v: &Value, path: &str) -> Option<SystemUser> {
    match v {
        Value::Object(_) => {
            let m = r.mapping(v, path, SYSTEMUSER)?;
            let org = r.required_string(m.get("org"), &join(path, "org"))?;
            Some(SystemUser {
                org: systemuser_org(r, &org, &join(path, "org"))?,
                external_ref: r.string(m.get("externalRef"), &join(path, "externalRef")),
            })
        }
        _ => {
            let org = r.required_string(Some(v), path)?;
            Some(SystemUser {
                org: systemuser_org(r, &org, path)?,
                external_ref: None,
            })
        }
    }
}

fn systemusers(r: &mut Reader, v: Option<&Value>, path: &str) -> Vec<SystemUser> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let users: Vec<SystemUser> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| systemuser(r, item, &index(path, i)))
                .collect();
            if items.is_empty() {
                r.issue(path, "is empty: list the organisations whose system users this route may act as, or leave it out");
            }
            users
        }
        Some(_) => {
            r.issue(
                path,
                "expected a list of organisation numbers (or {org, externalRef} mappings)",
            );
            Vec::new()
        }
    }
}

fn is_systemuser_detail(detail: &Value) -> bool {
    detail.get("type").and_then(Value::as_str) == Some("urn:altinn:systemuser")
}

/// The inbound header a caller picks a party with; removed before forwarding.
fn selector_header(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    default: &'static str,
) -> HeaderName {
    let fallback = HeaderName::from_static(default);
    let Some(name) = r.string(v, path) else {
        return fallback;
    };
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
            r.issue(
                path,
                format!("`{name}` is a header portvakt manages itself: pick another name"),
            );
            fallback
        }
        Ok(h) => h,
        Err(_) => {
            r.issue(path, format!("`{name}` is not a valid HTTP header name"));
            fallback
        }
    }
}

/// `tt02`, `prod`, or the URL of an exchange endpoint (its origin alone gets Altinn's path).
/// Altinn accepts only tokens from the matching Maskinporten: TT02 from test, prod from prod.
fn altinn_exchange(
    r: &mut Reader,
    s: &str,
    path: &str,
    environment: Option<Environment>,
) -> Option<AltinnExchange> {
    let (url, needs) = match s {
        "tt02" => (
            format!("{ALTINN_TT02}{ALTINN_EXCHANGE_PATH}"),
            Some(Environment::Test),
        ),
        "prod" => (
            format!("{ALTINN_PROD}{ALTINN_EXCHANGE_PATH}"),
            Some(Environment::Prod),
        ),
        url => {
            let uri = http_url(r, url, path)?;
            let full = if uri.path() == "/" && uri.query().is_none() {
                format!("{}/{ALTINN_EXCHANGE_PATH}", url.trim_end_matches('/'))
            } else {
                url.to_string()
            };
            (full, None)
        }
    };
    if let (Some(needs), Some(have)) = (needs, environment) {
        if needs != have {
            r.issue(
                path,
                format!(
                    "Altinn {s} accepts only tokens from Maskinporten {}, but maskinporten.environment is {}",
                    needs.as_str(),
                    have.as_str()
                ),
            );
            return None;
        }
    }
    Some(AltinnExchange {
        name: s.to_string(),
        url,
    })
}

fn prefix(r: &mut Reader, s: &str, path: &str) -> Option<String> {
    let bad = if !s.starts_with('/') {
        Some("must start with `/`")
    } else if s.contains(['?', '#', '%', '\\']) || s.chars().any(char::is_whitespace) {
        Some("must be a plain path: no query, fragment, percent-escapes, backslashes or spaces")
    } else if s.contains("//") || s.split('/').any(|seg| seg == "." || seg == "..") {
        Some("must not contain empty, `.` or `..` segments")
    } else {
        None
    };
    if let Some(why) = bad {
        r.issue(path, format!("`{s}` {why}"));
        return None;
    }
    let trimmed = s.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

fn upstream(r: &mut Reader, s: &str, path: &str) -> Option<Uri> {
    let uri = http_url(r, s, path)?;
    if uri.query().is_some() {
        r.issue(
            path,
            format!("`{s}` must not have a query string: the caller's query is passed on"),
        );
        return None;
    }
    Some(uri)
}

fn scopes(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<Vec<String>> {
    let Some(list) = r.string_list(v, path) else {
        if v.is_none() {
            r.issue(path, "is required: the Maskinporten scopes this route's token needs, e.g. [nav:forsikring/samtykke]");
        }
        return None;
    };
    if list.is_empty() {
        r.issue(path, "is empty: name at least one scope");
        return None;
    }
    let mut ok = true;
    for (i, s) in list.iter().enumerate() {
        if s.contains(char::is_whitespace) {
            r.issue(
                &index(path, i),
                format!("`{s}` has a space: list each scope as its own item"),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

fn resource(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<Value> {
    let check = |r: &mut Reader, s: &str, p: &str| http_url(r, s, p).is_some();
    match v? {
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                if let Some(s) = r.required_string(Some(item), &p) {
                    if check(r, &s, &p) {
                        out.push(Value::String(s));
                    }
                }
            }
            if items.is_empty() {
                r.issue(
                    path,
                    "is an empty list: leave it out or name the API's audience URI",
                );
            }
            Some(Value::Array(out))
        }
        Value::Null => None,
        single => {
            let s = r.string(Some(single), path)?;
            check(r, &s, path).then_some(Value::String(s))
        }
    }
}

fn authorization_details(r: &mut Reader, v: Option<&Value>, path: &str) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index(path, i);
                match item {
                    Value::Object(o) if o.get("type").is_some_and(Value::is_string) => {
                        Some(r.expand_tree(item, &p))
                    }
                    _ => {
                        r.issue(
                            &p,
                            "must be a mapping with a string `type` (e.g. urn:altinn:systemuser)",
                        );
                        None
                    }
                }
            })
            .collect(),
        Some(_) => {
            r.issue(
                path,
                "expected a list of RFC 9396 authorization_details objects",
            );
            Vec::new()
        }
    }
}

fn headers(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    base: &Path,
) -> Vec<(HeaderName, Secret<HeaderValue>)> {
    let Some(v) = v else { return Vec::new() };
    let Value::Object(map) = v else {
        r.issue(path, "expected a mapping of header names to values");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let p = join(path, name);
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            r.issue(&p, "is not a valid HTTP header name");
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            r.issue(&p, "is set by portvakt itself and cannot be configured");
            continue;
        }
        // The value may be a password (IntegrasjonPassord): problems name the header, never the value.
        let text = match value {
            Value::Object(_) => value_file(r, value, &p, base),
            _ => r.required_string(Some(value), &p),
        };
        let Some(text) = text else {
            continue;
        };
        match HeaderValue::from_str(&text) {
            Ok(mut hv) => {
                hv.set_sensitive(true);
                out.push((header, Secret::new(hv)));
            }
            Err(_) => r.issue(
                &p,
                "the value has characters not allowed in an HTTP header (such as a line break)",
            ),
        }
    }
    out
}

/// `{value_file: path}`: the value is the file's content, without its trailing newline (as
/// Kubernetes secrets and `echo` write it).
pub(super) fn value_file(r: &mut Reader, value: &Value, path: &str, base: &Path) -> Option<String> {
    let m = r.mapping(value, path, VALUE_FILE)?;
    let file_path = join(path, "value_file");
    let file = base.join(r.required_string(m.get("value_file"), &file_path)?);
    secret_file(r, &file, &file_path)
}

/// A secret kept in a file: its content without the trailing newline (as Kubernetes secrets and
/// `echo` write it). Problems name the file, never the content.
pub(super) fn secret_file(r: &mut Reader, file: &Path, path: &str) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                r.issue(path, format!("{} is empty", file.display()));
                return None;
            }
            Some(text)
        }
        Err(e) => {
            r.issue(path, format!("cannot read {}: {e}", file.display()));
            None
        }
    }
}

/// Norwegian organisation number: 9 digits, the last a mod-11 check digit with weights 3 2 7 6 5 4 3 2.
pub fn is_org_number(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 9 || s.len() != 9 {
        return false;
    }
    let sum: u32 = digits[..8]
        .iter()
        .zip([3, 2, 7, 6, 5, 4, 3, 2])
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => digits[8] == 0,
        10 => false,
        check => digits[8] == check,
    }
}

#[cfg(test)]
mod tests {
    use super::is_org_number;

    #[test]
    fn org_numbers_are_checked_with_mod_11() {
        for good in ["910753614", "974760673", "889640782"] {
            assert!(is_org_number(good), "{good}");
        }
        for bad in ["910753615", "91075361", "9107536140", "91075361a", ""] {
            assert!(!is_org_number(bad), "{bad}");
        }
    }
}
