//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/*.rs`) and
//! the replay of every committed input in `cargo test` (`cli/tests/fuzz_replay.rs`), so
//! both run exactly the same code. Each function panics when its property does not hold.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use backup_core::config::RawConfig;
use backup_core::selection::{DirectoryPriority, RuleKey, Selection};
use backup_core::{CatalogEntry, IncrementMeta, MirrorIndex, RelPath};

/// The targets, by the name of their `fuzz_targets/<name>.rs` and `seeds/<name>/` folder.
#[allow(dead_code)]
pub const TARGETS: [&str; 4] = [
    "config_parse",
    "selection_rules",
    "increment_meta",
    "mirror_index",
];

/// Feeds raw fuzzer bytes to target `name` the way libfuzzer-sys does: typed inputs are built
/// with `Arbitrary::arbitrary_take_rest`.
#[allow(dead_code)]
pub fn replay(name: &str, data: &[u8]) {
    let u = arbitrary::Unstructured::new(data);
    match name {
        "config_parse" => {
            if let Ok(text) = <&str>::arbitrary_take_rest(u) {
                config_parse(text);
            }
        }
        "selection_rules" => {
            if let Ok(input) = RulesInput::arbitrary_take_rest(u) {
                selection_rules(input);
            }
        }
        "increment_meta" => increment_meta(data),
        "mirror_index" => mirror_index(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Any text given as a config file: no panic, and a refusal is one non-empty line.
pub fn config_parse(text: &str) {
    match RawConfig::parse(text) {
        Ok(raw) => {
            // Parsing refuses a profile without an include or track rule.
            assert!(!raw.selection().is_empty());
            assert!(!raw.src.is_empty() && !raw.dist.is_empty());
            assert!(raw.max_workers.is_none_or(|n| n >= 1));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
        }
    }
}

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

/// Any bytes as increment metadata: no panic; what parses survives a write/read round trip.
/// (An entry without `op`, as the original tool writes them, is written back with the op it
/// implies, so entries are compared by their effective op.)
pub fn increment_meta(data: &[u8]) {
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
}

/// Any bytes as `mirror.json`: no panic; what parses survives a write/read round trip.
pub fn mirror_index(data: &[u8]) {
    if let Ok((index, _problems)) = MirrorIndex::from_json("fuzz.json", data) {
        let written = index.to_json();
        let (again, problems) =
            MirrorIndex::from_json("again.json", &written).expect("our own output parses");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, index);
    }
}

/// Random rules and a random path (the input of `selection_rules`).
#[derive(Arbitrary, Debug)]
pub struct RulesInput {
    pub rules: [Vec<String>; 6],
    pub path: Vec<Vec<u8>>,
    pub include_priority: bool,
}

fn without_pruning(sel: &Selection, comps: &[&[u8]]) -> Option<bool> {
    let mut hits = sel.new_hits();
    let (last, dirs) = comps.split_last()?;
    let mut state = sel.root_state(&mut hits);
    let mut path = Vec::new();
    for c in dirs {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(c);
        state = sel.enter_dir(state, as_path(&path), &mut hits);
    }
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(last);
    sel.classify_file(state, as_path(&path), &mut hits)
}

fn as_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Random rules and a random path: compiling never panics, and the pruned walk decision
/// (`classify_path`) always equals classifying the path without any pruning — the scan can
/// never skip a directory that holds a selected file.
pub fn selection_rules(input: RulesInput) {
    let (sel, comps) = match compile(&input) {
        Ok(v) => v,
        Err(msg) => {
            assert!(!msg.contains('\n'), "{msg:?}");
            return;
        }
    };
    if comps.is_empty() {
        return;
    }
    let pruned = sel.classify_path(&comps, &mut sel.new_hits());
    assert_eq!(pruned, without_pruning(&sel, &comps), "{comps:?}");
}

/// The selection the input's rules compile to (or the refusal), and its real path components:
/// non-empty, no '/', no NUL, not "." or "..".
pub fn compile(input: &RulesInput) -> Result<(Selection, Vec<&[u8]>), String> {
    let pairs: [(RuleKey, &[String]); 6] = [
        (RuleKey::IncludeDirs, &input.rules[0]),
        (RuleKey::TrackDirs, &input.rules[1]),
        (RuleKey::ExcludeDirs, &input.rules[2]),
        (RuleKey::IncludeFiles, &input.rules[3]),
        (RuleKey::TrackFiles, &input.rules[4]),
        (RuleKey::ExcludeFiles, &input.rules[5]),
    ];
    let priority = if input.include_priority {
        DirectoryPriority::Include
    } else {
        DirectoryPriority::Track
    };
    let sel = Selection::compile(&pairs, priority).map_err(|e| e.to_string())?;
    let comps = input
        .path
        .iter()
        .map(|c| c.as_slice())
        .filter(|c| {
            !c.is_empty() && *c != b"." && *c != b".." && !c.contains(&b'/') && !c.contains(&0)
        })
        .collect();
    Ok((sel, comps))
}
