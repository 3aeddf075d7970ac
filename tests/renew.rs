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
use std::path::PathBuf;
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
        portvakt::support::time::unix_now() as i64 + self.0.load(Ordering::SeqCst)
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
    /// Runs the portvakt binary with `args` and this world's `--config`, logs as text.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_portvakt"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("PORTVAKT_LOG_FORMAT", "text")
            .output()
            .unwrap()
    }

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
        let flags = portvakt::renew::command::Flags {
            force,
            ..Default::default()
        };
        rotate_with(&self.config, None, flags, faults, &move || clock.now()).await
    }

    /// Starts the proxy, which must make no renewal pass for 2.5 s (another replica holds
    /// `what`); gives the self-service calls made so far.
    async fn start_proxy_making_no_pass(&self, what: &str) -> (portvakt::app::Running, usize) {
        let config = portvakt::config::load(&self.config).unwrap();
        let proxy = portvakt::app::start(&config).await.unwrap();
        let calls = self.mock.selfservice_calls().len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = self.mock.selfservice_calls().len();
        assert_eq!(now, calls, "a pass ran without {what}");
        (proxy, calls)
    }

    /// The status of every self-service call so far, in order.
    fn statuses(&self) -> Vec<u16> {
        self.mock
            .selfservice_calls()
            .iter()
            .map(|c| c.status)
            .collect()
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
    // Someone removes the active key in Samarbeidsportalen: the next pass registers it again.
    w.mock.remove_key(CLIENT_ID, &first[0]);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.mock.registered_kids(CLIENT_ID), first);

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
    w.mock.set_key_propagation(Duration::from_secs(5));
    assert_eq!(w.rotate(true).await, 2);
    let second = w.kids(State::Pending);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    // Registered, but Maskinporten does not know it yet (propagation): the pass waits.
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 2);
    assert_eq!(w.kids(State::Active), first);
    tokio::time::sleep(Duration::from_millis(5100)).await;
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
    // The upstream verified every token it got: each signed by Maskinporten for this client.
    assert_eq!(w.upstream.records().len(), calls.load(Ordering::SeqCst));

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

/// Cuts a pass after the first two writes at `point`, as a crash there would (twice, so that a
/// pass resumed from a cut is cut again), and checks the invariants after every write of every pass.
struct Cutter<'w> {
    point: &'static str,
    world: &'w World,
    cuts: AtomicUsize,
    checks: AtomicUsize,
    /// Kids that were ever registered, and the set never shrank to nothing after the first.
    ever: Mutex<Vec<String>>,
}

impl Cutter<'_> {
    fn check(&self, at: &str) {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let w = self.world;
        let keyset = w.keyset();
        let registered = w.mock.registered_kids(CLIENT_ID);
        let mut ever = self.ever.lock().unwrap();
        for kid in &registered {
            // 1. Nothing is registered whose private half is not stored.
            assert!(
                keyset.keys.iter().any(|e| &e.kid == kid),
                "after {at}: {kid} is registered but not in the keyset"
            );
            if !ever.contains(kid) {
                ever.push(kid.clone());
            }
        }
        // 3. Once anything was registered, the set is never empty.
        assert!(
            ever.is_empty() || !registered.is_empty(),
            "after {at}: empty set"
        );
        let now = w.clock.now();
        for e in &keyset.keys {
            match e.state {
                State::Active => {
                    // 2. Active only once listed, activate_after later, and after a grant worked.
                    assert!(
                        registered.contains(&e.kid),
                        "after {at}: active {} unregistered",
                        e.kid
                    );
                    let (reg, act) = (e.registered.unwrap(), e.activated.unwrap());
                    assert!(
                        act - reg >= 600,
                        "after {at}: {} active {} s after it was listed",
                        e.kid,
                        act - reg
                    );
                    assert!(
                        accepted_kids(&w.mock).contains(&e.kid),
                        "after {at}: {} never proved",
                        e.kid
                    );
                }
                // 4. A retiring key stays registered until its overlap is over.
                State::Retiring if e.retire_after.unwrap() > now => {
                    assert!(
                        registered.contains(&e.kid),
                        "after {at}: {} retired early",
                        e.kid
                    )
                }
                _ => {}
            }
        }
    }
}

