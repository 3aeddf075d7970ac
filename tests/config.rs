//! Configuration: every problem reported at once with its YAML path; keys in every supported form;
//! examples in config/ parse; secrets never printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixtures;
use std::collections::HashMap;
use std::path::Path;

fn parse_with(
    yaml: &str,
    env: &[(&str, &str)],
) -> Result<portvakt::config::Config, portvakt::config::ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.get(name).cloned();
    portvakt::config::from_str(yaml, Path::new("portvakt.yaml"), &fixtures(), &lookup)
}

fn issues(yaml: &str) -> Vec<String> {
    match parse_with(yaml, &[]) {
        Ok(_) => panic!("expected the configuration to be refused"),
        Err(e) => e.issues.iter().map(ToString::to_string).collect(),
    }
}

const GOOD: &str = r#"listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9090
maskinporten:
  environment: test
clients:
  vendor:
    client_id: 5f0c3a6e-0000-4000-8000-000000000001
    key:
      pem: client-a.pem
      kid: vendor-TEST.2026-11
routes:
  - name: nav
    prefix: /nav/
    upstream: https://api.nav.no/forsikring/
    client: vendor
    scopes: [nav:forsikring/samtykke]
"#;

#[test]
fn a_good_config_loads_with_environment_defaults() {
    let c = parse_with(GOOD, &[]).unwrap();
    assert_eq!(c.maskinporten.issuer, "https://test.maskinporten.no/");
    assert_eq!(
        c.maskinporten.token_endpoint,
        "https://test.maskinporten.no/token"
    );
    assert_eq!(c.routes[0].prefix, "/nav");
    assert_eq!(c.clients[0].key.kid(), Some("vendor-TEST.2026-11"));
    assert_eq!(c.clients[0].key.bits(), 2048);
    let prod = parse_with(&GOOD.replace("environment: test", "environment: prod"), &[]).unwrap();
    assert_eq!(prod.maskinporten.issuer, "https://maskinporten.no/");
}

#[test]
fn custom_environment_needs_an_issuer_and_defaults_the_endpoint() {
    let yaml = GOOD.replace(
        "environment: test",
        "environment: custom\n  issuer: http://127.0.0.1:9999/",
    );
    let c = parse_with(&yaml, &[]).unwrap();
    assert_eq!(c.maskinporten.token_endpoint, "http://127.0.0.1:9999/token");
    let missing = issues(&GOOD.replace("environment: test", "environment: custom"));
    assert_eq!(missing, ["maskinporten.issuer: is required"]);
    let fixed = issues(&GOOD.replace(
        "environment: test",
        "environment: test\n  issuer: https://x/",
    ));
    assert!(
        fixed[0].starts_with("maskinporten.issuer: is fixed by environment test"),
        "{fixed:?}"
    );
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion() {
    let found = issues(&GOOD.replace("    scopes:", "    scpoe:"));
    assert!(
        found.contains(&"routes[0].scpoe: unknown key (did you mean `scopes`?)".to_string()),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("routes[0].scopes: is required")),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let yaml = r#"listen: localhost:8080
maskinporten:
  environment: staging
clients:
  vendor:
    client_id: abc
    key:
      pem: client-a.pem
      kid: k1
      jwk: client-b.jwk.json
routes:
  - name: nav
    prefix: nav
    upstream: ftp://x/
    client: vendor
    scopes: [a]
  - name: fiks
    prefix: /fiks/
    upstream: https://api.fiks.ks.no/
    client: fiks
    scopes: [ks:fiks]
    consumer_org: "123456789"
    headers:
      IntegrasjonPassord: ${FIKS_PASSWORD}
"#;
    let found = issues(yaml);
    let expect = [
        "listen: `localhost:8080` is not an IP address and port",
        "maskinporten.environment: unknown environment `staging`",
        "clients.vendor.key: needs exactly one key form (pem + kid, jwk, jwk_base64, jwk_base64_file, or pkcs12 + password), found pem and jwk",
        "routes[0].prefix: `nav` must start with `/`",
        "routes[0].upstream: `ftp://x/` is not an http:// or https:// URL",
        "routes[1].client: unknown client \"fiks\" (known: vendor)",
        "routes[1].consumer_org: `123456789` is not an organisation number",
        "routes[1].headers.IntegrasjonPassord: environment variable FIKS_PASSWORD is not set (used as ${FIKS_PASSWORD})",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn unknown_client_lists_the_known_ones() {
    let found = issues(&GOOD.replace("    client: vendor", "    client: fiks"));
    assert_eq!(
        found,
        ["routes[0].client: unknown client \"fiks\" (known: vendor)"]
    );
}

#[test]
fn the_error_names_the_file() {
    let err = parse_with(&GOOD.replace("    client: vendor", "    client: fiks"), &[]).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("portvakt.yaml has 1 problem:"), "{text}");
    assert!(
        text.contains("portvakt.yaml: routes[0].client: unknown client"),
        "{text}"
    );
}

#[test]
fn invalid_yaml_and_empty_files_are_explained() {
    assert!(issues("listen: [unclosed")[0].starts_with("not valid YAML"));
    assert!(issues("")[0].starts_with("the file is empty"));
}

#[test]
fn duplicate_names_and_prefixes_are_refused() {
    let route = "  - name: nav\n    prefix: /nav/\n    upstream: https://api.nav.no/\n    client: vendor\n    scopes: [a]\n";
    let found = issues(&format!("{GOOD}{route}"));
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("routes[1].name: `nav` is used by an earlier route")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("routes[1].prefix: `/nav` is used by an earlier route")),
        "{found:?}"
    );
}

