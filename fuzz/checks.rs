//! The properties the fuzz targets check, one function per target. The same file is compiled into
//! the cargo-fuzz targets (`fuzz/fuzz_targets/`) and into `tests/fuzz_corpora.rs`, which replays
//! every corpus and regression file through it with the stable toolchain, so a crash once found
//! stays fixed. A panic is a finding.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use portvakt::keys::{der, jwk, Certificate, SigningKey};
use std::path::Path;

/// The fixtures' PKCS#12 password (tests/fixtures/pki/password.txt), so mutated real files get
/// past the integrity check now and then.
const P12_PASSWORD: &str = "test-passord-1234";

/// The configuration reader answers any text with a config or a list of problems naming the file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        read_config(text);
    }
}

/// Structure-aware: a whole, valid configuration whose values come from the input (split at
/// newlines), quoted as YAML strings or, where the value's first byte is odd, written raw.
pub fn config_values(data: &[u8]) {
    const FIELDS: usize = 12;
    let text = String::from_utf8_lossy(data);
    let mut values: Vec<String> = text
        .split('\n')
        .take(FIELDS)
        .map(|v| {
            if v.as_bytes().first().is_some_and(|b| b % 2 == 1) {
                v.to_string()
            } else {
                serde_json::to_string(v).unwrap()
            }
        })
        .collect();
    values.resize(FIELDS, "\"x\"".into());
    let v = |i: usize| values[i].as_str();
    let yaml = format!(
        "listen: {}\nmaskinporten:\n  environment: {}\n  timeout_seconds: {}\nclients:\n  vendor:\n    client_id: {}\n    key:\n      pem: {}\n      kid: {}\nroutes:\n  - name: {}\n    prefix: {}\n    upstream: {}\n    client: vendor\n    scopes: [{}]\n    consumer_orgs: [{}]\n    headers:\n      {}: x\n",
        v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8), v(9), v(10), v(11)
    );
    read_config(&yaml);
}

fn read_config(text: &str) {
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    // Key files resolve under a folder that does not exist, so nothing is read from disk.
    match portvakt::config::from_str(
        text,
        Path::new("fuzz.yaml"),
        Path::new("/nonexistent-portvakt-fuzz"),
        &env,
    ) {
        Ok(config) => {
            for route in &config.routes {
                assert!(route.prefix.starts_with('/'), "{}", route.prefix);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz.yaml"),
                "a problem that names no file: {message}"
            );
        }
    }
}

/// The DER reader, X.509 and PKCS#12: every structure walks without a panic; a certificate's
/// dates and organisation number are sane; a PKCS#12 file that opens gives a key whose public
/// part is its certificate's.
pub fn keys(data: &[u8]) {
    walk(der::Reader::new(data), 0);
    if let Ok(cert) = Certificate::parse(data) {
        certificate_is_sane(&cert);
    }
    for password in [P12_PASSWORD, ""] {
        let now = portvakt::support::time::unix_now() as i64;
        let Ok(key) = SigningKey::from_pkcs12(data, password, None, true, now) else {
            continue;
        };
        let cert = key
            .certificate()
            .expect("a virksomhetssertifikat key without its certificate");
        certificate_is_sane(cert);
        let (n, e) = cert
            .rsa
            .as_ref()
            .expect("an RSA key with a certificate that is not RSA");
        let jwk = key.public_jwk();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            jwk["n"].as_str(),
            Some(b64.encode(n).as_str()),
            "the key is not the certificate's"
        );
        assert_eq!(
            jwk["e"].as_str(),
            Some(b64.encode(e).as_str()),
            "the key is not the certificate's"
        );
        assert!(key.bits() >= 2048);
        assert!(
            cert.not_before <= now && now <= cert.not_after,
            "a certificate out of date was taken"
        );
    }
}

fn walk(mut reader: der::Reader<'_>, depth: usize) {
    while !reader.is_empty() {
        let Ok(element) = reader.next() else { return };
        assert!(element.body.len() <= element.raw.len());
        if depth < 32 && element.tag & 0x20 != 0 {
            walk(element.children(), depth + 1);
        }
        let _ = element.octets();
        let _ = element.small_uint();
        let _ = element.oid();
        let _ = element.bmp_string();
    }
}

