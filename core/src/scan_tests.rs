//! Selection rules and the scan, on real temporary trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::Config;

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// A source tree holding `files` (relative paths; parents created).
    fn new(files: &[&str]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let t = Tree { dir };
        for f in files {
            t.file(f);
        }
        t
    }
    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    fn file(&self, rel: &str) {
        let p = self.src().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, rel.as_bytes()).unwrap();
    }
    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.src().join(rel)).unwrap();
    }
    /// Loads a profile with `rules` (JSON object members) and `dist` outside `src`.
    fn config(&self, rules: &str) -> Config {
        self.config_with_dist(rules, "dist")
    }
    fn config_with_dist(&self, rules: &str, dist: &str) -> Config {
        let p = self.dir.path().join("config.json");
        std::fs::write(
            &p,
            format!(r#"{{"src": "src", "dist": {dist:?}, {rules}}}"#),
        )
        .unwrap();
        Config::load(&p).unwrap()
    }
    /// rel -> tracked, for a scan that must have no errors.
    fn selected(&self, rules: &str) -> BTreeMap<String, bool> {
        let out = scan(&self.config(rules));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        selected_of(&out)
    }
}

fn selected_of(out: &ScanOutcome) -> BTreeMap<String, bool> {
    out.entries
        .iter()
        .map(|e| (e.rel.display().into_owned(), e.tracked))
        .collect()
}