fn with_key(key: &str) -> String {
    GOOD.replace(
        "      pem: client-a.pem\n      kid: vendor-TEST.2026-11\n",
        key,
    )
}

#[test]
fn keys_load_in_every_form() {
    let pkcs1 = parse_with(
        &with_key("      pem: client-a.pkcs1.pem\n      kid: a\n"),
        &[],
    )
    .unwrap();
    let pkcs8 = parse_with(&with_key("      pem: client-a.pem\n      kid: a\n"), &[]).unwrap();
    assert_eq!(
        pkcs1.clients[0].key.thumbprint(),
        pkcs8.clients[0].key.thumbprint()
    );

    let jwk = parse_with(&with_key("      jwk: client-b.jwk.json\n"), &[]).unwrap();
    assert_eq!(jwk.clients[0].key.kid(), Some("client-b-TEST.2026-11-21"));
    let set = parse_with(&with_key("      jwk: client-b.jwks.json\n"), &[]).unwrap();
    assert_eq!(
        set.clients[0].key.kid(),
        Some("client-b-TEST.2026-11-21"),
        "the last key of a set is the current one"
    );
    let b64 = std::fs::read_to_string(fixtures().join("client-b.jwk.b64")).unwrap();
    let from_env = parse_with(
        &with_key("      jwk_base64: ${MP_JWK}\n"),
        &[("MP_JWK", b64.trim())],
    )
    .unwrap();
    assert_eq!(
        from_env.clients[0].key.thumbprint(),
        jwk.clients[0].key.thumbprint()
    );
    assert_eq!(from_env.clients[0].key.form(), "jwk_base64");
}