fn certificate_is_sane(cert: &Certificate) {
    assert!(
        cert.not_before <= cert.not_after,
        "{} after {}",
        cert.not_before,
        cert.not_after
    );
    if let Some(org) = &cert.org_number {
        assert!(
            org.len() == 9 && org.bytes().all(|b| b.is_ascii_digit()),
            "org number {org:?}"
        );
    }
    let _ = portvakt::support::time::date(cert.not_after);
}

/// PEM, JWK, JWK set and base64 JWK: a key that loads is RSA of at least 2048 bits with a kid
/// and an RFC 7638 thumbprint.
pub fn key_text(data: &[u8]) {
    keyset(data);
    let loaded = [
        SigningKey::from_pem(data, "kid-1"),
        jwk::load(data, "jwk"),
        std::str::from_utf8(data)
            .map_err(|_| portvakt::keys::KeyError::Invalid("utf-8".into()))
            .and_then(jwk::decode_base64)
            .and_then(|bytes| jwk::load(&bytes, "jwk_base64")),
    ];
    for key in loaded.into_iter().flatten() {
        assert!(key.bits() >= 2048, "{} bits", key.bits());
        assert!(key.kid().is_some_and(|k| !k.is_empty()));
        assert_eq!(
            key.thumbprint().len(),
            43,
            "a SHA-256 thumbprint in base64url"
        );
    }
}

/// A keyset file: one that reads has unique kids, at most one active key, every key RSA >= 2048
/// bits, and writes back to the same; the renewal plan for it never posts a set without its active
/// key or with more than five keys.
fn keyset(data: &[u8]) {
    use portvakt::keys::keyset::{Keyset, State};
    let Ok(set) = Keyset::parse(data) else {
        return;
    };
    assert!(set.keys.iter().filter(|e| e.state == State::Active).count() <= 1);
    for e in &set.keys {
        assert!(e.signing_key().unwrap().bits() >= 2048);
        assert!(
            e.public_jwk().get("d").is_none(),
            "a public JWK with a private part"
        );
    }
    let again = Keyset::parse(&serde_json::to_vec(&set).unwrap()).unwrap();
    assert_eq!(again, set);
    let renew = portvakt::config::Renew {
        key_lifetime: std::time::Duration::from_secs(90 * 86_400),
        rotate_after: std::time::Duration::from_secs(60 * 86_400),
        renew_before: std::time::Duration::from_secs(30 * 86_400),
        activate_after: std::time::Duration::from_secs(600),
        overlap: std::time::Duration::from_secs(86_400),
        bits: 2048,
        kid_prefix: "fuzz".into(),
        kubernetes_secret: None,
        background: false,
        background_interval: std::time::Duration::from_secs(3600),
    };
    let facts = portvakt::renew::plan::Facts {
        keyset: &set,
        registered: &[],
        now: 1_800_000_000,
        renew: &renew,
        force: false,
    };
    use portvakt::renew::plan::Step;
    match portvakt::renew::plan::plan(&facts) {
        Step::Register { set: posted, .. }
        | Step::RenewInPlace { set: posted, .. }
        | Step::Retire { set: posted, .. } => {
            assert!(!posted.is_empty() && posted.len() <= 5);
            if let Some(a) = set.active() {
                assert!(posted.iter().any(|k| k["kid"] == a.kid.as_str()));
            }
            assert!(posted.iter().all(|k| k.get("d").is_none()));
        }
        _ => {}
    }
}

