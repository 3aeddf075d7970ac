//! Fixtures for end-to-end tests: a mock Maskinporten, an echo upstream and portvakt itself, all on
//! 127.0.0.1 with ports picked by the OS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod faults;
pub mod logs;
pub mod wire;

use portvakt::app::Running;
use portvakt::keys::SigningKey;
use portvakt::mock::{EchoUpstream, MockClient, MockMaskinporten};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CLIENT_ID: &str = "7e1f2a3b-0000-4000-8000-00000000000a";
pub const KID: &str = "client-a-TEST.2026-11";
pub const SUPPLIER_ORG: &str = "991825827";
pub const CUSTOMER_ORG: &str = "910753614";
/// A second customer, with a delegation and a system user created with an externalRef.
pub const OTHER_CUSTOMER_ORG: &str = "889640782";
/// A valid organisation number that delegated nothing and has no system user.
pub const STRANGER_ORG: &str = "974760673";
pub const EXTERNAL_REF: &str = "kunde-42";
pub const ALTINN_SCOPE: &str = "altinn:instances.read";
pub const SCOPE: &str = "nav:forsikring/samtykke";
pub const OTHER_SCOPE: &str = "ks:fiks";

/// One route, `/nav/` to the echo upstream's `/forsikring/`, with the delegable scope.
pub const ONE_ROUTE: &str = r#"  - name: nav
    prefix: /nav/
    upstream: {upstream}forsikring/
    client: vendor
    scopes: [nav:forsikring/samtykke]
"#;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn client_key() -> SigningKey {
    let pem = std::fs::read(fixtures().join("client-a.pem")).unwrap();
    SigningKey::from_pem(&pem, KID).unwrap()
}

/// The client registered with the mock: three scopes; delegations of SCOPE from CUSTOMER_ORG and
/// OTHER_CUSTOMER_ORG; system users of CUSTOMER_ORG (no externalRef) and OTHER_CUSTOMER_ORG
/// (EXTERNAL_REF).
pub fn registered_client() -> MockClient {
    MockClient::new(CLIENT_ID, SUPPLIER_ORG)
        .key(&client_key())
        .scopes([SCOPE, OTHER_SCOPE, ALTINN_SCOPE])
        .delegation(CUSTOMER_ORG, SCOPE)
        .delegation(OTHER_CUSTOMER_ORG, SCOPE)
        .system_user(CUSTOMER_ORG, None)
        .system_user(OTHER_CUSTOMER_ORG, Some(EXTERNAL_REF))
}

pub struct Harness {
    pub mock: MockMaskinporten,
    pub upstream: EchoUpstream,
    pub proxy: Running,
    pub http: reqwest::Client,
}

impl Harness {
    /// Starts mock, upstream and proxy; `routes` is the YAML list under `routes:` where
    /// `{upstream}` stands for the echo upstream's base URL.
    pub async fn start(routes: &str, expires_in: u64) -> Harness {
        Self::start_with_env(routes, expires_in, &[]).await
    }

    /// As [`Harness::start`], with `${NAME}` in the configuration taken from `env`.
    pub async fn start_with_env(routes: &str, expires_in: u64, env: &[(&str, &str)]) -> Harness {
        let mock = MockMaskinporten::start(vec![registered_client()], expires_in)
            .await
            .unwrap();
        let upstream = EchoUpstream::start(Some(mock.decoding_key()))
            .await
            .unwrap();
        let yaml = config_yaml(
            &mock.issuer(),
            &mock.token_endpoint(),
            &routes.replace("{upstream}", &upstream.url()),
        );
        let proxy = spawn_proxy(&yaml, env).await;
        Harness {
            mock,
            upstream,
            proxy,
            http: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.listen, path)
    }

    /// Every token that reached the upstream, registered as a secret for the log check.
    pub fn note_tokens(&self) {
        for record in self.upstream.records() {
            if let Some(v) = record.headers.get("authorization") {
                let v = String::from_utf8_lossy(v.as_bytes());
                logs::secret(v.trim_start_matches("Bearer ").trim());
            }
        }
    }

    /// GET through the proxy.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET through the proxy with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.admin_url(path)).send().await.unwrap()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.admin.unwrap(), path)
    }
}

impl Drop for Harness {
    /// No token, key or password in any line logged so far by this test binary.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.note_tokens();
            logs::assert_clean();
        }
    }
}

/// The certificate and key (for 127.0.0.1 and localhost, from tests/fixtures/test-ca.pem) that
/// the TLS mocks serve.
pub fn tls_files() -> (PathBuf, PathBuf) {
    (
        fixtures().join("upstream.pem"),
        fixtures().join("upstream.key"),
    )
}

/// A mock Maskinporten over HTTPS with the registered client and 120 s tokens; trust it with
/// `ca_file: test-ca.pem`.
pub async fn tls_mock() -> MockMaskinporten {
    let (cert, key) = tls_files();
    MockMaskinporten::start_tls(vec![registered_client()], 120, &cert, &key)
        .await
        .unwrap()
}

