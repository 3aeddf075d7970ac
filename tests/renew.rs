//! Keys that renew themselves: `portvakt rotate` against the mock's self-service API, end to end on
//! loopback, with the renewer's clock moved on instead of waited for, and a pass cut after every
//! write as a crash would cut it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::keys::keyset::{Keyset, State};
use portvakt::keys::SigningKey;
use portvakt::mock::{EchoUpstream, MockClient, MockMaskinporten};
use portvakt::renew::command::rotate_with;
use portvakt::renew::{Faults, Uncut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN_ID: &str = "ad000000-0000-4000-8000-0000000000ad";
const ADMIN_KID: &str = "admin-TEST.2026-11-01";
const DAY: i64 = 86_400;

/// The renewer's clock: the machine's, moved on by the test.
#[derive(Clone, Default)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn now(&self) -> i64 {
        portvakt::time::unix_now() as i64 + self.0.load(Ordering::SeqCst)
    }
    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

struct World {
    mock: MockMaskinporten,
    upstream: EchoUpstream,
    dir: PathBuf,
    config: PathBuf,
    keyset: PathBuf,
    clock: Clock,
}

fn admin_client(scopes: &[&str]) -> MockClient {
    MockClient::new(ADMIN_ID, SUPPLIER_ORG)
        .key(
            &SigningKey::from_pem(
                &std::fs::read(fixtures().join("client-a.pem")).unwrap(),
                ADMIN_KID,
            )
            .unwrap(),
        )
        .scopes(scopes.iter().copied())
}

impl World {
    /// A mock with the admin client and `vendor` (registered keys from `vendor`), an upstream, and a
    /// config with `renew` (`renew` lines indented six spaces).
    async fn start(name: &str, vendor: MockClient, renew: &str) -> World {
        Self::start_with_admin(
            name,
            vendor,
            renew,
            &["idporten:dcr.read", "idporten:dcr.modify"],
        )
        .await
    }

    async fn start_with_admin(
        name: &str,
        vendor: MockClient,
        renew: &str,
        scopes: &[&str],
    ) -> World {
        let mock = MockMaskinporten::start(vec![admin_client(scopes), vendor], 120)
            .await
            .unwrap();
        let upstream = EchoUpstream::start(Some(mock.decoding_key()))
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "portvakt-renew-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("client-a.pem"), dir.join("admin.pem")).unwrap();
        let keyset = dir.join("vendor.keyset.json");
        let routes = ONE_ROUTE.replace("{upstream}", &upstream.url());
        let yaml = format!(
            r#"listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
watch_interval_seconds: 1
maskinporten:
  environment: custom
  issuer: {issuer}
  token_endpoint: {endpoint}
  timeout_seconds: 5
selfservice:
  environment: custom
  base_url: http://{addr}/api/v1
  client_id: {ADMIN_ID}
  key:
    pem: admin.pem
    kid: {ADMIN_KID}
clients:
  vendor:
    client_id: {CLIENT_ID}
    key:
      keyset: vendor.keyset.json
    renew:
      kid_prefix: vendor-TEST
{renew}routes:
{routes}"#,
            issuer = mock.issuer(),
            endpoint = mock.token_endpoint(),
            addr = mock.addr(),
        );
        let config = dir.join("portvakt.yaml");
        std::fs::write(&config, yaml).unwrap();
        World {
            mock,
            upstream,
            dir,
            config,
            keyset,
            clock: Clock::default(),
        }
    }

    async fn rotate(&self, force: bool) -> u8 {
        self.rotate_cut(force, &Uncut).await
    }

    async fn rotate_cut(&self, force: bool, faults: &dyn Faults) -> u8 {
        let clock = self.clock.clone();
        rotate_with(&self.config, None, force, false, faults, &move || {
            clock.now()
        })
        .await
    }

    fn keyset(&self) -> Keyset {
        Keyset::read(&self.keyset, CLIENT_ID).unwrap()
    }

