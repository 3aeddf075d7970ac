//! What the people running portvakt see: metrics, exported traces, the status page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portvakt");

/// An OpenTelemetry collector on 127.0.0.1 that keeps every span sent to `/v1/traces`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await?.to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for resource in export.resource_spans {
                                for scope in resource.scope_spans {
                                    kept.lock().unwrap().extend(scope.spans);
                                }
                            }
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Collector { url, spans }
    }

    fn span(&self, name: &str) -> Span {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn traces_continue_the_callers_traceparent_through_token_fetch_and_upstream() {
    let (mock, upstream) = mock_and_upstream().await;
    let collector = Collector::start().await;
    let port = free_port();
    let routes = ONE_ROUTE.replace("{upstream}", &upstream.url());
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes).replace(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0",
        &format!(
            "listen: 127.0.0.1:{port}\ntelemetry:\n  otlp_endpoint: {}/\n  service_name: portvakt-test",
            collector.url
        ),
    );
    let dir = config_dir("otlp");
    std::fs::write(dir.join("portvakt.yaml"), yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("portvakt.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let url = format!("http://127.0.0.1:{port}/nav/x");
    let http = http_client();
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(&url)
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .send()
            .await
        {
            answer = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if answer.is_none() {
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        panic!(
            "portvakt never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(answer, Some(reqwest::StatusCode::OK));
    // Shutting down flushes the spans still buffered.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.status.success(), "{exited:?}");

    let request = collector.span("request");
    let fetch = collector.span("token_fetch");
    let call = collector.span("upstream");
    for span in [&request, &fetch, &call] {
        assert_eq!(hex(&span.trace_id), trace_id, "{}", span.name);
    }
    assert_eq!(hex(&request.parent_span_id), caller_span);
    assert_eq!(fetch.parent_span_id, request.span_id);
    assert_eq!(call.parent_span_id, request.span_id);
    // The upstream was called as a child of the upstream span, in the caller's trace.
    let sent = upstream.records()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(sent, format!("00-{trace_id}-{}-01", hex(&call.span_id)));
    let attributes: Vec<_> = call.attributes.iter().map(|a| a.key.as_str()).collect();
    assert!(attributes.contains(&"route"), "{attributes:?}");
    // No token in any exported attribute.
    let token = upstream.records()[0].headers["authorization"]
        .to_str()
        .unwrap()[7..]
        .to_string();
    let exported = format!("{:?}", collector.spans.lock().unwrap());
    assert!(!exported.contains(&token));
}

#[tokio::test]
async fn without_telemetry_the_callers_traceparent_passes_through_untouched() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = h.get_with("/nav/x", &[("traceparent", traceparent)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.upstream.records()[0].headers["traceparent"], traceparent);
}
