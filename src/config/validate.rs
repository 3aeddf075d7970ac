//! Turns the YAML text into a [`Config`], field by field, with every problem located by its YAML path.

use super::reader::{index, join, EnvLookup, Issue, Reader};
use super::{Client, Config, Environment, Maskinporten, RouteConfig};
use crate::keys::{self, KeySource};
use crate::secret::Secret;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOP: &[&str] = &[
    "listen",
    "admin_listen",
    "maskinporten",
    "clients",
    "routes",
];
const MASKINPORTEN: &[&str] = &["environment", "issuer", "token_endpoint", "timeout_seconds"];
const CLIENT: &[&str] = &["client_id", "key"];
const KEY: &[&str] = &["pem", "kid", "jwk", "jwk_base64", "pkcs12", "password"];
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
];

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

pub fn validate(text: &str, base: &Path, env: EnvLookup<'_>) -> Result<Config, Vec<Issue>> {
    let root: Value = match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Issue {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }])
        }
    };
    let mut r = Reader::new(env);
    if root.is_null() {
        r.issue(
            "",
            "the file is empty: it needs at least listen, maskinporten, clients and routes",
        );
        return Err(r.issues);
    }
    let Some(top) = r.mapping(&root, "", TOP) else {
        return Err(r.issues);
    };

    let listen = socket_addr(&mut r, top.get("listen"), "listen", true);
    let admin_listen = socket_addr(&mut r, top.get("admin_listen"), "admin_listen", false);
    let maskinporten = maskinporten(&mut r, top.get("maskinporten"));
    let clients = clients(&mut r, top.get("clients"), base);
    // Routes are checked against every declared client, loaded or not, so a bad key is reported
    // once, at the key, and not again at each route that uses the client.
    let declared: Vec<&str> = match top.get("clients") {
        Some(Value::Object(map)) => map.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let routes = routes(&mut r, top.get("routes"), &declared);

    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b && a.port() != 0 {
            r.issue(
                "admin_listen",
                format!("is the same address as listen ({a}): pick another port"),
            );
        }
    }

    match (listen, maskinporten) {
        (Some(listen), Some(maskinporten)) if r.issues.is_empty() => Ok(Config {
            listen,
            admin_listen,
            maskinporten,
            clients,
            routes,
        }),
        _ => Err(r.issues),
    }
}

/// YAML 1.2 booleans only: `no`, `on`, `yes` stay strings (the "Norway problem" matters here).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

fn socket_addr(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    required: bool,
) -> Option<SocketAddr> {
    let s = if required {
        r.required_string(v, path)?
    } else {
        r.string(v, path)?
    };
    match s.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            r.issue(
                path,
                format!(
                    "`{s}` is not an IP address and port: write it as 127.0.0.1:8080 or [::1]:8080"
                ),
            );
            None
        }
    }
}

fn maskinporten(r: &mut Reader, v: Option<&Value>) -> Option<Maskinporten> {
    let path = "maskinporten";
    let Some(v) = v else {
        r.issue(path, "is required: set environment to prod, test or custom");
        return None;
    };
    let m = r.mapping(v, path, MASKINPORTEN)?;
    let env_path = join(path, "environment");
    let environment = match r.required_string(m.get("environment"), &env_path)?.as_str() {
        "prod" => Environment::Prod,
        "test" => Environment::Test,
        "custom" => Environment::Custom,
        other => {
            r.issue(
                &env_path,
                format!("unknown environment `{other}`: use prod, test or custom"),
            );
            return None;
        }
    };
    let issuer_path = join(path, "issuer");
    let endpoint_path = join(path, "token_endpoint");
    let timeout = r
        .positive_u64(m.get("timeout_seconds"), &join(path, "timeout_seconds"))
        .unwrap_or(10);
    let (issuer, token_endpoint) = match environment {
        Environment::Prod | Environment::Test => {
            for (key, p) in [("issuer", &issuer_path), ("token_endpoint", &endpoint_path)] {
                if m.contains_key(key) {
                    r.issue(
                        p,
                        format!(
                            "is fixed by environment {}: use environment: custom to set your own",
                            environment.as_str()
                        ),
                    );
                }
            }
            let host = if environment == Environment::Prod {
                "maskinporten.no"
            } else {
                "test.maskinporten.no"
            };
            (format!("https://{host}/"), format!("https://{host}/token"))
        }
        Environment::Custom => {
            let issuer = r.required_string(m.get("issuer"), &issuer_path)?;
            http_url(r, &issuer, &issuer_path)?;
            let endpoint = match r.string(m.get("token_endpoint"), &endpoint_path) {
                Some(e) => e,
                None if issuer.ends_with('/') => format!("{issuer}token"),
                None => format!("{issuer}/token"),
            };
            http_url(r, &endpoint, &endpoint_path)?;
            (issuer, endpoint)
        }
    };
    Some(Maskinporten {
        environment,
        issuer,
        token_endpoint,
        timeout: Duration::from_secs(timeout),
    })
}

fn http_url(r: &mut Reader, s: &str, path: &str) -> Option<Uri> {
    match s.parse::<Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Some(uri)
        }
        _ => {
            r.issue(path, format!("`{s}` is not an http:// or https:// URL"));
            None
        }
    }
}

