//! Every key form end to end: portvakt signs with it, the mock Maskinporten (which verifies `kid`
//! keys against registered JWKs and `x5c` certificates against its trusted test CA and the
//! client's org number) accepts it, and the upstream gets a valid token. Also key rotation on disk
//! and keygen's output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::mock::{MockClient, MockMaskinporten};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "test-passord-1234";
const CERT_ORG: &str = "991825827";
const NTRNO_ORG: &str = "910753614";

/// What the grant's header must carry.
#[derive(Debug)]
enum Sent {
    Kid(&'static str),
    /// `x5c` with this many certificates, and no kid.
    X5c(usize),
}

/// Mock (trusting the test CA), upstream and a proxy whose client `vendor` has `key`.
async fn setup(client: MockClient, key: &str, env: &[(&str, &str)], top: &str) -> Setup {
    start_with_key(client, key, ONE_ROUTE, env, top).await
}

fn certificate_client(org: &str) -> MockClient {
    MockClient::new(CLIENT_ID, org).scopes([SCOPE])
}

fn jwk_client(jwk_file: &str) -> MockClient {
    let text = std::fs::read_to_string(fixtures().join(jwk_file)).unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&text).unwrap();
    MockClient::new(CLIENT_ID, SUPPLIER_ORG)
        .public_jwk(&jwk)
        .scopes([SCOPE])
}

/// A client with the key in `pem_file` registered under `kid`.
fn pem_client(pem_file: &str, kid: &str) -> MockClient {
    let pem = std::fs::read(fixtures().join(pem_file)).unwrap();
    let key = portvakt::keys::SigningKey::from_pem(&pem, kid).unwrap();
    MockClient::new(CLIENT_ID, SUPPLIER_ORG)
        .key(&key)
        .scopes([SCOPE])
}

