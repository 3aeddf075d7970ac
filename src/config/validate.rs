//! Turns the YAML text into a [`Config`], field by field, with every problem located by its YAML path.

use super::egress::check_plain_http;
use super::reader::{join, EnvLookup, Issue, Reader};
use super::renew::Renewal;
use super::routes::{routes, Context};
use super::values::{ca_file, http_url};
use super::{Client, Config, Environment, Maskinporten};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `renewing` is for `portvakt rotate` and `portvakt keys`: a client whose keys portvakt renews is
/// read without loading its keyset, which may have no active key yet.
pub fn validate(
    text: &str,
    base: &Path,
    env: EnvLookup<'_>,
    renewing: bool,
) -> Result<Config, Vec<Issue>> {
    let root = parse(text)?;
    let mut r = Reader::new(env);
    let Some(top) = top(&mut r, &root) else {
        return Err(r.issues);
    };
    let listen = socket_addr(&mut r, top.get("listen"), "listen", true);
    let admin_listen = socket_addr(&mut r, top.get("admin_listen"), "admin_listen", false);
    let inbound = super::inbound::inbound(&mut r, top.get("inbound"), listen, base);
    let egress_proxy = super::egress::egress(&mut r, top.get("egress_proxy"), "egress_proxy", base)
        .unwrap_or_default();
    let maskinporten = maskinporten(&mut r, top.get("maskinporten"), base, &egress_proxy);
    let environment = maskinporten.as_ref().map(|m| m.environment);
    let (clients, declared, renewals) =
        clients(&mut r, top.get("clients"), base, environment, renewing);
    let selfservice = super::renew::selfservice(&mut r, top.get("selfservice"), base);
    if selfservice.is_none() && !renewals.is_empty() && top.get("selfservice").is_none() {
        r.issue(
            "selfservice",
            format!(
                "is required by clients.{}.renew: Digdir's self-service API (environment) and the administration client (client_id, key) that may register keys",
                renewals[0].client
            ),
        );
    }
    let cx = Context {
        clients: &declared,
        client_orgs: client_orgs(&clients),
        environment,
        egress_proxy: &egress_proxy,
        base,
    };
    let routes = routes(&mut r, top.get("routes"), &cx);
    let watch_interval = Duration::from_secs(
        r.positive_u64(top.get("watch_interval_seconds"), "watch_interval_seconds")
            .unwrap_or(5),
    );
    let telemetry = super::telemetry::telemetry(&mut r, top.get("telemetry"));
    let shutdown_grace = Duration::from_secs(
        r.u64_or_zero(top.get("shutdown_grace_seconds"), "shutdown_grace_seconds")
            .unwrap_or(30),
    );

    distinct_listeners(&mut r, listen, admin_listen);
    match (listen, maskinporten) {
        (Some(listen), Some(maskinporten)) if r.issues.is_empty() => Ok(Config {
            listen,
            admin_listen,
            maskinporten,
            clients,
            routes,
            watch_interval,
            inbound,
            shutdown_grace,
            telemetry,
            selfservice,
            renewals,
        }),
        _ => Err(r.issues),
    }
}

/// YAML 1.2 booleans only: `no`, `on`, `yes` stay strings (the "Norway problem" matters here).
/// The file as a YAML tree (YAML 1.2: `no` stays a string).
fn parse(text: &str) -> Result<Value, Vec<Issue>> {
    serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
        vec![Issue {
            path: String::new(),
            message: format!("not valid YAML: {e}"),
        }]
    })
}

/// The file's top-level mapping, its keys checked; an empty file says what it needs.
fn top<'v>(r: &mut Reader, root: &'v Value) -> Option<&'v serde_json::Map<String, Value>> {
    if root.is_null() {
        r.issue(
            "",
            "the file is empty: it needs at least listen, maskinporten, clients and routes",
        );
        return None;
    }
    r.mapping(root, "", &super::schema::TOP.keys())
}

/// Each client's organisation number, where its virksomhetssertifikat names one.
fn client_orgs(clients: &[Client]) -> std::collections::HashMap<String, String> {
    clients
        .iter()
        .filter_map(|c| {
            let org = c.key.certificate()?.org_number.clone()?;
            Some((c.name.clone(), org))
        })
        .collect()
}

/// The admin listener may not take the proxy's own address.
fn distinct_listeners(r: &mut Reader, listen: Option<SocketAddr>, admin: Option<SocketAddr>) {
    if let (Some(a), Some(b)) = (listen, admin) {
        if a == b && a.port() != 0 {
            r.issue(
                "admin_listen",
                format!("is the same address as listen ({a}): pick another port"),
            );
        }
    }
}

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

