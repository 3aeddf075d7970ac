//! The admin status page, rendered by a real browser (headless Chromium, installed by
//! `scripts/test-deps.sh`) and read back as the DOM it built.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's flags for a sandboxed CI machine with no network beyond loopback; a hung browser
/// is ended after 60 s so the test fails instead of hanging.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "60",
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1100",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

fn browser_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    // On CI the browser is part of the suite; a developer without it is told how to get it.
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing: .ci/run installs it with scripts/test-deps.sh"
    );
    eprintln!("skipped: {CHROMIUM} is missing; run scripts/test-deps.sh to install it");
    false
}

#[tokio::test]
async fn a_browser_shows_routes_token_states_keys_and_recent_errors() {
    if !browser_available() {
        return;
    }
    let routes = format!(
        "{ONE_ROUTE}  - name: fiks-arkiv
    prefix: /fiks/
    upstream: {{upstream}}fiks/
    client: vendor
    scopes: [ks:not-granted]
"
    );
    let h = Harness::start(&routes, 120).await;
    assert_eq!(h.get("/nav/x").await.status(), 200);
    assert_eq!(h.get("/fiks/x").await.status(), 502);
    assert_eq!(h.get("/nowhere").await.status(), 404);
    let token = token_seen(&h.upstream, 0);

    // The page as served: self-contained, nothing to fetch, no script.
    let served = h.admin_get("/").await;
    assert_eq!(served.headers()["content-type"], "text/html; charset=utf-8");
    let html = served.text().await.unwrap();
    for outside in ["<script", "src=", "href=\"http", "url(", "@import"] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    assert!(!html.contains(&token), "a token on the status page");

    // What a person sees: Chromium loads it, builds the DOM and dumps it.
    let profile = config_dir("chromium-profile");
    let dump = tokio::task::spawn_blocking({
        let (url, profile) = (h.admin_url("/"), profile.clone());
        move || {
            chromium(&profile)
                .args(["--dump-dom", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dom = String::from_utf8(dump.stdout).unwrap();
    let text = visible_text(&dom);
    for expected in [
        "portvakt",
        "1 of 2 tokens failing",
        // Routes with upstream, client, scopes.
        "nav /nav",
        "fiks-arkiv /fiks",
        &format!("{}forsikring/", h.upstream.url()),
        SCOPE,
        "ks:not-granted",
        // Token states: valid for N s; failing since T with the MP code and what to do.
        "valid valid for 1",
        "failing since",
        "MP-200",
        "What to do:",
        // The client's key.
        "vendor",
        &format!("kid {KID}"),
        "none (registered key)",
        // Recent errors, newest first, without the path.
        "token-rejected",
        "no-route",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains("/nowhere"), "a request path on the page");
    assert!(!dom.contains(&token));
    let valid_for: u64 = text
        .split("valid for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((100..=120).contains(&valid_for), "valid for {valid_for} s");

    // And a picture of it, for docs/operations/status-page.png.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    // The browser runs off the runtime's thread, which must stay free to serve the page.
    let took = tokio::task::spawn_blocking({
        let (url, shot) = (h.admin_url("/"), shot.clone());
        move || {
            chromium(&profile)
                .arg(format!("--screenshot={}", shot.display()))
                .arg(url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(took.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
}

/// The DOM's text with tags dropped and whitespace folded, as a person reads it.
fn visible_text(dom: &str) -> String {
    let body = dom.split("</style>").nth(1).unwrap_or(dom);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
