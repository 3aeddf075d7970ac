//! `portvakt demo`: the mock Maskinporten, an echo upstream and portvakt itself on loopback, with
//! the configuration written to `config/demo.yaml` and loaded exactly as `portvakt run` loads it.

use crate::keys::SigningKey;
use crate::mock::{EchoUpstream, MockClient, MockMaskinporten, DEMO_CLIENT_KEY_PEM};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpListener;

pub const DEMO_CLIENT_ID: &str = "2f6c1e0a-5d3b-4c7e-9a1f-demo00000001";
pub const DEMO_KID: &str = "portvakt-demo-TEST.2026-11";
/// A second client whose keys portvakt renews, and the administration client that may register them.
pub const DEMO_RENEWED_ID: &str = "2f6c1e0a-5d3b-4c7e-9a1f-demo00000002";
pub const DEMO_ADMIN_ID: &str = "2f6c1e0a-5d3b-4c7e-9a1f-demo000000ad";
const DEMO_ADMIN_KID: &str = "portvakt-demo-admin";
/// The supplier (the demo client's own organisation) and the customer it acts for.
pub const SUPPLIER_ORG: &str = "991825827";
pub const CUSTOMER_ORG: &str = "910753614";
/// A consent the demo's mock Altinn holds: from a synthetic person (Altinn's TT02 example, not a
/// real one) to the customer.
pub const DEMO_CONSENT_ID: &str = "77ed8698-e619-4066-9eb4-5c1eb3f165a1";
pub const DEMO_PERSON: &str = "03867199348";

/// A loopback port, the preferred one when free, else any free one.
async fn bind(preferred: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", preferred)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0").await,
    }
}

/// Starts everything, prints how to try it, and serves until Ctrl-C (or, with `once`, makes one
/// call through the proxy, prints the answer and stops).
pub async fn run(dir: &Path, once: bool) -> anyhow::Result<()> {
    let (mock, upstream) = peers().await?;
    let listener = bind(8080).await?;
    let admin_listener = bind(9090).await?;
    let (listen, admin) = (listener.local_addr()?, admin_listener.local_addr()?);

    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("demo-client-key.pem");
    write_private(&key_path, DEMO_CLIENT_KEY_PEM)?;
    let config_path = dir.join("demo.yaml");
    let yaml = config(listen, admin, &mock.issuer(), &upstream.url());
    std::fs::write(&config_path, yaml)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let _ = std::fs::remove_file(dir.join("demo-renewed.keyset.json"));
    println!("Key renewal makes the first key of client demo-renewed through the mock's self-service API:");
    let flags = crate::renew::command::Flags::default();
    if crate::renew::command::rotate(&config_path, None, flags).await != 0 {
        anyhow::bail!("the demo's key renewal failed");
    }
    println!();
    let config = crate::config::load(&config_path)?;
    let app = crate::app::build(&config)?;
    let running = crate::app::start_on(app, listener, Some(admin_listener))?;
    how_to_try(&config_path, &mock.issuer(), &upstream.url(), listen, admin);
    if once {
        let answer = reqwest::get(format!("http://{listen}/echo/hello?x=1"))
            .await?
            .text()
            .await?;
        println!("{answer}");
        let consent = reqwest::Client::new()
            .get(format!("http://{listen}/samtykke/inntekt"))
            .header("Portvakt-Consent-Id", DEMO_CONSENT_ID)
            .header("Portvakt-Consent-From", DEMO_PERSON)
            .send()
            .await?;
        println!(
            "a call with the person's consent: HTTP {}",
            consent.status().as_u16()
        );
        println!("token requests made to the mock: {}", mock.token_requests());
        running.shutdown().await;
    } else {
        println!("Press Ctrl-C to stop.");
        running.until_signal().await;
    }
    Ok(())
}

