//! The tree without a kernel: every view against the fixture's model.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex as StdMutex;

use backup_tests::mount_fixture::{write_python_backup, Change, FixtureBackup, ModelFile};

use super::*;

const A: &str = "backup_20240101_100000";
const B: &str = "backup_20240102_100000";
const C: &str = "backup_20240103_100000";
const D: &str = "backup_20240104_100000";

fn fixture(dir: &Path) -> FixtureBackup {
    let mut f = FixtureBackup::new(dir);
    f.backup(
        A,
        &[
            Change::Write("docs/report.txt", b"report v1"),
            Change::WriteMode("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
            Change::Write("deep/a/b/c/d.txt", b"deep"),
            Change::Write("gone.txt", b"short-lived"),
        ],
    );
    f.backup(
        B,
        &[
            Change::Write("docs/report.txt", b"report v2, longer"),
            Change::Delete("gone.txt"),
        ],
    );
    f.backup(
        C,
        &[
            Change::Write("docs/new.txt", b"new in C"),
            Change::Write("docs/report.txt", b"report v3"),
        ],
    );
    f.untracked("untracked.txt", b"only in the mirror");
    f
}

fn names(fs: &BackupFs, path: &str) -> Vec<String> {
    let ino = fs.lookup_path(path).expect(path).ino;
    fs.readdir(&fs.state(), ino)
        .expect("readdir")
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect()
}

fn read_all(fs: &BackupFs, ino: Ino) -> Vec<u8> {
    let mut f = fs.open(&fs.state(), ino).expect("open");
    let mut v = Vec::new();
    f.read_to_end(&mut v).expect("read");
    v
}

/// Walks a directory of the tree: rel path → (content, mtime ns, mode).
fn walk(fs: &BackupFs, ino: Ino, prefix: &str, out: &mut BTreeMap<String, ModelFile>) {
    for e in fs.readdir(&fs.state(), ino).expect("readdir") {
        let name = e.name.to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let attr = fs
            .lookup(&fs.state(), ino, &e.name)
            .expect("lookup listed entry");
        assert_eq!(attr.ino, e.ino, "readdir and lookup disagree on {rel}");
        match attr.kind {
            NodeKind::Dir => walk(fs, attr.ino, &rel, out),
            _ => {
                let content = read_all(fs, attr.ino);
                assert_eq!(content.len() as u64, attr.size, "size of {rel}");
                let mtime_ns = attr
                    .mtime
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("mtime")
                    .as_nanos() as i64;
                out.insert(
                    rel,
                    ModelFile {
                        content,
                        mtime_ns,
                        mode: attr.perm as u32,
                    },
                );
            }
        }
    }
}

fn open_fs(dir: &Path) -> BackupFs {
    let fs = BackupFs::open(Repository::open(dir).expect("repo")).expect("open");
    let problems = fs.load_metadata();
    assert!(problems.is_empty(), "{problems:?}");
    fs
}

#[test]
fn layout_lists_from_metadata() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let fs = open_fs(d.path());
    assert_eq!(
        names(&fs, ""),
        ["mirror", "increments", "snapshots", "history"]
    );
    assert_eq!(names(&fs, "increments"), [A, B, C]);
    assert_eq!(names(&fs, "snapshots"), [A, B, C, "latest"]);
    let mut inc = names(&fs, &format!("increments/{B}"));
    inc.sort();
    assert_eq!(inc, [format!("{B}.json"), "deleted".into(), "track".into()]);
    assert_eq!(
        names(&fs, "mirror"),
        ["bin", "deep", "docs", "untracked.txt"]
    );
    for n in [A, B, C, "latest"] {
        let a = fs.lookup_path(&format!("snapshots/{n}")).unwrap();
        assert_eq!(a.kind, NodeKind::Dir);
    }
    fs.lookup_path(&format!("snapshots/{B}/docs")).unwrap();
    assert!(matches!(
        fs.lookup_path("snapshots/backup_20200101_000000"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(fs.lookup_path("nonsense"), Err(FsError::NotFound)));
    assert!(matches!(
        fs.lookup_path("snapshots/nonsense"),
        Err(FsError::NotFound)
    ));
}

#[test]
fn every_snapshot_equals_the_fold_model() {
    let d = tempfile::tempdir().unwrap();
    let f = fixture(d.path());
    let fs = open_fs(d.path());
    for (name, model) in &f.states {
        let mut seen = BTreeMap::new();
        walk(
            &fs,
            fs.lookup_path(&format!("snapshots/{name}")).unwrap().ino,
            "",
            &mut seen,
        );
        assert_eq!(&seen, model, "snapshot {name}");
    }
    let mut latest = BTreeMap::new();
    walk(
        &fs,
        fs.lookup_path("snapshots/latest").unwrap().ino,
        "",
        &mut latest,
    );
    assert_eq!(&latest, &f.states.last().unwrap().1);
    assert!(!latest.contains_key("untracked.txt"));
}

#[test]
fn history_lists_every_version_sorted_by_time() {
    let d = tempfile::tempdir().unwrap();
    let f = fixture(d.path());
    let fs = open_fs(d.path());
    let got = names(&fs, "history/docs/report.txt.versions");
    assert_eq!(
        got,
        [
            "2024-01-01_100000_report.txt",
            "2024-01-02_100000_report.txt",
            "2024-01-03_100000_report.txt"
        ]
    );
    let dir = fs
        .lookup_path("history/docs/report.txt.versions")
        .unwrap()
        .ino;
    let contents: Vec<Vec<u8>> = got
        .iter()
        .map(|n| read_all(&fs, fs.lookup(&fs.state(), dir, OsStr::new(n)).unwrap().ino))
        .collect();
    let expected: Vec<Vec<u8>> = f
        .versions("docs/report.txt")
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(contents, expected);
    // A deleted file keeps its history.
    assert_eq!(
        names(&fs, "history/gone.txt.versions"),
        ["2024-01-01_100000_gone.txt"]
    );
    assert_eq!(
        names(&fs, "history"),
        ["bin", "deep", "docs", "gone.txt.versions"]
    );
    // A file's versions folder is not a real folder's name.
    assert!(matches!(
        fs.lookup_path("history/docs/report.txt"),
        Err(FsError::NotFound)
    ));
}

#[test]
fn inode_numbers_are_stable() {
    let d = tempfile::tempdir().unwrap();
    let mut f = fixture(d.path());
    let fs = open_fs(d.path());
    let paths = [
        "mirror/docs/report.txt",
        "snapshots/latest/docs/report.txt",
        &format!("snapshots/{A}/docs/report.txt"),
        &format!("increments/{B}/track/docs/report.txt"),
        "history/docs/report.txt.versions",
    ];
    let first: Vec<Ino> = paths
        .iter()
        .map(|p| fs.lookup_path(p).unwrap().ino)
        .collect();
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "distinct paths share an inode");
    f.backup(D, &[Change::Write("docs/report.txt", b"report v4")]);
    fs.refresh().unwrap().expect("a change");
    let again: Vec<Ino> = paths
        .iter()
        .map(|p| fs.lookup_path(p).unwrap().ino)
        .collect();
    assert_eq!(first, again);
    assert_eq!(
        fs.parent(first[1]),
        fs.lookup_path("snapshots/latest/docs").unwrap().ino
    );
}

#[derive(Default)]
struct Recorder {
    entries: StdMutex<Vec<(Ino, String)>>,
    inodes: StdMutex<Vec<Ino>>,
}

impl CacheInvalidator for Recorder {
    fn inval_entry(&self, parent: Ino, name: &OsStr) {
        self.entries
            .lock()
            .unwrap()
            .push((parent, name.to_string_lossy().into_owned()));
    }
    fn inval_inode(&self, ino: Ino) {
        self.inodes.lock().unwrap().push(ino);
    }
}

#[test]
fn refresh_sees_new_and_pruned_increments_and_invalidates() {
    let d = tempfile::tempdir().unwrap();
    let mut f = fixture(d.path());
    let fs = open_fs(d.path());
    let rec = Arc::new(Recorder::default());
    fs.attach_invalidator(rec.clone());
    assert_eq!(fs.refresh().unwrap(), None);
    let latest_file = fs.lookup_path("snapshots/latest/docs/report.txt").unwrap();
    assert_eq!(read_all(&fs, latest_file.ino), b"report v3");
    let in_b = fs
        .lookup_path(&format!("snapshots/{B}/docs/report.txt"))
        .unwrap();

    f.backup(D, &[Change::Write("docs/report.txt", b"report v4")]);
    let r = fs.refresh().unwrap().expect("a change");
    assert_eq!(r.added, [D]);
    assert_eq!(names(&fs, "snapshots"), [A, B, C, D, "latest"]);
    assert_eq!(read_all(&fs, latest_file.ino), b"report v4");
    let snaps = fs.lookup_path("snapshots").unwrap().ino;
    assert!(rec
        .entries
        .lock()
        .unwrap()
        .contains(&(snaps, "latest".into())));
    // The whole `latest` subtree goes with its name.
    assert!(rec
        .entries
        .lock()
        .unwrap()
        .contains(&(snaps, "latest".into())));
    // A new newest increment changes no earlier view: those stay cached.
    assert!(!rec.inodes.lock().unwrap().contains(&in_b.ino));

    // Prune A while a file of its snapshot is open.
    let in_a = fs
        .lookup_path(&format!("snapshots/{A}/docs/report.txt"))
        .unwrap();
    let mut held = fs.open(&fs.state(), in_a.ino).unwrap();
    std::fs::remove_dir_all(d.path().join(A)).unwrap();
    let r = fs.refresh().unwrap().expect("a change");
    assert_eq!(r.removed, [A]);
    assert!(rec.entries.lock().unwrap().contains(&(snaps, A.into())));
    // A prune may take versions out of any view.
    assert!(rec.inodes.lock().unwrap().contains(&in_b.ino));
    assert!(rec.entries.lock().unwrap().contains(&(snaps, B.into())));
    assert!(matches!(
        fs.getattr(&fs.state(), in_a.ino),
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        fs.open(&fs.state(), in_a.ino),
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        fs.lookup_path(&format!("increments/{A}")),
        Err(FsError::NotFound)
    ));
    // The descriptor opened before still reads the version it opened.
    let mut v = Vec::new();
    held.read_to_end(&mut v).unwrap();
    assert_eq!(v, b"report v1");
    // Views after A keep what other increments or the mirror hold.
    let mut seen = BTreeMap::new();
    walk(
        &fs,
        fs.lookup_path(&format!("snapshots/{B}")).unwrap().ino,
        "",
        &mut seen,
    );
    assert_eq!(
        seen.get("docs/report.txt").unwrap().content,
        b"report v2, longer"
    );
    assert_eq!(
        seen.get("bin/run.sh").unwrap().content,
        b"#!/bin/sh\necho hi\n"
    );
}

/// One request, one state: calls given the handle a request took before a reload answer from
/// the increments it saw, whatever was swapped in since; a handle taken after sees the new
/// ones. The adapters take one handle per request and pass it to every call, so a reload in
/// the middle of a request cannot tear its reply.
#[test]
fn a_request_answers_from_the_state_it_took_across_a_reload() {
    let d = tempfile::tempdir().unwrap();
    let mut f = fixture(d.path());
    let fs = open_fs(d.path());
    let snaps = fs.lookup_path("snapshots").unwrap().ino;
    let names = |l: Vec<DirEntry>| -> Vec<String> {
        l.into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    };
    let report = |st: &Arc<Loaded>| -> (NodeAttr, Vec<u8>) {
        let latest = fs.lookup(st, snaps, OsStr::new("latest")).unwrap();
        let docs = fs.lookup(st, latest.ino, OsStr::new("docs")).unwrap();
        let a = fs.lookup(st, docs.ino, OsStr::new("report.txt")).unwrap();
        let mut v = Vec::new();
        fs.open(st, a.ino).unwrap().read_to_end(&mut v).unwrap();
        (a, v)
    };
    // The first half of a request (a `readdirplus`: the listing)...
    let before = fs.state();
    let listed: Vec<DirEntry> = fs
        .readdir_plus(&before, snaps)
        .unwrap()
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let (old_report, old_text) = report(&before);
    assert_eq!(old_text, b"report v3");
    // ...a reload...
    f.backup(D, &[Change::Write("docs/report.txt", b"report v4")]);
    fs.refresh().unwrap().expect("a change");
    // ...and the rest of the request, still in the state it began with.
    assert_eq!(names(listed), [A, B, C, "latest"]);
    assert_eq!(
        names(fs.readdir(&before, snaps).unwrap()),
        [A, B, C, "latest"]
    );
    assert!(matches!(
        fs.lookup(&before, snaps, OsStr::new(D)),
        Err(FsError::NotFound)
    ));
    assert_eq!(report(&before), (old_report.clone(), old_text));
    // A request begun after the reload sees it, under the same inode numbers.
    let after = fs.state();
    assert_eq!(
        names(fs.readdir(&after, snaps).unwrap()),
        [A, B, C, D, "latest"]
    );
    let (new_report, new_text) = report(&after);
    assert_eq!(new_report.ino, old_report.ino);
    assert_eq!(new_text, b"report v4");
    let latest = fs.lookup(&after, snaps, OsStr::new("latest")).unwrap();
    assert_ne!(
        fs.getattr(&before, latest.ino).unwrap().mtime,
        fs.getattr(&after, latest.ino).unwrap().mtime,
        "latest/ shows C's time in the old state, D's in the new"
    );
}

#[test]
fn a_vanished_backing_file_fails_cleanly() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let fs = open_fs(d.path());
    let v = fs
        .lookup_path(&format!("snapshots/{B}/docs/report.txt"))
        .unwrap();
    // Damage behind the metadata's back: the file goes, the metadata stays.
    std::fs::remove_file(d.path().join(B).join("track/docs/report.txt")).unwrap();
    let attr = fs
        .getattr(&fs.state(), v.ino)
        .expect("metadata still describes it");
    assert_eq!(attr.size, b"report v2, longer".len() as u64);
    assert!(matches!(
        fs.open(&fs.state(), v.ino),
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        fs.readdir(&fs.state(), v.ino),
        Err(FsError::NotDir)
    ));
    assert!(matches!(
        fs.open(&fs.state(), fs.lookup_path("snapshots").unwrap().ino),
        Err(FsError::IsDir)
    ));
    assert!(matches!(
        fs.getattr(&fs.state(), 999_999),
        Err(FsError::NotFound)
    ));
}