/// The issuer and token endpoint: fixed by environment `prod` and `test`, given (and checked)
/// with `custom`.
fn endpoints(
    r: &mut Reader,
    m: &serde_json::Map<String, Value>,
    environment: Environment,
) -> Option<(String, String)> {
    let path = "maskinporten";
    let issuer_path = join(path, "issuer");
    let endpoint_path = join(path, "token_endpoint");
    match environment {
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
            Some((format!("https://{host}/"), format!("https://{host}/token")))
        }
        Environment::Custom => {
            let issuer = r.required_string(m.get("issuer"), &issuer_path)?;
            http_url(r, &issuer, &issuer_path)?;
            let endpoint = match r.string(m.get("token_endpoint"), &endpoint_path) {
                Some(e) => e,
                None if issuer.ends_with('/') => format!("{issuer}token"),
                None => format!("{issuer}/token"),
            };
            let endpoint_uri = http_url(r, &endpoint, &endpoint_path)?;
            let insecure = r
                .boolean(m.get("insecure_http"), &join(path, "insecure_http"))
                .unwrap_or(false);
            check_plain_http(
                r,
                &endpoint_uri,
                &endpoint_path,
                insecure,
                "maskinporten.insecure_http",
            );
            Some((issuer, endpoint))
        }
    }
}

fn maskinporten(
    r: &mut Reader,
    v: Option<&Value>,
    base: &Path,
    egress_proxy: &super::Egress,
) -> Option<Maskinporten> {
    let path = "maskinporten";
    let Some(v) = v else {
        r.issue(path, "is required: set environment to prod, test or custom");
        return None;
    };
    let m = r.mapping(v, path, &super::schema::MASKINPORTEN.keys())?;
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
    let timeout = r
        .positive_u64(m.get("timeout_seconds"), &join(path, "timeout_seconds"))
        .unwrap_or(10);
    let (issuer, token_endpoint) = endpoints(r, m, environment)?;
    let ca_file = r
        .string(m.get("ca_file"), &join(path, "ca_file"))
        .and_then(|f| ca_file(r, &base.join(f), &join(path, "ca_file")));
    let connect_timeout = r
        .positive_u64(
            m.get("connect_timeout_seconds"),
            &join(path, "connect_timeout_seconds"),
        )
        .unwrap_or(5);
    let proxy = super::egress::egress(r, m.get("proxy"), &join(path, "proxy"), base)
        .unwrap_or_else(|| egress_proxy.clone());
    Some(Maskinporten {
        environment,
        issuer,
        token_endpoint,
        timeout: Duration::from_secs(timeout),
        connect_timeout: Duration::from_secs(connect_timeout),
        proxy,
        ca_file,
    })
}

/// The clients that loaded, the names of all that were declared, and those whose keys portvakt
/// renews. Routes are checked against every declared client, loaded or not, so a bad key is reported
/// once, at the key, and not again at each route that uses the client.
fn clients<'v>(
    r: &mut Reader,
    v: Option<&'v Value>,
    base: &Path,
    environment: Option<Environment>,
    renewing: bool,
) -> (Vec<Client>, Vec<&'v str>, Vec<Renewal>) {
    let Some(v) = v else {
        r.issue(
            "clients",
            "is required: name at least one Maskinporten client with its client_id and key",
        );
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let Value::Object(map) = v else {
        r.issue("clients", "expected a mapping of client names to clients");
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut renewals = Vec::new();
    for (name, c) in map {
        let path = join("clients", name);
        let Some(c) = r.mapping(c, &path, &super::schema::CLIENT.keys()) else {
            continue;
        };
        let client_id = r.required_string(c.get("client_id"), &join(&path, "client_id"));
        let key_path = join(&path, "key");
        let keyset = c
            .get("key")
            .and_then(|k| k.get("keyset"))
            .and_then(Value::as_str)
            .and_then(|f| r.expand(f, &join(&key_path, "keyset")))
            .map(|f| base.join(f));
        if let Some(v) = c.get("renew") {
            let renew_path = join(&path, "renew");
            let renew = super::renew::renew(r, v, &renew_path, name, environment);
            match (&keyset, renew, &client_id) {
                (None, _, _) => r.issue(
                    &renew_path,
                    "needs key.keyset: the file portvakt keeps the renewed keys in (e.g. keyset: /var/lib/portvakt/NAME.keyset.json)",
                ),
                (Some(keyset), Some(renew), Some(client_id)) => renewals.push(Renewal {
                    client: name.clone(),
                    client_id: client_id.clone(),
                    keyset: keyset.clone(),
                    renew,
                }),
                _ => {}
            }
            if renewing && keyset.is_some() {
                continue;
            }
        }
        let key = match c.get("key") {
            None => {
                r.issue(
                    &key_path,
                    "is required: one of pem (+ kid), jwk, jwk_base64, jwk_base64_file or pkcs12 (+ password); or pkcs11 for a key in an HSM",
                );
                None
            }
            Some(k) => super::key::key(r, k, &key_path, base),
        };
        if let (Some(client_id), Some((source, key))) = (client_id, key) {
            out.push(Client {
                name: name.clone(),
                client_id,
                key: Arc::new(key),
                source,
            });
        }
    }
    if map.is_empty() {
        r.issue("clients", "is empty: name at least one Maskinporten client");
    }
    (out, map.keys().map(String::as_str).collect(), renewals)
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
