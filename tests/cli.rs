//! The command line as an operator uses it: `check`, `run`, `token`, `keygen` and `demo`, as real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portvakt");

/// Runs the binary to completion with extra environment variables.
fn portvakt(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_prints_a_summary_without_secrets() {
    let dir = config_dir("check-ok");
    let yaml = config_yaml("http://127.0.0.1:9/", "http://127.0.0.1:9/token", "  - name: fiks\n    prefix: /fiks/\n    upstream: https://api.fiks.test.ks.no/\n    client: vendor\n    scopes: [ks:fiks]\n    headers:\n      IntegrasjonPassord: ${PV_TEST_PASSORD}\n");
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let config = dir.join("portvakt.yaml");
    let out = portvakt(
        &["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[("PV_TEST_PASSORD", "hemmelig-passord")],
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("vendor: client_id 7e1f2a3b"), "{stdout}");
    assert!(stdout.contains("key pem (RS256, 2048 bits"), "{stdout}");
    assert!(stdout.contains(&format!("kid {KID}")), "{stdout}");
    assert!(
        stdout.contains("fiks: /fiks -> https://api.fiks.test.ks.no/"),
        "{stdout}"
    );
    assert!(stdout.contains("scopes ks:fiks"), "{stdout}");
    assert!(!stdout.contains("hemmelig-passord"));
}

#[test]
fn check_and_run_refuse_a_bad_config_listing_every_problem() {
    let dir = config_dir("check-bad");
    let yaml = config_yaml("http://127.0.0.1:9/", "http://127.0.0.1:9/token", "  - name: nav\n    prefix: /nav/\n    upstream: https://api.nav.no/\n    client: fiks\n    scpoe: [x]\n");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    for command in ["check", "run"] {
        let out = portvakt(
            &[command.as_ref(), "--config".as_ref(), path.as_os_str()],
            &[],
        );
        assert_eq!(out.status.code(), Some(64), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.yaml has 3 problems"), "{stderr}");
        assert!(
            stderr.contains("routes[0].client: unknown client \"fiks\" (known: vendor)"),
            "{stderr}"
        );
        assert!(
            stderr.contains("routes[0].scpoe: unknown key (did you mean `scopes`?)"),
            "{stderr}"
        );
        assert!(stderr.contains("routes[0].scopes: is required"), "{stderr}");
    }
}

#[tokio::test]
async fn run_serves_from_portvakt_config_and_drains_on_sigterm() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let upstream = portvakt::mock::EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let port = free_port();
    let dir = config_dir("run");
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &format!("  - name: nav\n    prefix: /nav/\n    upstream: {}\n    client: vendor\n    scopes: [ks:fiks]\n", upstream.url()))
        .replace("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .env("PORTVAKT_CONFIG", dir.join("portvakt.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/nav/hello");
    assert_eq!(
        first_answer(&http, &url).await,
        Some(reqwest::StatusCode::OK)
    );
    assert!(upstream.records()[0].token_valid);

    let second = http
        .get(&url)
        .header("x-request-id", "caller-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-request-id"], "caller-id-1");
    assert_eq!(upstream.records()[1].headers["x-request-id"], "caller-id-1");
    let made = upstream.records()[0].headers["x-request-id"].clone();
    assert_eq!(made.len(), 32, "an id is made when the caller sends none");
    assert_eq!(
        mock.token_requests(),
        1,
        "the second call used the cached token"
    );
    let unknown = format!("http://127.0.0.1:{port}/unknown/12345678901?fnr=12345678901");
    assert_eq!(http.get(&unknown).send().await.unwrap().status(), 404);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = exited.expect("portvakt did not stop on SIGTERM");
    assert!(exited.success(), "{exited:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("shutting down"), "{stderr}");
    // Not a terminal: one JSON object per line, and every line a request caused names its id.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // On the line itself, or on a span it was logged in (a token fetch's).
    let request_id = |line: &serde_json::Value| -> Option<String> {
        line["fields"]["request_id"]
            .as_str()
            .or_else(|| {
                line["spans"]
                    .as_array()?
                    .iter()
                    .find_map(|s| s["request_id"].as_str())
            })
            .map(str::to_string)
    };
    let served: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request" && l["fields"]["route"] == "nav")
        .collect();
    assert_eq!(served.len(), 2, "one line per request: {stderr}");
    assert_eq!(served[0]["fields"]["status"], 200);
    let ids: Vec<_> = served.iter().map(|l| request_id(l)).collect();
    assert_eq!(
        ids,
        [
            Some(made.to_str().unwrap().to_string()),
            Some("caller-id-1".into())
        ]
    );
    let fetched = lines
        .iter()
        .find(|l| l["fields"]["message"] == "token fetched")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(fetched["fields"]["client"], "vendor");
    assert_eq!(fetched["fields"]["key"], format!("kid {KID}"));
    assert_eq!(fetched["fields"]["scopes"], "ks:fiks");
    assert_eq!(
        request_id(fetched),
        ids[0],
        "the fetch is logged under the request that caused it"
    );
    assert!(
        !stderr.contains("hello"),
        "paths are not logged at info: {stderr}"
    );
    assert!(
        !stderr.contains("12345678901"),
        "nor the paths or queries of refused calls: {stderr}"
    );
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request" && l["fields"]["status"] == 404)
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(refused["fields"]["route"], "-");
    assert!(request_id(refused).is_some());
    assert!(!stderr.contains("Bearer"), "{stderr}");
}

#[test]
fn demo_once_shows_a_verified_token() {
    let dir = std::env::temp_dir().join(format!("portvakt-cli-demo-{}", std::process::id()));
    let out = portvakt(
        &[
            "demo".as_ref(),
            "--once".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ],
        &[],
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("curl -s http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("\"verified\": true"), "{stdout}");
    assert!(stdout.contains("\"scope\": \"demo:echo\""), "{stdout}");
    // The renewed client's first key was made, registered and activated through the mock's
    // self-service API before the proxy started.
    assert!(
        stdout.contains("demo-renewed: new key demo-TEST."),
        "{stdout}"
    );
    assert!(stdout.contains("demo-renewed: done"), "{stdout}");
    assert!(dir.join("demo.yaml").exists());
    // The written config is a real one: `check` accepts it.
    let demo_yaml = dir.join("demo.yaml");
    assert_success(&portvakt(
        &["check".as_ref(), "--config".as_ref(), demo_yaml.as_os_str()],
        &[],
    ));
}

/// Runs the binary off the async runtime, so the mocks on it keep answering.
async fn portvakt_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        portvakt(&args, &[])
    })
    .await
    .unwrap()
}