#[test]
fn reads_a_backup_of_the_original_python_tool() {
    let d = tempfile::tempdir().unwrap();
    write_python_backup(d.path());
    let fs = open_fs(d.path());
    let a = fs
        .lookup_path("snapshots/backup_20240105_100000/docs/a.txt")
        .unwrap();
    assert_eq!(read_all(&fs, a.ino), b"python version A");
    assert_eq!(
        a.mtime,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_704_448_800_500)
    );
    assert_eq!(names(&fs, "mirror"), ["docs", "notes.md"]);
    assert_eq!(
        names(&fs, "history/docs/a.txt.versions"),
        ["2024-01-05_100000_a.txt"]
    );
}

#[test]
fn attributes_are_those_of_the_stored_files() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let fs = open_fs(d.path());
    let run = fs.lookup_path("snapshots/latest/bin/run.sh").unwrap();
    let disk = std::fs::metadata(d.path().join("mirror/bin/run.sh")).unwrap();
    assert_eq!(run.perm, 0o755);
    assert_eq!(run.mtime, disk.modified().unwrap());
    assert_eq!(run.uid, disk.uid());
    let st = fs.statfs().unwrap();
    assert!(st.blocks > 0 && st.block_size > 0);
}

#[test]
fn hostile_metadata_never_panics_or_names_a_path() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    // B's deletion of gone.txt claims a nonsense storing increment, and A is gone.
    std::fs::remove_dir_all(d.path().join(A)).unwrap();
    let meta = d.path().join(B).join(format!("{B}.json"));
    let text = std::fs::read_to_string(&meta).unwrap();
    let text = text.replace(
        &format!("\"version_of\":\"{A}\""),
        "\"version_of\":\"backup_0000/../../etc\"",
    );
    assert!(
        text.contains("backup_0000/../../etc"),
        "the fixture names A"
    );
    std::fs::write(&meta, text).unwrap();
    let fs = open_fs(d.path());
    assert_eq!(
        names(&fs, "history/gone.txt.versions"),
        ["0000-00-00_000000_gone.txt"]
    );
    let v = fs
        .lookup_path("history/gone.txt.versions/0000-00-00_000000_gone.txt")
        .unwrap();
    assert_eq!(read_all(&fs, v.ino), b"short-lived");
    for top in ["snapshots", "history", "increments", "mirror"] {
        let mut seen = BTreeMap::new();
        walk(&fs, fs.lookup_path(top).unwrap().ino, "", &mut seen);
    }
}

