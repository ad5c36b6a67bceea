//! Any text given as a config file: no panic, and a refusal is one non-empty line.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|text: &str| checks::config_parse(text));
