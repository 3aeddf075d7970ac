//! The `consent` checks in `fuzz/checks.rs` (what each one asserts is said there).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::consent(data));