#[test]
fn bad_keys_are_startup_errors_naming_the_client_and_file() {
    let cases = [
        (
            "      pem: small-1024.pem\n      kid: a\n",
            "clients.vendor.key.pem:",
            "smaller than 2048 bits; Maskinporten needs at least 2048",
        ),
        (
            "      pem: ec.pem\n      kid: a\n",
            "clients.vendor.key.pem:",
            "RSA",
        ),
        (
            "      pem: missing.pem\n      kid: a\n",
            "clients.vendor.key.pem: cannot read",
            "missing.pem",
        ),
        (
            "      pem: client-a.pem\n",
            "clients.vendor.key.kid: is required with pem",
            "",
        ),
        (
            "      jwk: client-b.jwk.json\n      kid: x\n",
            "clients.vendor.key.kid: does not go with jwk",
            "",
        ),
        (
            "      jwk_base64: not-base64!!\n",
            "clients.vendor.key.jwk_base64: jwk_base64 is not valid base64",
            "",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n      password: wrong\n",
            "clients.vendor.key.pkcs12:",
            "virksomhet-aes.p12: wrong password for the PKCS#12 file",
        ),
        (
            "      pkcs12: pki/virksomhet-legacy.p12\n      password: wrong\n",
            "clients.vendor.key.pkcs12:",
            "virksomhet-legacy.p12: wrong password for the PKCS#12 file",
        ),
        (
            "      pkcs12: client-a.pem\n      password: x\n",
            "clients.vendor.key.pkcs12:",
            "client-a.pem: not a PKCS#12 (.p12/.pfx) file",
        ),
        (
            "      pkcs12: pki/ec.p12\n      password_file: pki/password.txt\n",
            "clients.vendor.key.pkcs12:",
            "ec.p12: the private key is an EC key: Maskinporten takes RSA keys only",
        ),
        (
            "      pkcs12: pki/expired.p12\n      password_file: pki/password.txt\n",
            "clients.vendor.key.pkcs12:",
            "expired.p12: the certificate (C=NO, O=TESTFORSIKRING AS, serialNumber=991825827, CN=TESTFORSIKRING AS) expired on 2021-01-01",
        ),
        (
            "      pkcs12: pki/not-yet-valid.p12\n      password_file: pki/password.txt\n",
            "clients.vendor.key.pkcs12:",
            "is not valid until 2090-01-01",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n      alias: prod-cert\n",
            "clients.vendor.key.pkcs12:",
            "no private key with alias `prod-cert` in the file; it holds: testforsikring-auth",
        ),
        (
            "      pkcs12: pki/missing.p12\n      password_file: pki/password.txt\n",
            "clients.vendor.key.pkcs12: cannot read",
            "missing.p12",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n",
            "clients.vendor.key: pkcs12 needs the file's password",
            "password_file",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/missing.txt\n",
            "clients.vendor.key.password_file: cannot read",
            "missing.txt",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n      password: x\n      kid: k\n",
            "clients.vendor.key.kid: does not go with pkcs12",
            "x5c",
        ),
        (
            "      pem: client-a.pem\n      kid: a\n      x5c_chain: true\n",
            "clients.vendor.key.x5c_chain: only goes with pkcs12",
            "",
        ),
        (
            "      pkcs11: {module: /nonexistent/libpkcs11.so, token: t, key: k}\n      kid: a\n",
            "clients.vendor.key.pkcs11: needs the token's user PIN",
            "pin_file",
        ),
        (
            "      pkcs11: {module: /nonexistent/libpkcs11.so, token: t, key: k, pin: '1', pin_file: f}\n      kid: a\n",
            "clients.vendor.key.pkcs11: has both pin and pin_file",
            "",
        ),
        (
            "      pkcs11: {token: t, key: k, pin: '1'}\n      kid: a\n",
            "clients.vendor.key.pkcs11.module",
            "",
        ),
        (
            "      pkcs11: {module: /nonexistent/libpkcs11.so, token: t, key: k, pin: '1'}\n      kid: a\n      x5c_chain: true\n",
            "clients.vendor.key.x5c_chain: does not go with kid",
            "",
        ),
        (
            "      pkcs11: {module: /nonexistent/libpkcs11.so, token: t, key: k, pin: '1'}\n      kid: a\n",
            "clients.vendor.key.pkcs11: the PKCS#11 module /nonexistent/libpkcs11.so cannot be loaded",
            "install the HSM vendor's library",
        ),
        (
            "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n      x5c_chain: yes\n",
            "clients.vendor.key.x5c_chain: expected true or false",
            "",
        ),
        (
            "      {}\n",
            "clients.vendor.key: needs exactly one key form",
            "found none",
        ),
    ];
    for (key, start, contains) in cases {
        let found = issues(&with_key(key));
        assert_eq!(found.len(), 1, "{key}: {found:?}");
        assert!(
            found[0].starts_with(start) && found[0].contains(contains),
            "{key}: {found:?}"
        );
    }
}

#[test]
fn public_jwk_is_refused() {
    let dir = std::env::temp_dir().join(format!("portvakt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = r#"{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}"#;
    std::fs::write(dir.join("public.json"), public).unwrap();
    let yaml = with_key(&format!(
        "      jwk: {}\n",
        dir.join("public.json").display()
    ));
    let found = issues(&yaml);
    assert!(found[0].contains("this is a public JWK"), "{found:?}");
}

#[test]
fn secrets_never_show_in_debug_output_or_errors() {
    let b64 = std::fs::read_to_string(fixtures().join("client-b.jwk.b64")).unwrap();
    let yaml = with_key("      jwk_base64: ${MP_JWK}\n").replace(
        "    scopes: [nav:forsikring/samtykke]\n",
        "    scopes: [nav:forsikring/samtykke]\n    headers:\n      IntegrasjonPassord: ${PASS}\n",
    );
    let config = parse_with(
        &yaml,
        &[("MP_JWK", b64.trim()), ("PASS", "very-secret-passord")],
    )
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("very-secret-passord"));
    assert!(!debug.contains(b64.trim()));
    let d = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixtures().join("client-b.jwk.json")).unwrap(),
    )
    .unwrap()["d"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!debug.contains(&d[..20]));
    let summary = portvakt::cli::check::summary(&config, Path::new("portvakt.yaml"));
    assert!(
        !summary.contains("very-secret-passord")
            && summary.contains("integrasjonpassord (values hidden)"),
        "{summary}"
    );

    // The PKCS#12 password: not in Debug, not in check, not in the wrong-password error.
    let p12 = with_key("      pkcs12: pki/virksomhet-aes.p12\n      password: ${P12}\n");
    let config = parse_with(&p12, &[("P12", "test-passord-1234")]).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("test-passord-1234"), "{debug}");
    assert!(
        !portvakt::cli::check::summary(&config, Path::new("p.yaml")).contains("test-passord-1234")
    );
    let wrong = parse_with(&p12, &[("P12", "wrong-passord-5678")])
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("wrong password") && !wrong.contains("wrong-passord-5678"),
        "{wrong}"
    );

    // A bad header value is reported by name, never by value.
    let bad = parse_with(
        &yaml,
        &[("MP_JWK", b64.trim()), ("PASS", "line\nbreak-secret")],
    )
    .unwrap_err();
    let text = bad.to_string();
    assert!(
        text.contains("headers.IntegrasjonPassord") && !text.contains("break-secret"),
        "{text}"
    );
}

