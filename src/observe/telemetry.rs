//! Logs and traces. Logs go to stderr: JSON for a log collector, human-readable at a terminal,
//! filtered `RUST_LOG`-style. Traces are exported over OTLP/HTTP only when `telemetry` is
//! configured; otherwise no OpenTelemetry layer is installed and a request pays one relaxed load.

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// OpenTelemetry trace export; absent means no export and no cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans go to `/v1/traces`.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// The share of new traces recorded; a caller's sampled `traceparent` is always followed.
    pub sample_ratio: f64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    Auto,
    /// One JSON object per line, for Loki, Elasticsearch or Cloud Logging.
    Json,
    /// Human-readable lines.
    Text,
}

/// Whether spans are exported; read on every request, so a plain flag.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the trace exporter alive; [`Guard::shutdown`] sends what is still buffered.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Flushes buffered spans to the collector (within its export timeout).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            // The SDK's shutdown blocks until its export thread is done; that export runs on
            // this runtime, so the wait must not hold a worker.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global log (and, with `telemetry`, trace) subscriber. Call once, inside the
/// runtime that will carry the exports.
pub fn init(format: LogFormat, telemetry: Option<&Telemetry>) -> Guard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(LevelFilter::INFO.to_string()));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let logs = if json {
        // The span list carries the request id (and route) onto every line of a request.
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .event_format(crate::observe::json_log::JsonLines::new())
            .with_writer(crate::observe::log_writer::Stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(crate::observe::log_writer::Stderr)
            .with_filter(filter)
            .boxed()
    };
    let (traces, provider) = match telemetry.map(exporter) {
        Some(Ok(provider)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("portvakt"))
                // portvakt's own spans only: hyper's and reqwest's would drown them.
                .with_filter(Targets::new().with_target("portvakt", LevelFilter::INFO));
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
        Some(Err(e)) => {
            eprintln!("portvakt: trace export is off: {e}");
            (None, None)
        }
        None => (None, None),
    };
    // A second init (tests start several proxies in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if let Some(t) = telemetry.filter(|_| provider.is_some()) {
        tracing::info!(endpoint = %t.otlp_endpoint, sample_ratio = t.sample_ratio, "exporting traces over OTLP/HTTP");
    }
    Guard { provider }
}

fn exporter(t: &Telemetry) -> anyhow::Result<SdkTracerProvider> {
    let client = Exporter {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        runtime: tokio::runtime::Handle::try_current()?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", t.otlp_endpoint))
        .with_timeout(Duration::from_secs(10))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(t.service_name.clone())
                .build(),
        )
        .build())
}

/// Whether spans are exported over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` a child of the caller's W3C `traceparent`, when there is one and spans are
/// exported.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if exporting() && headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(parent);
    }
}

/// Writes `span` as the `traceparent` (and `tracestate`) of the call going upstream. Without
/// export, the caller's own headers pass through untouched.
pub fn propagate(span: &tracing::Span, headers: &mut HeaderMap) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

/// Sends OTLP batches with the same HTTP stack as everything else (reqwest on rustls). The SDK
/// exports from its own thread, so each send is handed to the runtime.
#[derive(Debug)]
struct Exporter {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Exporter {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let answer = self
            .runtime
            .spawn(async move {
                let response = http.execute(request).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok::<_, HttpError>(answer.body(body)?)
            })
            .await??;
        Ok(answer)
    }
}
