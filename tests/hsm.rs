//! Keys inside an HSM, on SoftHSM2 (real PKCS#11 software, not a mock): grants signed in the token
//! and accepted by the mock Maskinporten, a virksomhetssertifikat kept in the token, keygen's
//! non-extractable keys, exact start-up errors, single flight, a lost login re-established, and a
//! key label rotated by reload.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, so every test here shares one token directory,
//! made the first time a test asks for it, with one token per purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use portvakt::mock::MockClient;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PIN: &str = "1234-hsm";
const SO_PIN: &str = "so-87654321";

/// One test at a time: SoftHSM's file store is shared by this process and the portvakt processes
/// the tests start, and a process that lists the tokens while another rewrites a token's file
/// (a login, a new key) can miss that token. Seen as "no token labelled `registered`" about once
/// in twelve runs; the suite takes a second or two either way.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NTRNO_ORG: &str = "910753614";

struct Hsm {
    dir: PathBuf,
    conf: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
}

/// The first of `paths` that is installed; `what` says where it comes from.
fn installed(paths: &[&str], what: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{what} is not installed: run scripts/test-deps.sh"))
}

fn module_path() -> PathBuf {
    installed(
        &[
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        ],
        "SoftHSM2",
    )
}

fn softhsm(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("softhsm2-util (scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "softhsm2-util {args:?}: {out:?}");
}

/// The token directory with its tokens: `registered` and `lost` hold client-a's key as
/// `maskinporten`, `virksomhet` the TESTKOMMUNE key and certificate as `auth` and the test CA,
/// `keygen` and `rotation` start empty.
fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("portvakt-hsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        for label in [
            "registered",
            "lost",
            "virksomhet",
            "keygen",
            "rotation",
            "refused",
        ] {
            softhsm(
                &conf,
                &[
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    SO_PIN,
                    "--pin",
                    PIN,
                ],
            );
        }
        let client_a = fixtures().join("client-a.pem");
        for (i, (token, file, label)) in [
            ("registered", client_a.as_path(), "maskinporten"),
            ("lost", client_a.as_path(), "maskinporten"),
            ("rotation", client_a.as_path(), "first"),
            ("virksomhet", &fixtures().join("pki/ntrno.key"), "auth"),
            ("refused", &fixtures().join("small-1024.pem"), "small"),
            ("refused", &fixtures().join("ec.pem"), "ec"),
            ("refused", client_a.as_path(), "mismatch"),
        ]
        .into_iter()
        .enumerate()
        {
            let (file, id) = (file.display().to_string(), format!("{:02x}", i + 1));
            softhsm(
                &conf,
                &[
                    "--import", &file, "--token", token, "--label", label, "--id", &id, "--pin",
                    PIN,
                ],
            );
        }
        // SoftHSM reads this when the library is initialised, which happens first below.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let module = module_path();
        let token = portvakt::keys::pkcs11::token(
            &module,
            "virksomhet",
            portvakt::support::secret::Secret::new(PIN.to_string()),
        )
        .unwrap();
        let refused = portvakt::keys::pkcs11::token(
            &module,
            "refused",
            portvakt::support::secret::Secret::new(PIN.to_string()),
        )
        .unwrap();
        // TESTKOMMUNE's certificate beside client-a's key: a certificate that is not the key's.
        let (session, refused_session) =
            (token.rw_session().unwrap(), refused.rw_session().unwrap());
        for (session, file, label) in [
            (&session, "pki/ntrno.pem", "auth"),
            (&session, "pki/test-ca.pem", "test-ca"),
            (&refused_session, "pki/ntrno.pem", "mismatch"),
        ] {
            let der = pem_der(&fixtures().join(file));
            let cert = portvakt::keys::Certificate::parse(&der).unwrap();
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::CertificateType(CertificateType::X_509),
                    Attribute::Token(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Subject(cert.subject_raw.clone()),
                    Attribute::Value(der),
                ])
                .unwrap();
        }
        Hsm {
            dir,
            conf,
            module,
            pin_file,
        }
    })
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

/// The `key:` block for a key in `token` labelled `label`.
fn key_block(token: &str, label: &str, extra: &str) -> String {
    let h = hsm();
    format!(
        "      pkcs11:\n        module: {}\n        token: {token}\n        key: {label}\n        pin_file: {}\n{extra}",
        h.module.display(),
        h.pin_file.display()
    )
}

async fn setup(client: MockClient, key: &str, routes: &str) -> Setup {
    hsm();
    start_with_key(client, key, routes, &[], "").await
}