#[test]
fn every_example_in_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".yaml") || name == "demo.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Examples point at keys under /secrets; resolve them to the fixtures instead.
        let text = text
            .replace("/secrets/key.pem", "client-a.pem")
            .replace("/secrets/key.jwk.json", "client-b.jwk.json")
            .replace("/secrets/virksomhet/auth.p12", "pki/virksomhet-aes.p12")
            .replace("/secrets/virksomhet/password", "pki/password.txt");
        let b64 = std::fs::read_to_string(fixtures().join("client-b.jwk.b64")).unwrap();
        let env = [
            ("FIKS_INTEGRASJON_ID", "id"),
            ("FIKS_INTEGRASJON_PASSORD", "pw"),
            ("MP_JWK", b64.trim()),
            ("ALTINN_SUBSCRIPTION_KEY", "k"),
        ];
        if let Err(e) = parse_with(&text, &env) {
            panic!("{name}: {e}");
        }
        seen += 1;
    }
    assert!(seen >= 1, "no examples found in config/");
}

#[test]
fn ca_files_must_hold_certificates() {
    let route = |ca: &str| {
        GOOD.replace(
            "    scopes: [nav:forsikring/samtykke]\n",
            &format!("    scopes: [nav:forsikring/samtykke]\n    ca_file: {ca}\n"),
        )
    };
    let ok = parse_with(&route("test-ca.pem"), &[]).unwrap();
    assert_eq!(ok.routes[0].ca_file.as_ref().unwrap().certs.len(), 1);
    let found = issues(&route("client-a.pem"));
    assert!(
        found[0].starts_with("routes[0].ca_file: ") && found[0].contains("no PEM certificate"),
        "{found:?}"
    );
    let found = issues(&route("nowhere.pem"));
    assert!(
        found[0].starts_with("routes[0].ca_file: ") && found[0].contains("cannot read"),
        "{found:?}"
    );
}

/// GOOD with `extra` (lines indented four spaces) added to its route.
fn with_route(extra: &str) -> String {
    format!("{GOOD}{extra}")
}

/// Each route's extra lines refused with an issue that starts as given.
fn refused_at(cases: &[(&str, &str)]) {
    for (extra, want) in cases {
        let found = issues(&with_route(extra));
        assert!(
            found.iter().any(|i| i.starts_with(want)),
            "{extra}: {found:?}"
        );
    }
}

#[test]
fn parties_load_and_default_their_headers() {
    let c = parse_with(
        &with_route(
            "    consumer_orgs: [\"910753614\", 889640782]\n    systemuser_org: \"0192:974760673\"\n    externalRef: ekstern-1\n",
        ),
        &[],
    )
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.consumer_orgs, ["910753614", "889640782"]);
    assert_eq!(r.consumer_org_header.as_str(), "portvakt-consumer-org");
    assert_eq!(r.systemuser_org_header.as_str(), "portvakt-systemuser-org");
    let user = r.systemuser.as_ref().unwrap();
    assert_eq!(
        (user.org.as_str(), user.external_ref.as_deref()),
        ("974760673", Some("ekstern-1"))
    );
    assert_eq!(
        user.authorization_detail()["systemuser_org"]["ID"],
        "0192:974760673"
    );
    assert!(r.retry_on_401);
    assert!(
        r.upstream_http2,
        "HTTP/2 when the upstream offers it, unless set"
    );
    assert_eq!(r.retry_body_max_bytes, 64 * 1024);
    let users = parse_with(
        &with_route("    systemuser_orgs: [\"910753614\", {org: \"889640782\", externalRef: x}]\n    systemuser_org_header: X-Systembruker\n    retry_body_max_bytes: 0\n"),
        &[],
    )
    .unwrap();
    let r = &users.routes[0];
    assert_eq!(r.systemusers.len(), 2);
    assert_eq!(r.systemusers[1].external_ref.as_deref(), Some("x"));
    assert_eq!(r.systemuser_org_header.as_str(), "x-systembruker");
    assert_eq!(r.retry_body_max_bytes, 0);
}

