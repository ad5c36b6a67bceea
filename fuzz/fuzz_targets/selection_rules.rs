//! Random rules and a random path: compiling never panics, and the pruned walk decision
//! (`classify_path`) always equals classifying the path without any pruning — the scan can
//! never skip a directory that holds a selected file.
#![no_main]

use arbitrary::Arbitrary;
use backup_core::config::DirectoryPriority;
use backup_core::selection::{RuleKey, Selection};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    rules: [Vec<String>; 6],
    path: Vec<Vec<u8>>,
    include_priority: bool,
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

fuzz_target!(|input: Input| {
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
    let sel = match Selection::compile(&pairs, priority) {
        Ok(s) => s,
        Err(msg) => {
            assert!(!msg.contains('\n'), "{msg:?}");
            return;
        }
    };
    // Real path components: non-empty, no '/', no NUL, not "." or "..".
    let comps: Vec<&[u8]> = input
        .path
        .iter()
        .map(|c| c.as_slice())
        .filter(|c| {
            !c.is_empty() && *c != b"." && *c != b".." && !c.contains(&b'/') && !c.contains(&0)
        })
        .collect();
    if comps.is_empty() {
        return;
    }
    let pruned = sel.classify_path(&comps, &mut sel.new_hits());
    assert_eq!(pruned, without_pruning(&sel, &comps), "{comps:?}");
});