/// Maskinporten's token answer and error answer, Altinn's exchange answer, `Retry-After` and HTTP
/// dates. A token taken is printable and lives; a rejection carries only short, printable,
/// parsed fields, never the body; dates in any of RFC 9110's three forms round-trip.
pub fn answers(data: &[u8]) {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => ([200, 400, 401, 429, 503, 201][usize::from(*s) % 6], rest),
        None => (200, data),
    };
    selfservice_answers(status, body);
    match portvakt::token::client::read_answer(status, None, body) {
        Ok(issued) => {
            assert!((200..300).contains(&status));
            let token = issued.access_token.expose();
            assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
            assert!(issued.expires_in > 0);
            // A consent token's life is only ever shortened by what it says of its consent.
            let before = issued.expires_in;
            let consent = serde_json::json!({"type": "urn:altinn:consent", "id": "77ed8698-e619-4066-9eb4-5c1eb3f165a1", "from": "urn:altinn:person:identifier-no:03867199348"});
            let grant = portvakt::token::GrantSpec::new(&["s".to_string()], None, None, &[consent]);
            if let Ok(bounded) = portvakt::token::consents::bound(&grant, issued, 1_700_000_000) {
                assert!(bounded.expires_in > 0 && bounded.expires_in <= before);
            }
        }
        Err(portvakt::token::client::Refusal::Rejected {
            error,
            description,
            code,
        }) => {
            if let Some(description) = &description {
                assert_no_person_number(description);
            }
            for text in std::iter::once(&error)
                .chain(description.as_ref())
                .chain(code.as_ref())
            {
                assert!(
                    text.chars().count() <= 300 && !text.chars().any(char::is_control),
                    "{text:?}"
                );
            }
        }
        Err(portvakt::token::client::Refusal::Failed(_)) => {}
    }
    if let Ok(issued) = portvakt::token::altinn::read_answer(status, body, 1_000_000_000) {
        assert!(issued.expires_in > 0);
        assert_eq!(issued.access_token.expose().split('.').count(), 3);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        if let Ok(value) = http::HeaderValue::from_str(text) {
            if let Some(after) = portvakt::token::clock::retry_after(&value, 1_700_000_000) {
                assert!(after.as_secs() <= 3600);
            }
        }
        if let Some(unix) = portvakt::token::clock::parse_http_date(text) {
            let again = portvakt::token::clock::http_date(unix);
            assert_eq!(
                portvakt::token::clock::parse_http_date(&again),
                Some(unix),
                "{text:?} -> {again}"
            );
        }
    }
}

/// The JSON log line writer: for any text, the line it writes parses as JSON and gives the text
/// back, so no caller data can forge a field or a line.
pub fn json_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (quoted, want) in [
        (portvakt::observe::json_log::quoted(&text), text.to_string()),
        (
            portvakt::observe::json_log::quoted_debug(&text),
            format!("{text:?}"),
        ),
    ] {
        assert!(
            !quoted.contains('\n') && !quoted.contains('\r'),
            "a line break in {quoted:?}"
        );
        let line = format!("{{\"fields\":{{\"message\":{quoted},\"route\":\"nav\"}}}}");
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(parsed["fields"]["message"].as_str(), Some(want.as_str()));
        assert_eq!(
            parsed["fields"].as_object().map(|f| f.len()),
            Some(2),
            "a forged field: {line}"
        );
    }
}

/// Path confinement, as a request meets it: the request-target's bytes parsed as hyper parses
/// them (the http crate's `Uri`), judged by the pipeline's form rule, routed by prefix and confined
/// by `pipeline::confine`, the calls `pipeline::decide` makes. Whatever portvakt would send stays
/// under the route's base however the upstream decodes and normalises the path (percent-decoding
/// once or twice, `\` as `/`, `;params` dropped, dot segments resolved), carries the caller's query
/// unchanged, and holds no `#`.
pub fn path(data: &[u8]) {
    let mut target = b"/nav/".to_vec();
    target.extend_from_slice(data);
    let Ok(uri) = http::Uri::try_from(target.as_slice()) else {
        return;
    };
    let Some(pq) = uri.path_and_query() else {
        return;
    };
    if !portvakt::pipeline::form::is_origin_form(pq.as_str().as_bytes()) {
        return;
    }
    let Some(rest) = portvakt::request::route::remainder("/nav", uri.path()) else {
        return;
    };
    assert!(!rest.contains(['?', '#']), "{rest:?}");
    let base = portvakt::upstream::Target::from_uri(&"https://api.example/base/".parse().unwrap())
        .unwrap();
    let Ok(sent) = portvakt::pipeline::confine(&base, rest, uri.query()) else {
        return;
    };
    assert_eq!(sent.query(), uri.query(), "the query changed");
    stays_under_base(&sent, &String::from_utf8_lossy(&target));
}