#[test]
fn directories_that_empty_and_return_follow_the_fold() {
    let d = tempfile::tempdir().unwrap();
    let mut f = FixtureBackup::new(d.path());
    f.backup(
        A,
        &[
            Change::Write("p/q/one.txt", b"1"),
            Change::Write("top.txt", b"t"),
        ],
    );
    f.backup(B, &[Change::Delete("p/q/one.txt")]);
    f.backup(C, &[Change::Write("p/q/two.txt", b"2")]);
    f.backup(
        D,
        &[
            Change::Delete("top.txt"),
            Change::Write("p/q/one.txt", b"1 again"),
        ],
    );
    let fs = open_fs(d.path());
    let (history, _) = backup_core::History::load(fs.repository()).unwrap();
    for (name, model) in &f.states {
        let mut seen = BTreeMap::new();
        walk(
            &fs,
            fs.lookup_path(&format!("snapshots/{name}")).unwrap().ino,
            "",
            &mut seen,
        );
        assert_eq!(&seen, model, "snapshot {name}");
        let folded: Vec<String> = history
            .snapshot(&backup_core::IncrementName::parse(name).unwrap())
            .keys()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            seen.keys().cloned().collect::<Vec<_>>(),
            folded,
            "fold at {name}"
        );
    }
    assert!(matches!(
        fs.lookup_path(&format!("snapshots/{B}/p")),
        Err(FsError::NotFound)
    ));
    assert_eq!(names(&fs, &format!("snapshots/{B}")), ["top.txt"]);
    assert_eq!(names(&fs, &format!("snapshots/{C}/p/q")), ["two.txt"]);
    assert_eq!(names(&fs, "snapshots/latest/p/q"), ["one.txt", "two.txt"]);
}

