//! `backup-tool` on the index (`dist/.backup-index.sqlite`), through the real binaries: a lost
//! index is rebuilt (and said once), increments changed by hand are noticed, damaged metadata
//! is refused instead of answered from another increment, unusable catalog entries are named,
//! original-tool backups check clean while real damage is still found, and the mirror's state
//! can be exported as a `mirror.json` again.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use backup_tests::{check_problems as problems, put, scenario, TestEnv, Tree};

fn notes(v: &serde_json::Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes in {v}"))
        .iter()
        .map(|n| n["note"].as_str().unwrap().to_owned())
        .collect()
}

fn index_files(dist: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-index.sqlite"))
        .collect();
    v.sort();
    v
}

fn top_names(dist: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_lost_index_is_rebuilt_and_said_once() {
    let s = scenario();
    let e = &s.env;
    let first = e.tool_json(&["list"], 0);
    assert!(!index_files(&e.dist).is_empty());
    let before = e.tool_json(&["search", "--mask", "*"], 0);
    for f in index_files(&e.dist) {
        fs::remove_file(e.dist.join(f)).unwrap();
    }
    // Human output: the note on stderr, once; then nothing more to say.
    let out = e.tool_dist(&["search", "--mask", "*"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("the index was missing; it was rebuilt").count(),
        1,
        "{err}"
    );
    let again = e.tool_dist(&["search", "--mask", "*"]);
    assert!(!stderr(&again).contains("note:"), "{}", stderr(&again));
    // JSON: in "notes", and the answers are those of before.
    for f in index_files(&e.dist) {
        fs::remove_file(e.dist.join(f)).unwrap();
    }
    let rebuilt = e.tool_json(&["search", "--mask", "*"], 0);
    assert!(notes(&rebuilt).contains(&"created".to_owned()), "{rebuilt}");
    assert_eq!(rebuilt["hits"], before["hits"]);
    let listed = e.tool_json(&["list"], 0);
    assert!(notes(&listed).is_empty(), "{listed}");
    assert_eq!(listed["increments"], first["increments"]);
    e.tool_ok(&["check", "--verify"], 0);
}

#[test]
fn read_only_commands_add_nothing_to_dist_but_the_index() {
    let s = scenario();
    let e = &s.env;
    for f in index_files(&e.dist) {
        fs::remove_file(e.dist.join(f)).unwrap();
    }
    let names = top_names(&e.dist);
    let before = Tree::exact(&e.dist).without_derived();
    let to = e.dir.path().join("r");
    for args in [
        vec!["check", "--verify"],
        vec!["restore", "--at", "latest", "--to", to.to_str().unwrap()],
        vec!["log", "projects/a.py"],
    ] {
        e.tool_ok(&args, 0);
        assert_eq!(Tree::exact(&e.dist).without_derived(), before, "{args:?}");
        let mut now = top_names(&e.dist);
        now.retain(|n| !n.starts_with(".backup-index.sqlite"));
        assert_eq!(now, names, "{args:?}");
        assert!(!index_files(&e.dist).is_empty());
    }
}

#[test]
fn increments_changed_by_hand_are_noticed() {
    let s = scenario();
    let e = &s.env;
    let i = &s.incs;
    e.tool_ok(&["list"], 0);
    // Renamed by hand to a name that is not an increment's: gone from every view, and check
    // says where it went.
    fs::rename(e.dist.join(&i[1]), e.dist.join(format!("{}_old", i[1]))).unwrap();
    let v = e.tool_json(&["list"], 0);
    assert_eq!(notes(&v), vec!["catalog-changed"], "{v}");
    assert_eq!(v["notes"][0]["sync"]["removed"][0], i[1].as_str());
    assert_eq!(v["increments"].as_array().unwrap().len(), 3);
    let c = e.tool_json(&["check"], 1);
    assert_eq!(
        problems(&c),
        vec![(
            "dist".into(),
            format!("{}_old", i[1]),
            "looks-like-increment".into()
        )],
        "{c}"
    );
    let human = e.tool_ok(&["check"], 1);
    assert!(
        human.contains(&format!("rename it back to {}", i[1])),
        "{human}"
    );
    // A folder with another name that holds an increment's parts is suspicious too.
    fs::rename(e.dist.join(format!("{}_old", i[1])), e.dist.join("foo")).unwrap();
    let c = e.tool_json(&["check"], 1);
    assert_eq!(
        problems(&c),
        vec![("dist".into(), "foo".into(), "looks-like-increment".into())]
    );
    fs::create_dir(e.dist.join("photos-2019")).unwrap();
    put(&e.dist.join("photos-2019/a.jpg"), b"not ours");
    assert_eq!(problems(&e.tool_json(&["check"], 1)).len(), 1);
    // Renamed back: noticed, and whole again.
    fs::rename(e.dist.join("foo"), e.dist.join(&i[1])).unwrap();
    fs::remove_dir_all(e.dist.join("photos-2019")).unwrap();
    let v = e.tool_json(&["list"], 0);
    assert_eq!(v["notes"][0]["sync"]["added"][0], i[1].as_str(), "{v}");
    e.tool_ok(&["check", "--verify"], 0);
    // Copied in by hand (a copy of the last increment under a later name): read, shown.
    let copy = "backup_20991231_235959";
    let st = Command::new("cp")
        .arg("-a")
        .arg(e.dist.join(&i[3]))
        .arg(e.dist.join(copy))
        .status()
        .unwrap();
    assert!(st.success());
    fs::rename(
        e.dist.join(copy).join(format!("{}.json", i[3])),
        e.dist.join(copy).join(format!("{copy}.json")),
    )
    .unwrap();
    let v = e.tool_json(&["list"], 0);
    assert_eq!(v["notes"][0]["sync"]["added"][0], copy, "{v}");
    assert_eq!(v["increments"].as_array().unwrap().len(), 5);
    let shown = e.tool_json(&["show", "latest"], 0);
    assert_eq!(shown["increment"]["name"], copy);
    assert_eq!(shown["files"][0]["path"], "projects/a.py");
    // Removed by hand: gone, and the versions it alone held with it; the rest stays.
    fs::remove_dir_all(e.dist.join(copy)).unwrap();
    fs::remove_dir_all(e.dist.join(&i[0])).unwrap();
    let v = e.tool_json(&["list"], 0);
    assert_eq!(
        v["notes"][0]["sync"]["removed"],
        serde_json::json!([i[0], copy])
    );
    let to = e.dir.path().join("r");
    e.tool_ok(&["restore", "--at", &i[1], "--to", to.to_str().unwrap()], 0);
    assert_eq!(
        fs::read(to.join("projects/a.py")).unwrap(),
        b"print('version two')\n"
    );
    // b.pdf v1 is still held by increment 3's deleted/ link.
    assert_eq!(fs::read(to.join("projects/b.pdf")).unwrap().len(), 2048);
}

#[test]
fn damaged_metadata_is_refused_never_answered_from_another_increment() {
    let s = scenario();
    let e = &s.env;
    let i = &s.incs;
    let meta = e.dist.join(&i[3]).join(format!("{}.json", i[3]));
    let text = fs::read(&meta).unwrap();
    // The newest metadata truncated (a crash, a full disk, a bad sector).
    fs::write(&meta, &text[..text.len() / 2]).unwrap();
    let to = e.dir.path().join("r");
    let refused = |args: &[&str]| {
        let out = e.tool_dist(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&i[3]) && err.contains(&format!("recreate --backup {}", i[3])),
            "{args:?}: {err}"
        );
    };
    // `latest` is the newest increment folder, not the newest readable one.
    refused(&["restore", "--at", "latest", "--to", to.to_str().unwrap()]);
    assert!(!to.exists(), "nothing restored");
    refused(&["restore", "--at", &i[3], "--to", to.to_str().unwrap()]);
    refused(&["show", "latest"]);
    refused(&["show", &i[3]]);
    refused(&["diff", &i[2], "latest"]);
    refused(&["diff", "mirror", &i[3]]);
    // A time that names it (the newest increment at or before now).
    refused(&[
        "restore",
        "--at",
        "2099-01-01",
        "--to",
        to.to_str().unwrap(),
    ]);
    refused(&["delete", &i[3], "--mask", "*.py", "--dry-run"]);
    // Listed (as unreadable), and check says so.
    let v = e.tool_json(&["list"], 0);
    assert_eq!(v["without_metadata"], serde_json::json!([i[3]]));
    let human = e.tool_ok(&["list"], 0);
    assert!(
        human.contains(&i[3]) && human.contains("no readable metadata"),
        "{human}"
    );
    let c = e.tool_json(&["check"], 1);
    assert_eq!(
        problems(&c),
        vec![(i[3].clone(), String::new(), "no-metadata".into())]
    );
    // Earlier increments still answer; a view after... none here.
    e.tool_ok(&["restore", "--at", &i[2], "--to", to.to_str().unwrap()], 0);
    // Missing altogether: the same refusal.
    fs::remove_file(&meta).unwrap();
    refused(&["show", "latest"]);
    // Repaired as the message says: answered from itself.
    e.tool_ok(&["recreate", "--backup", &i[3]], 0);
    let to2 = e.dir.path().join("r2");
    e.tool_ok(
        &["restore", "--at", "latest", "--to", to2.to_str().unwrap()],
        0,
    );
    assert_eq!(
        fs::read(to2.join("projects/a.py")).unwrap(),
        b"print('v3')\n"
    );
    e.tool_ok(&["check", "--verify"], 0);
}

#[test]
fn a_damaged_increment_warns_the_views_after_it() {
    let s = scenario();
    let e = &s.env;
    let i = &s.incs;
    let meta = e.dist.join(&i[1]).join(format!("{}.json", i[1]));
    fs::write(&meta, b"{ truncated").unwrap();
    let to = e.dir.path().join("r");
    let out = e.tool_dist(&["restore", "--at", &i[2], "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("increment {} has no readable metadata", i[1]))
            && err.contains(&format!("at {}", i[2])),
        "{err}"
    );
    let out = e.tool_dist(&["search", "--mask", "*.py"]);
    assert!(
        stderr(&out).contains("its files were not searched"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unusable_catalog_entries_are_named_by_check_and_restore() {
    let s = scenario();
    let e = &s.env;
    let i = &s.incs;
    let meta = e.dist.join(&i[0]).join(format!("{}.json", i[0]));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let entry = serde_json::json!({"size": 3, "mtime": 1.5, "category": "tracked", "op": "new"});
    v["file_catalog"]["../../outside/x"] = entry;
    v["file_catalog"]["docs/t.txt"] = serde_json::json!([1, 2]);
    fs::write(&meta, serde_json::to_vec(&v).unwrap()).unwrap();
    let c = e.tool_json(&["check"], 1);
    let bad: Vec<&serde_json::Value> = c["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "bad-metadata")
        .collect();
    assert_eq!(bad.len(), 2, "{c}");
    for p in &bad {
        assert_eq!(p["location"], i[0].as_str());
        assert_eq!(p["file"], meta.to_str().unwrap());
    }
    let keys: Vec<&str> = bad.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert!(keys.contains(&"../../outside/x") && keys.contains(&"docs/t.txt"));
    let t = bad.iter().find(|p| p["path"] == "docs/t.txt").unwrap();
    assert!(t["message"].as_str().unwrap().contains("malformed"), "{t}");
    let human = e.tool_ok(&["check"], 1);
    assert!(
        human.contains("docs/t.txt") && human.contains(meta.to_str().unwrap()),
        "{human}"
    );
    // restore names what it skipped (stderr, and "skipped" in JSON), and restores the rest.
    let to = e.dir.path().join("r");
    let out = e.tool_dist(&["restore", "--at", &i[0], "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("../../outside/x") && err.contains("unsafe"),
        "{err}"
    );
    assert!(to.join("docs/readme.md").exists());
    assert!(!e.dir.path().join("outside").exists());
    let to2 = e.dir.path().join("r2");
    let j = e.tool_json(
        &[
            "restore",
            "--at",
            &i[1],
            "--to",
            to2.to_str().unwrap(),
            "-n",
        ],
        0,
    );
    let skipped: Vec<&str> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{j}");
}

/// Float seconds as the original tool recorded `os.stat().st_mtime` (CPython: seconds plus
/// nanoseconds times 1e-9, written with `repr`, which Rust's `{}` matches).
fn py_mtime(ns: i64) -> String {
    let f = ns.div_euclid(1_000_000_000) as f64 + ns.rem_euclid(1_000_000_000) as f64 * 1e-9;
    format!("{f}")
}

fn set_ns(p: &Path, ns: i64) {
    backup_tests::set_mtime(
        p,
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000),
    );
}

/// A backup as the original tool writes it: float mtimes of nanosecond-precise files, a flat
/// `mirror.json`, and deletions kept in `deleted/` but not catalogued (its summary counts
/// them).
fn python_backup() -> TestEnv {
    let env = TestEnv::new();
    let d = &env.dist;
    let (n1, n2) = ("backup_20240105_100000", "backup_20240106_100000");
    let files: [(&str, &[u8], i64); 4] = [
        (
            "mirror/docs/notes.txt",
            b"notes v2",
            1_704_531_600_987_654_321,
        ),
        (
            "mirror/music/song.mp3",
            b"untracked bytes",
            1_704_448_800_000_000_999,
        ),
        (
            "backup_20240105_100000/track/docs/notes.txt",
            b"notes v1",
            1_704_445_200_999_999_600,
        ),
        (
            "backup_20240105_100000/track/docs/old.txt",
            b"old",
            1_704_445_200_123_456_789,
        ),
    ];
    for (p, data, ns) in files {
        put(&d.join(p), data);
        set_ns(&d.join(p), ns);
    }
    // Hard links, as the original tool makes them.
    fs::create_dir_all(d.join(n2).join("track/docs")).unwrap();
    fs::create_dir_all(d.join(n2).join("deleted/docs")).unwrap();
    fs::hard_link(
        d.join("mirror/docs/notes.txt"),
        d.join(n2).join("track/docs/notes.txt"),
    )
    .unwrap();
    fs::hard_link(
        d.join(n1).join("track/docs/old.txt"),
        d.join(n2).join("deleted/docs/old.txt"),
    )
    .unwrap();
    let m = |ns: i64| py_mtime(ns);
    put(
        &d.join("mirror.json"),
        format!(
            r#"{{"docs/notes.txt": {{"size": 8, "mtime": {}, "tracked": true}},
                "music/song.mp3": {{"size": 15, "mtime": {}, "tracked": false}}}}"#,
            m(1_704_531_600_987_654_321),
            m(1_704_448_800_000_000_999)
        )
        .as_bytes(),
    );
    put(
        &d.join(n1).join(format!("{n1}.json")),
        format!(
            r#"{{"version": "1.0", "timestamp": "2024-01-05T10:00:00", "backup_name": "{n1}",
                "file_catalog": {{
                  "docs/notes.txt": {{"size": 8, "mtime": {}, "category": "track"}},
                  "docs/old.txt": {{"size": 3, "mtime": {}, "category": "track"}}}},
                "summary": {{"tracked_files": 2, "deleted_files": 0}}}}"#,
            m(1_704_445_200_999_999_600),
            m(1_704_445_200_123_456_789)
        )
        .as_bytes(),
    );
    put(
        &d.join(n2).join(format!("{n2}.json")),
        format!(
            r#"{{"version": "1.0", "timestamp": "2024-01-06T10:00:00", "backup_name": "{n2}",
                "file_catalog": {{
                  "docs/notes.txt": {{"size": 8, "mtime": {}, "category": "track"}}}},
                "summary": {{"tracked_files": 1, "deleted_files": 1}}}}"#,
            m(1_704_531_600_987_654_321)
        )
        .as_bytes(),
    );
    env
}

