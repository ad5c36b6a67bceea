//! `backup-tool check`, `recreate`, `delete`, `prune`, and backups written by the original
//! Python tool, through the real binary.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use backup_tests::{check_problems as problems, put, scenario, TestEnv, Tree};

/// Flips one byte in place, keeping size and mtime.
fn flip_byte(p: &Path) {
    let mtime = fs::metadata(p).unwrap().modified().unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let data = fs::read(p).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&[data[0] ^ 0x20]).unwrap();
    f.set_modified(mtime).unwrap();
}

#[test]
fn clean_backup_checks_ok_and_verify_detects_a_flipped_byte() {
    let s = scenario();
    let e = &s.env;
    let out = e.tool_ok(&["check"], 0);
    assert!(out.contains("OK: 4 increments"), "{out}");
    let v = e.tool_json(&["check", "--verify"], 0);
    assert!(v["files_verified"].as_u64().unwrap() >= 8, "{v}");
    // a.py v1 lives only in increment 1's track/.
    flip_byte(&e.dist.join(&s.incs[0]).join("track/projects/a.py"));
    e.tool_ok(&["check"], 0);
    let v = e.tool_json(&["check", "--verify"], 1);
    assert_eq!(
        problems(&v),
        vec![(
            s.incs[0].clone(),
            "projects/a.py".into(),
            "hash-mismatch".into()
        )]
    );
    let human = e.tool_ok(&["check", "--verify"], 1);
    assert!(
        human.contains("projects/a.py") && human.contains("content differs"),
        "{human}"
    );
    // Restoring the damaged version says so (status 1) instead of passing it off as good.
    let to = e.dir.path().join("r");
    let out = e.tool_dist(&["restore", "--at", &s.incs[0], "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("projects/a.py") && err.contains("recorded hash"),
        "{err}"
    );
    assert!(to.join("docs/readme.md").exists());
}

#[test]
fn check_reports_missing_extra_mismatched_and_leftovers() {
    let s = scenario();
    let e = &s.env;
    let d = &e.dist;
    // The index records the mirror as the last run left it. Until `backup` writes the index
    // itself, the first command after a run imports that state (from `mirror.json`) and
    // makes it true to the disk: let that happen before the damage, as a run will.
    e.tool_ok(&["list"], 0);
    fs::remove_file(d.join("mirror/docs/readme.md")).unwrap();
    put(&d.join("mirror/stray.txt"), b"stray");
    put(&d.join(&s.incs[1]).join("track/projects/extra.py"), b"x");
    // A size change (new inode: the mirror's a.py is shared with increment 4).
    let a = d.join("mirror/projects/a.py");
    fs::remove_file(&a).unwrap();
    put(&a, b"a different, longer content");
    // An interrupted run: increment folder without metadata, staging folder, journal.
    fs::create_dir_all(d.join("backup_20300101_000000/track")).unwrap();
    fs::create_dir_all(d.join(".backup-staging")).unwrap();
    put(&d.join(".backup-journal.json"), b"{}");
    let v = e.tool_json(&["check"], 1);
    let p = problems(&v);
    let has = |loc: &str, path: &str, kind: &str| {
        assert!(
            p.contains(&(loc.to_owned(), path.to_owned(), kind.to_owned())),
            "{loc} {path} {kind} not in {p:#?}"
        )
    };
    has("mirror", "docs/readme.md", "missing");
    has("mirror", "stray.txt", "extra");
    has(&s.incs[1], "projects/extra.py", "extra");
    has("mirror", "projects/a.py", "size-mismatch");
    has("mirror", "projects/a.py", "mtime-mismatch");
    has("backup_20300101_000000", "", "no-metadata");
    has("dist", ".backup-staging", "leftover");
    has("dist", ".backup-journal.json", "leftover");
    assert_eq!(p.len(), 8, "{p:#?}");
}

/// A backup exactly as the original Python tool writes it: category `track`, no `op`, float
/// mtimes, a flat `mirror.json`, an unknown summary shape.
fn python_backup() -> TestEnv {
    let env = TestEnv::new();
    let d = &env.dist;
    let n1 = "backup_20240105_100000";
    let n2 = "backup_20240106_100000";
    put(&d.join("mirror/docs/notes.txt"), b"notes v2");
    put(&d.join("mirror/music/song.mp3"), b"untracked bytes");
    put(&d.join(n1).join("track/docs/notes.txt"), b"notes v1");
    put(&d.join(n1).join("track/docs/old.txt"), b"old");
    put(&d.join(n2).join("track/docs/notes.txt"), b"notes v2");
    put(&d.join(n2).join("deleted/docs/old.txt"), b"old");
    let set = |p: &Path, secs: f64| {
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
            .unwrap();
    };
    set(&d.join("mirror/docs/notes.txt"), 1704531600.25);
    set(&d.join("mirror/music/song.mp3"), 1704448800.5);
    set(&d.join(n1).join("track/docs/notes.txt"), 1704445200.75);
    set(&d.join(n1).join("track/docs/old.txt"), 1704445200.0);
    set(&d.join(n2).join("track/docs/notes.txt"), 1704531600.25);
    set(&d.join(n2).join("deleted/docs/old.txt"), 1704445200.0);
    put(
        &d.join("mirror.json"),
        br#"{"docs/notes.txt": {"size": 8, "mtime": 1704531600.25, "tracked": true},
            "music/song.mp3": {"size": 15, "mtime": 1704448800.5, "tracked": false}}"#,
    );
    put(
        &d.join(n1).join(format!("{n1}.json")),
        br#"{"version": "1.0", "timestamp": "2024-01-05T10:00:00", "backup_name": "backup_20240105_100000",
            "file_catalog": {
              "docs/notes.txt": {"size": 8, "mtime": 1704445200.75, "category": "track"},
              "docs/old.txt": {"size": 3, "mtime": 1704445200.0, "category": "track"}},
            "summary": {"tracked_files": 2, "deleted_files": 0}}"#,
    );
    put(
        &d.join(n2).join(format!("{n2}.json")),
        br#"{"version": "1.0", "timestamp": "2024-01-06T10:00:00", "backup_name": "backup_20240106_100000",
            "file_catalog": {
              "docs/notes.txt": {"size": 8, "mtime": 1704531600.25, "category": "tracked"},
              "docs/old.txt": {"size": 3, "mtime": 1704445200.0, "category": "deleted"}},
            "summary": {"tracked_files": 1, "deleted_files": 1}}"#,
    );
    env
}

