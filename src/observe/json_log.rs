//! JSON log lines for portvakt's own events outside any span, the access line of every request
//! among them, written straight into the line: the shape tracing-subscriber's JSON formatter
//! writes, without its serde round trip per field and its timestamp formatting per line, which
//! cost more than the rest of a proxied request (docs/performance.md). Events inside a span and
//! other crates' events go through that formatter as before.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format: `{"timestamp", "level", "fields", "target"[, "spans"]}`.
pub struct JsonLines {
    /// For events in a span, whose line lists the spans.
    general: Format<Json>,
}

impl JsonLines {
    pub fn new() -> Self {
        JsonLines {
            general: Format::default()
                .json()
                .with_current_span(false)
                .with_span_list(true),
        }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let in_span =
            event.parent().is_some() || (event.is_contextual() && ctx.lookup_current().is_some());
        if in_span || !meta.target().starts_with("portvakt") {
            return self.general.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"fields\":{{", meta.level())?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `"name":value`, as serde_json would.
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes null for them.
        self.field(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }
}

/// `s` as a JSON string, exactly as a line carries a field's text value.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    let _ = string(&mut out, s);
    out
}

/// A value's `Debug` form as a JSON string, exactly as a line carries it.
pub fn quoted_debug(value: &dyn fmt::Debug) -> String {
    let mut out = String::from("\"");
    let _ = write!(Escaped(&mut out), "{value:?}");
    out.push('"');
    out
}

fn string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what JSON requires in a string: quotes, backslashes and control characters.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

thread_local! {
    /// The second last written and its `YYYY-MM-DDTHH:MM:SS`, which lines within it share.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's default timer writes it.
fn timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let unix = i64::try_from(secs).unwrap_or(i64::MAX);
            cached.1.clear();
            cached.1.push_str(&crate::support::time::iso(unix));
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    write!(out, ".{:06}Z", now.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs, through the general formatter or through `JsonLines`.
    fn lines(fast: bool, emit: fn()) -> Vec<serde_json::Value> {
        let capture = Capture::default();
        let writer = capture.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(move || writer.clone());
        use tracing_subscriber::layer::SubscriberExt as _;
        if fast {
            let subscriber =
                tracing_subscriber::registry().with(layer.event_format(JsonLines::new()));
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        }
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("timestamp").unwrap();
                v
            })
            .collect()
    }

    #[test]
    fn writes_what_the_general_formatter_writes() {
        fn emit() {
            let method = http::Method::GET;
            tracing::info!(target: "portvakt::access", route = "r\"1\n", %method, status = 200u16,
                duration_ms = 0.25, ok = true, delta = -3i64, request_id = "id-1", "request");
            let error = std::io::Error::other("boom \"x\"");
            tracing::warn!(target: "portvakt::proxy", error = &error as &dyn std::error::Error, "failed: {}", 7);
            tracing::info_span!("token_fetch", client = "c").in_scope(|| {
                tracing::info!(target: "portvakt::token", "in a span");
            });
            tracing::info!(target: "hyper::proto", "another crate");
        }
        let (fast, general) = (lines(true, emit), lines(false, emit));
        assert_eq!(fast.len(), 4);
        assert_eq!(fast, general);
        assert_eq!(fast[0]["fields"]["route"], "r\"1\n");
        assert_eq!(fast[2]["spans"][0]["name"], "token_fetch");
    }

    #[test]
    fn escapes_as_json_requires() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é/").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é/""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é/");
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut out = String::new();
        timestamp(&mut out).unwrap();
        assert_eq!(out.len(), "2026-11-29T13:30:16.154797Z".len(), "{out}");
        assert_eq!(&out[10..11], "T");
        assert!(out.ends_with('Z'));
    }
}
