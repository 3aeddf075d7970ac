//! What the benchmark examples (`limits.rs`, `soak.rs`) share: a free port for the child process,
//! and the child's resident memory as /proc reports it.
#![allow(dead_code, clippy::unwrap_used)]

/// Resident memory of process `pid` in KiB (0 when /proc does not say).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