fn map(items: &[(&str, bool)]) -> BTreeMap<String, bool> {
    items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

const T: bool = true;
const U: bool = false;

#[test]
fn dir_rules_select_recursively_and_track() {
    let t = Tree::new(&[
        "docs/a.txt",
        "docs/sub/deep/b.txt",
        "code/main.rs",
        "other/x.txt",
        "top.txt",
    ]);
    assert_eq!(
        t.selected(r#""include_dirs": ["docs"], "track_dirs": ["code"]"#),
        map(&[
            ("code/main.rs", T),
            ("docs/a.txt", U),
            ("docs/sub/deep/b.txt", U)
        ])
    );
}

#[test]
fn dir_globs_stay_within_components_and_doublestar_spans() {
    let t = Tree::new(&[
        "work/p1/docs/a",
        "work/p2/docs/b",
        "work/p2/src/docs/c",
        "home/x/notes/n",
        "notes/m",
    ]);
    assert_eq!(
        t.selected(r#""include_dirs": ["work/*/docs"]"#),
        map(&[("work/p1/docs/a", U), ("work/p2/docs/b", U)])
    );
    assert_eq!(
        t.selected(r#""track_dirs": ["**/notes"]"#),
        map(&[("home/x/notes/n", T), ("notes/m", T)])
    );
    assert_eq!(
        t.selected(r#""include_dirs": ["."], "exclude_dirs": ["work", "home"]"#),
        map(&[("notes/m", U)])
    );
    // `dir/**` is the whole folder, files directly in it too.
    t.file("work/top");
    assert_eq!(
        t.selected(r#""track_dirs": ["work/**"], "exclude_dirs": ["work/p2/**"]"#),
        map(&[("work/p1/docs/a", T), ("work/top", T)])
    );
    // With a '/', an exclusion is a path from `src`, not a name: `p1/**` is not `work/p1`.
    assert_eq!(
        t.selected(r#""include_dirs": ["work"], "exclude_dirs": ["p1/**", "src/"]"#),
        map(&[
            ("work/p1/docs/a", U),
            ("work/p2/docs/b", U),
            ("work/top", U)
        ])
    );
}

#[test]
fn file_rules_root_only_unless_rec() {
    let t = Tree::new(&["a.md", "b.txt", "d/c.md", "d/e/f.md", "d/g.txt"]);
    assert_eq!(
        t.selected(r#""include_files": ["*.md"]"#),
        map(&[("a.md", U)])
    );
    assert_eq!(
        t.selected(r#""track_files": ["*.md:rec"]"#),
        map(&[("a.md", T), ("d/c.md", T), ("d/e/f.md", T)])
    );
    // A pattern with '/' is a path relative to src; with :rec at any depth.
    assert_eq!(
        t.selected(r#""include_files": ["d/*.txt", "e/*.md:rec"]"#),
        map(&[("d/e/f.md", U), ("d/g.txt", U)])
    );
}

#[test]
fn directory_priority_decides_for_both() {
    let t = Tree::new(&["home/a", "home/docs/b", "home/docs/deep/c"]);
    let rules = r#""include_dirs": ["home"], "track_dirs": ["home/docs"]"#;
    assert_eq!(
        t.selected(rules),
        map(&[("home/a", U), ("home/docs/b", T), ("home/docs/deep/c", T)])
    );
    assert_eq!(
        t.selected(&format!(r#"{rules}, "directory_priority": "include""#)),
        map(&[("home/a", U), ("home/docs/b", U), ("home/docs/deep/c", U)])
    );
    // The reverse nesting.
    let rules = r#""track_dirs": ["home"], "include_dirs": ["home/docs"]"#;
    assert_eq!(
        t.selected(rules),
        map(&[("home/a", T), ("home/docs/b", T), ("home/docs/deep/c", T)])
    );
    assert_eq!(
        t.selected(&format!(r#"{rules}, "directory_priority": "include""#)),
        map(&[("home/a", T), ("home/docs/b", U), ("home/docs/deep/c", U)])
    );
}

#[test]
fn excludes_apply_at_any_depth_by_name_or_by_path() {
    let t = Tree::new(&[
        "p/a.rs",
        "p/a.log",
        "p/x/b.log",
        "p/cache/c.rs",
        "p/x/cache/d.rs",
        "p/y/cache/e.rs",
        "p/build/f.rs",
        "p/x/build/g.rs",
    ]);
    assert_eq!(
        t.selected(
            r#""track_dirs": ["p"], "exclude_dirs": ["cache", "p/build"], "exclude_files": ["*.log"]"#
        ),
        map(&[("p/a.rs", T), ("p/x/build/g.rs", T)])
    );
    // exclude_files with '/' is a relative path.
    assert_eq!(
        t.selected(r#""include_dirs": ["p/x"], "exclude_files": ["p/x/b.log"]"#),
        map(&[("p/x/build/g.rs", U), ("p/x/cache/d.rs", U)])
    );
}

#[test]
fn explicit_file_rules_beat_dir_rules() {
    let t = Tree::new(&[
        "p/keep.log",
        "p/drop.log",
        "p/cache/important.db",
        "p/cache/junk",
        "p/t/notes.txt",
        "elsewhere/cache/important.db",
    ]);
    assert_eq!(
        t.selected(
            r#""include_dirs": ["p"], "exclude_dirs": ["cache"], "exclude_files": ["*.log"],
               "track_files": ["p/keep.log", "important.db:rec"]"#
        ),
        map(&[
            ("elsewhere/cache/important.db", T),
            ("p/cache/important.db", T),
            ("p/keep.log", T),
            ("p/t/notes.txt", U),
        ])
    );
    // Named by include_files inside a track dir: untracked.
    assert_eq!(
        t.selected(r#""track_dirs": ["p/t"], "include_files": ["*.txt:rec"]"#),
        map(&[("p/t/notes.txt", U)])
    );
}

#[test]
fn include_beats_track_for_files() {
    let t = Tree::new(&["both.txt", "d/both.txt", "track.txt"]);
    assert_eq!(
        t.selected(r#""include_files": ["both.txt:rec"], "track_files": ["*.txt:rec"]"#),
        map(&[("both.txt", U), ("d/both.txt", U), ("track.txt", T)])
    );
}

#[test]
fn entries_carry_exact_metadata_and_are_sorted() {
    let t = Tree::new(&["d/b", "d/a", "d.txt", "d/c/z", "d-e"]);
    let p = t.src().join("d/a");
    std::fs::write(&p, b"12345").unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(when)
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4751)).unwrap();
    }
    let out = scan(&t.config(r#""include_dirs": ["d"], "include_files": ["d*"]"#));
    let rels: Vec<_> = out
        .entries
        .iter()
        .map(|e| e.rel.display().into_owned())
        .collect();
    // Walk order: a folder's contents right after it, before names that extend its name
    // ("d/..." before "d-e" and "d.txt"), as the index sorts.
    assert_eq!(rels, ["d/a", "d/b", "d/c/z", "d-e", "d.txt"]);
    let a = &out.entries[0];
    assert_eq!(a.size, 5);
    assert_eq!(a.mtime, MTime::from_ns(1_700_000_000_123_456_789));
    assert_eq!(a.kind, FileKind::File);
    assert_eq!(a.symlink_target, None);
    #[cfg(unix)]
    assert_eq!(a.mode, 0o4751);
}

#[test]
fn dist_inside_src_is_skipped_once() {
    let t = Tree::new(&["data/a", "backup/mirror/data/a", "backup/x"]);
    let cfg = t.config_with_dist(r#""include_dirs": ["."]"#, "src/backup");
    let out = scan(&cfg);
    assert_eq!(selected_of(&out), map(&[("data/a", U)]));
    let skipped: Vec<_> = out
        .notes
        .iter()
        .filter(|n| matches!(n, ScanNote::SkippedDist { .. }))
        .collect();
    assert_eq!(
        skipped,
        [&ScanNote::SkippedDist {
            rel: RelPath::parse("backup").unwrap()
        }]
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_entries_never_followed() {
    let t = Tree::new(&["d/real"]);
    let outside = t.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(&outside, t.src().join("d/link-to-dir")).unwrap();
    std::os::unix::fs::symlink("real", t.src().join("d/link-to-file")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", t.src().join("d/dangling")).unwrap();
    let out = scan(&t.config(r#""track_dirs": ["**"]"#));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let rels: Vec<_> = out
        .entries
        .iter()
        .map(|e| e.rel.display().into_owned())
        .collect();
    assert_eq!(
        rels,
        ["d/dangling", "d/link-to-dir", "d/link-to-file", "d/real"]
    );
    let link = &out.entries[1];
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(link.symlink_target.as_deref(), Some(outside.as_path()));
    assert!(link.tracked);
    assert_eq!(
        out.entries[2].symlink_target.as_deref(),
        Some(Path::new("real"))
    );
    // A dir pattern naming the symlink does not make it a directory.
    let out = scan(&t.config(r#""include_dirs": ["d/link-to-dir"]"#));
    assert!(out.entries.is_empty(), "{:?}", out.entries);
}

#[cfg(unix)]
#[test]
fn special_files_are_skipped_with_a_note() {
    let t = Tree::new(&["d/a"]);
    let fifo = t.src().join("d/pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let sock = std::os::unix::net::UnixListener::bind(t.src().join("d/sock")).unwrap();
    let out = scan(&t.config(r#""include_dirs": ["d"]"#));
    drop(sock);
    assert_eq!(selected_of(&out), map(&[("d/a", U)]));
    let mut notes: Vec<_> = out
        .notes
        .iter()
        .filter_map(|n| match n {
            ScanNote::SkippedSpecial { rel, what } => Some((rel.display().into_owned(), *what)),
            _ => None,
        })
        .collect();
    notes.sort();
    assert_eq!(
        notes,
        [
            ("d/pipe".to_owned(), "FIFO"),
            ("d/sock".to_owned(), "socket")
        ]
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_names_work() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new(&[]);
    let dir = t.src().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"\xff\xfe.txt")), b"x").unwrap();
    std::fs::write(dir.join("line\nbreak"), b"y").unwrap();
    let out = scan(&t.config(r#""track_dirs": ["caf*"]"#));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let rels: Vec<&[u8]> = out.entries.iter().map(|e| e.rel.as_bytes()).collect();
    assert_eq!(rels, [&b"caf\xe9/line\nbreak"[..], b"caf\xe9/\xff\xfe.txt"]);
    // File patterns match raw bytes too.
    let out = scan(&t.config(r#""include_files": ["*.txt:rec"]"#));
    assert_eq!(out.entries.len(), 1);
    assert_eq!(out.entries[0].rel.as_bytes(), b"caf\xe9/\xff\xfe.txt");
}

#[test]
fn unmatched_selecting_rules_are_named() {
    let t = Tree::new(&["Documents/a", "x.txt"]);
    let out = scan(&t.config(
        r#""include_dirs": ["Documents", "Documnets"], "track_dirs": ["**/nothing"],
           "include_files": ["x.txt"], "track_files": ["*.pdf:rec"],
           "exclude_dirs": ["never"], "exclude_files": ["*.never"]"#,
    ));
    let unmatched: Vec<_> = out
        .notes
        .iter()
        .filter_map(|n| match n {
            ScanNote::UnmatchedRule { key, pattern } => Some((*key, pattern.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        unmatched,
        [
            ("include_dirs", "Documnets"),
            ("track_dirs", "**/nothing"),
            ("track_files", "*.pdf:rec")
        ]
    );
}

#[test]
fn preserved_dirs_are_listed_when_selected() {
    let t = Tree::new(&["p/repo/.git/HEAD", "q/.git/HEAD"]);
    t.mkdir("p/empty/.git");
    let out = scan(&t.config(r#""include_dirs": ["p"], "preserved_dirs": [".git"]"#));
    let dirs: Vec<_> = out
        .preserved_dirs
        .iter()
        .map(|r| r.display().into_owned())
        .collect();
    assert_eq!(dirs, ["p/empty/.git", "p/repo/.git"]);
}

#[test]
fn progress_reports_end_with_totals() {
    let t = Tree::new(&["d/a", "d/b"]);
    let mut reports = Vec::new();
    let out = scan_with_progress(&t.config(r#""include_dirs": ["d"]"#), &mut |p| {
        reports.push(p)
    });
    assert_eq!(out.entries.len(), 2);
    let last = reports.last().unwrap();
    assert!(last.done);
    assert_eq!((last.entries, last.bytes), (2, 6));
}

#[cfg(unix)]
#[test]
fn pruned_directories_are_not_read() {
    // Only listed directories can produce errors; an unreadable one outside every rule is never
    // opened. Root bypasses permissions, so use a directory that vanishes instead: a symlink
    // loop inside an unselected dir would never be visited either way; check via errors.
    let t = Tree::new(&["keep/a", "skip/b"]);
    std::os::unix::fs::symlink("loop", t.src().join("skip/loop")).unwrap();
    let out = scan(&t.config(r#""include_dirs": ["keep"]"#));
    assert!(out.errors.is_empty());
    assert_eq!(selected_of(&out), map(&[("keep/a", U)]));
}

mod pruning {
    //! The pruning must never hide a file the rules select: classifying a path with pruning
    //! equals classifying it without.
    use proptest::prelude::*;

    use crate::selection::{DirectoryPriority, RuleKey, Selection};

    fn classify_without_pruning(sel: &Selection, comps: &[&[u8]]) -> Option<bool> {
        let mut hits = sel.new_hits();
        let (last, dirs) = comps.split_last()?;
        let mut state = sel.root_state(&mut hits);
        let mut path = std::path::PathBuf::new();
        for c in dirs {
            path.push(std::str::from_utf8(c).unwrap());
            state = sel.enter_dir(state, &path, &mut hits);
        }
        path.push(std::str::from_utf8(last).unwrap());
        sel.classify_file(state, &path, &mut hits)
    }

    fn component() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "ab", "x.md", "c"]).prop_map(String::from)
    }

    fn pattern() -> impl Strategy<Value = String> {
        let part = prop::sample::select(vec![
            "a", "b", "*", "?", "a*", "**", "*.md", "x.md", "[ab]", "{a,c}", ".", "**b", "a**",
        ]);
        (prop::collection::vec(part, 1..4), any::<bool>()).prop_map(|(parts, rec)| {
            let p = parts.join("/");
            if rec {
                format!("{p}:rec")
            } else {
                p
            }
        })
    }

    proptest! {
        #[test]
        fn pruning_never_hides_a_selected_file(
            rules in prop::collection::vec(prop::collection::vec(pattern(), 0..3), 6),
            path in prop::collection::vec(component(), 1..5),
            include_priority in any::<bool>(),
        ) {
            let r: Vec<&[String]> = rules.iter().map(|v| v.as_slice()).collect();
            let pairs = [
                (RuleKey::IncludeDirs, r[0]),
                (RuleKey::TrackDirs, r[1]),
                (RuleKey::ExcludeDirs, r[2]),
                (RuleKey::IncludeFiles, r[3]),
                (RuleKey::TrackFiles, r[4]),
                (RuleKey::ExcludeFiles, r[5]),
            ];
            let priority = if include_priority { DirectoryPriority::Include } else { DirectoryPriority::Track };
            let Ok(sel) = Selection::compile(&pairs, priority) else { return Ok(()); };
            let comps: Vec<&[u8]> = path.iter().map(|s| s.as_bytes()).collect();
            let pruned = sel.classify_path(&comps, &mut sel.new_hits());
            prop_assert_eq!(pruned, classify_without_pruning(&sel, &comps));
        }
    }
}

#[test]
fn items_come_in_walk_order_with_their_folders_first() {
    let mut files = Vec::new();
    for d in 0..12 {
        for f in 0..15 {
            files.push(format!("p/d{d}/sub{}/f{f}.txt", f % 3));
        }
        files.push(format!("p/d{d}/.git/HEAD"));
        files.push(format!("p/d{d}/cache/junk"));
    }
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let t = Tree::new(&refs);
    t.mkdir("p/d3/.git/refs/tags");
    let cfg = t.config(
        r#""include_dirs": ["p"], "track_dirs": ["p/d1*"], "exclude_dirs": ["cache"],
           "include_files": ["nothing-here"], "preserved_dirs": [".git", "tags"]"#,
    );
    let mut items: Vec<(RelPath, bool)> = Vec::new();
    let summary = scan_stream(&cfg, &mut |_| {}, &mut |i| {
        match i {
            ScanItem::Entry(e) => items.push((e.rel, false)),
            ScanItem::Folder(f) => items.push((f.rel, true)),
            ScanItem::Unreadable(r) => panic!("unreadable {r:?}"),
        }
        std::ops::ControlFlow::Continue(())
    });
    assert!(summary.errors.is_empty());
    for w in items.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "{} then {}",
            w[0].0.display(),
            w[1].0.display()
        );
    }
    // Every entry's folders came before it.
    let folders: std::collections::HashSet<&RelPath> =
        items.iter().filter(|(_, d)| *d).map(|(r, _)| r).collect();
    for (r, d) in &items {
        if !d {
            let mut p = r.parent();
            while let Some(q) = p {
                assert!(
                    folders.contains(&q),
                    "{} without {}",
                    r.display(),
                    q.display()
                );
                p = q.parent();
            }
        }
    }
    assert_eq!(items.iter().filter(|(_, d)| !d).count(), 12 * 16);
    // Preserved folders are kept even when empty (".git/refs/tags" of d3).
    assert!(folders.contains(&RelPath::parse("p/d3/.git/refs/tags").unwrap()));
    assert!(!folders.iter().any(|f| f.display().contains("cache")));
    assert_eq!(
        summary.notes,
        [ScanNote::UnmatchedRule {
            key: "include_files",
            pattern: "nothing-here".into()
        }]
    );
}

#[cfg(unix)]
#[test]
fn paths_longer_than_path_max_are_walked() {
    // The walk is relative to open directories, so total path length does not matter.
    use rustix::fs::{mkdirat, openat, Mode, OFlags, CWD};
    let t = Tree::new(&[]);
    let name = "n".repeat(200);
    let mut fd = openat(
        CWD,
        t.src(),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..25 {
        mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = openat(
            &fd,
            name.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    let file = openat(
        &fd,
        "leaf",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    rustix::io::write(&file, b"deep").unwrap();
    let out = scan(&t.config(r#""track_files": ["**/leaf"]"#));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.entries.len(), 1);
    assert!(out.entries[0].rel.as_bytes().len() > 5000);
    assert_eq!(out.entries[0].size, 4);
}

#[test]
fn dist_inside_src_is_silent_when_no_rule_reaches_it() {
    let t = Tree::new(&["data/a", "backup/mirror/data/a"]);
    let cfg = t.config_with_dist(r#""include_dirs": ["data"]"#, "src/backup");
    let out = scan(&cfg);
    assert_eq!(selected_of(&out), map(&[("data/a", U)]));
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    // Named by a rule that would enter it: skipped, and said.
    let cfg = t.config_with_dist(r#""include_dirs": ["data", "backup"]"#, "src/backup");
    let out = scan(&cfg);
    assert_eq!(selected_of(&out), map(&[("data/a", U)]));
    assert_eq!(
        out.notes,
        [ScanNote::SkippedDist {
            rel: RelPath::parse("backup").unwrap()
        }]
    );
}

#[cfg(unix)]
#[test]
fn dist_reached_through_a_bind_mount_is_recognized() {
    // Same directory under another name: `dist` is recognized by device and inode. A bind
    // mount needs privileges (a missing one fails under CI, see `backup_tests::capability`).
    let t = Tree::new(&["data/a"]);
    let dist = t.dir.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("inside"), b"x").unwrap();
    let target = t.src().join("bound");
    std::fs::create_dir(&target).unwrap();
    let probe = backup_tests::capability::run_probe(
        std::process::Command::new("mount")
            .arg("--bind")
            .arg(&dist)
            .arg(&target),
    );
    if backup_tests::capability::require("bind mount (mount --bind)", probe).is_none() {
        return;
    }
    let out = scan(&t.config(r#""include_dirs": ["."]"#));
    let _ = std::process::Command::new("umount").arg(&target).status();
    assert_eq!(selected_of(&out), map(&[("data/a", U)]));
    assert_eq!(
        out.notes,
        [ScanNote::SkippedDist {
            rel: RelPath::parse("bound").unwrap()
        }]
    );
}
