//! Any bytes as increment metadata: no panic; what parses survives a write/read round trip.
//! (An entry without `op`, as the original tool writes them, is written back with the op it
//! implies, so entries are compared by their effective op.)
#![no_main]

use std::collections::BTreeMap;

use backup_core::{CatalogEntry, IncrementMeta, RelPath};
use libfuzzer_sys::fuzz_target;

fn effective(catalog: &BTreeMap<RelPath, CatalogEntry>) -> BTreeMap<RelPath, CatalogEntry> {
    catalog
        .iter()
        .map(|(k, e)| {
            let mut e = e.clone();
            e.op = Some(e.op());
            (k.clone(), e)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok((meta, _problems)) = IncrementMeta::from_json("fuzz.json", data) {
        let written = meta.to_json();
        let (again, problems) =
            IncrementMeta::from_json("again.json", &written).expect("our own output parses");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            effective(&again.file_catalog),
            effective(&meta.file_catalog)
        );
        assert_eq!(again.backup_name, meta.backup_name);
        // Not compared byte for byte: `summary` and unknown keys are kept as JSON values, and
        // serde_json without its `float_roundtrip` feature may read a 17-digit float back one
        // ulp off (a fuzz finding; harmless there, and mtimes are compared by `mtime_ns`).
        assert_eq!(
            again.extra.keys().collect::<Vec<_>>(),
            meta.extra.keys().collect::<Vec<_>>()
        );
    }
});
