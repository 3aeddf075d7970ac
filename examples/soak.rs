//! A soak that loses nothing (`bench/soak.sh`, not part of `cargo test`): the release binary as a
//! child process, for `SOAK_SECONDS` (default 600), behind 64 callers of mixed GET, small POST,
//! chunked POST and uploads broken off mid-body; tokens of 6 s; the upstream revoking the token in
//! use every 20 s (401, retried); the key file replaced every 2 minutes (two keys, both
//! registered); the configuration rewritten every 30 s (a route added, then removed). Everything
//! on 127.0.0.1; it stops by itself. It prints what docs/security.md reports, and exits non-zero
//! when a property fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{free_port, rss_kib};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{DecodingKey, Validation};
use portvakt::cli::demo::{DEMO_CLIENT_ID, SUPPLIER_ORG};
use portvakt::mock::{MockClient, MockMaskinporten};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const CALLERS: usize = 64;
const TOKEN_SECONDS: u64 = 6;

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    invalid_tokens: AtomicU64,
    revoked_answers: AtomicU64,
    open_connections: AtomicUsize,
    revoked: Mutex<HashSet<String>>,
    current_jti: Mutex<Option<String>>,
}

/// The upstream: verifies every token against the mock Maskinporten's key, answers 401 to revoked
/// ones, reads the body whole, and counts its open connections.
async fn upstream(key: DecodingKey, seen: Arc<Seen>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::from(["exp".to_string()]);
    let (key, validation) = (Arc::new(key), Arc::new(validation));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (key, validation, seen) =
                (Arc::clone(&key), Arc::clone(&validation), Arc::clone(&seen));
            tokio::spawn(async move {
                seen.open_connections.fetch_add(1, Relaxed);
                let counted = Arc::clone(&seen);
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (key, validation, seen) =
                            (Arc::clone(&key), Arc::clone(&validation), Arc::clone(&seen));
                        async move {
                            seen.requests.fetch_add(1, Relaxed);
                            let token = request
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .map(str::to_string);
                            let _ = request.into_body().collect().await;
                            let claims = token.and_then(|t| {
                                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                                    &t,
                                    &key,
                                    &validation,
                                )
                                .ok()
                            });
                            let status = match claims
                                .and_then(|c| c.claims.get("jti")?.as_str().map(str::to_string))
                            {
                                None => {
                                    seen.invalid_tokens.fetch_add(1, Relaxed);
                                    500
                                }
                                Some(jti) if seen.revoked.lock().unwrap().contains(&jti) => {
                                    seen.revoked_answers.fetch_add(1, Relaxed);
                                    401
                                }
                                Some(jti) => {
                                    *seen.current_jti.lock().unwrap() = Some(jti);
                                    200
                                }
                            };
                            let mut answer = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                counted.open_connections.fetch_sub(1, Relaxed);
            });
        }
    });
    url
}

/// Reads one answer (by Content-Length, or chunked) and returns its status.
async fn answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + len);
    Some(status)
}

#[derive(Default)]
struct Calls {
    ok: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
}

async fn caller(port: u16, n: usize, stop: Arc<AtomicBool>, calls: Arc<Calls>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    let mut i = n;
    while !stop.load(Relaxed) {
        i += 1;
        let request: Vec<u8> = match i % 10 {
            0..=4 => format!("GET /nav/get-{i} HTTP/1.1\r\nHost: p\r\n\r\n").into_bytes(),
            5 | 6 => format!("POST /nav/post HTTP/1.1\r\nHost: p\r\nContent-Length: 200\r\n\r\n{}", "p".repeat(200)).into_bytes(),
            7 | 8 => b"POST /nav/chunked HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            _ => {
                // A caller that breaks off mid-body, on a connection of its own.
                if let Ok(mut a) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = a.write_all(b"POST /nav/abort HTTP/1.1\r\nHost: p\r\nContent-Length: 1000\r\n\r\n").await;
                    let _ = a.write_all(&[b'a'; 500]).await;
                }
                calls.aborted.fetch_add(1, Relaxed);
                continue;
            }
        };
        let status = match s.write_all(&request).await {
            Ok(()) => answer(&mut s, &mut buf).await,
            Err(_) => None,
        };
        if status == Some(200) {
            calls.ok.fetch_add(1, Relaxed);
        } else {
            calls.failed.fetch_add(1, Relaxed);
            eprintln!(
                "caller {n}: {status:?} for {}",
                String::from_utf8_lossy(&request[..request.len().min(40)])
            );
            s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            buf.clear();
        }
    }
}