/// Whether an upstream URI stays under `/base` however the upstream decodes it, and holds no `#`.
pub fn stays_under_base(sent: &http::Uri, from: &str) {
    let path = sent.path();
    assert!(!sent.to_string().contains('#'), "{sent}");
    assert!(path.starts_with("/base"), "{path}");
    for decoded in [decode(path), decode(&decode(path))] {
        let segments = resolve(&decoded);
        assert!(
            segments
                .as_ref()
                .and_then(|s| s.first())
                .map(String::as_str)
                == Some("base"),
            "{from:?} leaves /base once decoded: {decoded:?}"
        );
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a lenient upstream might see the path: backslashes as slashes, params dropped, dot segments
/// resolved; `None` when it climbs above the root.
fn resolve(path: &str) -> Option<Vec<String>> {
    let mut stack: Vec<String> = Vec::new();
    for seg in path.replace('\\', "/").split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            s => stack.push(s.to_string()),
        }
    }
    Some(stack)
}

#[path = "../tests/common/wire.rs"]
mod wire;

/// Everything the pipeline target runs against, started once per process: a mock Maskinporten,
/// a strict recording upstream and portvakt itself, all on 127.0.0.1.
struct World {
    runtime: tokio::runtime::Runtime,
    proxy: std::net::SocketAddr,
    upstream: wire::Recorder,
    _mock: portvakt::mock::MockMaskinporten,
    _running: portvakt::app::Running,
}

fn world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (mock, upstream, running) = runtime.block_on(async {
            use portvakt::cli::demo::{DEMO_CLIENT_ID, DEMO_KID, SUPPLIER_ORG};
            use portvakt::mock::{MockClient, MockMaskinporten, DEMO_CLIENT_KEY_PEM};
            let key = SigningKey::from_pem(DEMO_CLIENT_KEY_PEM.as_bytes(), DEMO_KID).unwrap();
            let client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG)
                .key(&key)
                .scopes(["demo:echo"])
                .delegation("910753614", "demo:echo");
            let mock = MockMaskinporten::start(vec![client], 3600).await.unwrap();
            let upstream = wire::Recorder::start().await;
            let dir = std::env::temp_dir().join(format!("portvakt-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("key.pem"), DEMO_CLIENT_KEY_PEM).unwrap();
            let yaml = format!(
                "listen: 127.0.0.1:0\nmaskinporten:\n  environment: custom\n  issuer: {issuer}\n  token_endpoint: {endpoint}\nclients:\n  demo:\n    client_id: {DEMO_CLIENT_ID}\n    key:\n      pem: key.pem\n      kid: {DEMO_KID}\nroutes:\n  - name: nav\n    prefix: /nav/\n    upstream: {up}base/\n    client: demo\n    scopes: [demo:echo]\n    idle_timeout_seconds: 1\n    headers:\n      X-Route-Secret: route-value\n  - name: keyed\n    prefix: /keyed/\n    upstream: {up}base/keyed/\n    client: demo\n    scopes: [demo:echo]\n    api_keys: [caller-secret-key-0123456789]\n    idle_timeout_seconds: 1\n  - name: party\n    prefix: /party/\n    upstream: {up}base/party/\n    client: demo\n    scopes: [demo:echo]\n    consumer_orgs: [\"910753614\"]\n    idle_timeout_seconds: 1\n  - name: stream\n    prefix: /stream/\n    upstream: {up}base/stream/\n    client: demo\n    scopes: [demo:echo]\n    retry_on_401: false\n    idle_timeout_seconds: 1\n    headers:\n      X-Route-Secret: route-value\n",
                issuer = mock.issuer(),
                endpoint = mock.token_endpoint(),
                up = upstream.url,
            );
            let none = |_: &str| None;
            let config = portvakt::config::from_str(&yaml, Path::new("fuzz.yaml"), &dir, &none)
                .unwrap_or_else(|e| panic!("{e}"));
            let running = portvakt::app::start(&config).await.unwrap();
            (mock, upstream, running)
        });
        World {
            proxy: running.listen,
            runtime,
            upstream,
            _mock: mock,
            _running: running,
        }
    })
}

