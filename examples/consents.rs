//! The consent token cache under 100,000 distinct consents: portvakt's resident memory as the
//! number of persons grows past `consent_tokens_max` (default 10,000), and the count `/readyz`
//! gives. It runs the release binary as a child process (so its memory is portvakt's alone)
//! against the mock Maskinporten, which holds every consent, and the echo upstream, all on
//! 127.0.0.1. Run it with `bench/run.sh consents [N]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rss_kib, start_portvakt};
use portvakt::cli::demo::{DEMO_CLIENT_ID, DEMO_KID, SUPPLIER_ORG};
use portvakt::keys::SigningKey;
use portvakt::mock::{EchoUpstream, MockClient, MockMaskinporten, DEMO_CLIENT_KEY_PEM};
use std::time::Duration;
use tokio::time::Instant;

/// Calls under way at once.
const CONCURRENCY: usize = 32;

/// The `n`th synthetic fødselsnummer (Tenor's month +80) with both check digits right.
fn person(n: u64) -> String {
    let mut k = n;
    loop {
        let base = format!(
            "{:02}{:02}{:02}{:03}",
            1 + k % 28,
            81 + k / 28 % 12,
            k / 336 % 100,
            k / 33_600 % 1000
        );
        if let Some(number) = portvakt::support::identifiers::person_number(&base) {
            return number;
        }
        k += 1;
    }
}

fn consent_id(n: u64) -> String {
    format!("5a1d0c3e-0000-4000-8000-{n:012}")
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let bin = std::env::var("PORTVAKT_BIN").unwrap_or_else(|_| "target/release/portvakt".into());
    let key = SigningKey::from_pem(DEMO_CLIENT_KEY_PEM.as_bytes(), DEMO_KID).unwrap();
    let client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG)
        .key(&key)
        .scopes(["demo:echo"]);
    let mock = MockMaskinporten::start(vec![client], 3600).await.unwrap();
    let year = portvakt::support::time::unix_now() as i64 + 365 * 86_400;
    let store = mock.consents();
    let people: Vec<String> = (0..total).map(person).collect();
    for (n, p) in people.iter().enumerate() {
        store.give(&consent_id(n as u64), p, SUPPLIER_ORG, year);
    }
    let upstream = EchoUpstream::start(None).await.unwrap();
    let dir = std::env::temp_dir().join(format!("portvakt-consents-{}", std::process::id()));
    let (mut child, port, admin) = start_portvakt(
        &bin,
        &dir,
        &mock.issuer(),
        ("samtykke", &upstream.url()),
        "    consent_per_call: true\n",
    );
    let pid = child.id();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    while http
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no /healthz");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let people = std::sync::Arc::new(people);
    let consent_tokens = || async {
        let ready: serde_json::Value = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["routes"][0]["consent_tokens"].as_u64().unwrap_or(0)
    };
    println!("consents  portvakt RSS  consent tokens kept  grants  seconds");
    println!(
        "{:>8}  {:>8.1} MB  {:>19}  {:>6}  {:>7}",
        0,
        rss_kib(pid) as f64 / 1024.0,
        consent_tokens().await,
        mock.token_requests(),
        0
    );
    let mut done = 0u64;
    for checkpoint in [
        1_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    ] {
        let checkpoint = checkpoint.min(total);
        if checkpoint <= done {
            continue;
        }
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(done));
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (next, people, http) = (next.clone(), people.clone(), http.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= checkpoint {
                            break;
                        }
                        let status = http
                            .get(format!("http://127.0.0.1:{port}/samtykke/x"))
                            .header("Portvakt-Consent-Id", consent_id(n))
                            .header("Portvakt-Consent-From", &people[n as usize])
                            .send()
                            .await
                            .unwrap()
                            .status();
                        assert_eq!(status, 200, "consent {n}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        done = checkpoint;
        println!(
            "{:>8}  {:>8.1} MB  {:>19}  {:>6}  {:>7.0}",
            done,
            rss_kib(pid) as f64 / 1024.0,
            consent_tokens().await,
            mock.token_requests(),
            started.elapsed().as_secs_f64()
        );
        if done == total {
            break;
        }
    }
    assert!(consent_tokens().await <= 10_000, "the bound did not hold");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