#[test]
fn listings_answer_before_any_background_work() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let fs = BackupFs::open(Repository::open(d.path()).unwrap()).unwrap();
    assert_eq!(names(&fs, "snapshots"), [A, B, C, "latest"]);
    assert_eq!(names(&fs, "increments"), [A, B, C]);
    for n in [A, B, C, "latest"] {
        fs.lookup_path(&format!("snapshots/{n}")).unwrap();
    }
    assert_eq!(
        names(&fs, "snapshots/latest/docs"),
        ["new.txt", "report.txt"]
    );
}

#[test]
fn unreadable_metadata_is_reported_and_the_rest_still_served() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    std::fs::write(d.path().join(B).join(format!("{B}.json")), b"{ truncated").unwrap();
    let fs = BackupFs::open(Repository::open(d.path()).unwrap()).unwrap();
    let problems = fs.load_metadata();
    assert!(problems.iter().any(|p| p.file.contains(B)), "{problems:?}");
    let latest = fs.lookup_path("snapshots/latest/docs/report.txt").unwrap();
    assert_eq!(read_all(&fs, latest.ino), b"report v3");
    let a = fs
        .lookup_path(&format!("snapshots/{A}/docs/report.txt"))
        .unwrap();
    assert_eq!(read_all(&fs, a.ino), b"report v1");
}