#[test]
fn bad_parties_are_refused_at_their_field() {
    let cases = [
        (
            "    consumer_orgs: [\"910753614\", \"123\"]\n",
            "routes[0].consumer_orgs[1]: `123` is not an organisation number",
        ),
        (
            "    consumer_org: \"910753615\"\n",
            "routes[0].consumer_org: `910753615` is not an organisation number",
        ),
        (
            "    systemuser_org: \"0192:91075361\"\n",
            "routes[0].systemuser_org: `0192:91075361` is not an organisation number",
        ),
        (
            "    externalRef: x\n",
            "routes[0].externalRef: goes with systemuser_org",
        ),
        (
            "    consumer_orgs: [\"910753614\"]\n    systemuser_orgs: [\"889640782\"]\n",
            "routes[0]: has both consumer_orgs and systemuser_orgs",
        ),
        (
            "    consumer_org_header: Authorization\n",
            "routes[0].consumer_org_header: `Authorization` is a header portvakt manages itself",
        ),
        (
            "    systemuser_orgs: [{org: \"889640782\", externalref: x}]\n",
            "routes[0].systemuser_orgs[0].externalref: unknown key (did you mean `externalRef`?)",
        ),
        (
            "    systemuser_org: \"910753614\"\n    authorization_details:\n      - type: urn:altinn:systemuser\n",
            "routes[0].authorization_details[0]: is a urn:altinn:systemuser entry",
        ),
        (
            "    consumer_orgs: [\"910753614\"]\n    headers:\n      Portvakt-Consumer-Org: x\n",
            "routes[0].headers.portvakt-consumer-org: is the route's consumer_org_header",
        ),
        (
            "    retry_on_401: \"yes\"\n",
            "routes[0].retry_on_401: expected true or false",
        ),
        (
            "    upstream_http2: 1\n",
            "routes[0].upstream_http2: expected true or false",
        ),
    ];
    refused_at(&cases);
}

#[test]
fn bad_consent_settings_are_refused_at_their_field() {
    let cases = [
        (
            "    consent_per_call: \"yes\"\n",
            "routes[0].consent_per_call: expected true or false",
        ),
        (
            "    consent_id_header: X-Samtykke\n",
            "routes[0].consent_id_header: goes with consent_per_call: true",
        ),
        (
            "    consent_tokens_max: 100\n",
            "routes[0].consent_tokens_max: goes with consent_per_call: true",
        ),
        (
            "    consent_per_call: true\n    consent_tokens_max: 0\n",
            "routes[0].consent_tokens_max:",
        ),
        (
            "    consent_per_call: true\n    consent_from_header: Portvakt-Consent-Id\n",
            "routes[0].consent_from_header: is the same header as consent_id_header",
        ),
        (
            "    consent_per_call: true\n    consent_id_header: Portvakt-Consumer-Org\n",
            "routes[0].consent_id_header: is also a party header",
        ),
        (
            "    consent_per_call: true\n    consent_from_header: Host\n",
            "routes[0].consent_from_header: `Host` is a header portvakt manages itself",
        ),
        (
            "    consent_per_call: true\n    authorization_details:\n      - type: urn:altinn:consent\n        id: x\n",
            "routes[0].authorization_details[0]: is a fixed urn:altinn:consent entry",
        ),
        (
            "    consent_per_call: true\n    headers:\n      Portvakt-Consent-From: x\n",
            "routes[0].headers.portvakt-consent-from: is the route's consent_from_header",
        ),
    ];
    refused_at(&cases);
}