fn clients(r: &mut Reader, v: Option<&Value>, base: &Path) -> Vec<Client> {
    let Some(v) = v else {
        r.issue(
            "clients",
            "is required: name at least one Maskinporten client with its client_id and key",
        );
        return Vec::new();
    };
    let Value::Object(map) = v else {
        r.issue("clients", "expected a mapping of client names to clients");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, c) in map {
        let path = join("clients", name);
        let Some(c) = r.mapping(c, &path, CLIENT) else {
            continue;
        };
        let client_id = r.required_string(c.get("client_id"), &join(&path, "client_id"));
        let key_path = join(&path, "key");
        let key = match c.get("key") {
            None => {
                r.issue(
                    &key_path,
                    "is required: one of pem (+ kid), jwk or jwk_base64",
                );
                None
            }
            Some(k) => key(r, k, &key_path, base),
        };
        if let (Some(client_id), Some(key)) = (client_id, key) {
            out.push(Client {
                name: name.clone(),
                client_id,
                key: Arc::new(key),
            });
        }
    }
    if map.is_empty() {
        r.issue("clients", "is empty: name at least one Maskinporten client");
    }
    out
}

fn key(r: &mut Reader, v: &Value, path: &str, base: &Path) -> Option<keys::SigningKey> {
    let k = r.mapping(v, path, KEY)?;
    let forms: Vec<&str> = ["pem", "jwk", "jwk_base64", "pkcs12"]
        .into_iter()
        .filter(|f| k.contains_key(*f))
        .collect();
    if forms.len() != 1 {
        let found = if forms.is_empty() {
            "none".to_string()
        } else {
            forms.join(" and ")
        };
        r.issue(
            path,
            format!("needs exactly one key form (pem + kid, jwk, jwk_base64), found {found}"),
        );
        return None;
    }
    let form = forms[0];
    let form_path = join(path, form);
    let kid_path = join(path, "kid");
    let kid = r.string(k.get("kid"), &kid_path);
    if form != "pkcs12" && k.contains_key("password") {
        r.issue(&join(path, "password"), "only goes with pkcs12");
    }
    let source = match form {
        "pem" => {
            let Some(kid) = kid else {
                r.issue(&kid_path, "is required with pem: the key id registered for this key in Samarbeidsportalen");
                return None;
            };
            if !kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                r.issue(&kid_path, "may hold only letters, digits, `.`, `_` and `-`");
                return None;
            }
            KeySource::Pem {
                path: base.join(r.required_string(k.get("pem"), &form_path)?),
                kid,
            }
        }
        "jwk" | "jwk_base64" if kid.is_some() => {
            r.issue(
                &kid_path,
                format!("does not go with {form}: the kid comes from the JWK itself"),
            );
            return None;
        }
        "jwk" => KeySource::Jwk {
            path: base.join(r.required_string(k.get("jwk"), &form_path)?),
        },
        "jwk_base64" => KeySource::JwkBase64 {
            value: Secret::new(r.required_string(k.get("jwk_base64"), &form_path)?),
        },
        _ => {
            r.issue(&form_path, "virksomhetssertifikat (PKCS#12) keys are not supported by this version: register an RSA key (pem + kid, jwk or jwk_base64) for the client");
            return None;
        }
    };
    match keys::load(&source) {
        Ok(key) => Some(key),
        Err(e) => {
            r.issue(&form_path, e.to_string());
            None
        }
    }
}

fn routes(r: &mut Reader, v: Option<&Value>, clients: &[&str]) -> Vec<RouteConfig> {
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
        let Some(route) = route(r, item, &path, clients) else {
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

fn route(r: &mut Reader, v: &Value, path: &str, clients: &[&str]) -> Option<RouteConfig> {
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
    let consumer_org = r
        .string(m.get("consumer_org"), &p("consumer_org"))
        .and_then(|org| {
            if is_org_number(&org) {
                Some(org)
            } else {
                r.issue(
                    &p("consumer_org"),
                    format!(
                        "`{org}` is not an organisation number: 9 digits with a valid check digit"
                    ),
                );
                None
            }
        });
    let resource = resource(r, m.get("resource"), &p("resource"));
    let authorization_details = authorization_details(
        r,
        m.get("authorization_details"),
        &p("authorization_details"),
    );
    let headers = headers(r, m.get("headers"), &p("headers"));
    let timeout = r
        .positive_u64(m.get("timeout_seconds"), &p("timeout_seconds"))
        .unwrap_or(30);
    Some(RouteConfig {
        name: name?,
        prefix: prefix?,
        upstream: upstream?,
        client: client?,
        scopes: scopes?,
        consumer_org,
        resource,
        authorization_details,
        headers,
        timeout: Duration::from_secs(timeout),
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
    let check = |r: &mut Reader, s: &str, p: &str| {
        if http_url(r, s, p).is_none() {
            return false;
        }
        true
    };
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
        let Some(text) = r.required_string(Some(value), &p) else {
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

#[cfg(test)]
mod yaml_tests {
    use serde_json::{json, Value};

    #[test]
    fn yaml_1_2_keeps_norway_a_string() {
        let text = "country: NO\nanswer: no\nflag: true\nport: 8080\n";
        let v: Value = serde_saphyr::from_str_with_options(text, super::yaml_options()).unwrap();
        assert_eq!(
            v,
            json!({"country": "NO", "answer": "no", "flag": true, "port": 8080})
        );
    }
}
