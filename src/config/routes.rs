//! The `routes` list: each route's fields, checked with their YAML paths.

use super::reader::{index, join, Reader};
use super::validate::{ca_file, http_url};
use super::RouteConfig;
use crate::secret::Secret;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::Value;
use std::collections::HashSet;
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

pub(super) fn routes(
    r: &mut Reader,
    v: Option<&Value>,
    clients: &[&str],
    base: &Path,
) -> Vec<RouteConfig> {
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
        let Some(route) = route(r, item, &path, clients, base) else {
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

fn route(
    r: &mut Reader,
    v: &Value,
    path: &str,
    clients: &[&str],
    base: &Path,
) -> Option<RouteConfig> {
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
    let ca_file = r
        .string(m.get("ca_file"), &p("ca_file"))
        .and_then(|f| ca_file(r, &base.join(f), &p("ca_file")));
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
        ca_file,
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