/// `ONE_ROUTE` and a second route `/ks/` with another scope, so that a second token is fetched.
fn two_routes() -> String {
    format!(
        "{ONE_ROUTE}  - name: ks\n    prefix: /ks/\n    upstream: {{upstream}}fiks/\n    client: vendor\n    scopes: [{OTHER_SCOPE}]\n"
    )
}

#[tokio::test]
async fn a_registered_key_in_the_token_signs_grants_the_mock_accepts() {
    let _alone = ALONE.lock().await;
    let s = setup(
        registered_client(),
        &key_block("registered", "maskinporten", &format!("      kid: {KID}\n")),
        ONE_ROUTE,
    )
    .await;
    let response = get(&s.proxy, "/nav/x").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let grants = s.mock.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].rejected, None);
    assert_eq!(grants[0].header["kid"], KID);
    assert_eq!(grants[0].header["alg"], "RS256");
    let record = s.upstream.records().pop().unwrap();
    assert!(record.token_valid, "{:?}", record.token_error);
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn a_virksomhetssertifikat_in_the_token_is_sent_as_x5c_and_with_its_chain() {
    let _alone = ALONE.lock().await;
    for (extra, certs) in [("", 1), ("      x5c_chain: true\n", 2)] {
        let s = setup(
            MockClient::new(CLIENT_ID, NTRNO_ORG).scopes([SCOPE]),
            &key_block("virksomhet", "auth", extra),
            ONE_ROUTE,
        )
        .await;
        let response = get(&s.proxy, "/nav/x").await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let grants = s.mock.grants();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].rejected, None);
        let header = &grants[0].header;
        assert!(header.get("kid").is_none_or(|k| k.is_null()), "{header}");
        assert_eq!(header["x5c"].as_array().unwrap().len(), certs, "{header}");
        assert!(s.upstream.records().pop().unwrap().token_valid);
        // The certificate's expiry is watched as a PKCS#12 one's (2051-11-15 in the fixture).
        let metrics = metrics_text(&s.proxy).await;
        let not_after = metric_value(
            &metrics,
            "portvakt_certificate_not_after_seconds{client=\"vendor\"}",
        );
        assert_eq!(not_after, Some(2_583_658_155.0), "{metrics}");
        s.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn sixty_four_cold_requests_make_one_fetch_and_one_signature() {
    let _alone = ALONE.lock().await;
    let s = setup(
        registered_client(),
        &key_block("registered", "maskinporten", &format!("      kid: {KID}\n")),
        ONE_ROUTE,
    )
    .await;
    let http = http_client();
    let url = format!("http://{}/nav/x", s.proxy.listen);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(&url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(s.mock.grants().len(), 1, "one fetch, one signature");
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn keygen_makes_a_non_extractable_key_in_the_token_that_signs_accepted_grants() {
    let _alone = ALONE.lock().await;
    let h = hsm();
    let out = h.dir.join("keygen-out");
    let run = Command::new(env!("CARGO_BIN_EXE_portvakt"))
        .args(["keygen", "hsmkey", "--pkcs11", "--module"])
        .arg(&h.module)
        .args(["--token", "keygen", "--pin-file"])
        .arg(&h.pin_file)
        .arg("--out")
        .arg(&out)
        .env("SOFTHSM2_CONF", &h.conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    let jwks_file = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks_file).unwrap()).unwrap();
    let jwk = &jwks["keys"][0];
    let kid = jwk["kid"].as_str().unwrap().to_string();
    assert!(kid.starts_with("hsmkey-TEST."), "{kid}");
    assert!(
        stdout.contains(&kid) && stdout.contains("not extractable"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "only the public JWK set"
    );

    // Read back from the token: the private half is sensitive and never extractable.
    let token = portvakt::keys::pkcs11::token(
        &h.module,
        "keygen",
        portvakt::support::secret::Secret::new(PIN.to_string()),
    )
    .unwrap();
    let session = token.rw_session().unwrap();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(kid.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[AttributeType::Extractable, AttributeType::Sensitive],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    drop(session);

    // A second keygen with the same label is refused: nothing in the token is replaced.
    let again = Command::new(env!("CARGO_BIN_EXE_portvakt"))
        .args(["keygen", "hsmkey2", "--pkcs11", "--module"])
        .arg(&h.module)
        .args(["--token", "keygen", "--label", &kid])
        .arg("--out")
        .arg(h.dir.join("keygen-again"))
        .env("SOFTHSM2_CONF", &h.conf)
        .env("PORTVAKT_HSM_PIN", PIN)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is in the token already"),
        "{again:?}"
    );

    let client = MockClient::new(CLIENT_ID, SUPPLIER_ORG)
        .public_jwk(jwk)
        .scopes([SCOPE]);
    let s = setup(
        client,
        &key_block("keygen", &kid, &format!("      kid: {kid}\n")),
        ONE_ROUTE,
    )
    .await;
    let response = get(&s.proxy, "/nav/x").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(s.mock.grants()[0].header["kid"], kid.as_str());
    assert!(s.upstream.records().pop().unwrap().token_valid);
    s.proxy.shutdown().await;
}

/// `portvakt check` and `portvakt run` on a config whose key block is `key`: exit code and stderr.
fn start_up(key: &str) -> Vec<(i32, String)> {
    let h = hsm();
    let yaml = config_with_key(
        "https://test.maskinporten.no/",
        "https://test.maskinporten.no/token",
        key,
        &ONE_ROUTE.replace("{upstream}", "https://example.org/"),
    );
    let file = h
        .dir
        .join(format!("start-up-{}.yaml", sha256_hex(yaml.as_bytes())));
    std::fs::write(&file, yaml).unwrap();
    ["check", "run"]
        .iter()
        .map(|command| {
            let out = Command::new(env!("CARGO_BIN_EXE_portvakt"))
                .args([command, "--config"])
                .arg(&file)
                .env("SOFTHSM2_CONF", &h.conf)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

#[test]
fn wrong_pin_unknown_token_unknown_key_and_unusable_keys_stop_check_and_run_with_exact_errors() {
    let _alone = ALONE.blocking_lock();
    let h = hsm();
    let module = h.module.display().to_string();
    let kid = format!("      kid: {KID}\n");
    let wrong_pin = format!(
        "      pkcs11:\n        module: {module}\n        token: registered\n        key: maskinporten\n        pin: wrong-pin-5678\n{kid}"
    );
    let cases = [
        (
            wrong_pin,
            format!("clients.vendor.key.pkcs11: token `registered` in {module}: the PIN is wrong (the token refused the login); check `pin` or `pin_file`"),
        ),
        (
            key_block("no-such-token", "maskinporten", &kid),
            format!("clients.vendor.key.pkcs11: no token labelled `no-such-token` in {module}; the tokens there are: "),
        ),
        (
            key_block("registered", "no-such-key", &kid),
            format!("clients.vendor.key.pkcs11: token `registered` in {module}: no private key labelled `no-such-key` in the token; its private keys are: `maskinporten`"),
        ),
        (
            key_block("registered", "maskinporten", ""),
            "no certificate labelled `maskinporten` in the token, and no kid".to_string(),
        ),
        (
            key_block("refused", "small", &kid),
            "the key `small` has 1024 bits; Maskinporten needs at least 2048".to_string(),
        ),
        (
            key_block("refused", "ec", &kid),
            "the key `ec` is not an RSA key: Maskinporten takes RSA keys only (RS256)".to_string(),
        ),
        (
            key_block("refused", "mismatch", ""),
            "the certificate labelled `mismatch` (C=NO, O=TESTKOMMUNE".to_string(),
        ),
    ];
    for (key, want) in cases {
        for (code, stderr) in start_up(&key) {
            assert_eq!(code, 64, "{stderr}");
            assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
            assert!(
                !stderr.contains("wrong-pin-5678") && !stderr.contains(PIN),
                "{stderr}"
            );
        }
    }
    // The labels listed are every token's.
    let (_, stderr) = &start_up(&key_block("no-such-token", "maskinporten", &kid))[0];
    for label in [
        "`registered`",
        "`lost`",
        "`virksomhet`",
        "`keygen`",
        "`rotation`",
    ] {
        assert!(stderr.contains(label), "{stderr}");
    }
}

#[tokio::test]
async fn a_lost_login_is_re_established_and_while_it_cannot_be_the_route_answers_503() {
    let _alone = ALONE.lock().await;
    let h = hsm();
    let s = setup(
        registered_client(),
        &key_block("lost", "maskinporten", &format!("      kid: {KID}\n")),
        &two_routes(),
    )
    .await;
    assert_eq!(get(&s.proxy, "/nav/x").await.status(), 200);

    // Log out through a second session: the login belongs to the process, so portvakt's session
    // is logged out too. The next signature notices, logs in again and succeeds.
    let token = portvakt::keys::pkcs11::token(
        &h.module,
        "lost",
        portvakt::support::secret::Secret::new(PIN.to_string()),
    )
    .unwrap();
    token.rw_session().unwrap().logout().unwrap();
    assert_eq!(get(&s.proxy, "/nav/x").await.status(), 200, "cached token");
    let response = get(&s.proxy, "/ks/x").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(s.mock.grants().len(), 2);

    // Now the login cannot be re-established: the PIN was changed behind portvakt's back.
    let module = portvakt::keys::pkcs11::module(&h.module).unwrap();
    let slot = token.slot().unwrap();
    let other = AuthPin::from("changed-pin-99".to_string());
    let session = module.open_rw_session(slot).unwrap();
    session
        .set_pin(&AuthPin::from(PIN.to_string()), &other)
        .unwrap();
    session.logout().unwrap();
    drop(session);
    s.proxy.shutdown().await;
    let s = setup(
        registered_client(),
        &key_block("lost", "maskinporten", &format!("      kid: {KID}\n")).replace(
            &format!("pin_file: {}", h.pin_file.display()),
            "pin: changed-pin-99",
        ),
        &two_routes(),
    )
    .await;
    assert_eq!(get(&s.proxy, "/nav/x").await.status(), 200);
    // Back to the PIN portvakt does not know, and logged out.
    let session = module.open_rw_session(slot).unwrap();
    // portvakt is logged in with this PIN, and the login is the process's.
    match session.login(UserType::User, Some(&other)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    session
        .set_pin(&other, &AuthPin::from(PIN.to_string()))
        .unwrap();
    session.logout().unwrap();
    drop(session);
    let response = get(&s.proxy, "/ks/x").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let problem = problem(response).await;
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("hsm-unavailable"),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("token `lost`") && detail.contains("PIN is wrong"),
        "{detail}"
    );
    assert!(
        !detail.contains(PIN) && !detail.contains("changed-pin-99"),
        "{detail}"
    );
    assert_eq!(
        get(&s.proxy, "/nav/x").await.status(),
        200,
        "a valid token keeps serving"
    );
    // A refused PIN is not tried again (an HSM locks it after a few tries) until a new one loads.
    let mut remembered = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let response = get(&s.proxy, "/ks/x").await;
        assert_eq!(response.status(), 503);
        let detail = common::problem(response).await["detail"].to_string();
        if detail.contains("does not try it again") {
            remembered = true;
            break;
        }
    }
    assert!(remembered, "the refused PIN was tried again");
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn a_new_key_label_and_kid_take_effect_on_reload() {
    let _alone = ALONE.lock().await;
    let h = hsm();
    // A second key in the rotation token, made by portvakt itself.
    let made = portvakt::keys::pkcs11::generate(
        &h.module,
        "rotation",
        portvakt::support::secret::Secret::new(PIN.to_string()),
        "second",
        2048,
        "second-TEST.2026-11-30",
    )
    .unwrap();
    let client = registered_client().public_jwk(&made.public_jwks["keys"][0]);
    let s = setup(
        client,
        &key_block("rotation", "first", &format!("      kid: {KID}\n")),
        &two_routes(),
    )
    .await;
    assert_eq!(get(&s.proxy, "/nav/x").await.status(), 200);
    let yaml = config_with_key(
        &s.mock.issuer(),
        &s.mock.token_endpoint(),
        &key_block("rotation", "second", "      kid: second-TEST.2026-11-30\n"),
        &two_routes().replace("{upstream}", &s.upstream.url()),
    )
    .replace(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n",
        &format!("listen: {}\n", s.proxy.listen),
    );
    let file = h.dir.join("rotation.yaml");
    std::fs::write(&file, yaml).unwrap();
    s.proxy.reload(&file).await.unwrap();
    let response = get(&s.proxy, "/ks/x").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let grants = s.mock.grants();
    assert_eq!(
        grants.last().unwrap().header["kid"],
        "second-TEST.2026-11-30"
    );
    assert_eq!(grants.last().unwrap().rejected, None);
    s.proxy.shutdown().await;
}

#[test]
fn check_shows_where_the_key_is_and_the_certificate() {
    let _alone = ALONE.blocking_lock();
    let h = hsm();
    for (key, wants) in [
        (
            key_block("registered", "maskinporten", &format!("      kid: {KID}\n")),
            vec![
                "key pkcs11 (RS256, 2048 bits",
                "token `registered`, key `maskinporten`",
                KID,
            ],
        ),
        (
            key_block("virksomhet", "auth", ""),
            vec![
                "token `virksomhet`, key `auth`",
                "certificate C=NO, O=TESTKOMMUNE",
                "org number 910753614",
                "not after 2051-11-15",
            ],
        ),
    ] {
        let yaml = config_with_key(
            "https://test.maskinporten.no/",
            "https://test.maskinporten.no/token",
            &key,
            &ONE_ROUTE.replace("{upstream}", "https://example.org/"),
        );
        let file = h
            .dir
            .join(format!("check-{}.yaml", sha256_hex(yaml.as_bytes())));
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_portvakt"))
            .args(["check", "--config"])
            .arg(&file)
            .env("SOFTHSM2_CONF", &h.conf)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        for want in wants {
            assert!(stdout.contains(want), "want {want:?} in:\n{stdout}");
        }
        assert!(
            stdout.contains(&format!("in HSM: module {}", h.module.display())),
            "{stdout}"
        );
        assert!(!stdout.contains(PIN));
    }
}

/// OpenSC's pkcs11-spy, which logs every PKCS#11 call it passes on to the module in `PKCS11SPY`.
fn spy() -> PathBuf {
    installed(
        &[
            "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
            "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
            "/usr/lib/pkcs11/pkcs11-spy.so",
        ],
        "pkcs11-spy (Debian's opensc-pkcs11)",
    )
}

/// How many `C_Login` calls the spy logged in `log`.
fn logins(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("C_Login"))
        .count()
}

/// A config with three clients whose keys are in one token, through the spy, with `pin`.
fn three_clients_in_one_token(pin: &str) -> String {
    let h = hsm();
    let key = format!(
        "    key:\n      pkcs11:\n        module: {}\n        token: registered\n        key: maskinporten\n        pin: {pin}\n      kid: {KID}\n",
        spy().display()
    );
    let clients: String = ["a", "b", "c"]
        .iter()
        .map(|c| format!("  {c}:\n    client_id: {CLIENT_ID}-{c}\n{key}"))
        .collect();
    let routes: String = ["a", "b", "c"]
        .iter()
        .map(|c| format!("  - name: {c}\n    prefix: /{c}/\n    upstream: http://127.0.0.1:9/\n    client: {c}\n    scopes: [{SCOPE}]\n"))
        .collect();
    let _ = h;
    format!("listen: 127.0.0.1:0\nmaskinporten:\n  environment: test\nclients:\n{clients}routes:\n{routes}")
}

#[test]
fn a_wrong_pin_is_tried_once_per_process_whatever_the_clients_in_its_token() {
    let _alone = ALONE.blocking_lock();
    let h = hsm();
    let yaml = h.dir.join("three-wrong.yaml");
    std::fs::write(&yaml, three_clients_in_one_token("wrong-pin-5678")).unwrap();
    for command in ["check", "run"] {
        let log = h.dir.join(format!("spy-{command}.log"));
        let _ = std::fs::remove_file(&log);
        let out = Command::new(env!("CARGO_BIN_EXE_portvakt"))
            .args([command, "--config"])
            .arg(&yaml)
            .env("SOFTHSM2_CONF", &h.conf)
            .env("PKCS11SPY", &h.module)
            .env("PKCS11SPY_OUTPUT", &log)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {stderr}");
        assert!(stderr.contains("the PIN is wrong"), "{command}: {stderr}");
        assert_eq!(
            logins(&log),
            1,
            "{command}: C_Login calls, three clients in one token"
        );
    }
}

#[tokio::test]
async fn a_reload_that_keeps_the_pin_logs_in_no_more() {
    let _alone = ALONE.lock().await;
    let h = hsm();
    let log = h.dir.join("spy-reload.log");
    // The spy reads these when this process first loads it, which is here.
    std::env::set_var("PKCS11SPY", &h.module);
    std::env::set_var("PKCS11SPY_OUTPUT", &log);
    let yaml = h.dir.join("three-right.yaml");
    std::fs::write(&yaml, three_clients_in_one_token(PIN)).unwrap();
    let config = portvakt::config::load(&yaml).unwrap();
    let proxy = portvakt::app::start(&config).await.unwrap();
    assert_eq!(logins(&log), 1, "the first start");
    proxy.reload(&yaml).await.unwrap();
    proxy.reload(&yaml).await.unwrap();
    assert_eq!(
        logins(&log),
        1,
        "a reload that kept the PIN logged in again"
    );
    proxy.shutdown().await;
}