fn p12_key_yaml() -> String {
    format!(
        "      pkcs12: {}\n      password_file: {}\n",
        fixtures().join("pki/virksomhet-aes.p12").display(),
        fixtures().join("pki/password.txt").display()
    )
}

#[test]
fn check_shows_the_certificate_its_org_number_and_expiry() {
    let dir = config_dir("check-p12");
    let yaml = config_with_key(
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/token",
        &p12_key_yaml(),
        "  - name: nav\n    prefix: /nav/\n    upstream: https://api.nav.no/\n    client: vendor\n    scopes: [nav:forsikring/samtykke]\n",
    );
    std::fs::write(dir.join("p12.yaml"), yaml).unwrap();
    let out = portvakt(
        &[
            "check".as_ref(),
            "--config".as_ref(),
            dir.join("p12.yaml").as_os_str(),
        ],
        &[],
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "key pkcs12 (RS256, 2048 bits",
        "certificate C=NO, O=TESTFORSIKRING AS, serialNumber=991825827, CN=TESTFORSIKRING AS",
        "issuer C=NO, O=Portvakt Test CA, CN=Portvakt Test Virksomhet CA",
        "org number 991825827",
        "sent as x5c (leaf only)",
        "not after 205",
        "days left)",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(!stdout.contains("test-passord-1234"));
    assert!(!stdout.contains("WARNING"), "{stdout}");
}

#[tokio::test]
async fn token_prints_one_token_with_its_decoded_claims() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let dir = config_dir("token");
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), "  - name: fiks\n    prefix: /fiks/\n    upstream: https://api.fiks.test.ks.no/\n    client: vendor\n    scopes: [ks:fiks]\n");
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let config = dir.join("portvakt.yaml").display().to_string();
    let out = portvakt_async(vec![
        "token".into(),
        "--config".into(),
        config,
        "--route".into(),
        "fiks".into(),
        "--decode".into(),
    ])
    .await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["route"], "fiks");
    assert_eq!(json["key"], format!("kid {KID}"));
    assert_eq!(json["expires_in"], 120);
    assert_eq!(json["claims"]["scope"], "ks:fiks");
    assert_eq!(
        json["claims"]["consumer"]["ID"],
        format!("0192:{SUPPLIER_ORG}")
    );
    assert_eq!(json["header"]["alg"], "RS256");
    let token = json["access_token"].as_str().unwrap();
    assert!(token.len() > 100);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token));
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn token_exits_non_zero_with_maskinporten_s_error_and_a_hint() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let dir = config_dir("token-refused");
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), "  - name: nav\n    prefix: /nav/\n    upstream: https://api.nav.no/\n    client: vendor\n    scopes: [nav:not-granted]\n");
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let config = dir.join("portvakt.yaml").display().to_string();
    let args = |route: &str| {
        vec![
            "token".to_string(),
            "--config".into(),
            config.clone(),
            "--route".into(),
            route.into(),
        ]
    };
    let out = portvakt_async(args("nav")).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_scope (MP-200)"), "{stderr}");
    assert!(
        stderr.contains("hint: the client lacks scope nav:not-granted: ask the API owner"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "MP-200");
    assert!(json.get("access_token").is_none());

    let out = portvakt_async(args("nope")).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named `nope` (routes: nav)"));
}