#[test]
fn original_tool_backups_check_clean_and_real_damage_is_still_found() {
    let env = python_backup();
    let d = &env.dist;
    let n2 = "backup_20240106_100000";
    let before = Tree::exact(d).without_derived();
    let out = env.tool_ok(&["check", "--verify"], 0);
    assert!(out.contains("OK: 2 increments"), "{out}");
    assert_eq!(Tree::exact(d).without_derived(), before);
    // A file in deleted/ beyond what its summary counts is reported.
    put(&d.join(n2).join("deleted/docs/zzz.txt"), b"stray");
    let c = env.tool_json(&["check"], 1);
    assert_eq!(
        problems(&c),
        vec![(n2.into(), "docs/zzz.txt".into(), "extra".into())]
    );
    fs::remove_file(d.join(n2).join("deleted/docs/zzz.txt")).unwrap();
    // The original tool overwrote a mirror file in place: the version increment 2 links (the
    // same inode) changed under it. Its mirror.json describes the new file, so the mirror
    // checks clean; the increment's recorded version no longer does.
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(d.join("mirror/docs/notes.txt"))
            .unwrap();
        f.write_all(b"notes v3, longer").unwrap();
    }
    set_ns(&d.join("mirror/docs/notes.txt"), 1_704_618_000_250_000_000);
    put(
        &d.join("mirror.json"),
        format!(
            r#"{{"docs/notes.txt": {{"size": 16, "mtime": {}, "tracked": true}},
                "music/song.mp3": {{"size": 15, "mtime": {}, "tracked": false}}}}"#,
            py_mtime(1_704_618_000_250_000_000),
            py_mtime(1_704_448_800_000_000_999)
        )
        .as_bytes(),
    );
    let c = env.tool_json(&["check"], 1);
    let p = problems(&c);
    assert!(
        p.contains(&(n2.into(), "docs/notes.txt".into(), "size-mismatch".into()))
            && p.contains(&(n2.into(), "docs/notes.txt".into(), "mtime-mismatch".into())),
        "{p:?}"
    );
    assert!(p.iter().all(|(loc, _, _)| loc == n2), "{p:?}");
}