/// Listings computed ahead of a walk are the listings a request computes, and none computed
/// before a reload is shown after it.
#[test]
fn listings_computed_ahead_equal_those_computed_on_request_and_follow_a_reload() {
    let d = tempfile::tempdir().unwrap();
    let mut f = fixture(d.path());
    let plain = open_fs(d.path());
    let ahead = Arc::new(open_fs(d.path()));
    ahead.start_prefetch();
    let settle = |fs: &BackupFs| {
        let start = std::time::Instant::now();
        while !fs.prefetch.idle() {
            assert!(start.elapsed() < Duration::from_secs(30), "prefetch stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for view in [
        format!("snapshots/{A}"),
        format!("snapshots/{B}"),
        "snapshots/latest".into(),
    ] {
        let root = ahead.lookup_path(&view).unwrap().ino;
        // The view's top folder wishes for its subfolders; let them be listed first.
        ahead.readdir_plus(&ahead.state(), root).unwrap();
        settle(&ahead);
        let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
        walk(&plain, plain.lookup_path(&view).unwrap().ino, "", &mut want);
        walk(&ahead, root, "", &mut got);
        assert_eq!(got, want, "{view}");
    }
    let used = ahead.prefetched_listings_used();
    assert!(used >= 3, "only {used} listings computed ahead were used");

    // Listed ahead under the old state, then a new increment lands.
    let latest = ahead.lookup_path("snapshots/latest").unwrap().ino;
    ahead.readdir_plus(&ahead.state(), latest).unwrap();
    settle(&ahead);
    let v4 = b"report v4, the longest of them";
    f.backup(D, &[Change::Write("docs/report.txt", v4)]);
    ahead.refresh().unwrap().expect("a change");
    let docs = ahead.lookup_path("snapshots/latest/docs").unwrap().ino;
    let listed = ahead.readdir_plus(&ahead.state(), docs).unwrap();
    let report = listed
        .iter()
        .find(|(e, _)| e.name == "report.txt")
        .expect("report.txt listed");
    assert_eq!(
        report.1.size,
        v4.len() as u64,
        "a listing from before the reload"
    );
    let mut got = BTreeMap::new();
    walk(&ahead, latest, "", &mut got);
    assert_eq!(got["docs/report.txt"].content, v4);
    // A history walk too is served the same either way.
    let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
    let plain = open_fs(d.path());
    walk(
        &plain,
        plain.lookup_path("history").unwrap().ino,
        "",
        &mut want,
    );
    walk(
        &ahead,
        ahead.lookup_path("history").unwrap().ino,
        "",
        &mut got,
    );
    assert_eq!(got, want, "history");
}

/// Every folder of every snapshot, listed by names only (what a walk that never stats gets),
/// has the names and kinds of its full listing, in the same order.
#[test]
fn a_names_only_listing_has_the_full_listings_entries() {
    fn compare(fs: &BackupFs, loc: &Loc, seen: &mut usize) {
        let st = fs.state();
        let full = fs.listing(&st, loc).unwrap();
        let names = fs.names_listing(&st, loc).unwrap();
        let want: Vec<(Loc, Vec<u8>, NodeKind)> = full
            .iter()
            .map(|(l, n, node)| (l.clone(), n.clone(), fs.attr(0, node).kind))
            .collect();
        assert_eq!(names, want, "{loc:?}");
        *seen += names.len();
        for (l, _, kind) in names {
            if kind == NodeKind::Dir {
                compare(fs, &l, seen);
            }
        }
    }
    let d = tempfile::tempdir().unwrap();
    let mut f = fixture(d.path());
    f.backup(
        D,
        &[
            Change::Delete("docs/new.txt"),
            Change::Write("docs/new.txt/inside.txt", b"a folder where a file was"),
        ],
    );
    let fs = open_fs(d.path());
    let mut seen = 0;
    for k in [A, B, C, D] {
        let name = Arc::new(IncrementName::parse(k).unwrap());
        compare(&fs, &Loc::Snapshot(SnapKey::Named(name), None), &mut seen);
    }
    compare(&fs, &Loc::Snapshot(SnapKey::Latest, None), &mut seen);
    assert!(seen > 20, "{seen} entries compared");
    // A folder a snapshot does not have is refused the same way.
    let gone = Loc::Snapshot(
        SnapKey::Latest,
        Some(RelPath::from_bytes(b"nowhere").unwrap()),
    );
    assert!(matches!(
        fs.names_listing(&fs.state(), &gone),
        Err(FsError::NotFound)
    ));
}