/// The pipeline end to end: arbitrary bytes from a caller, through hyper and portvakt, to a strict
/// recording upstream. Whatever the bytes: everything the upstream gets is strictly framed, under
/// the route's base, with the token exactly once and none of the caller's credentials, cookies,
/// API key or party header; and it gets at most one request per answer the caller got. Returns
/// how many requests reached the upstream.
pub fn pipeline(data: &[u8]) -> usize {
    let Some(timed) = data.strip_prefix(&[PAUSE]) else {
        return exchange(&[(Vec::new(), data.to_vec())]).len();
    };
    // Timed: the same bytes in one write and then in pieces with pauses, so that parked and
    // resumed connections meet every place a pause can fall. Pauses may only lose requests (a
    // connection closed with a request half sent), never add or change one.
    let pieces = timed_pieces(timed);
    let whole: Vec<u8> = pieces.iter().flat_map(|(_, piece)| piece.clone()).collect();
    let mut without = requests(&exchange(&[(Vec::new(), whole)]));
    let with = exchange(&pieces);
    for r in requests(&with) {
        let Some(i) = without.iter().position(|w| *w == r) else {
            panic!("reached the upstream with pauses and not without them: {r:?}");
        };
        without.swap_remove(i);
    }
    with.len()
}

/// Marks a timed `pipeline` input at its start, and each pause inside it: the byte after a mark
/// is the pause, 0 to 150 ms.
const PAUSE: u8 = 0xFE;

/// At most this much pausing per input, so that a run stays quick.
const MOST_PAUSED: std::time::Duration = std::time::Duration::from_millis(300);

/// The pieces of a timed input, each with the pause before it (none before the first).
fn timed_pieces(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parts = data.split(|b| *b == PAUSE);
    let mut pieces = vec![(Vec::new(), parts.next().unwrap_or_default().to_vec())];
    for part in parts {
        let (ms, rest) = part
            .split_first()
            .map_or((0, &[][..]), |(ms, rest)| (*ms, rest));
        pieces.push((vec![ms], rest.to_vec()));
    }
    pieces
}

/// The requests as the upstream got them, as comparable text.
fn requests(received: &[wire::Received]) -> Vec<(String, String, Vec<u8>)> {
    received
        .iter()
        .map(|r| (r.method.clone(), r.target.clone(), r.body.clone()))
        .collect()
}

