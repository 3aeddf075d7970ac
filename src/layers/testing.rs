//! For the layers' `oneshot` tests: routes from a small configuration, a decided request's plan,
//! and answers of both kinds.

use crate::build::assemble;
use crate::observe::metrics::Metrics;
use crate::pipeline::{Plan, Snapshot};
use crate::request::body::Body;
use crate::token::slot::Token;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Either;
use std::path::Path;
use std::sync::Arc;

/// The routes of a configuration with one client and the route `nav` (prefix `/nav/`, upstream
/// `http://127.0.0.1:9/base/`), `route` added to the route's keys.
pub fn snapshot(route: &str) -> Snapshot {
    let yaml = format!(
        "listen: 127.0.0.1:0
maskinporten:
  environment: test
clients:
  vendor:
    client_id: 5f0c3a6e-0000-4000-8000-000000000001
    key:
      pem: client-a.pem
      kid: vendor-TEST.2026-11
routes:
  - name: nav
    prefix: /nav/
    upstream: http://127.0.0.1:9/base/
    client: vendor
    scopes: [nav:test]
{route}"
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let config = crate::config::from_str(&yaml, Path::new("test.yaml"), &fixtures, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    assemble(&config, &Arc::new(Metrics::new()), None)
        .unwrap()
        .snapshot
}

/// The plan of a request for `path` on `snapshot`'s routes, with a token that was never fetched.
pub fn plan(snapshot: &Snapshot, path: &str) -> Plan {
    let (route, rest) = snapshot.routes.find(path).unwrap();
    Plan {
        route: Arc::clone(route),
        uri: crate::pipeline::confine(&route.upstream, rest, None).unwrap(),
        slot: Arc::clone(route.parties.select(&HeaderMap::new()).unwrap()),
        token: Token::for_test("Bearer test-token"),
    }
}

/// One of portvakt's own small answers.
pub fn own(status: StatusCode, text: &'static str) -> Response<Body> {
    crate::request::body::full(status, "text/plain", text).map(Either::Right)
}

/// A request for `path` as hyper framed it from the bytes of an HTTP/1.1 request whose head
/// declares `declared` bytes of body and which sends `body`, streaming from an in-memory
/// connection that stays open.
pub async fn framed(
    path: &str,
    declared: usize,
    body: &[u8],
) -> http::Request<crate::server::CallerBody> {
    use tokio::io::AsyncWriteExt as _;
    let (mut caller, server) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let tx = tx.clone();
            async move {
                let request = request.map(|b| crate::server::CallerBody::new(b, None));
                let _ = tx.send(request).await;
                // The answer never comes: the test holds the request.
                std::future::pending::<
                    Result<Response<http_body_util::Empty<bytes::Bytes>>, std::convert::Infallible>,
                >()
                .await
            }
        });
        let io = hyper_util::rt::TokioIo::new(server);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
    let head = format!("POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {declared}\r\n\r\n");
    caller.write_all(head.as_bytes()).await.unwrap();
    caller.write_all(body).await.unwrap();
    // The caller's end stays open with the connection's task.
    tokio::spawn(async move {
        let _keep = caller;
        std::future::pending::<()>().await
    });
    let mut rx = rx;
    rx.recv().await.unwrap()
}
