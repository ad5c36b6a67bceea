//! Metadata parsing (increment metadata and `mirror.json`, ours or the original tool's): any
//! bytes are read or refused without a panic, and what was read writes back and reads again to
//! the same catalog (paths round-trip losslessly).
#![no_main]

use backup_core::{IncrementMeta, MirrorIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((meta, _problems)) = IncrementMeta::from_json("fuzz.json", data) {
        let out = meta.to_json();
        let (again, problems) =
            IncrementMeta::from_json("again.json", &out).expect("our own output must parse");
        assert!(problems.is_empty(), "our own output has problems: {problems:?}");
        assert_eq!(
            meta.file_catalog.keys().collect::<Vec<_>>(),
            again.file_catalog.keys().collect::<Vec<_>>()
        );
        for (k, e) in &meta.file_catalog {
            let a = &again.file_catalog[k];
            assert_eq!((e.size, e.mtime, e.category, e.op()), (a.size, a.mtime, a.category, a.op()));
        }
    }
    if let Ok((index, _problems)) = MirrorIndex::from_json("mirror.json", data) {
        let out = index.to_json();
        let (again, problems) =
            MirrorIndex::from_json("again.json", &out).expect("our own output must parse");
        assert!(problems.is_empty(), "our own output has problems: {problems:?}");
        assert_eq!(index.files.len(), again.files.len());
        for (k, e) in &index.files {
            let a = &again.files[k];
            assert_eq!((e.size, e.mtime, e.tracked), (a.size, a.mtime, a.tracked));
        }
    }
});