/// One connection: each piece written after its pause (`[ms]` of 0 to 255 for 0 to 150 ms), then
/// the end request. Checks what reached the upstream and returns it.
fn exchange(pieces: &[(Vec<u8>, Vec<u8>)]) -> Vec<wire::Received> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let world = world();
    let answers = world.runtime.block_on(async {
        let mut s = tokio::net::TcpStream::connect(world.proxy).await.unwrap();
        let mut paused = std::time::Duration::ZERO;
        for (pause, piece) in pieces {
            let ms = pause.first().map_or(0, |b| u64::from(*b) * 150 / 255);
            let pause = std::time::Duration::from_millis(ms).min(MOST_PAUSED - paused);
            paused += pause;
            tokio::time::sleep(pause).await;
            let _ = s.write_all(piece).await;
        }
        // The connection stays open (a caller that closes it has its requests cancelled), and a
        // last request asks portvakt to close it once everything before it is answered. Where the
        // input left a body unfinished, the route's 1 s idle timeout ends it.
        let _ = s
            .write_all(b"\r\n\r\nGET /nav/end HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
        // Give a request under way the time to reach the upstream, if it were to.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        out.windows(9)
            .filter(|w| w.starts_with(b"HTTP/1.1 ") || w.starts_with(b"HTTP/1.0 "))
            .count()
    });
    let received: Vec<wire::Received> = world.upstream.received.lock().unwrap().drain(..).collect();
    assert_eq!(
        world.upstream.violations(),
        Vec::<String>::new(),
        "the upstream got malformed bytes"
    );
    assert!(
        received.len() <= answers,
        "{} upstream requests for {answers} answers",
        received.len()
    );
    for r in &received {
        let raw = String::from_utf8_lossy(&r.raw);
        // The base itself (`/nav` is the route's prefix without its slash), or below it.
        let under = r
            .target
            .strip_prefix("/base")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
        assert!(under, "left the base: {raw}");
        let auth = r.all("authorization");
        assert!(auth.len() == 1 && auth[0].starts_with("Bearer ey"), "{raw}");
        // Credentials travel in these headers; any other header is the caller's to send on.
        for (name, _) in &r.headers {
            let credential = matches!(name.as_str(), "cookie" | "proxy-authorization")
                || name.starts_with("portvakt-");
            let hop = matches!(
                name.as_str(),
                "te" | "upgrade" | "keep-alive" | "proxy-connection" | "trailer"
            );
            assert!(!credential && !hop, "{name} went upstream: {raw}");
        }
        if r.target.starts_with("/base/")
            && !r.target.starts_with("/base/keyed")
            && !r.target.starts_with("/base/party")
        {
            assert_eq!(r.all("x-route-secret"), ["route-value"], "{raw}");
        }
    }
    received
}

/// Digdir's self-service answers: a key listing read gives kids in Digdir's alphabet; a refusal's
/// explanation is printable and bounded, whatever the body.
fn selfservice_answers(status: u16, body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if let Ok(keys) = portvakt::renew::api::parse_listing(&value) {
        for k in keys {
            assert!(!k.kid.is_empty() && k.kid.len() <= 256);
            assert!(portvakt::keys::in_kid_alphabet(&k.kid));
        }
    }
    let explained = portvakt::renew::api::explain(status, &value);
    assert!(!explained.chars().any(char::is_control), "{explained:?}");
    assert!(explained.chars().count() <= 600);
}

/// No run of exactly 11 digits that reads as a fødselsnummer.
fn assert_no_person_number(text: &str) {
    for run in text.split(|c: char| !c.is_ascii_digit()) {
        assert!(
            !(run.len() == 11 && portvakt::support::identifiers::is_person_number(run)),
            "a fødselsnummer in {text:?}"
        );
    }
}

/// The consent headers as a route that takes a consent per call reads them: the two values are
/// the input split at its first NUL. A consent read is whole and canonical, and its person never
/// shows in its `Debug` or `Display`; text masked for the logs keeps no fødselsnummer.
pub fn consent(data: &[u8]) {
    use portvakt::consent::{ConsentRule, Giver};
    let text = String::from_utf8_lossy(data);
    assert_no_person_number(&portvakt::consent::mask_person_numbers(&text));
    let (id, from) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let rule = ConsentRule {
        per_call: true,
        id_header: http::HeaderName::from_static("portvakt-consent-id"),
        from_header: http::HeaderName::from_static("portvakt-consent-from"),
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in [(&rule.id_header, id), (&rule.from_header, from)] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.insert(name.clone(), value);
        }
    }
    match rule.named(&headers) {
        Ok(Some(consent)) => {
            assert_eq!(Giver::parse(&consent.from.urn()), Ok(consent.from.clone()));
            let id = consent.id.hyphenated().to_string();
            let shown = format!("{consent:?} {}", consent.from);
            if let Giver::Person(number) = &consent.from {
                // The id is shown, and its hex may hold the person's eleven digits by chance.
                let shown = shown.replace(&id, "<id>");
                assert!(!shown.contains(number.as_str()), "{shown}");
            }
            let detail = consent.authorization_detail();
            assert_eq!(detail["id"], id);
        }
        Ok(None) => panic!("a route that takes a consent per call named none"),
        Err(e) => assert_no_person_number(&e.to_string()),
    }
}
