//! What portvakt tells about itself: metrics, log lines (the JSON format and the writer), traces
//! (OpenTelemetry), the last errors, and the request id that ties them together. Leaves that every
//! other room writes to, and that import none of them.

pub mod json_log;
pub mod log_writer;
pub mod metrics;
pub mod recent;
pub mod request_id;
pub mod telemetry;
