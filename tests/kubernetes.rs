//! The renewer's Kubernetes client (issue 28, finding 5): the API server is trusted by the
//! service account's CA (or the `ca_file` given for it) alone, and a Lease is judged by how long
//! this replica has seen it unchanged, by its own clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixtures;
use portvakt::config::KubeAccess;
use portvakt::mock::MockKubernetes;
use portvakt::renew::kubernetes::{trust, KubeError, Kubernetes};
use std::time::Duration;

fn access(server: &str, ca: &str) -> KubeAccess {
    let token = std::env::temp_dir().join(format!("portvakt-kube-token-{}", std::process::id()));
    std::fs::write(&token, "sa-token\n").unwrap();
    KubeAccess {
        server: Some(server.to_string()),
        token_file: token,
        ca_file: Some(fixtures().join(ca)),
    }
}

#[tokio::test]
async fn the_api_server_is_trusted_by_its_own_ca_alone() {
    let kube = MockKubernetes::start_tls(
        "sa-token",
        &fixtures().join("upstream.pem"),
        &fixtures().join("upstream.key"),
    )
    .await
    .unwrap();
    // The CA that issued the server's certificate: the call goes through (the Secret is missing).
    let trusted = Kubernetes::new(&access(&kube.url(), "test-ca.pem")).unwrap();
    match trusted.get_secret("portvakt", "keys").await {
        Err(KubeError::NotFound(_)) => {}
        other => panic!("{:?}", other.err()),
    }
    // Another CA: the server is refused before the token is sent.
    let other = Kubernetes::new(&access(&kube.url(), "pki/test-ca.pem")).unwrap();
    match other.get_secret("portvakt", "keys").await {
        Err(KubeError::Failed(why)) => assert!(
            why.contains("cannot reach") || why.contains("certificate") || why.contains("error"),
            "{why}"
        ),
        other => panic!(
            "a server with another CA's certificate was trusted: {:?}",
            other.err()
        ),
    }
    // One CA file with one certificate: one root, and no public ones beside it.
    assert_eq!(trust(&access(&kube.url(), "test-ca.pem")).unwrap().len(), 1);
}

#[tokio::test]
async fn a_lease_renewed_in_the_future_by_a_dead_holder_is_taken_after_its_duration() {
    let kube = MockKubernetes::start("sa-token").await.unwrap();
    let api = Kubernetes::new(&access(&kube.url(), "test-ca.pem")).unwrap();
    // A holder whose clock ran an hour ahead, then died: its renewTime is an hour from now.
    let ahead = portvakt::support::time::unix_now() as i64 + 3600;
    kube.set_lease_renewed("portvakt", "renewer", Some("dead"), 2, ahead);
    let mut seen = None;
    assert!(!api
        .take_lease("portvakt", "renewer", "me", 30, &mut seen)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!api
        .take_lease("portvakt", "renewer", "me", 30, &mut seen)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        api.take_lease("portvakt", "renewer", "me", 30, &mut seen)
            .await
            .unwrap(),
        "a Lease unchanged for its duration was not taken"
    );
    assert_eq!(
        kube.lease_holder("portvakt", "renewer").as_deref(),
        Some("me")
    );
    // A holder that renews is never taken from: each change starts the wait again.
    kube.set_lease("portvakt", "renewer", Some("alive"), 2);
    let mut seen = None;
    for _ in 0..3 {
        assert!(!api
            .take_lease("portvakt", "renewer", "me", 30, &mut seen)
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        kube.set_lease("portvakt", "renewer", Some("alive"), 2);
    }
}
