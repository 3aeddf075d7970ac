//! What `compare.sh` does not measure: cold start, memory with 10,000 idle keep-alive callers,
//! and 1 GB streamed up and down with flat memory. It runs the release binary as a child process
//! (so its memory is portvakt's alone) against the mock Maskinporten and the echo upstream, all on
//! 127.0.0.1. Run it with `bench/run.sh limits`, which raises the open-file limit first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rss_kib, start_portvakt};
use portvakt::cli::demo::{DEMO_CLIENT_ID, DEMO_KID, SUPPLIER_ORG};
use portvakt::keys::SigningKey;
use portvakt::mock::{EchoUpstream, MockClient, MockMaskinporten, DEMO_CLIENT_KEY_PEM};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const GIB: u64 = 1 << 30;
const IDLE_CALLERS: usize = 10_000;

/// Samples the child's RSS every 20 ms until dropped; keeps the highest.
struct PeakRss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        PeakRss { peak, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Reads one HTTP/1.1 answer with a Content-Length, discarding its body; returns the status and
/// the body's length.
async fn read_answer(stream: &mut TcpStream) -> (u16, u64) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap());
        let n = stream.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "body ended {left} bytes early");
        left -= n as u64;
    }
    (status, len)
}

/// How many files (sockets among them) process `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Opens `IDLE_CALLERS` connections to the proxy, each making one call first when `call`.
async fn idle_callers(port: u16, call: bool) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(IDLE_CALLERS);
    for _ in 0..IDLE_CALLERS / 500 {
        let mut opened = Vec::new();
        for _ in 0..500 {
            opened.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                if call {
                    s.write_all(b"GET /echo/idle HTTP/1.1\r\nhost: a\r\n\r\n")
                        .await
                        .unwrap();
                    assert_eq!(read_answer(&mut s).await.0, 200);
                }
                s
            }));
        }
        for o in opened {
            idle.push(o.await.unwrap());
        }
    }
    idle
}

#[tokio::main]
async fn main() {
    let bin = std::env::var("PORTVAKT_BIN").unwrap_or_else(|_| "target/release/portvakt".into());
    let key = SigningKey::from_pem(DEMO_CLIENT_KEY_PEM.as_bytes(), DEMO_KID).unwrap();
    let client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG)
        .key(&key)
        .scopes(["demo:echo"]);
    let mock = MockMaskinporten::start(vec![client], 3600).await.unwrap();
    let upstream = EchoUpstream::start(None).await.unwrap();
    let dir = std::env::temp_dir().join(format!("portvakt-limits-{}", std::process::id()));
    // Cold start: from spawning the process to its first /healthz answer.
    let started = Instant::now();
    let (mut child, port, admin) =
        start_portvakt(&bin, &dir, &mock.issuer(), ("echo", &upstream.url()), "");
    let pid = child.id();
    let healthz = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", admin)).await {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
            if read_answer(&mut s).await.0 == 200 {
                break started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no /healthz");
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let first = Instant::now();
    caller
        .write_all(b"GET /echo/first HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut caller).await.0, 200);
    let first_call = first.elapsed();
    let token_requests = mock.token_requests();
    let baseline = rss_kib(pid);

    // 1 GB down, then 1 GB up, on the same caller connection.
    let peak = PeakRss::watch(pid);
    let t = Instant::now();
    caller
        .write_all(format!("GET /echo/bytes/{GIB} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, len) = read_answer(&mut caller).await;
    assert_eq!((status, len), (200, GIB));
    let down = t.elapsed();
    let down_peak = peak.stop();

    let peak = PeakRss::watch(pid);
    let t = Instant::now();
    caller
        .write_all(
            format!("POST /echo/upload HTTP/1.1\r\nhost: a\r\ncontent-length: {GIB}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0;
    while sent < GIB {
        caller.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    assert_eq!(read_answer(&mut caller).await.0, 200);
    let up = t.elapsed();
    let up_peak = peak.stop();
    assert_eq!(upstream.records().last().unwrap().body_len, GIB);

    // 10,000 callers connected and silent; then 10,000 that each had one call answered and
    // stay on keep-alive.
    let open_before = open_files(pid);
    let idle = idle_callers(port, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let silent_rss = rss_kib(pid);
    drop(idle);
    // The next 10,000 start once portvakt has closed these: loopback reuses the callers' ports
    // soon, and a new connection on a port whose old socket portvakt has not closed yet is reset.
    let quiet = Instant::now();
    while open_files(pid) > open_before + 100 && quiet.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = idle_callers(port, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid);
    // The same callers after a few more seconds of quiet: what a steady idle costs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle_settled_rss = rss_kib(pid);
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "cold start to /healthz        {:>8.1} ms",
        healthz.as_secs_f64() * 1000.0
    );
    println!(
        "first proxied call            {:>8.1} ms  ({token_requests} token request)",
        first_call.as_secs_f64() * 1000.0
    );
    println!("RSS after the first call      {:>8.1} MB", mib(baseline));
    println!(
        "1 GB download                 {:>8.1} s   peak RSS {:.1} MB (+{:.1} MB)",
        down.as_secs_f64(),
        mib(down_peak),
        mib(down_peak.saturating_sub(baseline))
    );
    println!(
        "1 GB upload                   {:>8.1} s   peak RSS {:.1} MB (+{:.1} MB)",
        up.as_secs_f64(),
        mib(up_peak),
        mib(up_peak.saturating_sub(baseline))
    );
    println!(
        "{IDLE_CALLERS} silent connections   {:>8.1} MB RSS",
        mib(silent_rss)
    );
    println!(
        "{IDLE_CALLERS} idle keep-alive callers {:>8.1} MB RSS 0.5 s after the last call, {:.1} MB 3 s after",
        mib(idle_rss),
        mib(idle_settled_rss)
    );
    println!(
        "RESULT healthz_ms={:.1} first_call_ms={:.1} token_requests={token_requests} rss_mb={:.1} download_growth_mb={:.1} upload_growth_mb={:.1} silent_10k_rss_mb={:.1} idle_10k_rss_mb={:.1} idle_10k_settled_rss_mb={:.1}",
        healthz.as_secs_f64() * 1000.0,
        first_call.as_secs_f64() * 1000.0,
        mib(baseline),
        mib(down_peak.saturating_sub(baseline)),
        mib(up_peak.saturating_sub(baseline)),
        mib(silent_rss),
        mib(idle_rss),
        mib(idle_settled_rss)
    );
}
