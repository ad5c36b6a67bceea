//! `backup-tool restore` and `search --generate-script` through the real binary, including
//! crafted metadata and increment trees that try to steer writes or reads outside.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use backup_tests::{put, scenario, tree, TestEnv, Tree};

#[test]
fn restores_each_point_in_time_with_mtimes_and_modes() {
    let env = TestEnv::new();
    env.write_next("projects/a.py", b"one");
    env.write_next("projects/run.sh", b"#!/bin/sh\n");
    fs::set_permissions(
        env.src.join("projects/run.sh"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    fs::set_permissions(
        env.src.join("projects/a.py"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.py", env.src.join("projects/link")).unwrap();
    let mut snapshots = Vec::new();
    let i1 = env.backup_all().unwrap();
    snapshots.push((i1.clone(), tree(&env.src)));
    env.write_next("projects/a.py", b"two, longer");
    env.write_next("docs/new.md", b"new");
    let i2 = env.backup_all().unwrap();
    snapshots.push((i2.clone(), tree(&env.src)));
    env.remove("projects/run.sh");
    // Names carry seconds: a later second lets a time name increment 2 but not 3.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let i3 = env.backup_all().unwrap();
    snapshots.push((i3.clone(), tree(&env.src)));
    for (name, expected) in &snapshots {
        let to = env.dir.path().join(format!("r-{name}"));
        env.tool_ok(&["restore", "--at", name, "--to", to.to_str().unwrap()], 0);
        assert_eq!(&tree(&to), expected, "restore at {name}");
        assert!(fs::symlink_metadata(to.join("projects/link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // A time resolves to the newest increment at or before it.
    let t = backup_core::IncrementName::parse(&i2).unwrap().stamp();
    let to = env.dir.path().join("r-time");
    let when = t.format("%Y-%m-%d %H:%M:%S").to_string();
    env.tool_ok(&["restore", "--at", &when, "--to", to.to_str().unwrap()], 0);
    assert_eq!(tree(&to), snapshots[1].1);
    // Without --at: the mirror, i.e. the current state.
    let to = env.dir.path().join("r-mirror");
    env.tool_ok(&["restore", "--to", to.to_str().unwrap()], 0);
    assert_eq!(tree(&to), tree(&env.src));
    // Before the first increment there is nothing.
    assert_eq!(
        env.tool_dist(&["restore", "--at", "2000-01-01", "--to", "x"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn selection_dry_run_and_overwrite_modes() {
    let s = scenario();
    let e = &s.env;
    let to = e.dir.path().join("r");
    let dest = to.to_str().unwrap();
    // Dry run: says what it would do and creates nothing.
    let out = e.tool_ok(
        &["restore", "--at", &s.incs[1], "--to", dest, "--dry-run"],
        0,
    );
    assert!(
        out.contains("would restore") && out.contains("b.pdf"),
        "{out}"
    );
    assert!(!to.exists());
    // A folder and a glob.
    let v = e.tool_json(
        &[
            "restore",
            "projects/sub",
            "*.md",
            "--at",
            &s.incs[1],
            "--to",
            dest,
        ],
        0,
    );
    // Folders made on the way are listed too, each before its contents.
    let restored: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        restored,
        vec![
            ("docs", "mkdir"),
            ("docs/readme.md", "create"),
            ("projects", "mkdir"),
            ("projects/sub", "mkdir"),
            ("projects/sub/c.py", "create")
        ]
    );
    assert!(!to.join("projects/a.py").exists());
    assert_eq!(
        fs::read(to.join("docs/readme.md")).unwrap(),
        b"# readme v1\n"
    );
    // never (default): an existing file is kept.
    fs::write(to.join("docs/readme.md"), b"local edit").unwrap();
    e.tool_ok(
        &[
            "restore",
            "docs/readme.md",
            "--at",
            &s.incs[1],
            "--to",
            dest,
        ],
        0,
    );
    assert_eq!(fs::read(to.join("docs/readme.md")).unwrap(), b"local edit");
    // if-changed: replaced when different, skipped when already equal.
    // Restores docs/readme.md at increment I with an --overwrite mode, as JSON.
    let readme_at = |i: usize, mode: &str| {
        e.tool_json(
            &[
                "restore",
                "docs/readme.md",
                "--at",
                &s.incs[i],
                "--to",
                dest,
                "--overwrite",
                mode,
            ],
            0,
        )
    };
    let v = readme_at(1, "if-changed");
    assert_eq!(v["results"][0]["action"], "replace");
    assert_eq!(
        fs::read(to.join("docs/readme.md")).unwrap(),
        b"# readme v1\n"
    );
    let v = readme_at(1, "if-changed");
    assert_eq!(v["results"][0]["action"], "skip-unchanged");
    // always: replaced even when equal.
    let v = readme_at(2, "always");
    assert_eq!(v["results"][0]["action"], "replace");
    assert_eq!(
        fs::read(to.join("docs/readme.md")).unwrap(),
        b"# readme, second edition\n"
    );
    // Nothing matches: status 1 and a message.
    let out = e.tool_dist(&["restore", "no/such", "--to", dest]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn odd_names_round_trip_through_restore_and_generated_script() {
    let env = TestEnv::new();
    let names: Vec<&[u8]> = vec![
        b"odd/with space.txt",
        b"odd/it's \"quoted\".txt",
        b"odd/new\nline.txt",
        b"odd/-leading-dash",
        b"odd/$(touch pwned)`x`",
        b"odd/caf\xe9-latin1.txt",
        b"odd/back\\slash",
    ];
    for (k, n) in names.iter().enumerate() {
        let p = env.src.join(std::ffi::OsStr::from_bytes(n));
        put(&p, format!("content {k}").as_bytes());
    }
    env.backup_all().unwrap();
    let to = env.dir.path().join("restored");
    env.tool_ok(&["restore", "--to", to.to_str().unwrap()], 0);
    assert_eq!(tree(&to), tree(&env.src));

    let script = env.dir.path().join("restore.sh");
    env.tool_ok(
        &[
            "search",
            "--mask",
            "odd/*",
            "--generate-script",
            script.to_str().unwrap(),
        ],
        0,
    );
    let target = env.dir.path().join("by-script");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&target)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !env.dir.path().join("pwned").exists(),
        "the script ran a name as code"
    );
    // Two places hold each file: the increment and the mirror.
    let inc = env.increments()[0].clone();
    for n in &names {
        for place in [inc.as_str(), "mirror"] {
            let p = target.join(place).join(std::ffi::OsStr::from_bytes(n));
            let src = env.src.join(std::ffi::OsStr::from_bytes(n));
            assert_eq!(fs::read(&p).unwrap(), fs::read(&src).unwrap(), "{p:?}");
            assert_eq!(
                fs::metadata(&p).unwrap().mtime(),
                fs::metadata(&src).unwrap().mtime()
            );
        }
    }
}

/// A backup whose single increment's metadata and tree are written by hand.
fn crafted(catalog: serde_json::Value, setup: impl FnOnce(&Path)) -> (TestEnv, String) {
    let env = TestEnv::new();
    let name = "backup_20240105_100000".to_owned();
    let inc = env.dist.join(&name);
    fs::create_dir_all(inc.join("track")).unwrap();
    fs::create_dir_all(env.dist.join("mirror")).unwrap();
    setup(&inc);
    let meta = serde_json::json!({
        "version": 2, "timestamp": "2024-01-05T10:00:00", "backup_name": name,
        "file_catalog": catalog,
    });
    put(
        &inc.join(format!("{name}.json")),
        meta.to_string().as_bytes(),
    );
    (env, name)
}

fn entry(size: u64) -> serde_json::Value {
    serde_json::json!({"size": size, "mtime": 1704448800.0, "category": "tracked", "op": "new"})
}

#[test]
fn crafted_paths_in_metadata_never_escape_the_target() {
    let outside = tempfile::tempdir().unwrap();
    let mut cat = serde_json::Map::new();
    cat.insert("../escape.txt".into(), entry(1));
    cat.insert("a/../../escape2.txt".into(), entry(1));
    cat.insert(format!("{}/abs.txt", outside.path().display()), entry(1));
    // "\0hex:" form of "../hex.txt".
    cat.insert(format!("\u{0}hex:{}", hex(b"../hex.txt")), entry(1));
    cat.insert("ok.txt".into(), entry(2));
    let (env, name) = crafted(serde_json::Value::Object(cat), |inc| {
        put(&inc.join("track/ok.txt"), b"ok");
        put(&inc.join("escape.txt"), b"x");
    });
    let to = env.dir.path().join("deep/target");
    let v = env.tool_json(&["restore", "--at", &name, "--to", to.to_str().unwrap()], 0);
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(fs::read(to.join("ok.txt")).unwrap(), b"ok");
    assert_eq!(
        fs::read_dir(env.dir.path().join("deep")).unwrap().count(),
        1,
        "only the target inside deep/"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    // check names the skipped entries.
    let c = env.tool_json(&["check"], 1);
    let bad = c["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "bad-metadata")
        .count();
    assert_eq!(bad, 4, "{c}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn symlinks_inside_increments_are_never_followed_when_reading() {
    let outside = tempfile::tempdir().unwrap();
    put(&outside.path().join("secret.txt"), b"SECRET");
    let o = outside.path().to_path_buf();
    let cat = serde_json::json!({
        "linked/secret.txt": entry(6),
        "plain.txt": entry(6),
        "good.txt": entry(4),
    });
    let (env, name) = crafted(cat, |inc| {
        // track/linked -> outside folder; track/plain.txt -> outside file (recorded as a file).
        std::os::unix::fs::symlink(&o, inc.join("track/linked")).unwrap();
        std::os::unix::fs::symlink(o.join("secret.txt"), inc.join("track/plain.txt")).unwrap();
        put(&inc.join("track/good.txt"), b"good");
    });
    let to = env.dir.path().join("target");
    let out = env.tool_dist(&["restore", "--at", &name, "--to", to.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "per-file failures give status 1"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linked/secret.txt") && err.contains("plain.txt"),
        "{err}"
    );
    assert_eq!(fs::read(to.join("good.txt")).unwrap(), b"good");
    for e in walkdir::WalkDir::new(&to) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_ne!(fs::read(e.path()).unwrap(), b"SECRET", "{:?}", e.path());
        }
    }
}

#[test]
fn never_writes_through_symlinks_in_the_target() {
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path().to_path_buf();
    put(&o.join("victim.txt"), b"victim");
    // Increment 1 stores a symlink `link` -> outside; increment 2 a real folder's file
    // `link/pwned.txt` (readable without following anything). The fold at increment 2 holds
    // both, so the restore would write pwned.txt through the symlink it has just created.
    let cat = serde_json::json!({
        "link": {"size": 3, "mtime": 1704448800.0, "category": "tracked", "op": "new", "kind": "symlink"},
        "dir/file.txt": entry(4),
        "victim.txt": entry(4),
    });
    let (env, _) = crafted(cat, |inc| {
        std::os::unix::fs::symlink(&o, inc.join("track/link")).unwrap();
        put(&inc.join("track/dir/file.txt"), b"file");
        put(&inc.join("track/victim.txt"), b"evil");
    });
    let second = "backup_20240106_100000";
    let inc2 = env.dist.join(second);
    put(&inc2.join("track/link/pwned.txt"), b"pwned");
    let meta = serde_json::json!({
        "version": 2, "timestamp": "2024-01-06T10:00:00", "backup_name": second,
        "file_catalog": {"link/pwned.txt": entry(5)},
    });
    put(
        &inc2.join(format!("{second}.json")),
        meta.to_string().as_bytes(),
    );
    let to = env.dir.path().join("target");
    fs::create_dir_all(&to).unwrap();
    // Present before the restore: dir -> outside, victim.txt -> outside/victim.txt.
    std::os::unix::fs::symlink(&o, to.join("dir")).unwrap();
    std::os::unix::fs::symlink(o.join("victim.txt"), to.join("victim.txt")).unwrap();
    let out = env.tool_dist(&[
        "restore",
        "--at",
        second,
        "--to",
        to.to_str().unwrap(),
        "--overwrite",
        "always",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dir/file.txt"), "{err}");
    // `link` is both a symlink (increment 1) and a folder (increment 2's link/pwned.txt).
    // The index's snapshot resolves such a name as the folder: pwned.txt lands in a real
    // folder `link`. Had the symlink been restored, pwned.txt would have been refused.
    let link = fs::symlink_metadata(to.join("link")).unwrap();
    if link.file_type().is_symlink() {
        assert!(err.contains("link/pwned.txt"), "{err}");
    } else {
        assert!(link.is_dir());
        assert_eq!(fs::read(to.join("link/pwned.txt")).unwrap(), b"pwned");
    }
    // Nothing went through a symlink: not `link`, not `dir`.
    assert!(!o.join("pwned.txt").exists());
    assert!(!o.join("file.txt").exists());
    // victim.txt: the link itself was replaced by the restored file; its target is untouched.
    assert_eq!(fs::read(o.join("victim.txt")).unwrap(), b"victim");
    assert!(fs::symlink_metadata(to.join("victim.txt"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read(to.join("victim.txt")).unwrap(), b"evil");
    assert_eq!(fs::read_dir(&o).unwrap().count(), 1);
}

#[test]
fn a_target_inside_the_backup_is_refused() {
    let s = scenario();
    let e = &s.env;
    let before = Tree::exact(&e.dist).without_derived();
    for to in [
        e.dist.join("mirror"),
        e.dist.join("new/folder"),
        e.dist.clone(),
    ] {
        let out = e.tool_dist(&[
            "restore",
            "--at",
            &s.incs[1],
            "--to",
            to.to_str().unwrap(),
            "--overwrite",
            "always",
        ]);
        assert_eq!(out.status.code(), Some(2), "{to:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("inside the backup"));
    }
    // Also through a symlink that leads into it.
    let link = e.dir.path().join("sneaky");
    std::os::unix::fs::symlink(&e.dist, &link).unwrap();
    let to = link.join("mirror/x");
    let out = e.tool_dist(&["restore", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(Tree::exact(&e.dist).without_derived(), before);
}

fn set_mtime(p: &Path, secs: i64) {
    backup_tests::set_mtime(p, secs, 0);
}

/// (path, action) of every result.
fn actions(v: &serde_json::Value) -> Vec<(String, String)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn if_newer_delete_and_dry_run_list_each_action() {
    let env = TestEnv::new();
    for n in ["a", "b", "c", "d"] {
        env.write_at(
            &format!("p/{n}.txt"),
            format!("{n} v1").as_bytes(),
            1_704_448_800,
        );
    }
    env.write_at("p/new/e.txt", b"e", 1_704_448_800);
    env.backup_all().unwrap();
    let outside = tempfile::tempdir().unwrap();
    put(&outside.path().join("keep.txt"), b"outside");
    let to = env.dir.path().join("t");
    let dest = to.to_str().unwrap();
    // Older than the version: replaced. Newer: kept. Same size and mtime: unchanged.
    put(&to.join("p/a.txt"), b"a local");
    set_mtime(&to.join("p/a.txt"), 1_704_448_800 - 10);
    put(&to.join("p/b.txt"), b"b local");
    set_mtime(&to.join("p/b.txt"), 1_704_448_800 + 10);
    put(&to.join("p/c.txt"), b"c v1");
    set_mtime(&to.join("p/c.txt"), 1_704_448_800);
    // Extras: a file, a folder with contents, a symlink to a folder outside.
    put(&to.join("p/extra.txt"), b"x");
    put(&to.join("p/old/deep/x.txt"), b"x");
    std::os::unix::fs::symlink(outside.path(), to.join("p/link-out")).unwrap();
    let before = Tree::exact(&to).without_derived();
    let args = [
        "restore",
        "--to",
        dest,
        "--overwrite",
        "if-newer",
        "--delete",
    ];

    // Dry run, human: one line per action, nothing changed.
    let mut dry = args.to_vec();
    dry.push("-n");
    let out = env.tool_ok(&dry, 0);
    for line in [
        "would replace p/a.txt",
        "would skip (exists) p/b.txt",
        "would skip (unchanged) p/c.txt",
        "would create p/d.txt",
        "would mkdir p/new/",
        "would create p/new/e.txt",
        "would delete p/extra.txt",
        "would delete p/link-out",
        "would delete p/old/",
        "would restore 3 files",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
    assert_eq!(Tree::exact(&to).without_derived(), before);
    // Dry run, JSON: the same actions.
    let v = env.tool_json(&dry, 0);
    assert_eq!(v["dry_run"], true);
    let mut got = actions(&v);
    got.sort();
    let want: Vec<(String, String)> = [
        ("p/a.txt", "replace"),
        ("p/b.txt", "skip-exists"),
        ("p/c.txt", "skip-unchanged"),
        ("p/d.txt", "create"),
        ("p/extra.txt", "delete"),
        ("p/link-out", "delete"),
        ("p/new", "mkdir"),
        ("p/new/e.txt", "create"),
        ("p/old", "delete"),
    ]
    .iter()
    .map(|(p, a)| (p.to_string(), a.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(Tree::exact(&to).without_derived(), before);

    // For real.
    let v = env.tool_json(&args, 0);
    let mut real = actions(&v);
    real.sort();
    assert_eq!(real, want);
    assert_eq!(fs::read(to.join("p/a.txt")).unwrap(), b"a v1");
    assert_eq!(fs::read(to.join("p/b.txt")).unwrap(), b"b local");
    assert_eq!(fs::read(to.join("p/d.txt")).unwrap(), b"d v1");
    assert_eq!(fs::read(to.join("p/new/e.txt")).unwrap(), b"e");
    for gone in ["p/extra.txt", "p/old", "p/link-out"] {
        assert!(fs::symlink_metadata(to.join(gone)).is_err(), "{gone}");
    }
    // The symlink went, not what it pointed to.
    assert_eq!(
        fs::read(outside.path().join("keep.txt")).unwrap(),
        b"outside"
    );
    // Once more: everything is there, nothing to delete.
    let v = env.tool_json(&args, 0);
    assert!(
        actions(&v).iter().all(|(_, a)| a.starts_with("skip")),
        "{v}"
    );
}

#[test]
fn delete_removes_only_selected_extras_inside_the_target() {
    let env = TestEnv::new();
    env.write_at("p/sub/a.txt", b"a", 1_704_448_800);
    env.write_at("p/other.txt", b"o", 1_704_448_800);
    env.backup_all().unwrap();
    let outside = tempfile::tempdir().unwrap();
    put(&outside.path().join("victim/v.txt"), b"victim");
    let to = env.dir.path().join("t");
    put(&to.join("p/sub/extra.txt"), b"x");
    put(&to.join("p/not-selected.txt"), b"keep");
    put(&to.join("top-level.txt"), b"keep");
    // A symlink to a folder outside, and one where the snapshot has a folder.
    std::os::unix::fs::symlink(outside.path().join("victim"), to.join("p/sub/ln")).unwrap();
    let v = env.tool_json(
        &["restore", "p/sub", "--to", to.to_str().unwrap(), "--delete"],
        0,
    );
    let mut got = actions(&v);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("p/sub/a.txt".to_owned(), "create".to_owned()),
            ("p/sub/extra.txt".to_owned(), "delete".to_owned()),
            ("p/sub/ln".to_owned(), "delete".to_owned()),
        ]
    );
    assert!(!to.join("p/sub/extra.txt").exists());
    assert!(fs::symlink_metadata(to.join("p/sub/ln")).is_err());
    assert_eq!(fs::read(to.join("p/not-selected.txt")).unwrap(), b"keep");
    assert_eq!(fs::read(to.join("top-level.txt")).unwrap(), b"keep");
    assert_eq!(
        fs::read(outside.path().join("victim/v.txt")).unwrap(),
        b"victim"
    );
    // A symlink where the snapshot has a folder: removed, the folder restored in its place,
    // nothing written through it.
    let to2 = env.dir.path().join("t2");
    fs::create_dir_all(to2.join("p")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("victim"), to2.join("p/sub")).unwrap();
    let v = env.tool_json(&["restore", "--to", to2.to_str().unwrap(), "--delete"], 0);
    assert!(
        actions(&v).contains(&("p/sub".to_owned(), "delete".to_owned())),
        "{v}"
    );
    assert!(fs::symlink_metadata(to2.join("p/sub")).unwrap().is_dir());
    assert_eq!(fs::read(to2.join("p/sub/a.txt")).unwrap(), b"a");
    assert_eq!(
        fs::read_dir(outside.path().join("victim")).unwrap().count(),
        1
    );
}
