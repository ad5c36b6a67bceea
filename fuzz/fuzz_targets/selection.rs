//! Selection rules: arbitrary glob patterns for each rule key, and arbitrary (non-UTF-8) paths
//! walked directory by directory as the scan does. Never a panic; a file is classified the
//! same whether the scan reaches it step by step or by its whole path.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use backup_core::config::DirectoryPriority;
use backup_core::selection::{RuleKey, Selection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lines: "<digit><pattern>" adds a pattern to rule key digit % 6; other lines are paths.
    let mut patterns: [Vec<String>; 6] = Default::default();
    let mut paths: Vec<&[u8]> = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        match line.first() {
            Some(d @ b'0'..=b'9') => {
                patterns[(*d - b'0') as usize % 6].push(String::from_utf8_lossy(&line[1..]).into())
            }
            Some(_) => paths.push(line),
            None => {}
        }
    }
    let priority = if data.len() % 2 == 0 {
        DirectoryPriority::Track
    } else {
        DirectoryPriority::Include
    };
    let rules: [(RuleKey, &[String]); 6] =
        std::array::from_fn(|i| (RuleKey::ALL[i], patterns[i].as_slice()));
    let Ok(sel) = Selection::compile(&rules, priority) else {
        return;
    };
    let mut hits = sel.new_hits();
    for p in paths {
        let comps: Vec<&[u8]> = p
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b"." && *c != b"..")
            .collect();
        if comps.is_empty() {
            continue;
        }
        let whole = sel.classify_path(&comps, &mut hits);
        // The scan's way: enter each parent directory, then classify the file in the last one.
        let mut state = sel.root_state(&mut hits);
        let mut reachable = true;
        let mut rel = Vec::new();
        for (i, c) in comps[..comps.len() - 1].iter().enumerate() {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            if !sel.descend(state, &comps[..=i]) {
                reachable = false;
                break;
            }
            state = sel.enter_dir(state, Path::new(OsStr::from_bytes(&rel)), &mut hits);
        }
        if reachable {
            let step = sel.classify_file(state, Path::new(OsStr::from_bytes(p)), &mut hits);
            let _ = (whole, step);
        }
    }
    let _ = sel.unmatched(&hits);
});