#[test]
fn a_consent_route_reads_its_settings() {
    let config = parse_with(&with_route(
        "    consent_per_call: true\n    consent_id_header: X-Samtykke-Id\n    consent_tokens_max: 500\n",
    ), &[])
    .unwrap();
    let r = &config.routes[0];
    assert!(r.consent.per_call);
    assert_eq!(r.consent.id_header.as_str(), "x-samtykke-id");
    assert_eq!(r.consent.from_header.as_str(), "portvakt-consent-from");
    assert_eq!(r.consent_tokens_max, 500);
    let plain = parse_with(&with_route(""), &[]).unwrap();
    assert!(!plain.routes[0].consent.per_call);
    assert_eq!(plain.routes[0].consent_tokens_max, 10_000);
}

#[test]
fn a_consumer_cannot_be_the_certificate_s_own_organisation() {
    let yaml = GOOD
        .replace(
            "      pem: client-a.pem\n      kid: vendor-TEST.2026-11\n",
            "      pkcs12: pki/virksomhet-aes.p12\n      password_file: pki/password.txt\n",
        )
        .replace(
            "    scopes: [nav:forsikring/samtykke]\n",
            "    scopes: [nav:forsikring/samtykke]\n    consumer_orgs: [\"910753614\", \"991825827\"]\n",
        );
    let found = issues(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "routes[0].consumer_orgs[1]: `991825827` is the client's own organisation"
        ),
        "{found:?}"
    );
}

#[test]
fn altinn_exchange_takes_an_environment_or_a_url_and_must_match_maskinporten() {
    let url = |yaml: &str| {
        parse_with(yaml, &[]).unwrap().routes[0]
            .altinn_exchange
            .as_ref()
            .unwrap()
            .url
            .clone()
    };
    assert_eq!(
        url(&with_route("    altinn_exchange: tt02\n")),
        "https://platform.tt02.altinn.no/authentication/api/v1/exchange/maskinporten"
    );
    assert_eq!(
        url(&with_route("    altinn_exchange: prod\n")
            .replace("environment: test", "environment: prod")),
        "https://platform.altinn.no/authentication/api/v1/exchange/maskinporten"
    );
    assert_eq!(
        url(&with_route("    altinn_exchange: http://127.0.0.1:5005\n")),
        "http://127.0.0.1:5005/authentication/api/v1/exchange/maskinporten"
    );
    assert_eq!(
        url(&with_route(
            "    altinn_exchange: https://altinn.example/x/exchange\n"
        )),
        "https://altinn.example/x/exchange"
    );
    let found = issues(&with_route("    altinn_exchange: prod\n"));
    assert!(
        found[0].starts_with("routes[0].altinn_exchange: Altinn prod accepts only tokens from Maskinporten prod, but maskinporten.environment is test"),
        "{found:?}"
    );
    let found = issues(&with_route("    altinn_exchange: staging\n"));
    assert!(
        found[0]
            .starts_with("routes[0].altinn_exchange: `staging` is not an http:// or https:// URL"),
        "{found:?}"
    );
}

#[test]
fn header_values_come_from_files_without_the_trailing_newline() {
    let c = parse_with(
        &with_route("    headers:\n      IntegrasjonId: 3f1c0e7a-1111-4222-8333-944455566677\n      IntegrasjonPassord: { value_file: pki/password.txt }\n"),
        &[],
    )
    .unwrap();
    let (name, value) = &c.routes[0].headers[1];
    assert_eq!(name.as_str(), "integrasjonpassord");
    assert_eq!(value.expose(), "test-passord-1234");
    assert!(value.expose().is_sensitive());
    assert!(!format!("{c:?}").contains("test-passord-1234"));

    let found = issues(&with_route(
        "    headers:\n      IntegrasjonPassord: { value_file: nowhere.txt }\n",
    ));
    assert!(
        found[0].starts_with("routes[0].headers.IntegrasjonPassord.value_file: cannot read"),
        "{found:?}"
    );
    let found = issues(&with_route(
        "    headers:\n      IntegrasjonPassord: { file: x }\n",
    ));
    assert!(
        found[0].starts_with("routes[0].headers.IntegrasjonPassord.file: unknown key"),
        "{found:?}"
    );
}

#[test]
fn a_public_listener_needs_an_inbound_allow_list_or_an_explicit_allow_any() {
    let public = GOOD.replace("listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080");
    let found = issues(&public);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "inbound.allow: is required because listen (0.0.0.0:8080) is not a loopback address"
        ),
        "{}",
        found[0]
    );
    let allowed = format!("{public}inbound:\n  allow: [10.0.0.0/8, 192.168.1.7]\n");
    let c = parse_with(&allowed, &[]).unwrap();
    assert!(c
        .inbound
        .allow
        .as_ref()
        .unwrap()
        .contains("10.1.2.3".parse().unwrap()));
    assert!(parse_with(&format!("{public}inbound:\n  allow_any: true\n"), &[]).is_ok());
    let found = issues(&format!(
        "{public}inbound:\n  allow: [10.0.0.0/33, nonsense]\n"
    ));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("inbound.allow[0]: `10.0.0.0/33` is not a network")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("inbound.allow[1]: `nonsense` is not a network")),
        "{found:?}"
    );
}

