//! Every log line portvakt (and the mocks) write during a test binary's run, captured in memory at
//! trace level for portvakt, so each harness can check on drop that no secret reached any line.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test binary.
pub fn capture() {
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,portvakt=trace"))
            .with_writer(|| Sink)
            .with_ansi(false)
            .try_init();
        for file in [
            "fiks-integrasjonpassord.txt",
            "altinn-subscription-key.txt",
            "pki/password.txt",
        ] {
            if let Ok(text) = std::fs::read_to_string(super::fixtures().join(file)) {
                secret(text.trim());
            }
        }
        // The private key's base64 lines (the PEM armour lines are not secret).
        if let Ok(pem) = std::fs::read_to_string(super::fixtures().join("client-a.pem")) {
            for line in pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 40)
            {
                secret(line);
            }
        }
    });
}

/// Remembers a value that must never appear in a log line.
pub fn secret(value: &str) {
    if value.len() >= 8 {
        SECRETS.lock().unwrap().insert(value.to_string());
    }
}

/// Lines captured so far, as text.
pub fn text() -> String {
    String::from_utf8_lossy(&LINES.lock().unwrap()).into_owned()
}

/// Panics naming the first secret found in any captured line (the line is not printed: it would
/// print the secret).
pub fn assert_clean() {
    let text = text();
    // Copied out so a failure below does not poison the set for the other tests.
    let secrets = SECRETS.lock().unwrap().clone();
    for secret in secrets.iter() {
        if let Some(at) = text.find(secret.as_str()) {
            let line = text[..at].lines().count();
            panic!(
                "a secret ({} characters, starting {:?}) is in captured log line {line}",
                secret.len(),
                &secret[..4]
            );
        }
    }
    assert!(!secrets.is_empty());
}
