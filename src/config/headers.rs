//! A route's own headers (`headers:`), whose values may be secrets, and secrets read from files
//! (`value_file:`), also used by API keys and proxy passwords. Problems name the header or the file,
//! never the value.

use super::reader::{join, Reader};
use crate::support::secret::Secret;
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use std::path::Path;

/// Headers portvakt owns on the way upstream; a route may not set them.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub(super) fn headers(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    base: &Path,
) -> Vec<(HeaderName, Secret<HeaderValue>)> {
    let Some(v) = v else { return Vec::new() };
    let Value::Object(map) = v else {
        r.issue(path, "expected a mapping of header names to values");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let p = join(path, name);
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            r.issue(&p, "is not a valid HTTP header name");
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            r.issue(&p, "is set by portvakt itself and cannot be configured");
            continue;
        }
        // The value may be a password (IntegrasjonPassord): problems name the header, never the value.
        let text = match value {
            Value::Object(_) => value_file(r, value, &p, base),
            _ => r.required_string(Some(value), &p),
        };
        let Some(text) = text else {
            continue;
        };
        match HeaderValue::from_str(&text) {
            Ok(mut hv) => {
                hv.set_sensitive(true);
                out.push((header, Secret::new(hv)));
            }
            Err(_) => r.issue(
                &p,
                "the value has characters not allowed in an HTTP header (such as a line break)",
            ),
        }
    }
    out
}

/// `{value_file: path}`: the value is the file's content, without its trailing newline (as
/// Kubernetes secrets and `echo` write it).
pub(super) fn value_file(r: &mut Reader, value: &Value, path: &str, base: &Path) -> Option<String> {
    let m = r.mapping(value, path, &super::schema::VALUE_FILE.keys())?;
    let file_path = join(path, "value_file");
    let file = base.join(r.required_string(m.get("value_file"), &file_path)?);
    secret_file(r, &file, &file_path)
}

/// A secret kept in a file: its content without the trailing newline (as Kubernetes secrets and
/// `echo` write it). Problems name the file, never the content.
pub(super) fn secret_file(r: &mut Reader, file: &Path, path: &str) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                r.issue(path, format!("{} is empty", file.display()));
                return None;
            }
            Some(text)
        }
        Err(e) => {
            r.issue(path, format!("cannot read {}: {e}", file.display()));
            None
        }
    }
}