#[test]
fn plain_http_to_another_machine_needs_insecure_http() {
    let plain = GOOD.replace(
        "https://api.nav.no/forsikring/",
        "http://api.nav.no/forsikring/",
    );
    let found = issues(&plain);
    assert!(found[0].starts_with("routes[0].upstream: `http://api.nav.no/forsikring/` is plain http:// to another machine"), "{found:?}");
    assert!(found[0].contains("set insecure_http: true"));
    assert!(parse_with(&format!("{plain}    insecure_http: true\n"), &[]).is_ok());
    let loopback = GOOD.replace("https://api.nav.no/forsikring/", "http://127.0.0.1:9/x/");
    assert!(parse_with(&loopback, &[]).is_ok());
    let custom = GOOD.replace(
        "  environment: test\n",
        "  environment: custom\n  issuer: http://mp.internal/\n",
    );
    let found = issues(&custom);
    assert!(
        found.iter().any(|i| i.starts_with(
            "maskinporten.token_endpoint: `http://mp.internal/token` is plain http://"
        )),
        "{found:?}"
    );
}

#[test]
fn new_route_and_inbound_fields_are_checked_at_their_paths() {
    let bad = format!(
        "{GOOD}    api_keys: [short]\n    max_body_bytes: 0\n    proxy: https://proxy:3128\n    allow: []\ninbound:\n  tls:\n    cert: missing.pem\n    key: missing.key\n  max_header_bytes: 100\negress_proxy:\n  url: http://user:pw@proxy:3128\n"
    );
    let found = issues(&bad);
    for want in [
        "routes[0].api_keys[0]: is shorter than 16 characters",
        "routes[0].max_body_bytes: expected a positive whole number",
        "routes[0].proxy: `https://proxy:3128` is not a proxy URL",
        "routes[0].allow: is empty",
        "inbound.tls.cert: ",
        "inbound.max_header_bytes: must be at least 8192",
        "egress_proxy.url: has credentials in the URL",
    ] {
        assert!(
            found.iter().any(|i| i.starts_with(want)),
            "missing {want:?} in {found:?}"
        );
    }
    assert!(
        !found.iter().any(|i| i.contains("pw@")),
        "a proxy password was printed"
    );
    let good = format!(
        "{GOOD}    api_keys: [\"${{KEY}}\", {{value_file: fiks-integrasjonpassord.txt}}]\n    api_key_header: X-Caller-Key\n    connect_timeout_seconds: 3\n    idle_timeout_seconds: 20\n    proxy: none\negress_proxy:\n  url: http://proxy.corp:3128\n  username: svc\n  password_file: fiks-integrasjonpassord.txt\n  no_proxy: .nav.no\nshutdown_grace_seconds: 5\n"
    );
    let c = parse_with(&good, &[("KEY", "a-caller-key-that-is-long-enough")]).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.api_keys.len(), 2);
    assert_eq!(r.api_key_header, "x-caller-key");
    assert_eq!(r.proxy, portvakt::config::Egress::Direct);
    assert_eq!(c.shutdown_grace, std::time::Duration::from_secs(5));
    let debug = format!("{c:?}");
    assert!(!debug.contains("a-caller-key-that-is-long-enough"));
    assert!(matches!(
        c.maskinporten.proxy,
        portvakt::config::Egress::Proxy(_)
    ));
}

const SELFSERVICE: &str = "selfservice:\n  environment: test\n  client_id: ad000000-0000-4000-8000-0000000000ad\n  key:\n    pem: client-a.pem\n    kid: admin\n";

fn renewing(key: &str, renew: &str, selfservice: &str) -> String {
    GOOD.replace(
        "    key:\n      pem: client-a.pem\n      kid: vendor-TEST.2026-11\n",
        &format!("    key:\n{key}    renew:\n{renew}"),
    )
    .replace("routes:\n", &format!("{selfservice}routes:\n"))
}