#[test]
fn search_scripts_and_json_name_stored_files_exactly() {
    let env = TestEnv::new();
    env.write_next("docs/plain.txt", b"plain");
    let raw = env
        .src
        .join("docs")
        .join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9"));
    fs::write(&raw, b"latin").unwrap();
    env.backup_all().unwrap();
    // The backup named by a relative path, from its parent folder.
    let run = |args: &[&str]| {
        Command::new(backup_tests::bin("backup-tool"))
            .arg("dist")
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["search", "--mask", "latin1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 2, "{v}");
    for h in v["hits"].as_array().unwrap() {
        let stored = h["stored"].as_str().unwrap();
        let hex = stored
            .strip_prefix("\u{0}hex:")
            .unwrap_or_else(|| panic!("not lossless: {stored:?}"));
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let p = Path::new(std::ffi::OsStr::from_bytes(&bytes));
        assert!(p.is_absolute(), "{p:?}");
        assert_eq!(fs::read(p).unwrap(), b"latin");
    }
    // The script copies every hit, run from anywhere.
    let script = env.dir.path().join("r.sh");
    let out = run(&[
        "search",
        "--mask",
        "*",
        "--generate-script",
        script.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let elsewhere = tempfile::tempdir().unwrap();
    let st = Command::new("bash")
        .arg(&script)
        .arg("out")
        .current_dir(elsewhere.path())
        .status()
        .unwrap();
    assert!(st.success());
    let inc = env.increments()[0].clone();
    let got = |p: &Path| fs::read(elsewhere.path().join("out").join(p)).unwrap();
    assert_eq!(got(&Path::new(&inc).join("docs/plain.txt")), b"plain");
    assert_eq!(got(Path::new("mirror/docs/plain.txt")), b"plain");
    let raw_name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
    assert_eq!(got(&Path::new("mirror/docs").join(raw_name)), b"latin");
}

#[test]
fn export_mirror_json_for_the_original_tool() {
    let s = scenario();
    let e = &s.env;
    e.tool_ok(&["list"], 0);
    let before = Tree::exact(&e.dist).without_derived();
    // Into the backup, where the original tool reads it: the flat map.
    let out = e.tool_ok(&["export-mirror-json", "--flat"], 0);
    assert!(out.contains("wrote") && out.contains("4 entries"), "{out}");
    let flat: serde_json::Value =
        serde_json::from_slice(&fs::read(e.dist.join("mirror.json")).unwrap()).unwrap();
    let map = flat.as_object().unwrap();
    assert_eq!(map.len(), 4, "{flat}");
    for (k, v) in map {
        let md = fs::metadata(e.dist.join("mirror").join(k)).unwrap();
        assert_eq!(v["size"].as_u64(), Some(md.len()), "{k}");
        let ns = backup_tests::mtime_ns(&md);
        // Bit for bit the float Python's os.stat reports: the original tool sees it unchanged.
        let py: f64 = py_mtime(ns).parse().unwrap();
        assert_eq!(v["mtime"].as_f64(), Some(py), "{k}");
        assert_eq!(v["tracked"], !k.starts_with("untracked/"), "{k}");
    }
    // The index wrote it: the next command does not import it back.
    let v = e.tool_json(&["list"], 0);
    assert!(notes(&v).is_empty(), "{v}");
    // Nothing else changed.
    let strip = |mut t: Tree| {
        t.remove(b"mirror.json".as_slice());
        t
    };
    assert_eq!(strip(Tree::exact(&e.dist).without_derived()), strip(before));
    // Ours (schema 2), elsewhere, as JSON; and to stdout.
    let file = e.dir.path().join("state.json");
    let v = e.tool_json(&["export-mirror-json", file.to_str().unwrap()], 0);
    assert_eq!(v["entries"], 4);
    assert_eq!(v["format"], "schema-2");
    let ours: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(ours["schema_version"], 2);
    assert_eq!(ours["files"].as_object().unwrap().len(), 4);
    assert!(ours["files"]["projects/a.py"]["hash"].is_string(), "{ours}");
    let piped = e.tool_ok(&["export-mirror-json", "-"], 0);
    let p: serde_json::Value = serde_json::from_str(&piped).unwrap();
    assert_eq!(p["files"], ours["files"]);
}
