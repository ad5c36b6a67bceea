//! Any bytes as increment metadata: no panic; what parses survives a write/read round trip.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::increment_meta(data));