#[tokio::test]
async fn token_fetches_one_consent_token_as_the_route_would() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let (id, person) = ("77ed8698-e619-4066-9eb4-5c1eb3f165a1", "03867199348");
    let year = portvakt::support::time::unix_now() as i64 + 365 * 86_400;
    mock.consents().give(id, person, SUPPLIER_ORG, year);
    let dir = config_dir("token-consent");
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), "  - name: samtykke\n    prefix: /samtykke/\n    upstream: https://api.nav.no/\n    client: vendor\n    scopes: [nav:forsikring/samtykke]\n    consent_per_call: true\n");
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let config = dir.join("portvakt.yaml").display().to_string();
    let args = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "token", "--config", &config, "--route", "samtykke", "--decode",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let out = portvakt_async(args(&["--consent", id, "--from", person])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let consent = &json["claims"]["authorization_details"][0];
    assert_eq!(consent["type"], "urn:altinn:consent");
    assert_eq!(consent["id"], id);
    assert_eq!(consent["to"]["ID"], format!("0192:{SUPPLIER_ORG}"));
    // An unknown consent: Maskinporten's refusal and what to do.
    let out = portvakt_async(args(&[
        "--consent",
        "00000000-0000-4000-8000-000000000000",
        "--from",
        person,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Maskinporten refused the consent: invalid_authorization_details"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: Altinn holds no usable consent with this id"),
        "{stderr}"
    );
    // The route takes a consent per call: without one, a usage error.
    let out = portvakt_async(args(&[])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("takes a consent per call"));
    let out = portvakt_async(args(&["--consent", id, "--from", "01010012357"])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from is not a fødselsnummer"));
}

#[tokio::test]
async fn token_acts_for_a_listed_party_and_exchanges_at_altinn() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let altinn = portvakt::mock::MockAltinn::start(mock.decoding_key(), 1800)
        .await
        .unwrap();
    altinn.set_quoted(true);
    let dir = config_dir("token-party");
    let routes = format!(
        "  - name: kunder\n    prefix: /kunder/\n    upstream: https://api.nav.no/\n    client: vendor\n    scopes: [nav:forsikring/samtykke]\n    consumer_orgs: [\"{CUSTOMER_ORG}\", \"{OTHER_CUSTOMER_ORG}\"]\n  - name: apps\n    prefix: /apps/\n    upstream: https://ttd.apps.tt02.altinn.no/\n    client: vendor\n    scopes: [altinn:instances.read]\n    systemuser_org: \"{CUSTOMER_ORG}\"\n    altinn_exchange: {}\n",
        altinn.url()
    );
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes);
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let config = dir.join("portvakt.yaml").display().to_string();
    let args = |route: &str, party: Option<&str>| {
        let mut args = vec![
            "token".to_string(),
            "--config".into(),
            config.clone(),
            "--route".into(),
            route.into(),
            "--decode".into(),
        ];
        if let Some(party) = party {
            args.extend(["--party".to_string(), party.to_string()]);
        }
        args
    };

    let out = portvakt_async(args("kunder", Some(OTHER_CUSTOMER_ORG))).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["consumer_org"], OTHER_CUSTOMER_ORG);
    assert_eq!(
        json["claims"]["consumer"]["ID"],
        format!("0192:{OTHER_CUSTOMER_ORG}")
    );

    let out = portvakt_async(args("kunder", None)).await;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("name one with --party"), "{stderr}");
    let out = portvakt_async(args("kunder", Some(STRANGER_ORG))).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("not {STRANGER_ORG}")));
    assert_eq!(
        mock.token_requests(),
        1,
        "refused parties cost no token request"
    );

    let out = portvakt_async(args("apps", None)).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["authorization_details"][0]["systemuser_org"]["ID"],
        format!("0192:{CUSTOMER_ORG}")
    );
    assert_eq!(json["altinn_claims"]["token_type"], "altinn");
    assert!(json["altinn_expires_in"].as_u64().unwrap() > 1700);
    assert_eq!(altinn.exchanges(), 1);
}

#[test]
fn keygen_writes_the_key_files_and_never_overwrites_them() {
    let dir = config_dir("keygen");
    let out_dir = dir.join("keys");
    let _ = std::fs::remove_dir_all(&out_dir);
    let args = |bits: &'static str| {
        [
            "keygen".as_ref(),
            "insurer".as_ref(),
            "--env".as_ref(),
            "prod".as_ref(),
            "--bits".as_ref(),
            std::ffi::OsStr::new(bits),
            "--out".as_ref(),
            out_dir.as_os_str(),
        ]
    };
    let out = portvakt(&args("3072"), &[]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Generated RSA 3072 key insurer-PROD."),
        "{stdout}"
    );
    assert!(
        stdout.contains("sjolvbetjening.samarbeid.digdir.no"),
        "{stdout}"
    );
    let files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    let again = portvakt(&args("3072"), &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let small = portvakt(&args("1024"), &[]);
    assert_eq!(small.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&small.stderr).contains("choose 2048, 3072 or 4096"));
}
