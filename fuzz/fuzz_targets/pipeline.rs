//! The `pipeline` checks in `fuzz/checks.rs` (what they assert is said there).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::pipeline(data);
});
