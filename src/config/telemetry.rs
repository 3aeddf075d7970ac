//! The `telemetry` section: where traces go. Logs are set on the command line (`--log-format`,
//! `RUST_LOG`), since they start before the file is read.

use super::reader::{join, Reader};
use crate::observe::telemetry::Telemetry;
use serde_json::Value;

pub fn telemetry(r: &mut Reader, value: Option<&Value>) -> Option<Telemetry> {
    let path = "telemetry";
    let m = r.mapping(value?, path, &super::schema::TELEMETRY.keys())?;
    let endpoint_path = join(path, "otlp_endpoint");
    let endpoint = r.required_string(m.get("otlp_endpoint"), &endpoint_path)?;
    let endpoint = endpoint.trim_end_matches('/').to_string();
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => {
            r.issue(
                &endpoint_path,
                format!("`{endpoint}` is not an http(s) URL: give the collector's OTLP/HTTP address, such as http://otel-collector:4318"),
            );
            return None;
        }
    }
    let service_name = r
        .string(m.get("service_name"), &join(path, "service_name"))
        .unwrap_or_else(|| "portvakt".into());
    let ratio_path = join(path, "sample_ratio");
    let sample_ratio = match m.get("sample_ratio") {
        None => 1.0,
        Some(v) => match v.as_f64().filter(|f| (0.0..=1.0).contains(f)) {
            Some(f) => f,
            None => {
                r.issue(
                    &ratio_path,
                    "must be a number from 0 to 1 (1 records every trace)",
                );
                return None;
            }
        },
    };
    Some(Telemetry {
        otlp_endpoint: endpoint,
        service_name,
        sample_ratio,
    })
}
