//! The selection rules of `docs/config.md` end to end: what `backup` puts in the mirror and which files
//! it tracks in the increment, and the notes it prints for unmatched rules and `dist` inside
//! `src`.

use std::collections::BTreeSet;
use std::path::Path;

use backup_tests::{serde_json::json, TestEnv};

fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rules_select_and_track_as_specified() {
    let env = TestEnv::new();
    for f in [
        "projects/app/main.rs",
        "projects/app/target/big.bin",
        "projects/app/debug.log",
        "projects/app/keep.log",
        "projects/lib/lib.rs",
        "projects/lib/cache/c.rs",
        "notes/n.md",
        "notes/todo.txt",
        "docs/readme.md",
        "top.txt",
        "deep/x.txt",
        "random/other.bin",
    ] {
        env.write(f, f.as_bytes());
    }
    env.config(json!({
        "include_dirs": ["notes", "projects", "Documnets"],
        "track_dirs": ["projects/app"],
        "exclude_dirs": ["target", "cache"],
        "exclude_files": ["*.log"],
        "include_files": ["*.txt"],
        "track_files": ["*.md:rec", "projects/app/keep.log"],
    }));
    let out = env.backup(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("include_dirs") && stderr.contains("\"Documnets\""),
        "no warning for the misspelled rule: {stderr}"
    );
    assert!(
        !stderr.contains("\"notes\"") && !stderr.contains("\"target\""),
        "warned about a rule that matched: {stderr}"
    );

    assert_eq!(
        files_under(&env.mirror()),
        set(&[
            "docs/readme.md",
            "notes/n.md",
            "notes/todo.txt",
            "projects/app/keep.log",
            "projects/app/main.rs",
            "projects/lib/lib.rs",
            "top.txt",
        ])
    );
    let incs = env.increments();
    assert_eq!(incs.len(), 1, "{incs:?}");
    assert_eq!(
        files_under(&env.dist.join(&incs[0]).join("track")),
        set(&[
            "docs/readme.md",
            "notes/n.md",
            "projects/app/keep.log",
            "projects/app/main.rs",
        ])
    );
}

#[test]
fn directory_priority_include_makes_nested_track_untracked() {
    let env = TestEnv::new();
    env.write("home/a.txt", b"a");
    env.write("home/docs/b.txt", b"b");
    env.config(json!({
        "include_dirs": ["home/docs"],
        "track_dirs": ["home"],
        "directory_priority": "include",
    }));
    env.backup_ok(&[]);
    assert_eq!(
        files_under(&env.mirror()),
        set(&["home/a.txt", "home/docs/b.txt"])
    );
    let incs = env.increments();
    assert_eq!(incs.len(), 1);
    assert_eq!(
        files_under(&env.dist.join(&incs[0]).join("track")),
        set(&["home/a.txt"])
    );
}

#[test]
fn dist_inside_src_is_skipped_and_said_once() {
    let mut env = TestEnv::new();
    env.dist = env.src.join("backup");
    env.write("data/a.txt", b"a");
    env.config(json!({"track_dirs": ["."]}));
    for run in 0..2 {
        let out = env.backup(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        assert_eq!(
            stderr.matches("it is the backup itself").count(),
            1,
            "run {run}: {stderr}"
        );
        assert_eq!(
            files_under(&env.mirror()),
            set(&["data/a.txt"]),
            "run {run}"
        );
    }
}
