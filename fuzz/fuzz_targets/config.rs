//! The configuration reader must answer any text with a config or a list of problems: never a
//! panic, never a hang, whatever the YAML (anchors, deep nesting, odd scalars).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = |name: &str| (name == "SET").then(|| "value".to_string());
        // Key files resolve under a folder that does not exist, so nothing is read from disk.
        let _ = portvakt::config::from_str(
            text,
            Path::new("fuzz.yaml"),
            Path::new("/nonexistent-portvakt-fuzz"),
            &env,
        );
    }
});
