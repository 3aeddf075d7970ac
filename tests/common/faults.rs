//! Misbehaving peers on 127.0.0.1 for fault-injection tests: an upstream that stalls, resets or
//! redirects, and an outbound CONNECT proxy that records what it tunnelled. Each counts its open
//! connections so a test can prove portvakt let go of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Reads the request and never answers.
    StallBeforeHeaders,
    /// Sends headers and part of the body, then goes quiet.
    StallMidBody,
    /// Closes with a TCP reset before answering.
    ResetBeforeHeaders,
    /// Sends headers and part of the body, then resets.
    ResetMidBody,
    /// Answers 302 to `Location`.
    Redirect(String),
}

pub struct FaultServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
}

impl FaultServer {
    pub async fn start(fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (Arc::clone(&accepted), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (fault, o) = (fault.clone(), Arc::clone(&o));
                tokio::spawn(async move {
                    serve(stream, fault).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultServer {
            addr,
            accepted,
            open,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// Waits until the other side closes (or 30 s pass), draining what it sends.
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

async fn serve(mut stream: TcpStream, fault: Fault) {
    read_head(&mut stream).await;
    let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\nfirst part of the body";
    match fault {
        Fault::StallBeforeHeaders => until_closed(&mut stream).await,
        Fault::StallMidBody => {
            let _ = stream.write_all(partial).await;
            until_closed(&mut stream).await;
        }
        Fault::ResetBeforeHeaders => {
            let _ = stream.set_zero_linger();
        }
        Fault::ResetMidBody => {
            let _ = stream.write_all(partial).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.set_zero_linger();
        }
        Fault::Redirect(location) => {
            let answer =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
            until_closed(&mut stream).await;
        }
    }
}

/// Each tunnel's `host:port` and the `Proxy-Authorization` it came with.
pub type Tunnels = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An outbound proxy as corporate networks run them: CONNECT only, optionally with Basic
/// credentials; records each tunnel's target and the `Proxy-Authorization` it came with.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub tunnels: Tunnels,
}

impl ConnectProxy {
    /// `credentials`: the `Proxy-Authorization` value required, if any.
    pub async fn start(credentials: Option<String>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&tunnels);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, credentials) = (Arc::clone(&seen), credentials.clone());
                tokio::spawn(async move {
                    let head = String::from_utf8_lossy(&read_head(&mut stream).await).into_owned();
                    let mut lines = head.split("\r\n");
                    let request_line = lines.next().unwrap_or_default().to_string();
                    let auth = lines
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                        .map(|(_, v)| v.trim().to_string());
                    let mut parts = request_line.split_whitespace();
                    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    seen.lock()
                        .unwrap()
                        .push((target.to_string(), auth.clone()));
                    if method != "CONNECT" {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                    if credentials.is_some() && auth != credentials {
                        let _ = stream.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n").await;
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        let _ = stream
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                });
            }
        });
        ConnectProxy { addr, tunnels }
    }

    pub fn targets(&self) -> Vec<String> {
        self.tunnels
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Tasks alive on this test's runtime (portvakt runs on it too).
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (up to 5 s) for the runtime's task count to come back to `baseline`, and returns the last
/// count seen.
pub async fn settle_to(baseline: usize) -> usize {
    for _ in 0..100 {
        let n = alive_tasks();
        if n <= baseline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alive_tasks()
}