    fn kids(&self, state: State) -> Vec<String> {
        self.keyset()
            .keys
            .iter()
            .filter(|e| e.state == state)
            .map(|e| e.kid.clone())
            .collect()
    }

    fn posts(&self) -> usize {
        self.mock
            .selfservice_calls()
            .iter()
            .filter(|c| c.method == "POST")
            .count()
    }
}

fn vendor() -> MockClient {
    MockClient::new(CLIENT_ID, SUPPLIER_ORG).scopes([SCOPE])
}

fn accepted_kids(mock: &MockMaskinporten) -> Vec<String> {
    mock.grants()
        .iter()
        .filter(|g| g.rejected.is_none() && g.claims["iss"] == CLIENT_ID)
        .filter_map(|g| g.header["kid"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn bootstrap_activation_forced_rotation_under_traffic_and_retirement() {
    let w = World::start("life", vendor(), "").await;
    // Bootstrap: a first key, stored (0600) before it is registered, waits out activate_after.
    let refused = portvakt::config::load(&w.config).unwrap_err().to_string();
    assert!(refused.contains("portvakt rotate"), "{refused}");
    assert_eq!(w.rotate(false).await, 2);
    let first = w.kids(State::Pending);
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with("vendor-TEST."), "{first:?}");
    assert_eq!(w.mock.registered_kids(CLIENT_ID), first);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&w.keyset).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let posted = &w.mock.selfservice_calls()[1];
    let key = &posted.body.as_ref().unwrap()["keys"][0];
    assert_eq!(
        (key["use"].as_str(), key["alg"].as_str()),
        (Some("sig"), Some("RS256"))
    );
    assert!(key.get("d").is_none(), "a private part went to Digdir");
    let exp = key["exp"].as_i64().unwrap();
    assert!((exp - w.clock.now() - 90 * DAY).abs() < 60, "exp {exp}");
    // Not yet: activate_after (600 s) has not passed.
    w.clock.advance(300);
    assert_eq!(w.rotate(false).await, 2);
    assert_eq!(w.kids(State::Active), Vec::<String>::new());
    w.clock.advance(301);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.kids(State::Active), first);
    assert_eq!(accepted_kids(&w.mock), first, "the proving grant");
    // Nothing is due: a pass only reads.
    let posts = w.posts();
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.posts(), posts);

    // The proxy signs with the active key; a forced rotation while calls flow fails none of them.
    let config = portvakt::config::load(&w.config).unwrap();
    let proxy = portvakt::app::start(&config).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, failures, calls) =
            (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&calls));
        let url = format!("http://{}/nav/x", proxy.listen);
        tokio::spawn(async move {
            let http = http_client();
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    w.mock.set_expires_in(3);
    w.mock.set_key_propagation(Duration::from_secs(2));
    assert_eq!(w.rotate(true).await, 2);
    let second = w.kids(State::Pending);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    // Registered, but Maskinporten does not know it yet (propagation): the pass waits.
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 2);
    assert_eq!(w.kids(State::Active), first);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.kids(State::Active), second);
    assert_eq!(w.kids(State::Retiring), first);
    // The running proxy picks the new key up from the file and its grants switch kid.
    let mut switched = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if accepted_kids(&w.mock).last() == Some(&second[0]) {
            switched = true;
            break;
        }
    }
    assert!(switched, "grants never switched to {second:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert!(calls.load(Ordering::SeqCst) > 20);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a call failed during the rotation"
    );

    // The old key stays registered through the overlap, then leaves Digdir and the keyset.
    w.clock.advance(6 * DAY);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.mock.registered_kids(CLIENT_ID).len(), 2);
    w.clock.advance(DAY + 1);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.mock.registered_kids(CLIENT_ID), second);
    assert_eq!(w.kids(State::Retiring), Vec::<String>::new());
    assert_eq!(w.kids(State::Active), second);
    let _ = std::fs::remove_dir_all(&w.dir);
}
