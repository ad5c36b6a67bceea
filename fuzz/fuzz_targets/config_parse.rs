//! Any text given as a config file: no panic, and a refusal is one non-empty line.
#![no_main]

use backup_core::config::RawConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match RawConfig::parse(text) {
        Ok(raw) => {
            // What parsing accepted must compile into a selection (it was checked there).
            assert!(raw.rules.selection().is_ok());
            assert!(!raw.src.is_empty() && !raw.dist.is_empty());
            assert!(raw.max_workers.is_none_or(|n| n >= 1));
        }
        Err(msg) => {
            assert!(!msg.is_empty());
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
        }
    }
});