/// A mock Maskinporten with the registered client (120 s tokens) and an echo upstream that
/// verifies its tokens.
pub async fn mock_and_upstream() -> (MockMaskinporten, EchoUpstream) {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let upstream = EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    (mock, upstream)
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A whole configuration around `routes`, with one client `vendor` using the fixture key.
pub fn config_yaml(issuer: &str, token_endpoint: &str, routes: &str) -> String {
    config_with_key(
        issuer,
        token_endpoint,
        &format!("      pem: client-a.pem\n      kid: {KID}\n"),
        routes,
    )
}

/// As [`config_yaml`], with the client's `key:` block given (indented six spaces).
pub fn config_with_key(issuer: &str, token_endpoint: &str, key: &str, routes: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
maskinporten:
  environment: custom
  issuer: {issuer}
  token_endpoint: {token_endpoint}
  timeout_seconds: 5
clients:
  vendor:
    client_id: {CLIENT_ID}
    key:
{key}routes:
{routes}"#
    )
}

/// Parses `yaml` (key paths relative to tests/fixtures, `${NAME}` from `env`) and starts portvakt.
pub async fn spawn_proxy(yaml: &str, env: &[(&str, &str)]) -> Running {
    logs::capture();
    for (_, value) in env {
        logs::secret(value);
    }
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    let lookup = |name: &str| env.get(name).map(|v| v.to_string());
    let config = portvakt::config::from_str(yaml, Path::new("test.yaml"), &fixtures(), &lookup)
        .unwrap_or_else(|e| panic!("{e}"));
    portvakt::app::start(&config).await.unwrap()
}

/// portvakt with one route, `/nav/` to `upstream` for the `vendor` client, plus the route lines in
/// `extra`.
pub async fn proxy_to(mock: &MockMaskinporten, upstream: &str, extra: &str) -> Running {
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: {upstream}\n    client: vendor\n    scopes: [{SCOPE}]\n{extra}"
    );
    spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await
}

/// Parses a problem+json answer, checking its content type.
pub async fn problem(response: reqwest::Response) -> serde_json::Value {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    portvakt::mock::upstream::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref(),
    )
}

/// Sends `request` byte for byte (clients such as reqwest normalise `%2e%2e` away) and returns the
/// status code of the answer.
pub async fn raw_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// GET `path` from a proxy started with [`spawn_proxy`].
/// The proxy's `/metrics` text.
pub async fn metrics_text(proxy: &Running) -> String {
    http_client()
        .get(format!("http://{}/metrics", proxy.admin.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the one series in `metrics` named exactly `series` (name and labels).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The token in the `i`th request the upstream recorded, without `Bearer `.
pub fn token_seen(upstream: &EchoUpstream, i: usize) -> String {
    upstream.records()[i].headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string()
}

pub async fn get(proxy: &Running, path: &str) -> reqwest::Response {
    http_client()
        .get(format!("http://{}{}", proxy.listen, path))
        .send()
        .await
        .unwrap()
}

/// A port that was free a moment ago, for a portvakt process whose config must name its port.
/// A fresh directory holding the client key that [`config_yaml`] names, for a config file that
/// the portvakt binary reads.
pub fn config_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portvakt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("client-a.pem"), dir.join("client-a.pem")).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status of the first answer from `url`, polling for up to 5 s while a process starts.
pub async fn first_answer(http: &reqwest::Client, url: &str) -> Option<reqwest::StatusCode> {
    for _ in 0..100 {
        if let Ok(r) = http.get(url).send().await {
            return Some(r.status());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// The mock Maskinporten, a recording upstream and portvakt with one route: `/nav/` to the
/// recorder's `/api/`.
pub async fn proxy_to_recorder() -> (
    wire::Recorder,
    portvakt::app::Running,
    portvakt::mock::MockMaskinporten,
) {
    let (mock, _echo) = mock_and_upstream().await;
    let up = wire::Recorder::start().await;
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: {}api/\n    client: vendor\n    scopes: [{}]\n",
        up.url,
        SCOPE
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    (up, proxy, mock)
}

/// A mock Maskinporten, an echo upstream that verifies tokens, and a proxy.
pub struct Setup {
    pub mock: MockMaskinporten,
    pub upstream: EchoUpstream,
    pub proxy: Running,
}

/// The mock (trusting the test CA), the upstream and a proxy whose client `vendor` has the `key:`
/// block `key`; `routes` names the upstream `{upstream}`, and `top` goes before the config.
pub async fn start_with_key(
    client: MockClient,
    key: &str,
    routes: &str,
    env: &[(&str, &str)],
    top: &str,
) -> Setup {
    let mock = MockMaskinporten::start(vec![client], 600).await.unwrap();
    mock.trust_ca_pem(&std::fs::read(fixtures().join("pki/test-ca.pem")).unwrap())
        .unwrap();
    let upstream = EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let yaml = format!(
        "{top}{}",
        config_with_key(
            &mock.issuer(),
            &mock.token_endpoint(),
            key,
            &routes.replace("{upstream}", &upstream.url()),
        )
    );
    let proxy = spawn_proxy(&yaml, env).await;
    Setup {
        mock,
        upstream,
        proxy,
    }
}
