//! Config parsing: any text is either refused with one line or gives rules that compile and
//! classify paths without panicking.
#![no_main]

use backup_core::config::RawConfig;
use backup_core::selection::Selection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match RawConfig::parse(&text) {
        Err(msg) => assert!(!msg.contains('\n'), "refusal is not one line: {msg:?}"),
        Ok(raw) => {
            // Globs were checked by parse: compiling them again must succeed.
            let sel = Selection::compile(&raw.rules(), raw.directory_priority)
                .expect("parse accepted a glob that does not compile");
            let mut hits = sel.new_hits();
            for p in ["a", "docs/a.md", "x/y/z/.git/HEAD", "é/ü"] {
                let comps: Vec<&[u8]> = p.split('/').map(str::as_bytes).collect();
                let _ = sel.classify_path(&comps, &mut hits);
            }
            let _ = sel.unmatched(&hits);
        }
    }
});
