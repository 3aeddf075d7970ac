//! Issue 27: the rest of a cut body must never be read as new requests. A parked keep-alive
//! connection (src/server/idle.rs) is resumed only where hyper was between messages both ways;
//! these tests hunt for any interleaving where it was not, on plain and TLS listeners, judged by
//! the exact requests a strict recording upstream got and the answers each caller read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "smuggling/stress.rs"]
mod stress;

use common::wire::{read_answer, Recorder};
use common::*;
use portvakt::mock::MockMaskinporten;
use std::sync::Arc;
use std::time::Duration;
use stress::{connect, Listener, Wire};
use tokio::io::AsyncWriteExt;

/// The route of issue 27's reproduction: bodies streamed (no 401 retry keeps them) and a
/// one-second answer timeout. `/small/` is the same with a body limit, for 413s.
const ROUTE: &str = "    retry_on_401: false\n    timeout_seconds: 1\n";

/// A mock Maskinporten, the strict recording upstream, and portvakt on `listener`.
async fn setup(listener: Listener) -> (Recorder, portvakt::app::Running, MockMaskinporten) {
    let (mock, _echo) = mock_and_upstream().await;
    let up = Recorder::start().await;
    let route = |name: &str| {
        format!(
            "  - name: {name}\n    prefix: /{name}/\n    upstream: {}api/\n    client: vendor\n    scopes: [{SCOPE}]\n{ROUTE}",
            up.url
        )
    };
    let routes = format!(
        "{}{}    max_body_bytes: 4096\n",
        route("nav"),
        route("small")
    );
    let mut yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes);
    if listener == Listener::Tls {
        yaml = yaml.replace(
            "admin_listen: 127.0.0.1:0\n",
            "admin_listen: 127.0.0.1:0\ninbound:\n  tls:\n    cert: upstream.pem\n    key: upstream.key\n",
        );
    }
    let proxy = spawn_proxy(&yaml, &[]).await;
    (up, proxy, mock)
}

/// The body's start, then what would be a request if the body's framing were lost.
fn attack(chunked: bool) -> (String, Vec<u8>) {
    if chunked {
        let head =
            "POST /nav/early404/up HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n";
        (head.to_string(), b"1\r\nx\r\n".repeat(1200))
    } else {
        let head = "POST /nav/early404/up HTTP/1.1\r\nHost: p\r\nContent-Length: 100000\r\n\r\n";
        (head.to_string(), b"x".repeat(1200))
    }
}

/// Issue 27's reproduction: one write of a head and 1,200 bytes of body that never ends, the
/// answer read (the upstream's early 404, or portvakt's 504 when `late`), 300 ms of quiet, then
/// a request that by the framing is still the body. Nothing may answer it, nothing may reach the
/// upstream.
async fn reproduce(listener: Listener, chunked: bool, late: bool) {
    let (up, proxy, _mock) = setup(listener).await;
    for attempt in 0..4 {
        let (mut head, body) = attack(chunked);
        if late {
            head = head.replace("/early404/up", "/late/up");
        }
        let mut s: Box<dyn Wire> = connect(listener, proxy.listen).await;
        let mut first = head.into_bytes();
        first.extend_from_slice(&body);
        s.write_all(&first).await.unwrap();
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            read_answer(&mut s, &mut buf, false),
        )
        .await
        .expect("no answer to the first request")
        .expect("closed before the first answer");
        assert_eq!(
            answer.status,
            if late { 504 } else { 404 },
            "{}",
            answer.head
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let smuggled = format!("GET /nav/smuggled-{attempt} HTTP/1.1\r\nHost: p\r\n\r\n");
        let _ = s.write_all(smuggled.as_bytes()).await;
        let second =
            tokio::time::timeout(Duration::from_secs(2), read_answer(&mut s, &mut buf, false))
                .await;
        if let Ok(Some(second)) = second {
            panic!(
                "attempt {attempt}: the body's rest was answered as a request: {} {}",
                second.status, second.head
            );
        }
    }
    let smuggled: Vec<String> = up
        .received()
        .iter()
        .map(|r| r.target.clone())
        .filter(|t| t.contains("smuggled"))
        .collect();
    assert!(smuggled.is_empty(), "reached the upstream: {smuggled:?}");
    assert!(up.violations().is_empty(), "{:?}", up.violations());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cut_chunked_body_after_an_early_answer_is_never_read_as_requests() {
    reproduce(Listener::Plain, true, false).await;
}

#[tokio::test]
async fn a_cut_sized_body_after_an_early_answer_is_never_read_as_requests() {
    reproduce(Listener::Plain, false, false).await;
}

#[tokio::test]
async fn a_cut_body_after_a_route_timeout_is_never_read_as_requests() {
    reproduce(Listener::Plain, true, true).await;
    reproduce(Listener::Plain, false, true).await;
}

#[tokio::test]
async fn a_cut_body_on_a_tls_listener_is_never_read_as_requests() {
    reproduce(Listener::Tls, true, false).await;
    reproduce(Listener::Tls, false, true).await;
}

/// Seconds of stress: `STRESS_SECONDS` (scripts/stress.sh runs it long), else a bounded run.
fn seconds(default: u64) -> Duration {
    let s = std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(s)
}

async fn stress(listener: Listener, callers: usize, default_seconds: u64) {
    // One stress at a time: the two share two cores with the other tests of this binary.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let (up, proxy, _mock) = setup(listener).await;
    let run = seconds(default_seconds);
    let judge = Arc::new(stress::Judge::default());
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let judge = Arc::clone(&judge);
        let addr = proxy.listen;
        tasks.push(tokio::spawn(async move {
            let bound = run + Duration::from_secs(60);
            let played = stress::caller(caller, listener, addr, run, &judge);
            if tokio::time::timeout(bound, played).await.is_err() {
                panic!("caller {caller} hangs at {:?}", judge.place(caller));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Abandoned exchanges finish reading their answers, and cut bodies their aborts.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let figures = judge.verdict(&up);
    println!("stress {listener:?}: {figures}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_at_random_interleavings_get_only_their_own_answers_plain() {
    stress(Listener::Plain, 48, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_at_random_interleavings_get_only_their_own_answers_tls() {
    stress(Listener::Tls, 24, 4).await;
}