/// The mock Maskinporten with the demo's clients (one with a delegation, an administration client
/// for the self-service API, one with no key yet) and a person's consent, and the echo upstream.
async fn peers() -> anyhow::Result<(MockMaskinporten, EchoUpstream)> {
    let key = SigningKey::from_pem(DEMO_CLIENT_KEY_PEM.as_bytes(), DEMO_KID)?;
    let client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG)
        .key(&key)
        .scopes(["demo:echo", "nav:forsikring/samtykke"])
        .delegation(CUSTOMER_ORG, "nav:forsikring/samtykke");
    // The administration client (Digdir's self-service API) and a client with no key yet: the
    // renewer makes, registers and activates its first key before the proxy starts.
    let admin = MockClient::new(DEMO_ADMIN_ID, SUPPLIER_ORG)
        .key(&SigningKey::from_pem(
            DEMO_CLIENT_KEY_PEM.as_bytes(),
            DEMO_ADMIN_KID,
        )?)
        .scopes(["idporten:dcr.read", "idporten:dcr.modify"]);
    let renewed = MockClient::new(DEMO_RENEWED_ID, SUPPLIER_ORG).scopes(["demo:echo"]);
    let mock = MockMaskinporten::start(vec![client, admin, renewed], 120).await?;
    // The person has accepted the customer's consent request, valid for a year.
    let year = crate::support::time::unix_now() as i64 + 365 * 86_400;
    mock.consents()
        .give(DEMO_CONSENT_ID, DEMO_PERSON, CUSTOMER_ORG, year);
    let upstream = EchoUpstream::start(Some(mock.decoding_key())).await?;
    Ok((mock, upstream))
}

/// The demo's configuration: its listeners, the mock Maskinporten, its clients and routes.
fn config(listen: SocketAddr, admin: SocketAddr, issuer: &str, upstream: &str) -> String {
    format!(
        r#"# Written by `portvakt demo`: a mock Maskinporten and an echo upstream on loopback.
listen: {listen}
admin_listen: {admin}
watch_interval_seconds: 1
maskinporten:
  environment: custom
  issuer: {issuer}
selfservice:
  environment: custom
  base_url: {issuer}api/v1
  client_id: {DEMO_ADMIN_ID}
  key:
    pem: demo-client-key.pem
    kid: {DEMO_ADMIN_KID}
clients:
  demo:
    client_id: {DEMO_CLIENT_ID}
    key:
      pem: demo-client-key.pem
      kid: {DEMO_KID}
  demo-renewed:
    client_id: {DEMO_RENEWED_ID}
    key:
      keyset: demo-renewed.keyset.json
    renew:
      activate_after_seconds: 0
      overlap_seconds: 60
      kid_prefix: demo-TEST
routes:
  - name: renewed
    prefix: /renewed/
    upstream: {upstream}
    client: demo-renewed
    scopes: [demo:echo]
  - name: echo
    prefix: /echo/
    upstream: {upstream}
    client: demo
    scopes: [demo:echo]
  - name: nav-samtykke
    prefix: /nav/
    upstream: {upstream}forsikring/
    client: demo
    scopes: [nav:forsikring/samtykke]
    consumer_org: "{CUSTOMER_ORG}"
  - name: nav-samtykke-person
    prefix: /samtykke/
    upstream: {upstream}forsikring/
    client: demo
    scopes: [nav:forsikring/samtykke]
    consumer_org: "{CUSTOMER_ORG}"
    consent_per_call: true
"#,
    )
}

/// What the demo prints: where everything runs and what to try.
fn how_to_try(
    config_path: &Path,
    issuer: &str,
    upstream: &str,
    listen: SocketAddr,
    admin: SocketAddr,
) {
    println!(
        "portvakt demo is running (config: {})",
        config_path.display()
    );
    println!("  mock Maskinporten  {issuer}");
    println!("  echo upstream      {upstream}");
    println!("  portvakt           http://{listen}/");
    println!("  status page        http://{admin}/  (and /readyz, /metrics)");
    println!();
    println!("Call the echo API through portvakt; the answer shows the token portvakt injected:");
    println!("  curl -s http://{listen}/echo/hello?x=1");
    println!("The same with delegation (consumer_org {CUSTOMER_ORG}, supplier {SUPPLIER_ORG}):");
    println!("  curl -s http://{listen}/nav/samtykke");
    println!("A person's Altinn consent per call: the token carries the consent (see authorization_details):");
    println!("  curl -s -H 'Portvakt-Consent-Id: {DEMO_CONSENT_ID}' -H 'Portvakt-Consent-From: {DEMO_PERSON}' http://{listen}/samtykke/inntekt");
    println!("A consent Altinn does not hold gets 403 consent-refused, and nothing goes upstream:");
    println!("  curl -s -H 'Portvakt-Consent-Id: 00000000-0000-4000-8000-000000000000' -H 'Portvakt-Consent-From: {DEMO_PERSON}' http://{listen}/samtykke/inntekt");
    println!("A client whose keys portvakt renews; rotate them while it serves, and look:");
    println!("  curl -s http://{listen}/renewed/x");
    println!(
        "  portvakt rotate --force --config {0}; portvakt keys status --config {0}",
        config_path.display()
    );
    println!();
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