impl Faults for Cutter<'_> {
    fn after(&self, point: &str) -> Result<(), String> {
        self.check(point);
        if point == self.point && self.cuts.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(format!("cut after {point}"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_pass_cut_after_any_write_finishes_on_the_next_one_and_the_invariants_hold_throughout() {
    for point in [
        "stored",
        "registered",
        "observed",
        "verified",
        "activated",
        "retired",
        "forgotten",
        "noted",
    ] {
        let w = World::start(point, vendor(), "      overlap_seconds: 86400\n").await;
        let cutter = Cutter {
            point,
            world: &w,
            cuts: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            ever: Mutex::new(Vec::new()),
        };
        let mut first = None;
        let mut forced = false;
        let mut done = false;
        for _ in 0..40 {
            let active = w.kids(State::Active).pop();
            match (&first, &active) {
                (None, Some(a)) => first = Some(a.clone()),
                (Some(f), Some(a)) if f != a && w.keyset().keys.len() == 1 => {
                    done = true;
                    break;
                }
                _ => {}
            }
            let force = first.is_some() && !forced;
            forced |= force;
            w.rotate_cut(force, &cutter).await;
            w.clock.advance(if forced { 3 * 3600 } else { 700 });
        }
        assert!(
            done,
            "cut after {point}: the rotation never finished: {:?}",
            w.keyset()
        );
        assert!(
            cutter.cuts.load(Ordering::SeqCst) > 0,
            "never reached {point}"
        );
        let active = w.kids(State::Active);
        assert_eq!(
            w.mock.registered_kids(CLIENT_ID),
            active,
            "cut after {point}"
        );
        assert!(cutter.checks.load(Ordering::SeqCst) > 5);
        let _ = std::fs::remove_dir_all(&w.dir);
    }
}

#[tokio::test]
async fn a_registered_key_is_adopted_and_then_renewed_like_any_other() {
    let w = World::start("adopt", registered_client(), "").await;
    let pem = fixtures().join("client-a.pem");
    let adopt = |from: PathBuf, kid: Option<&'static str>| {
        let config = w.config.clone();
        async move { portvakt::renew::command::adopt(&config, "vendor", &from, kid).await }
    };
    // A key Digdir does not list is not adopted.
    assert_eq!(adopt(pem.clone(), Some("not-registered")).await, 1);
    assert!(!w.keyset.exists());
    assert_eq!(adopt(pem.clone(), Some(KID)).await, 0);
    assert_eq!(w.kids(State::Active), vec![KID.to_string()]);
    // Only into a new keyset.
    assert_eq!(adopt(pem, Some(KID)).await, 1);
    // The proxy signs with the adopted key, as before.
    let config = portvakt::config::load(&w.config).unwrap();
    let proxy = portvakt::app::start(&config).await.unwrap();
    assert_eq!(get(&proxy, "/nav/x").await.status(), 200);
    assert_eq!(accepted_kids(&w.mock), vec![KID.to_string()]);
    // Nothing is due; Digdir's exp is recorded.
    assert_eq!(w.rotate(false).await, 0);
    assert!(w.keyset().keys[0].exp.is_some());
    // A JWK file adopts too (into another client's keyset it would be refused for its client_id).
    let jwk = fixtures().join("client-b.jwk.json");
    assert_eq!(adopt(jwk, None).await, 1, "a key Digdir does not list");
    // Renewal replaces it like any other key.
    assert_eq!(w.rotate(true).await, 2);
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.kids(State::Retiring), vec![KID.to_string()]);
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test]
async fn a_full_set_is_renewed_in_place_and_no_key_is_dropped() {
    // Four keys someone else registered (break-glass keys), and the adopted one: five.
    let mut client = registered_client();
    let mut foreign = Vec::new();
    for i in 0..4 {
        let key = portvakt::keys::generate(2048, &format!("break-glass-{i}")).unwrap();
        client = client.public_jwk(&key.public_jwks["keys"][0]);
        foreign.push(format!("break-glass-{i}"));
    }
    let w = World::start("full", client, "").await;
    assert_eq!(
        portvakt::renew::command::adopt(
            &w.config,
            "vendor",
            &fixtures().join("client-a.pem"),
            Some(KID)
        )
        .await,
        0
    );
    let before = w.mock.registered_jwks(CLIENT_ID);
    let exp_of = |set: &serde_json::Value, kid: &str| {
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()["exp"]
            .as_i64()
            .unwrap()
    };
    // Due (forced), but there is no room: the active key is posted again, nothing is dropped, and
    // the pass reports an error for the alert.
    w.clock.advance(30 * DAY);
    assert_eq!(w.rotate(true).await, 1);
    let after = w.mock.registered_jwks(CLIENT_ID);
    let mut kids = foreign.clone();
    kids.push(KID.to_string());
    kids.sort();
    assert_eq!(w.mock.registered_kids(CLIENT_ID), kids);
    assert!(w.kids(State::Pending).is_empty(), "no key was made");
    for kid in &foreign {
        assert_eq!(
            exp_of(&before, kid),
            exp_of(&after, kid),
            "{kid}'s exp moved"
        );
    }
    let renewed = exp_of(&after, KID);
    assert!(
        (renewed - (w.clock.now() + 90 * DAY)).abs() < 60,
        "{renewed}"
    );
}

#[tokio::test]
async fn digdir_s_5xx_is_tried_again_and_a_4xx_explained_once() {
    let w = World::start("errors", vendor(), "").await;
    w.mock.fail_selfservice(503, 2);
    assert_eq!(w.rotate(false).await, 2, "two 503s, then through");
    let statuses = w.statuses();
    assert_eq!(&statuses[..3], &[503, 503, 200]);

    // An administration client without the scope to change keys: one POST, refused, not repeated.
    let w = World::start_with_admin("forbidden", vendor(), "", &["idporten:dcr.read"]).await;
    let yaml = std::fs::read_to_string(&w.config).unwrap();
    let yaml = yaml.replace(
        "selfservice:\n",
        "selfservice:\n  scopes: [idporten:dcr.read]\n",
    );
    std::fs::write(&w.config, yaml).unwrap();
    assert_eq!(w.rotate(false).await, 1);
    let posts: Vec<u16> = w
        .mock
        .selfservice_calls()
        .iter()
        .filter(|c| c.method == "POST")
        .map(|c| c.status)
        .collect();
    assert_eq!(posts, vec![403]);
    // The key was stored before the attempt, and nothing unstored is registered.
    assert_eq!(w.kids(State::Pending).len(), 1);
    assert!(w.mock.registered_kids(CLIENT_ID).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_plans_without_writing_and_shows_the_status() {
    let w = World::start("cli", vendor(), "").await;
    let dry = w.cli(&["rotate", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    let err = String::from_utf8_lossy(&dry.stderr);
    assert_eq!(dry.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("would make a 2048-bit key, store it as pending and register it (the keyset has no key yet (bootstrap))"), "{out}");
    assert!(!w.keyset.exists(), "a dry run wrote the keyset");
    assert_eq!(w.posts(), 0);
    let run = w.cli(&["rotate", "--client", "vendor"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(2), "{out}");
    assert!(out.contains("vendor: new key vendor-TEST."), "{out}");
    assert!(out.contains("vendor: waiting: the new key"), "{out}");
    let status = w.cli(&["keys", "status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    let pending = &w.kids(State::Pending)[0];
    let line = out
        .lines()
        .find(|l| l.contains(pending.as_str()))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("pending") && line.contains("(90 days)"),
        "{line}"
    );
    let unknown = w.cli(&["rotate", "--client", "nobody"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("client `nobody` has no renew section")
    );
    // Secrets stay out of what the commands print.
    let keyset = std::fs::read_to_string(&w.keyset).unwrap();
    let d = keyset
        .split("\"d\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for o in [&dry, &run, &status] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(d));
        assert!(!String::from_utf8_lossy(&o.stderr).contains(d));
    }
}

/// Faults that let another writer change the Secret right after `point`.
struct Meddler<'k> {
    kube: &'k portvakt::mock::MockKubernetes,
    point: &'static str,
    left: AtomicUsize,
}

impl Faults for Meddler<'_> {
    fn after(&self, point: &str) -> Result<(), String> {
        if point == self.point && self.left.load(Ordering::SeqCst) > 0 {
            self.left.fetch_sub(1, Ordering::SeqCst);
            self.kube.touch_secret("portvakt", "vendor-keys");
        }
        Ok(())
    }
}

/// A stand-in API server, a service account token for it, and a world whose keyset the renewer
/// keeps in the Secret `portvakt/vendor-keys` (`renew` lines besides `kubernetes_secret`).
async fn kube_world(name: &str, renew: &str) -> (portvakt::mock::MockKubernetes, World) {
    let kube = portvakt::mock::MockKubernetes::start("sa-token")
        .await
        .unwrap();
    let w = World::start(name, vendor(), "").await;
    std::fs::write(w.dir.join("token"), "sa-token\n").unwrap();
    let renew = format!(
        "{renew}      kubernetes_secret:\n        namespace: portvakt\n        name: vendor-keys\n        api_server: {}\n        token_file: {}\n",
        kube.url(),
        w.dir.join("token").display()
    );
    let yaml = std::fs::read_to_string(&w.config).unwrap();
    let yaml = yaml.replace(
        "      kid_prefix: vendor-TEST\n",
        &format!("      kid_prefix: vendor-TEST\n{renew}"),
    );
    std::fs::write(&w.config, yaml).unwrap();
    (kube, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyset_in_a_kubernetes_secret_is_written_with_resource_version() {
    let (kube, w) = kube_world("kube", "").await;
    // The Secret must exist: the writer may only get and update it.
    assert_eq!(w.rotate(false).await, 1);
    kube.create_secret("portvakt", "vendor-keys");
    // Another writer changes the Secret between this pass's writes: the pass's next write is
    // refused (409), and it reads again and plans afresh instead of overwriting.
    let meddler = Meddler {
        kube: &kube,
        point: "observed",
        left: AtomicUsize::new(1),
    };
    assert_eq!(w.rotate_cut(false, &meddler).await, 2);
    assert!(kube.conflicts() >= 1, "no write was refused");
    let stored = Keyset::parse(
        &kube
            .secret_key("portvakt", "vendor-keys", "keyset.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.keys.len(), 1);
    assert_eq!(stored.keys[0].state, State::Pending);
    assert_eq!(
        w.mock.registered_kids(CLIENT_ID),
        vec![stored.keys[0].kid.clone()]
    );
    assert!(
        !w.keyset.exists(),
        "the writer wrote the replicas' file, not the Secret"
    );
    // `keys status` reads the keyset where the renewer writes it: the Secret.
    let status = w.cli(&["keys", "status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    let line = out
        .lines()
        .find(|l| l.contains(stored.keys[0].kid.as_str()))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("pending") && !line.contains("foreign"),
        "{line}"
    );
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 0);
    // The kubelet puts the Secret's key at the mounted path; the proxies read it as a file.
    let bytes = kube
        .secret_key("portvakt", "vendor-keys", "keyset.json")
        .unwrap();
    std::fs::write(&w.keyset, bytes).unwrap();
    assert_eq!(w.kids(State::Active), vec![stored.keys[0].kid.clone()]);
    let config = portvakt::config::load(&w.config).unwrap();
    let proxy = portvakt::app::start(&config).await.unwrap();
    assert_eq!(get(&proxy, "/nav/x").await.status(), 200);
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test]
async fn run_renews_in_the_background_on_the_replica_that_holds_the_lock() {
    let renew = "      background: true\n      background_interval_seconds: 1\n      activate_after_seconds: 0\n      overlap_seconds: 5\n";
    let w = World::start("background", vendor(), renew).await;
    // The first key comes from `portvakt rotate` (the proxy needs a key to start).
    assert_eq!(w.rotate(false).await, 0);
    let first = w.kids(State::Active);
    assert_eq!(first.len(), 1);
    // Another replica holds the lock: this one makes no pass.
    let lock = std::fs::File::create(w.dir.join("vendor.keyset.json.lock")).unwrap();
    lock.try_lock().unwrap();
    let (proxy, _) = w.start_proxy_making_no_pass("the lock").await;
    drop(lock);
    // The active key is 61 days old now: the next pass rotates it, and one 5 s later retires the
    // old one, after the proxy's key watcher (every second) has moved on.
    let mut keyset = w.keyset();
    keyset.keys[0].created -= 61 * DAY;
    keyset.store(&w.keyset).unwrap();
    let mut rotated = false;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let active = w.kids(State::Active);
        if active != first && w.mock.registered_kids(CLIENT_ID) == active {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "no background rotation: {:?}", w.keyset());
    let answer = get(&proxy, "/nav/x").await;
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let second = w.kids(State::Active);
    let m = metrics_text(&proxy).await;
    assert!(
        metric_value(
            &m,
            r#"portvakt_key_rotations_total{client="vendor",result="done"}"#
        ) >= Some(1.0),
        "{m}"
    );
    let mut exp = None;
    for _ in 0..30 {
        let m = metrics_text(&proxy).await;
        exp = metric_value(
            &m,
            &format!(
                r#"portvakt_registered_key_expiry_seconds{{client="vendor",kid="{}",state="active"}}"#,
                second[0]
            ),
        );
        if exp.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!((exp.unwrap() - (w.clock.now() + 90 * DAY) as f64).abs() < 120.0);
    assert!(metric_value(
        &m,
        r#"portvakt_renewer_last_success_timestamp_seconds{client="vendor"}"#
    )
    .is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_a_secret_keyset_the_replica_holding_the_lease_renews() {
    let (kube, w) = kube_world(
        "lease",
        "      background: true\n      background_interval_seconds: 1\n",
    )
    .await;
    kube.create_secret("portvakt", "vendor-keys");
    assert_eq!(w.rotate(false).await, 2);
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 0);
    std::fs::write(
        &w.keyset,
        kube.secret_key("portvakt", "vendor-keys", "keyset.json")
            .unwrap(),
    )
    .unwrap();
    // Another replica holds the Lease for a minute: this one makes no pass.
    kube.set_lease("portvakt", "vendor-keys-renewer", Some("replica-b"), 60);
    let (proxy, calls) = w.start_proxy_making_no_pass("the lease").await;
    assert_eq!(
        kube.lease_holder("portvakt", "vendor-keys-renewer")
            .as_deref(),
        Some("replica-b")
    );
    // The other replica gives it back: this one takes it, makes its pass and gives it back.
    kube.set_lease("portvakt", "vendor-keys-renewer", None, 1);
    let mut passed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if w.mock.selfservice_calls().len() > calls
            && kube
                .lease_holder("portvakt", "vendor-keys-renewer")
                .is_none()
        {
            passed = true;
            break;
        }
    }
    assert!(passed, "no pass after the lease was free");
    assert!(!kube.lease_holders().is_empty());
    assert!(!kube.lease_holders().contains(&"replica-b".to_string()));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_wait_finishes_a_rotation_in_one_run_as_a_cronjob_wants() {
    let w = World::start("wait", vendor(), "      activate_after_seconds: 2\n").await;
    let run = w.cli(&["rotate", "--wait"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.contains("vendor: waiting: the new key"), "{out}");
    assert!(out.contains("vendor: activate "), "{out}");
    assert_eq!(w.kids(State::Active).len(), 1);
    assert_eq!(w.mock.registered_kids(CLIENT_ID), w.kids(State::Active));
}

#[tokio::test]
async fn a_reload_starts_the_background_renewer_with_the_new_settings() {
    let w = World::start("reload", vendor(), "      activate_after_seconds: 0\n").await;
    assert_eq!(w.rotate(false).await, 0);
    let (proxy, calls) = w.start_proxy_making_no_pass("renew.background").await;
    let yaml = std::fs::read_to_string(&w.config).unwrap().replace(
        "      activate_after_seconds: 0\n",
        "      activate_after_seconds: 0\n      background: true\n      background_interval_seconds: 1\n",
    );
    std::fs::write(&w.config, yaml).unwrap();
    proxy.reload(&w.config).await.unwrap();
    let mut passed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if w.mock.selfservice_calls().len() > calls {
            passed = true;
            break;
        }
    }
    assert!(passed, "no background pass after the reload");
    proxy.shutdown().await;
    // Shut down, it makes no more passes.
    let after = w.mock.selfservice_calls().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.mock.selfservice_calls().len(), after);
}

#[tokio::test]
async fn force_makes_one_new_key_even_when_one_is_already_pending() {
    let w = World::start("force", vendor(), "").await;
    assert_eq!(w.rotate(false).await, 2);
    w.clock.advance(601);
    assert_eq!(w.rotate(false).await, 0);
    assert_eq!(w.rotate(true).await, 2);
    let pending = w.kids(State::Pending);
    // Forced again while that key is pending and due: it is activated, and no third key is made.
    w.clock.advance(601);
    assert_eq!(w.rotate(true).await, 0);
    assert_eq!(w.kids(State::Active), pending);
    assert_eq!(w.kids(State::Pending), Vec::<String>::new());
    assert_eq!(w.keyset().keys.len(), 2);
}

#[tokio::test]
async fn the_background_renewer_fetches_a_new_administration_token_once_the_last_expires() {
    let renew = "      background: true\n      background_interval_seconds: 3\n      activate_after_seconds: 0\n";
    let w = World::start("admin-token", vendor(), renew).await;
    assert_eq!(w.rotate(false).await, 0);
    // From now on every token lives one second; the passes come about three seconds apart.
    w.mock.set_expires_in(1);
    let config = portvakt::config::load(&w.config).unwrap();
    let proxy = portvakt::app::start(&config).await.unwrap();
    let before = w.mock.selfservice_calls().len();
    let mut passes = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        passes = w.mock.selfservice_calls()[before..]
            .iter()
            .filter(|c| c.method == "GET")
            .count();
        if passes >= 2 {
            break;
        }
    }
    let statuses: Vec<u16> = w.mock.selfservice_calls()[before..]
        .iter()
        .map(|c| c.status)
        .collect();
    assert!(passes >= 2, "fewer than two passes: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a pass was refused: {statuses:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_401_is_tried_once_more_with_a_new_token_and_a_second_is_a_refusal() {
    let w = World::start("admin-401", vendor(), "").await;
    let tokens = w.mock.token_requests();
    w.mock.fail_selfservice(401, 1);
    // 2: the new key is registered and waits to sign, as without the 401.
    assert_eq!(w.rotate(false).await, 2, "one 401, then through");
    let statuses = w.statuses();
    assert_eq!(statuses[0..2], [401, 200]);
    assert_eq!(
        w.mock.token_requests() - tokens,
        2,
        "a new token after the 401"
    );

    let w = World::start("admin-401-twice", vendor(), "").await;
    w.mock.fail_selfservice(401, 2);
    assert_eq!(w.rotate(false).await, 1, "two 401s are a refusal");
    let statuses = w.statuses();
    assert_eq!(statuses, [401, 401]);
}