#[test]
fn original_python_backups_are_read_as_they_are() {
    let env = python_backup();
    let before = Tree::exact(&env.dist).without_derived();
    let v = env.tool_json(&["list"], 0);
    assert_eq!(v["increments"].as_array().unwrap().len(), 2);
    assert_eq!(v["increments"][1]["deleted"], 1);
    assert_eq!(v["mirror"]["files"], 2);
    let hits = env.tool_json(&["search", "--mask", "notes"], 0);
    assert_eq!(hits["count"], 3);
    assert_eq!(hits["hits"][0]["mtime_ns"], 1_704_445_200_750_000_000i64);
    env.tool_ok(&["check", "--verify"], 0);
    let to = env.dir.path().join("r");
    env.tool_ok(
        &[
            "restore",
            "--at",
            "backup_20240105_100000",
            "--to",
            to.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(fs::read(to.join("docs/notes.txt")).unwrap(), b"notes v1");
    assert_eq!(fs::read(to.join("docs/old.txt")).unwrap(), b"old");
    let to2 = env.dir.path().join("r2");
    env.tool_ok(
        &[
            "restore",
            "--at",
            "2024-01-06",
            "--to",
            to2.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(fs::read(to2.join("docs/notes.txt")).unwrap(), b"notes v2");
    assert!(!to2.join("docs/old.txt").exists());
    let log = env.tool_json(&["log", "docs/old.txt"], 0);
    assert_eq!(log["events"][1]["event"], "deleted");
    assert_eq!(Tree::exact(&env.dist).without_derived(), before);
}

#[test]
fn recreate_rebuilds_missing_and_damaged_metadata_only() {
    let s = scenario();
    let e = &s.env;
    let meta = |n: &str| e.dist.join(n).join(format!("{n}.json"));
    let original: serde_json::Value =
        serde_json::from_slice(&fs::read(meta(&s.incs[1])).unwrap()).unwrap();
    fs::remove_file(meta(&s.incs[1])).unwrap();
    fs::write(meta(&s.incs[2]), b"{ truncated").unwrap();
    let untouched = fs::read(meta(&s.incs[0])).unwrap();
    e.tool_ok(&["check"], 1);
    let v = e.tool_json(&["recreate"], 0);
    let status: Vec<&str> = v["increments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, vec!["kept", "rebuilt", "rebuilt", "kept"]);
    assert_eq!(fs::read(meta(&s.incs[0])).unwrap(), untouched);
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&fs::read(meta(&s.incs[1])).unwrap()).unwrap();
    for (path, e0) in original["file_catalog"].as_object().unwrap() {
        let r = &rebuilt["file_catalog"][path];
        for k in ["size", "mtime_ns", "category", "op", "hash", "mode"] {
            assert_eq!(r[k], e0[k], "{path} {k}");
        }
    }
    let third: serde_json::Value =
        serde_json::from_slice(&fs::read(meta(&s.incs[2])).unwrap()).unwrap();
    assert_eq!(third["file_catalog"]["projects/b.pdf"]["op"], "deleted");
    assert_eq!(third["file_catalog"]["docs/readme.md"]["op"], "changed");
    e.tool_ok(&["check", "--verify"], 0);
    // --force --backup rewrites just that one.
    let v = e.tool_json(&["recreate", "--force", "--backup", &s.incs[0]], 0);
    assert_eq!(v["increments"][0]["status"], "rebuilt");
    assert_eq!(v["increments"].as_array().unwrap().len(), 1);
    assert_eq!(
        e.tool_dist(&["recreate", "--backup", "backup_19990101_000000"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn delete_removes_matching_files_from_one_increment() {
    let s = scenario();
    let e = &s.env;
    let out = e.tool_ok(&["delete", &s.incs[1], "--mask", "*.py", "--dry-run"], 0);
    assert!(
        out.contains("would remove") && out.contains("projects/sub/c.py"),
        "{out}"
    );
    assert!(e.dist.join(&s.incs[1]).join("track/projects/a.py").exists());
    let out = e.tool_ok(&["delete", &s.incs[1], "--mask", "*.py"], 0);
    assert!(out.contains("removed 2 files"), "{out}");
    assert!(!e.dist.join(&s.incs[1]).join("track/projects").exists());
    let v = e.tool_json(&["show", &s.incs[1]], 0);
    assert_eq!(v["files"].as_array().unwrap().len(), 0);
    // The mirror still holds c.py: the other holders are untouched, and the view at that
    // increment still shows the version the mirror holds.
    assert!(e.dist.join("mirror/projects/sub/c.py").exists());
    e.tool_ok(&["check", "--verify"], 0);
    let to = e.dir.path().join("r");
    e.tool_ok(
        &["restore", "--at", &s.incs[1], "--to", to.to_str().unwrap()],
        0,
    );
    assert_eq!(
        std::fs::read(to.join("projects/sub/c.py")).unwrap(),
        b"c = 1\n"
    );
    assert_eq!(e.tool_dist(&["delete", &s.incs[1]]).status.code(), Some(2));
}

#[test]
fn prune_keeps_by_policy_and_later_views_survive() {
    let s = scenario();
    let e = &s.env;
    let before = Tree::exact(&e.dist).without_derived();
    let out = e.tool_ok(&["prune", "--keep-last", "2", "--dry-run"], 0);
    assert!(
        out.contains("would remove") && out.contains(&s.incs[0]),
        "{out}"
    );
    assert_eq!(Tree::exact(&e.dist).without_derived(), before);
    assert_eq!(
        e.tool_dist(&["prune"]).status.code(),
        Some(2),
        "no rule: refused"
    );
    let v = e.tool_json(&["prune", "--keep-last", "2"], 0);
    assert_eq!(v["removed"], serde_json::json!([s.incs[0], s.incs[1]]));
    assert_eq!(e.increments(), vec![s.incs[2].clone(), s.incs[3].clone()]);
    e.tool_ok(&["check", "--verify"], 0);
    // The view at increment 3 still has c.py (held by the mirror) and the new readme.
    let to = e.dir.path().join("r");
    e.tool_ok(
        &["restore", "--at", &s.incs[2], "--to", to.to_str().unwrap()],
        0,
    );
    assert_eq!(fs::read(to.join("projects/sub/c.py")).unwrap(), b"c = 1\n");
    assert_eq!(
        fs::read(to.join("docs/readme.md")).unwrap(),
        b"# readme, second edition\n"
    );
}
