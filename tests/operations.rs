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
    let token = token_seen(&upstream, 0);
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

#[tokio::test]
async fn metrics_show_token_expiry_cache_use_in_flight_and_rejections_by_mp_code() {
    let stall = common::faults::FaultServer::start(common::faults::Fault::StallBeforeHeaders).await;
    let routes = format!(
        "{ONE_ROUTE}  - name: fiks-arkiv
    prefix: /fiks/
    upstream: {{upstream}}
    client: vendor
    scopes: [ks:not-granted]
  - name: slow
    prefix: /slow/
    upstream: {}
    client: vendor
    scopes: [{SCOPE}]
",
        stall.url()
    );
    let h = Harness::start(&routes, 120).await;
    for _ in 0..3 {
        assert_eq!(h.get("/nav/x").await.status(), 200);
    }
    assert_eq!(h.get("/fiks/x").await.status(), 502);
    let m = metrics_text(&h.proxy).await;
    let fetches = |result: &str, code: &str| {
        metric_value(
            &m,
            &format!(
                r#"portvakt_token_fetches_total{{client="vendor",result="{result}",code="{code}"}}"#
            ),
        )
    };
    assert_eq!(fetches("ok", ""), Some(1.0), "{m}");
    assert_eq!(fetches("rejected", "MP-200"), Some(1.0), "{m}");
    // The first call and the refused one waited for a fetch; the two after it used the cache.
    assert_eq!(
        metric_value(&m, r#"portvakt_token_cache_misses_total{client="vendor"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, r#"portvakt_token_cache_hits_total{client="vendor"}"#),
        Some(2.0),
        "{m}"
    );
    let expires = metric_value(
        &m,
        &format!(r#"portvakt_token_expires_in_seconds{{client="vendor",kind="maskinporten",scopes="{SCOPE}",party=""}}"#),
    )
    .unwrap_or_else(|| panic!("{m}"));
    assert!((100.0..=120.0).contains(&expires), "{expires}");
    assert_eq!(
        m.matches("portvakt_token_expires_in_seconds{").count(),
        1,
        "only slots holding a token have a series"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"portvakt_requests_total{route="fiks-arkiv",method="GET",status="502"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&m, "portvakt_in_flight_requests"), Some(0.0));

    // A request stuck upstream is in flight until it ends.
    let stuck = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/slow/x"));
        async move { http.get(url).send().await }
    });
    for _ in 0..100 {
        if stall.accepted.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric_value(&metrics_text(&h.proxy).await, "portvakt_in_flight_requests"),
        Some(1.0)
    );
    stuck.abort();
    let mut left = None;
    for _ in 0..100 {
        left = metric_value(&metrics_text(&h.proxy).await, "portvakt_in_flight_requests");
        if left == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, Some(0.0), "the caller left, the request ended");
    assert!(!m.contains("Bearer"));
}

/// Every `portvakt_*` name in the expressions of `text`.
fn metric_names(exprs: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("portvakt_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn alerts_and_dashboard_use_only_metrics_portvakt_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations");
    let alerts: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join("alerts.yaml")).unwrap())
            .unwrap();
    assert_eq!(alerts["kind"], "PrometheusRule");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    // What /metrics declares, including families with no series yet (those print nothing).
    let h = Harness::start(ONE_ROUTE, 120).await;
    assert_eq!(h.get("/nav/x").await.status(), 200);
    let exposed = metrics_text(&h.proxy).await;
    let declared = portvakt::observe::metrics::Metrics::new()
        .declared()
        .to_vec();
    for line in exposed.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split(' ').next().unwrap();
        assert!(
            declared.iter().any(|d| d == name),
            "{name} not in {declared:?}"
        );
    }
    for (what, doc, least) in [
        ("alerts.yaml", &alerts, 10),
        ("grafana-dashboard.json", &dashboard, 18),
    ] {
        let mut found = Vec::new();
        exprs(doc, &mut found);
        assert!(found.len() >= least, "{what}: {} expressions", found.len());
        for name in metric_names(&found) {
            // Counters and histograms are declared under their base name.
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                declared.iter().any(|d| d == base),
                "{what} uses {name}, which portvakt does not export: {declared:?}"
            );
        }
    }
    // The alerts the issue asks for.
    let text = alerts.to_string();
    for alert in [
        "PortvaktCertificateExpiresSoon",
        "PortvaktTokenFetchesFailing",
        "PortvaktHigh5xxRatio",
        "PortvaktClockSkew",
        "PortvaktRenewedKeyExpiresSoon",
        "PortvaktKeyRenewalStalled",
    ] {
        assert!(text.contains(alert), "{alert}");
    }
}