#[test]
fn renewal_settings_are_checked_with_their_paths() {
    let keyset = "      keyset: vendor.keyset.json\n";
    // A good one: defaults, the keyset's active key signs.
    let c = parse_with(
        &renewing(keyset, "      kid_prefix: vendor-TEST\n", SELFSERVICE),
        &[],
    )
    .unwrap();
    let r = &c.renewals[0];
    assert_eq!((r.client.as_str(), r.renew.bits), ("vendor", 2048));
    assert_eq!(r.renew.key_lifetime.as_secs(), 90 * 86_400);
    assert_eq!(r.renew.overlap.as_secs(), 7 * 86_400);
    assert!(c.clients[0].key.kid().unwrap().starts_with("vendor-TEST."));
    let s = c.selfservice.as_ref().unwrap();
    assert_eq!(s.base_url, "https://api.test.samarbeid.digdir.no/api/v1");
    assert_eq!(s.scopes, ["idporten:dcr.read", "idporten:dcr.modify"]);
    // renew needs a keyset and a selfservice section.
    let pem = "      pem: client-a.pem\n      kid: vendor-TEST.2026-11\n";
    let found = issues(&renewing(pem, "      bits: 2048\n", SELFSERVICE));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("clients.vendor.renew: needs key.keyset")),
        "{found:?}"
    );
    let found = issues(&renewing(keyset, "      bits: 2048\n", ""));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("selfservice: is required by clients.vendor.renew")),
        "{found:?}"
    );
    // Every bad value at once, each at its path.
    let bad = "      key_lifetime_days: 400\n      rotate_after_days: 500\n      bits: 1024\n      kid_prefix: \"a b\"\n      kubernetes_secret: {name: x}\n";
    let found = issues(&renewing(keyset, bad, SELFSERVICE));
    for path in [
        "clients.vendor.renew.key_lifetime_days: is 400",
        "clients.vendor.renew.rotate_after_days: is 500",
        "clients.vendor.renew.bits: is 1024",
        "clients.vendor.renew.kid_prefix: may hold only",
        "clients.vendor.renew.kubernetes_secret.namespace: is required",
    ] {
        assert!(
            found.iter().any(|i| i.starts_with(path)),
            "{path} in {found:?}"
        );
    }
    // selfservice: prod and test fix the URL; custom needs one, over https off loopback.
    let fixed = SELFSERVICE.replace(
        "  environment: test\n",
        "  environment: prod\n  base_url: https://x/api/v1\n",
    );
    let found = issues(&renewing(keyset, "      bits: 2048\n", &fixed));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("selfservice.base_url: is fixed by environment prod")),
        "{found:?}"
    );
    let plain = SELFSERVICE.replace(
        "  environment: test\n",
        "  environment: custom\n  base_url: http://digdir.example/api/v1\n",
    );
    let found = issues(&renewing(keyset, "      bits: 2048\n", &plain));
    assert!(
        found.iter().any(|i| i
            .starts_with("selfservice.base_url: `http://digdir.example/api/v1` is plain http://")),
        "{found:?}"
    );
    let own = SELFSERVICE.replace(
        "    pem: client-a.pem\n    kid: admin\n",
        "    keyset: vendor.keyset.json\n",
    );
    let found = issues(&renewing(keyset, "      bits: 2048\n", &own));
    assert!(
        found.iter().any(|i| i
            .starts_with("selfservice.key.keyset: the administration client's key is not renewed")),
        "{found:?}"
    );
    // A keyset that does not exist yet says how to make its first key.
    let missing = "      keyset: nowhere.keyset.json\n";
    let found = issues(&renewing(missing, "      bits: 2048\n", SELFSERVICE));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("clients.vendor.key.keyset:") && i.contains("portvakt rotate")),
        "{found:?}"
    );
}

#[test]
fn forward_caller_address_takes_forwarded_or_x_forwarded_for() {
    let with = |v: &str| format!("{GOOD}    forward_caller_address: {v}\n");
    let config = parse_with(&with("forwarded"), &[]).unwrap();
    assert_eq!(
        config.routes[0].forward_caller_address,
        Some(portvakt::config::CallerAddress::Forwarded)
    );
    assert!(parse_with(&with("x-forwarded-for"), &[]).is_ok());
    assert!(parse_with(GOOD, &[]).unwrap().routes[0]
        .forward_caller_address
        .is_none());
    let found = issues(&with("x-real-ip"));
    assert!(
        found
            .iter()
            .any(|i| i.contains("routes[0].forward_caller_address")
                && i.contains("`forwarded`")
                && i.contains("`x-forwarded-for`")),
        "{found:?}"
    );
}