fn proc_count(pid: u32) -> (u64, usize) {
    let rss = rss_kib(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn config(port: u16, admin: u16, issuer: &str, upstream: &str, extra_route: bool) -> String {
    let extra = if extra_route {
        format!("  - name: extra\n    prefix: /extra/\n    upstream: {upstream}extra/\n    client: demo\n    scopes: [demo:echo]\n")
    } else {
        String::new()
    };
    format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nwatch_interval_seconds: 1\nmaskinporten:\n  environment: custom\n  issuer: {issuer}\nclients:\n  demo:\n    client_id: {DEMO_CLIENT_ID}\n    key:\n      jwk: key.json\nroutes:\n  - name: nav\n    prefix: /nav/\n    upstream: {upstream}api/\n    client: demo\n    scopes: [demo:echo]\n{extra}"
    )
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let bin = std::env::var("PORTVAKT_BIN").unwrap_or_else(|_| "target/release/portvakt".into());
    let keys: Vec<_> = ["soak-a", "soak-b"]
        .iter()
        .map(|kid| portvakt::keys::generate(2048, kid).unwrap())
        .collect();
    let mut client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG).scopes(["demo:echo"]);
    for k in &keys {
        client = client.public_jwk(&k.public_jwks["keys"][0]);
    }
    let mock = MockMaskinporten::start(vec![client], TOKEN_SECONDS)
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    let up = upstream(mock.decoding_key(), Arc::clone(&seen)).await;
    let dir = std::env::temp_dir().join(format!("portvakt-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write_key = |i: usize| {
        let tmp = dir.join("key.json.new");
        std::fs::write(&tmp, keys[i % 2].private_jwk.expose().to_string()).unwrap();
        std::fs::rename(&tmp, dir.join("key.json")).unwrap();
    };
    write_key(0);
    let (port, admin) = (free_port(), free_port());
    let write_config = |extra: bool| {
        let tmp = dir.join("portvakt.yaml.new");
        std::fs::write(&tmp, config(port, admin, &mock.issuer(), &up, extra)).unwrap();
        std::fs::rename(&tmp, dir.join("portvakt.yaml")).unwrap();
    };
    write_config(false);
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(dir.join("portvakt.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("portvakt.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (build it with cargo build --release)"));
    let pid = child.id();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "portvakt did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (stop, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(Calls::default()));
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| tokio::spawn(caller(port, n, Arc::clone(&stop), Arc::clone(&calls))))
        .collect();
    let started = Instant::now();
    let (mut samples, mut rotations, mut reloads, mut revocations) =
        (Vec::new(), 0usize, 0usize, 0usize);
    // When a token had to be replaced before its refresh: revoked, or its key rotated.
    let mut forced: Vec<f64> = Vec::new();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if tick.is_multiple_of(10) {
            samples.push((started.elapsed().as_secs(), proc_count(pid)));
        }
        if tick.is_multiple_of(20) {
            if let Some(jti) = seen.current_jti.lock().unwrap().clone() {
                seen.revoked.lock().unwrap().insert(jti);
                revocations += 1;
                forced.push(started.elapsed().as_secs_f64());
            }
        }
        if tick.is_multiple_of(30) {
            reloads += 1;
            write_config(!reloads.is_multiple_of(2));
        }
        if tick.is_multiple_of(120) {
            rotations += 1;
            write_key(rotations);
            // The key watcher looks every second: the new key signs within one.
            forced.push(started.elapsed().as_secs_f64() + 0.5);
        }
    }
    stop.store(true, Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let token_requests = mock.token_requests();
    let (_, (rss_end, fds_end)) = *samples.last().unwrap();
    let minute = |from: u64, to: u64| {
        let in_it: Vec<_> = samples
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .map(|(_, s)| *s)
            .collect();
        let n = in_it.len().max(1) as f64;
        (
            in_it.iter().map(|s| s.0 as f64).sum::<f64>() / n,
            in_it.iter().map(|s| s.1 as f64).sum::<f64>() / n,
        )
    };
    let (second_rss, second_fds) = minute(60, 120);
    let last = seconds.saturating_sub(60);
    let (last_rss, last_fds) = minute(last, seconds);
    let open_while_running = seen.open_connections.load(Relaxed);
    // Stopped as an orchestrator stops it: SIGTERM, then the graceful drain.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked = seen.open_connections.load(Relaxed);
    // The first fetch; one for each token replaced before its time (revoked, or its key rotated);
    // and between those, one per refresh, which comes at 2/3 of the lifetime of the token before.
    let refresh = TOKEN_SECONDS as f64 * 2.0 / 3.0;
    forced.sort_by(f64::total_cmp);
    let mut bounds = vec![0.0];
    bounds.extend(forced.iter().copied().filter(|t| *t < elapsed));
    bounds.push(elapsed);
    let refreshes: f64 = bounds
        .windows(2)
        .map(|w| ((w[1] - w[0]) / refresh).floor())
        .sum();
    let expected = 1.0 + (bounds.len() - 2) as f64 + refreshes;
    let (ok, failed, aborted) = (
        calls.ok.load(Relaxed),
        calls.failed.load(Relaxed),
        calls.aborted.load(Relaxed),
    );
    println!("soak: {elapsed:.0} s, {CALLERS} callers, {ok} requests answered 200, {failed} failed, {aborted} aborted mid-body on purpose");
    println!("upstream: {} requests, {} with an invalid token, {} answered 401 (revoked, then retried by portvakt)", seen.requests.load(Relaxed), seen.invalid_tokens.load(Relaxed), seen.revoked_answers.load(Relaxed));
    println!("tokens: {token_requests} fetched; lifetime arithmetic {expected:.0} (the first, {refreshes:.0} refreshes every {refresh:.0} s, {revocations} revocations, {rotations} key rotations); {reloads} config reloads");
    println!(
        "rss: second minute {:.1} MB, last minute {:.1} MB ({:+.1} %); end {:.1} MB",
        second_rss / 1024.0,
        last_rss / 1024.0,
        (last_rss / second_rss - 1.0) * 100.0,
        rss_end as f64 / 1024.0
    );
    println!("fds: second minute {second_fds:.0}, last minute {last_fds:.0}; end {fds_end}");
    println!("upstream connections: {open_while_running} open at the end of the load, {leaked} after portvakt stopped");
    let mut bad = Vec::new();
    if failed > 0 {
        bad.push(format!("{failed} failed requests"));
    }
    if seen.invalid_tokens.load(Relaxed) > 0 {
        bad.push("requests reached the upstream without a valid token".into());
    }
    if (token_requests as f64 - expected).abs() > 1.0 {
        bad.push(format!(
            "{token_requests} token fetches against {expected:.1}"
        ));
    }
    if (last_rss / second_rss - 1.0).abs() > 0.10
        || (last_fds / second_fds.max(1.0) - 1.0).abs() > 0.10
    {
        bad.push("RSS or descriptors grew".into());
    }
    if leaked > 0 {
        bad.push(format!("{leaked} upstream connections left open"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if bad.is_empty() {
        println!("RESULT soak passed");
    } else {
        println!("RESULT soak FAILED: {}", bad.join("; "));
        std::process::exit(1);
    }
}
