//! Hot reload: a changed file or SIGHUP puts a new configuration in force, unchanged routes keep
//! their cached tokens, and a bad file changes nothing but a logged error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portvakt-reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with routes `/nav/` and, when `with_ks`, `/ks/`; keys by absolute path.
fn config(
    mock: &portvakt::mock::MockMaskinporten,
    upstream: &str,
    with_ks: bool,
    head: &str,
) -> String {
    let mut routes = ONE_ROUTE.replace("{upstream}", upstream);
    if with_ks {
        routes.push_str(&format!(
            "  - name: ks\n    prefix: /ks/\n    upstream: {upstream}fiks/\n    client: vendor\n    scopes: [{OTHER_SCOPE}]\n"
        ));
    }
    config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes)
        .replace(
            "pem: client-a.pem",
            &format!("pem: {}", fixtures().join("client-a.pem").display()),
        )
        .replace("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n", head)
}

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Polls `url` for up to 10 s until it answers `want`.
async fn eventually(http: &reqwest::Client, url: &str, want: u16) -> u16 {
    let mut got = 0;
    for _ in 0..200 {
        got = status(http, url).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test]
async fn a_changed_file_is_reloaded_keeping_tokens_and_a_bad_one_changes_nothing() {
    let (mock, upstream) = mock_and_upstream().await;
    let dir = temp_dir("file");
    let path = dir.join("portvakt.yaml");
    let head = "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nwatch_interval_seconds: 1\n";
    std::fs::write(&path, config(&mock, &upstream.url(), false, head)).unwrap();
    logs::capture();
    let loaded = portvakt::config::load(&path).unwrap();
    let proxy = portvakt::app::start(&loaded).await.unwrap();
    proxy.reload_from(path.clone());
    let http = http_client();
    let (nav, ks) = (
        format!("http://{}/nav/x", proxy.listen),
        format!("http://{}/ks/x", proxy.listen),
    );
    assert_eq!(status(&http, &nav).await, 200);
    assert_eq!(status(&http, &ks).await, 404);
    assert_eq!(mock.token_requests(), 1);

    // A new route appears; the unchanged one keeps its token.
    std::fs::write(&path, config(&mock, &upstream.url(), true, head)).unwrap();
    assert_eq!(
        eventually(&http, &ks, 200).await,
        200,
        "the new route never came"
    );
    assert_eq!(status(&http, &nav).await, 200);
    assert_eq!(
        mock.token_requests(),
        2,
        "the unchanged route fetched a new token"
    );
    let records = upstream.records();
    let nav_tokens: std::collections::HashSet<_> = records
        .iter()
        .filter(|r| r.target.starts_with("/forsikring/"))
        .map(|r| r.token_claims.as_ref().unwrap()["jti"].clone())
        .collect();
    assert_eq!(
        nav_tokens.len(),
        1,
        "the nav route's token changed across the reload"
    );

    // A bad file: logged, counted, and both routes keep serving as before.
    std::fs::write(
        &path,
        config(&mock, &upstream.url(), true, head).replace("scopes:", "scpoe:"),
    )
    .unwrap();
    let mut counted = false;
    for _ in 0..200 {
        let text = metrics_text(&proxy).await;
        if text.contains("portvakt_config_reloads_total{result=\"error\"} 1") {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the failed reload was not counted");
    assert!(logs::text().contains("did you mean `scopes`"));
    assert!(logs::text().contains("still serving the previous one"));
    assert_eq!(status(&http, &nav).await, 200);
    assert_eq!(status(&http, &ks).await, 200);
    assert_eq!(mock.token_requests(), 2);
    let err = proxy.reload(&path).await.unwrap_err();
    assert!(err.contains("routes[0].scpoe: unknown key"), "{err}");

    // Fixed again: in force, still with the same tokens.
    std::fs::write(&path, config(&mock, &upstream.url(), false, head)).unwrap();
    assert_eq!(
        eventually(&http, &ks, 404).await,
        404,
        "the removed route kept serving"
    );
    assert_eq!(status(&http, &nav).await, 200);
    assert_eq!(mock.token_requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let (mock, upstream) = mock_and_upstream().await;
    let port = free_port();
    let dir = temp_dir("hup");
    let path = dir.join("portvakt.yaml");
    // An hour between file checks: only SIGHUP can make this reload in time.
    let head = format!("listen: 127.0.0.1:{port}\nwatch_interval_seconds: 3600\n");
    std::fs::write(&path, config(&mock, &upstream.url(), false, &head)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portvakt"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = http_client();
    let (nav, ks) = (
        format!("http://127.0.0.1:{port}/nav/x"),
        format!("http://127.0.0.1:{port}/ks/x"),
    );
    assert_eq!(
        first_answer(&http, &nav).await,
        Some(reqwest::StatusCode::OK)
    );
    std::fs::write(&path, config(&mock, &upstream.url(), true, &head)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&http, &ks).await, 404, "reloaded without a signal");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert_eq!(
        eventually(&http, &ks, 200).await,
        200,
        "SIGHUP did not reload"
    );
    assert_eq!(mock.token_requests(), 2);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SIGHUP: reloading the configuration"),
        "{stderr}"
    );
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
}
