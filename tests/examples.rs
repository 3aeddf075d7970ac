//! Every config in config/examples/ is complete: pointed at the mock Maskinporten, a mock Altinn and
//! a recording upstream instead of the real services, it starts, and every route gets a call
//! through with what its API needs. The KS Fiks example also runs as a real process, to show its
//! password and tokens never reach the logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::config::Config;
use portvakt::mock::{EchoUpstream, MockAltinn, MockClient, MockMaskinporten};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FIKS_ID: &str = "3f1c0e7a-1111-4222-8333-944455566677";

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every shipped configuration, by name: the examples, and the `portvakt.yaml` of each
/// ConfigMap in the Kubernetes manifests.
fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = yaml_files("config/examples")
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&f).unwrap())
        })
        .collect();
    for file in yaml_files("deploy/kubernetes") {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
            let name = format!("{} ConfigMap {}", file.display(), doc["metadata"]["name"]);
            out.push((
                name,
                doc["data"]["portvakt.yaml"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn secret(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name))
        .unwrap()
        .trim()
        .to_string()
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("FIKS_INTEGRASJON_ID", FIKS_ID.to_string()),
        ("ALTINN_JWK", secret("client-b.jwk.b64")),
    ]
}

/// The example with the real services swapped for the mocks and its secrets for the fixtures.
fn localise(text: &str, mock: &MockMaskinporten, altinn: &MockAltinn, upstream: &str) -> String {
    let fixture = |name: &str| fixtures().join(name).display().to_string();
    let secrets = [
        ("virksomhet.p12", fixture("pki/virksomhet-aes.p12")),
        ("virksomhet-passord", fixture("pki/password.txt")),
        ("leverandor.jwk.b64", fixture("client-b.jwk.b64")),
        (
            "fiks-integrasjonpassord",
            fixture("fiks-integrasjonpassord.txt"),
        ),
        (
            "altinn-subscription-key",
            fixture("altinn-subscription-key.txt"),
        ),
    ];
    // A renewed client's keyset, as the renewer leaves it in the mounted Secret.
    let keyset = [(
        "/run/secrets/portvakt-keyset/keyset.json",
        fixture("vendor.keyset.json"),
    )];
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let line = if trimmed.starts_with("listen:") || trimmed.starts_with("admin_listen:") {
            let key = trimmed.split(':').next().unwrap();
            format!("{indent}{key}: 127.0.0.1:0")
        } else if trimmed.starts_with("allow: [") {
            // The test's callers come from loopback, not the cluster's pod network.
            format!("{indent}allow: [127.0.0.1/32]")
        } else if trimmed.starts_with("environment: test") {
            format!(
                "{indent}environment: custom\n{indent}issuer: {}\n{indent}token_endpoint: {}",
                mock.issuer(),
                mock.token_endpoint()
            )
        } else if trimmed.starts_with("altinn_exchange: tt02") {
            format!("{indent}altinn_exchange: {}", altinn.url())
        } else if let Some(url) = trimmed.strip_prefix("upstream: https://") {
            let path = url.find('/').map_or("/", |i| &url[i..]);
            let path = path.split_whitespace().next().unwrap();
            format!(
                "{indent}upstream: {}{}",
                upstream.trim_end_matches('/'),
                path
            )
        } else {
            line.to_string()
        };
        let mut line = line;
        for (name, path) in &secrets {
            line = line.replace(&format!("/run/secrets/portvakt/{name}"), path);
        }
        for (at, path) in &keyset {
            line = line.replace(at, path);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn parse(yaml: &str) -> Config {
    let env = env();
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    portvakt::config::from_str(yaml, Path::new("example.yaml"), &fixtures(), &lookup)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Registers the example's clients with the mock as Samarbeidsportalen and Altinn would know them:
/// their keys or certificate organisation, the scopes their routes use, the delegations and the
/// system users their routes name.
fn register(mock: &MockMaskinporten, config: &Config) {
    mock.trust_ca_pem(&std::fs::read(fixtures().join("pki/test-ca.pem")).unwrap())
        .unwrap();
    for c in &config.clients {
        let cert_org = c.key.certificate().and_then(|cert| cert.org_number.clone());
        let mut client = MockClient::new(&c.client_id, cert_org.as_deref().unwrap_or(SUPPLIER_ORG));
        if cert_org.is_none() {
            client = client.key(&c.key);
        }
        for r in config.routes.iter().filter(|r| r.client == c.name) {
            client = client.scopes(r.scopes.iter().cloned());
            for org in r.allowed_consumers() {
                for scope in &r.scopes {
                    client = client.delegation(org, scope);
                }
            }
            for user in r.allowed_systemusers() {
                client = client.system_user(&user.org, user.external_ref.as_deref());
            }
        }
        mock.add_client(client);
    }
}

#[tokio::test]
async fn every_example_starts_and_serves_each_of_its_routes() {
    let files = examples();
    assert!(
        files.len() >= 6,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (name, text) in files {
        let mock = MockMaskinporten::start(vec![], 600).await.unwrap();
        let altinn = MockAltinn::start(mock.decoding_key(), 1800).await.unwrap();
        let upstream =
            EchoUpstream::start_trusting(vec![mock.decoding_key(), altinn.decoding_key()])
                .await
                .unwrap();
        let yaml = localise(&text, &mock, &altinn, &upstream.url());
        let config = parse(&yaml);
        register(&mock, &config);
        let env = env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let proxy = spawn_proxy(&yaml, &env).await;
        let http = http_client();

        for route in &config.routes {
            let mut request = http.get(format!("http://{}{}/ping", proxy.listen, route.prefix));
            // A route that acts for a party per call gets the first one on its list.
            if route.consumer_org.is_none() && !route.consumer_orgs.is_empty() {
                request =
                    request.header(route.consumer_org_header.clone(), &route.consumer_orgs[0]);
            }
            if route.systemuser.is_none() && !route.systemusers.is_empty() {
                request = request.header(
                    route.systemuser_org_header.clone(),
                    &route.systemusers[0].org,
                );
            }
            // A route that takes a person's consent per call names one the mock Altinn holds,
            // given to the organisation the token is for.
            if route.consent.per_call {
                let consumer = route
                    .consumer_org
                    .clone()
                    .or_else(|| route.consumer_orgs.first().cloned())
                    .unwrap_or_else(|| {
                        let client = config.clients.iter().find(|c| c.name == route.client);
                        client
                            .and_then(|c| c.key.certificate())
                            .and_then(|cert| cert.org_number.clone())
                            .unwrap_or_else(|| SUPPLIER_ORG.to_string())
                    });
                let (id, person) = ("77ed8698-e619-4066-9eb4-5c1eb3f165a1", "03867199348");
                let year = portvakt::support::time::unix_now() as i64 + 365 * 86_400;
                mock.consents().give(id, person, &consumer, year);
                request = request
                    .header(route.consent.id_header.clone(), id)
                    .header(route.consent.from_header.clone(), person);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            assert_eq!(
                status,
                200,
                "{name} {}: {}",
                route.name,
                response.text().await.unwrap()
            );
            let record = upstream.records().pop().unwrap();
            assert!(
                record.token_valid,
                "{name} {}: {:?}",
                route.name, record.token_error
            );
            let claims = record.token_claims.unwrap();
            let altinn_token = claims.get("token_type").and_then(|t| t.as_str()) == Some("altinn");
            assert_eq!(
                altinn_token,
                route.altinn_exchange.is_some(),
                "{name} {}",
                route.name
            );
            for (header, value) in &route.headers {
                assert_eq!(
                    &record.headers[header],
                    value.expose(),
                    "{name} {}",
                    route.name
                );
            }
        }
        assert!(mock.grants().iter().all(|g| g.rejected.is_none()), "{name}");
    }
}

#[tokio::test]
async fn the_fiks_example_sends_both_headers_and_logs_neither_secret() {
    let mock = MockMaskinporten::start(vec![], 600).await.unwrap();
    let altinn = MockAltinn::start(mock.decoding_key(), 1800).await.unwrap();
    let upstream = EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/ks-fiks.yaml");
    let port = free_port();
    let yaml = localise(
        &std::fs::read_to_string(file).unwrap(),
        &mock,
        &altinn,
        &upstream.url(),
    )
    .replacen(
        "listen: 127.0.0.1:0",
        &format!("listen: 127.0.0.1:{port}"),
        1,
    );
    register(&mock, &parse(&yaml));
    let dir = std::env::temp_dir().join(format!("portvakt-fiks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("portvakt.yaml"), &yaml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_portvakt"))
        .args(["run", "--config"])
        .arg(dir.join("portvakt.yaml"))
        .env("FIKS_INTEGRASJON_ID", FIKS_ID)
        // The most talkative level portvakt's own code has, and hyper's too.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/fiks/mottak/api/v1/ping");
    assert_eq!(
        first_answer(&http, &url).await,
        Some(reqwest::StatusCode::OK)
    );
    // A refused call too: its error path must not print the headers either.
    let refused = http
        .get(&url)
        .header("Portvakt-Consumer-Org", "910753614")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let password = secret("fiks-integrasjonpassord.txt");
    let record = upstream.records().pop().unwrap();
    assert_eq!(record.headers["integrasjonid"], FIKS_ID);
    assert_eq!(record.headers["integrasjonpassord"], password.as_str());
    assert!(record.token_valid, "{:?}", record.token_error);
    let token = record.headers["authorization"].to_str().unwrap()[7..].to_string();

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(output.contains("token fetched"), "{output}");
    for (what, secret) in [
        ("IntegrasjonPassord", password.as_str()),
        ("the token", token.as_str()),
        ("the p12 password", secret("pki/password.txt").as_str()),
    ] {
        assert!(!output.contains(secret), "{what} was logged: {output}");
    }
    assert!(!output.contains("Bearer "), "{output}");
}