#[tokio::test]
async fn every_key_form_fetches_a_token_the_mock_accepts() {
    let b64 = std::fs::read_to_string(fixtures().join("client-b.jwk.b64")).unwrap();
    let client_b = "client-b-TEST.2026-11-21";
    let cases: Vec<(&str, String, MockClient, Sent, &str)> = vec![
        (
            "pem, PKCS#8",
            format!("      pem: client-a.pem\n      kid: {KID}\n"),
            registered_client(),
            Sent::Kid(KID),
            "private_key_jwt",
        ),
        (
            "pem, PKCS#1",
            format!("      pem: client-a.pkcs1.pem\n      kid: {KID}\n"),
            registered_client(),
            Sent::Kid(KID),
            "private_key_jwt",
        ),
        (
            "pem, PKCS#8 from openssl genpkey",
            "      pem: pki/rsa-pkcs8.pem\n      kid: openssl-TEST.2026-11-21\n".into(),
            pem_client("pki/rsa-pkcs8.pem", "openssl-TEST.2026-11-21"),
            Sent::Kid("openssl-TEST.2026-11-21"),
            "private_key_jwt",
        ),
        (
            "pem, PKCS#1 from openssl rsa -traditional",
            "      pem: pki/rsa-pkcs1.pem\n      kid: openssl-TEST.2026-11-21\n".into(),
            pem_client("pki/rsa-pkcs8.pem", "openssl-TEST.2026-11-21"),
            Sent::Kid("openssl-TEST.2026-11-21"),
            "private_key_jwt",
        ),
        (
            "jwk",
            "      jwk: client-b.jwk.json\n".into(),
            jwk_client("client-b.jwk.json"),
            Sent::Kid(client_b),
            "private_key_jwt",
        ),
        (
            "jwk set",
            "      jwk: client-b.jwks.json\n".into(),
            jwk_client("client-b.jwk.json"),
            Sent::Kid(client_b),
            "private_key_jwt",
        ),
        (
            "jwk_base64 from the environment",
            "      jwk_base64: ${MP_JWK}\n".into(),
            jwk_client("client-b.jwk.json"),
            Sent::Kid(client_b),
            "private_key_jwt",
        ),
        (
            "jwk_base64_file",
            "      jwk_base64_file: client-b.jwk.b64\n".into(),
            jwk_client("client-b.jwk.json"),
            Sent::Kid(client_b),
            "private_key_jwt",
        ),
        (
            "pkcs12, AES (OpenSSL 3 default)",
            "      pkcs12: pki/virksomhet-aes.p12\n      password: ${P12_PASSWORD}\n".into(),
            certificate_client(CERT_ORG),
            Sent::X5c(1),
            "virksomhetssertifikat",
        ),
        (
            "pkcs12, legacy RC2-40 + 3DES",
            "      pkcs12: pki/virksomhet-legacy.p12\n      password_file: pki/password.txt\n"
                .into(),
            certificate_client(CERT_ORG),
            Sent::X5c(1),
            "virksomhetssertifikat",
        ),
        (
            "pkcs12, 3DES throughout, with the chain",
            "      pkcs12: pki/virksomhet-3des.p12\n      password_file: pki/password.txt\n      x5c_chain: true\n"
                .into(),
            certificate_client(CERT_ORG),
            // This file holds no CA certificate: the chain is the leaf alone.
            Sent::X5c(1),
            "virksomhetssertifikat",
        ),
        (
            "pkcs12, AES, with the chain, by alias",
            "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n      alias: testforsikring-auth\n      x5c_chain: true\n"
                .into(),
            certificate_client(CERT_ORG),
            Sent::X5c(2),
            "virksomhetssertifikat",
        ),
        (
            "pkcs12, organizationIdentifier NTRNO-",
            "      pkcs12: pki/ntrno.p12\n      password_file: pki/password.txt\n".into(),
            certificate_client(NTRNO_ORG),
            Sent::X5c(1),
            "virksomhetssertifikat",
        ),
    ];
    for (name, key, client, sent, amr) in cases {
        let s = setup(
            client,
            &key,
            &[("MP_JWK", b64.trim()), ("P12_PASSWORD", PASSWORD)],
            "",
        )
        .await;
        let response = get(&s.proxy, "/nav/x").await;
        assert_eq!(
            response.status(),
            200,
            "{name}: {}",
            response.text().await.unwrap()
        );
        let grants = s.mock.grants();
        assert_eq!(grants.len(), 1, "{name}");
        assert_eq!(grants[0].rejected, None, "{name}");
        let header = &grants[0].header;
        match sent {
            Sent::Kid(kid) => {
                assert_eq!(header["kid"], kid, "{name}");
                assert!(header.get("x5c").is_none_or(|x| x.is_null()), "{name}");
            }
            Sent::X5c(n) => {
                assert!(header.get("kid").is_none_or(|k| k.is_null()), "{name}");
                let x5c = header["x5c"].as_array().unwrap();
                assert_eq!(x5c.len(), n, "{name}");
                // Standard base64 (with + and /), not base64url.
                assert!(x5c
                    .iter()
                    .all(|c| !c.as_str().unwrap().contains(['-', '_'])));
            }
        }
        let record = s.upstream.records().pop().unwrap();
        assert!(record.token_valid, "{name}: {:?}", record.token_error);
        let claims = record.token_claims.unwrap();
        assert_eq!(claims["client_amr"], amr, "{name}");
        s.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_certificate_of_another_organisation_is_refused_with_mp_122() {
    let s = setup(
        certificate_client(CERT_ORG),
        "      pkcs12: pki/ntrno.p12\n      password_file: pki/password.txt\n",
        &[],
        "",
    )
    .await;
    let response = get(&s.proxy, "/nav/x").await;
    assert_eq!(response.status(), 502);
    let p = problem(response).await;
    assert_eq!(p["maskinporten_code"], "MP-122", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("another organisation"),
        "{p}"
    );
    assert!(s.upstream.records().is_empty());
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_with_mp_120() {
    let mock = MockMaskinporten::start(vec![certificate_client(CERT_ORG)], 600)
        .await
        .unwrap();
    // No trust_ca_pem: the test CA is not one Maskinporten trusts.
    let yaml = config_with_key(
        &mock.issuer(),
        &mock.token_endpoint(),
        "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n",
        &ONE_ROUTE.replace("{upstream}", "http://127.0.0.1:9/"),
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let response = get(&proxy, "/nav/x").await;
    assert_eq!(response.status(), 502);
    assert_eq!(problem(response).await["maskinporten_code"], "MP-120");
}

/// A Kubernetes secret volume: `key.json -> ..data/key.json`, `..data -> ..<timestamp>`; an update
/// writes a new timestamped directory and renames a new `..data` link over the old one.
struct SecretVolume {
    dir: PathBuf,
    generation: usize,
}

impl SecretVolume {
    fn new(name: &str, file: &str, contents: &[u8]) -> SecretVolume {
        let dir = std::env::temp_dir().join(format!("portvakt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.update(file, contents);
        std::os::unix::fs::symlink(format!("..data/{file}"), volume.dir.join(file)).unwrap();
        volume
    }

    fn update(&mut self, file: &str, contents: &[u8]) {
        self.generation += 1;
        let data = format!("..2026_11_21_{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join(file), contents).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

#[tokio::test]
async fn a_key_swapped_on_disk_while_requests_flow_signs_the_next_tokens_with_no_failed_request() {
    let old = std::fs::read(fixtures().join("client-b.jwk.json")).unwrap();
    let new = portvakt::keys::generate(2048, "rotated-TEST.2026-11-21").unwrap();
    let mut volume = SecretVolume::new("rotation", "key.json", &old);
    let client = jwk_client("client-b.jwk.json").public_jwk(&new.public_jwks["keys"][0]);
    let key_yaml = format!("      jwk: {}\n", volume.path("key.json").display());
    let s = setup(client, &key_yaml, &[], "watch_interval_seconds: 1\n").await;

    // Two callers keep calling through the whole rotation.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = format!("http://{}/nav/x", s.proxy.listen);
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
            tokio::spawn(async move {
                let http = http_client();
                while !stop.load(Ordering::SeqCst) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = s.upstream.records().len();
    assert!(before > 0);
    let old_jti = s.upstream.records()[0].token_claims.as_ref().unwrap()["jti"].clone();

    volume.update("key.json", new.private_jwk.expose().to_string().as_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !s
        .mock
        .grants()
        .iter()
        .any(|g| g.header["kid"] == "rotated-TEST.2026-11-21")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }

    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a request failed during rotation"
    );
    let kids: Vec<String> = s
        .mock
        .grants()
        .iter()
        .map(|g| g.header["kid"].as_str().unwrap().to_string())
        .collect();
    // One token per key: the old token (valid for 10 more minutes) was not kept after the swap.
    assert_eq!(
        kids,
        ["client-b-TEST.2026-11-21", "rotated-TEST.2026-11-21"]
    );
    let records = s.upstream.records();
    let last = records.last().unwrap().token_claims.as_ref().unwrap();
    assert_ne!(last["jti"], old_jti, "still serving the old key's token");
    assert!(records.iter().all(|r| r.token_valid));
    let metrics = metrics_text(&s.proxy).await;
    assert!(
        metrics.contains(r#"portvakt_key_reloads_total{client="vendor",result="rotated"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broken_key_file_keeps_the_old_key_signing() {
    let old = std::fs::read(fixtures().join("client-b.jwk.json")).unwrap();
    let mut volume = SecretVolume::new("broken", "key.json", &old);
    let key_yaml = format!("      jwk: {}\n", volume.path("key.json").display());
    let s = setup(
        jwk_client("client-b.jwk.json"),
        &key_yaml,
        &[],
        "watch_interval_seconds: 1\n",
    )
    .await;
    assert_eq!(get(&s.proxy, "/nav/x").await.status(), 200);
    volume.update("key.json", b"{\"kty\": \"RSA\", \"kid\": \"half-writ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = metrics_text(&s.proxy).await;
        if m.contains(r#"portvakt_key_reloads_total{client="vendor",result="error"} 1"#) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&s.proxy, "/nav/y").await.status(), 200);
    assert_eq!(
        s.mock.grants().len(),
        1,
        "the cached token from the good key still serves"
    );
}

#[tokio::test]
async fn keygen_output_loads_back_in_every_form_and_its_public_jwk_verifies_the_grant() {
    let out = std::env::temp_dir().join(format!("portvakt-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let today = portvakt::support::time::from_civil(2026, 11, 21, 0, 0, 0).unwrap();
    let (written, next) = portvakt::cli::keygen::run(
        "forsikring",
        portvakt::cli::keygen::Env::Test,
        2048,
        &out,
        today,
    )
    .unwrap();
    assert_eq!(written.kid, "forsikring-TEST.2026-11-21");
    assert!(next.contains("Samarbeidsportalen"), "{next}");
    for private in [
        &written.private_jwk,
        &written.private_jwk_base64,
        &written.private_pem,
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", private.display());
    }
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&written.public_jwks).unwrap()).unwrap();
    let public = &jwks["keys"][0];
    let mut fields: Vec<&str> = public
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["alg", "e", "kid", "kty", "n", "use"]);
    // Running it again never overwrites the key.
    assert!(portvakt::cli::keygen::run(
        "forsikring",
        portvakt::cli::keygen::Env::Test,
        2048,
        &out,
        today
    )
    .is_err());

    let b64 = std::fs::read_to_string(&written.private_jwk_base64).unwrap();
    let path = |p: &Path| p.display().to_string();
    let forms = [
        format!("      jwk: {}\n", path(&written.private_jwk)),
        format!(
            "      jwk_base64_file: {}\n",
            path(&written.private_jwk_base64)
        ),
        "      jwk_base64: ${KEY_B64}\n".to_string(),
        format!(
            "      pem: {}\n      kid: {}\n",
            path(&written.private_pem),
            written.kid
        ),
    ];
    for key in forms {
        let client = MockClient::new(CLIENT_ID, SUPPLIER_ORG)
            .public_jwk(public)
            .scopes([SCOPE]);
        let s = setup(client, &key, &[("KEY_B64", b64.trim())], "").await;
        let response = get(&s.proxy, "/nav/x").await;
        assert_eq!(response.status(), 200, "{key}");
        assert_eq!(s.mock.grants()[0].header["kid"], written.kid.as_str());
        assert!(s.upstream.records()[0].token_valid);
        s.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn certificate_expiry_and_key_age_are_exported() {
    let s = setup(
        certificate_client(CERT_ORG),
        "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n",
        &[],
        "",
    )
    .await;
    let pem = std::fs::read(fixtures().join("pki/virksomhet.pem")).unwrap();
    let der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
    };
    let cert = portvakt::keys::Certificate::parse(&der).unwrap();
    let metrics = metrics_text(&s.proxy).await;
    assert!(
        metrics.contains(&format!(
            "portvakt_certificate_not_after_seconds{{client=\"vendor\"}} {}",
            cert.not_after
        )),
        "{metrics}"
    );
    let age: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portvakt_key_age_seconds{client=\"vendor\"} "))
        .unwrap()
        .parse()
        .unwrap();
    let now = portvakt::token::grant::unix_now() as i64;
    assert!((age - (now - cert.not_before)).abs() <= 5, "{age}");
}
