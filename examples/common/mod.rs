//! What the benchmark examples (`limits.rs`, `soak.rs`, `consents.rs`) share: portvakt as a child
//! process on free ports, and the child's resident memory as /proc reports it.
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

/// portvakt (`bin`, a release build) started as a child process in `dir` with the demo client's
/// key, against the mock Maskinporten at `issuer`, serving one route: `name` at `/{name}/` to
/// `upstream`, with `extra` (YAML lines of the route's own keys) added. Returns the child, its
/// listen port and its admin port.
pub fn start_portvakt(
    bin: &str,
    dir: &std::path::Path,
    issuer: &str,
    route: (&str, &str),
    extra: &str,
) -> (std::process::Child, u16, u16) {
    use portvakt::cli::demo::{DEMO_CLIENT_ID, DEMO_KID};
    use portvakt::mock::DEMO_CLIENT_KEY_PEM;
    let (name, upstream) = route;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("key.pem"), DEMO_CLIENT_KEY_PEM).unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("portvakt.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nmaskinporten:\n  environment: custom\n  issuer: {issuer}\nclients:\n  demo:\n    client_id: {DEMO_CLIENT_ID}\n    key:\n      pem: key.pem\n      kid: {DEMO_KID}\nroutes:\n  - name: {name}\n    prefix: /{name}/\n    upstream: {upstream}\n    client: demo\n    scopes: [demo:echo]\n{extra}"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(dir.join("portvakt.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (build it with cargo build --release)"));
    (child, port, admin)
}
