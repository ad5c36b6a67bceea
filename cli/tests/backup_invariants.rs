//! Invariants 1–3 of `docs/format.md` and its rules for how a run writes, on the real `backup` binary.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backup_tests::{assert_same_tree, set_mtime, text, tree, TestEnv, Tree};
use serde_json::json;

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
}

/// Invariant 1: a version stored in an increment never changes afterwards, even when the file
/// is changed in place in the source (what the original tool got wrong).
#[test]
fn history_is_never_rewritten() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let f = env.write("docs/a.txt", b"version one");
    set_mtime(&f, 1_600_000_000, 1);
    env.write("docs/other.txt", b"stays");
    env.backup_ok(&[]);
    // Second and third versions written *into the same source inode*.
    std::fs::write(&f, b"version two, longer").unwrap();
    set_mtime(&f, 1_600_000_100, 2);
    env.backup_ok(&[]);
    std::fs::write(&f, b"v3").unwrap();
    set_mtime(&f, 1_600_000_200, 3);
    env.backup_ok(&[]);

    let incs = env.increments();
    assert_eq!(incs.len(), 3, "{incs:?}");
    let expect: [&[u8]; 3] = [b"version one", b"version two, longer", b"v3"];
    for (name, want) in incs.iter().zip(expect) {
        assert_eq!(
            read(env.dist.join(name).join("track/docs/a.txt")),
            want,
            "{name}"
        );
    }
    assert_eq!(read(env.mirror().join("docs/a.txt")), b"v3");
    let meta = env.increment_meta(&incs[1]);
    let e = &meta["file_catalog"]["docs/a.txt"];
    assert_eq!(e["op"], "changed");
    assert_eq!(e["size"], 19);
    assert_eq!(e["mtime_ns"], 1_600_000_100_000_000_002i64);
    assert_eq!(
        e["hash"].as_str().unwrap(),
        blake3::hash(b"version two, longer").to_hex().as_str()
    );
    assert_eq!(
        env.increment_meta(&incs[0])["file_catalog"]["docs/a.txt"]["op"],
        "new"
    );
    // The unchanged file keeps pointing at the increment that stored its version.
    let index = env.mirror_state();
    assert_eq!(
        index["files"]["docs/other.txt"]["version_of"],
        incs[0].as_str()
    );
    assert_eq!(index["files"]["docs/a.txt"]["version_of"], incs[2].as_str());
}

/// Invariant 2: deleting an increment leaves every other one (and the mirror) intact, and the
/// next run still works.
#[test]
fn increments_are_independent() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let mut expected = Vec::new();
    for i in 0..3 {
        let f = env.write(
            "docs/a.txt",
            format!("content {i}").repeat(i + 1).as_bytes(),
        );
        set_mtime(&f, 1_600_000_000 + i as i64, 0);
        env.write(format!("docs/only{i}.txt"), b"x");
        if i == 2 {
            env.remove("docs/only0.txt");
        }
        env.backup_ok(&[]);
        let name = env.increments().last().unwrap().clone();
        expected.push((name.clone(), tree(&env.dist.join(&name))));
    }
    let mirror_before = tree(&env.mirror());
    std::fs::remove_dir_all(env.dist.join(&expected[1].0)).unwrap();
    for (name, t) in [&expected[0], &expected[2]] {
        assert_same_tree(t, &tree(&env.dist.join(name)));
    }
    assert_same_tree(&mirror_before, &tree(&env.mirror()));
    // The deleted/ link of the third increment holds only0's last version.
    assert_eq!(
        read(env.dist.join(&expected[2].0).join("deleted/docs/only0.txt")),
        b"x"
    );
    let meta = env.increment_meta(&expected[2].0);
    assert_eq!(
        meta["file_catalog"]["docs/only0.txt"]["version_of"],
        expected[0].0.as_str()
    );
    // Copying one elsewhere and removing the original does not hurt the others either.
    let moved = env.dir.path().join("moved");
    std::fs::rename(env.dist.join(&expected[0].0), &moved).unwrap();
    assert_same_tree(&expected[0].1, &tree(&moved));
    assert_same_tree(&expected[2].1, &tree(&env.dist.join(&expected[2].0)));
    env.write("docs/a.txt", b"after the removals");
    env.backup_ok(&[]);
    assert_same_tree(
        &tree(&env.src.join("docs")),
        &tree(&env.mirror().join("docs")),
    );
}

fn selection(env: &TestEnv, dirs: &[&str]) -> Tree {
    let mut all = Tree::default();
    for d in dirs {
        for (k, v) in tree(&env.src.join(d)) {
            let mut key = d.as_bytes().to_vec();
            key.push(b'/');
            key.extend(k);
            all.insert(key, v);
        }
    }
    all
}

/// Invariant 3: the mirror equals the selection — content, size, mtime, permissions,
/// symlinks as symlinks, special files skipped with a note, hostile names byte-exact.
#[test]
fn mirror_equals_selection_with_hostile_names() {
    let env = TestEnv::new();
    env.config(json!({
        "track_dirs": ["docs"],
        "include_dirs": ["data"],
        "preserved_dirs": [".git"]
    }));
    let mut paths = vec![
        env.write("docs/plain.txt", b"plain"),
        env.write("docs/empty", b""),
        env.write("docs/-leading-dash", b"dash"),
        env.write("docs/new\nline", b"newline in the name"),
        env.write("docs/space and 'quote\"", b"quotes"),
        env.write("data/exec.sh", b"#!/bin/sh\necho hi\n"),
        env.write("data/secret", b"private"),
        env.write("data/readonly", b"ro"),
    ];
    paths.push(env.write_raw("docs", b"latin1-\xe9t\xe9", b"not utf-8"));
    let long = "n".repeat(255);
    paths.push(env.write(format!("docs/{long}"), b"255 bytes"));
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    paths.push(env.write(format!("docs/{deep}deep.txt"), b"deep"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    paths.push(env.write("data/big.bin", &big));
    std::fs::set_permissions(
        env.src.join("data/exec.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        env.src.join("data/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        env.src.join("data/readonly"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    for (i, p) in paths.iter().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64, 123_456_789);
    }
    std::os::unix::fs::symlink("../data/exec.sh", env.src.join("docs/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.src.join("docs/outside-link")).unwrap();
    std::os::unix::fs::symlink(env.dir.path(), env.src.join("data/dir-link")).unwrap();
    set_mtime(&env.src.join("docs/outside-link"), 1_400_000_000, 5);
    let fifo = env.src.join("data/a-fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::fs::create_dir_all(env.src.join("data/repo/.git/refs/tags")).unwrap();
    env.write("data/repo/.git/HEAD", b"ref: refs/heads/main\n");

    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(
        se.contains("a-fifo"),
        "FIFO should be named in a note: {se}"
    );

    let mut want = selection(&env, &["docs", "data"]);
    want.remove(b"data/a-fifo".as_slice());
    assert_same_tree(&want, &tree(&env.mirror()));
    // Never followed: the link to a directory stays a link.
    assert!(
        std::fs::symlink_metadata(env.mirror().join("data/dir-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Non-UTF-8 names are stored losslessly in the metadata.
    let index = env.mirror_state().to_string();
    assert!(
        index.contains("\\u0000hex:"),
        "non-UTF-8 name must use the hex form"
    );
    let inc = &env.increments()[0];
    assert!(env
        .dist
        .join(inc)
        .join("track/docs")
        .join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9"))
        .exists());

    // Changes, deletions, selection changes: the mirror follows, empty dirs go (not .git's).
    env.remove(format!("docs/{deep}deep.txt"));
    env.remove("data/secret");
    std::fs::remove_file(env.src.join("data/repo/.git/HEAD")).unwrap();
    let p = env.write("docs/plain.txt", b"plain, edited");
    set_mtime(&p, 1_700_000_000, 0);
    std::fs::set_permissions(
        env.src.join("data/exec.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    env.backup_ok(&[]);
    let mut want = selection(&env, &["docs", "data"]);
    want.remove(b"data/a-fifo".as_slice());
    assert_same_tree(&want, &tree(&env.mirror()));
    assert!(
        !env.mirror().join("docs/d0").exists(),
        "emptied directories are pruned"
    );
    assert!(
        env.mirror().join("data/repo/.git").is_dir(),
        "preserved dirs stay, even empty"
    );
    let inc2 = env.increments().last().unwrap().clone();
    let meta = env.increment_meta(&inc2);
    assert_eq!(
        meta["file_catalog"][format!("docs/{deep}deep.txt")]["op"],
        "deleted"
    );
    assert_eq!(meta["file_catalog"]["docs/plain.txt"]["op"], "changed");
    assert!(
        meta["file_catalog"].get("data/secret").is_none(),
        "untracked files have no history"
    );

    // Dropping a directory from the selection removes it from the mirror.
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    assert!(!env.mirror().join("data").exists());
    assert_same_tree(&selection(&env, &["docs"]), &tree(&env.mirror()));
}

#[test]
fn same_second_runs_get_distinct_increments() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let mut names = Vec::new();
    for i in 0..4 {
        let f = env.write("docs/a", format!("{i}").as_bytes());
        set_mtime(&f, 1_600_000_000 + i, 0);
        let s = env.backup_json();
        names.push(s["increment"].as_str().expect("an increment").to_owned());
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "distinct and sorted by run order");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            read(env.dist.join(n).join("track/docs/a")),
            format!("{i}").as_bytes()
        );
    }
}

#[test]
fn untracked_change_updates_mirror_without_increment() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["data"]}));
    env.write("docs/a", b"a");
    env.write("data/b", b"b");
    env.backup_ok(&[]);
    let f = env.write("data/b", b"b2");
    set_mtime(&f, 1_600_000_000, 0);
    let s = env.backup_json();
    assert!(s["increment"].is_null(), "{s}");
    assert_eq!(s["copied"], 1);
    assert_eq!(env.increments().len(), 1);
    assert_eq!(read(env.mirror().join("data/b")), b"b2");
    // Nothing changed at all: nothing is written, not even the index.
    let before = env.index_bytes();
    let s = env.backup_json();
    assert_eq!(s["copied"], 0);
    assert_eq!(s["unchanged"], 2);
    assert!(
        before == env.index_bytes(),
        "a run with no change wrote to the index"
    );
}

/// A file that keeps changing while it is copied is reported (exit 1, named) and never
/// recorded as a good version.
#[test]
fn file_changing_during_copy_is_never_recorded_as_good() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "max_workers": 1}));
    env.write("docs/calm", b"calm");
    // Big enough that a copy lasts many of the writer's beats even on a busy machine.
    let busy = env.write("docs/busy.log", &vec![b'x'; 64 << 20]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&busy)
                .unwrap();
            // Bounded, so a hung run can never fill the disk.
            let mut written = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 256 << 20 {
                f.write_all(&[b'y'; 512]).unwrap();
                written += 512;
                // Often enough to move the mtime during every copy, slowly enough to stay small.
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        })
    };
    let out = env.backup(&["--json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
    assert!(
        se.contains("docs/busy.log") && se.contains("kept changing"),
        "{se}"
    );
    let s: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(s["errors"][0]["path"], "docs/busy.log");
    let index = env.mirror_state();
    assert!(index["files"].get("docs/busy.log").is_none());
    assert!(index["files"].get("docs/calm").is_some());
    assert!(!env.mirror().join("docs/busy.log").exists());
    let inc = &env.increments()[0];
    assert!(env.increment_meta(inc)["file_catalog"]
        .get("docs/busy.log")
        .is_none());
    assert!(!env.dist.join(inc).join("track/docs/busy.log").exists());
    // Once it is calm, the next run stores it.
    env.backup_ok(&[]);
    assert_eq!(
        read(env.mirror().join("docs/busy.log")),
        read(env.src.join("docs/busy.log"))
    );
}

#[test]
fn checksum_mode_finds_content_changes_with_same_size_and_mtime() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let f = env.write("docs/a", b"aaaa");
    set_mtime(&f, 1_600_000_000, 0);
    env.backup_ok(&[]);
    std::fs::write(&f, b"bbbb").unwrap();
    set_mtime(&f, 1_600_000_000, 0);
    let s = env.backup_json();
    assert_eq!(s["copied"], 0, "size+mtime compare cannot see it");
    let s: serde_json::Value =
        serde_json::from_str(&env.backup_ok(&["--checksum", "--json", "-q"])).unwrap();
    assert_eq!(s["changed"], 1);
    assert_eq!(read(env.mirror().join("docs/a")), b"bbbb");
    let incs = env.increments();
    assert_eq!(read(env.dist.join(&incs[0]).join("track/docs/a")), b"aaaa");
}

/// Bit rot in the mirror (a flipped byte, size and mtime unchanged): a plain run cannot see
/// it; `--checksum` copies the file again from the source and says so, without making an
/// increment; the increment that shares the damaged inode is never rewritten (history is
/// immutable) and `check --verify` names it.
#[test]
fn checksum_repairs_a_damaged_mirror_copy_and_check_names_the_increment_s() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let f = env.write("docs/a", b"the original bytes");
    set_mtime(&f, 1_600_000_000, 0);
    env.backup_ok(&[]);
    let incs = env.increments();
    let mirror = env.mirror().join("docs/a");
    let mut bytes = read(&mirror);
    bytes[4] ^= 0x20;
    std::fs::write(&mirror, &bytes).unwrap();
    set_mtime(&mirror, 1_600_000_000, 0);

    let s = env.backup_json();
    assert_eq!(s["copied"], 0, "size+mtime compare cannot see it: {s}");
    let s: serde_json::Value =
        serde_json::from_str(&env.backup_ok(&["--checksum", "--json", "-q"])).unwrap();
    assert_eq!(s["repaired"], 1, "{s}");
    assert_eq!(read(&mirror), b"the original bytes");
    assert_eq!(
        env.increments(),
        incs,
        "a repair is not a change: no increment"
    );
    let human = env.backup_ok(&["--checksum"]);
    assert!(
        human.contains("0 copied"),
        "nothing left to repair: {human}"
    );
    // The increment's copy was the same inode: still damaged, and named.
    let out = env.tool(&[env.dist.to_str().unwrap(), "check", "--verify"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    let said = format!("{so}{se}");
    assert!(
        said.contains(&incs[0]) && said.contains("docs/a content differs from recorded hash"),
        "{said}"
    );
}

/// A damaged index (truncated by a failing disk, edited by hand) is set aside and rebuilt from
/// the mirror and the catalogs; the run converges, stores nothing again, and history stays
/// whole.
#[test]
fn damaged_mirror_index_is_rebuilt_from_the_mirror() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["data"]}));
    env.write("docs/a", b"a1");
    env.write("data/b", b"b1");
    env.backup_ok(&[]);
    let first = env.increments()[0].clone();
    let kept = tree(&env.dist.join(&first));
    let index = env.dist.join(".backup-index.sqlite");
    let bytes = read(&index);
    std::fs::write(&index, &bytes[..bytes.len() / 2]).unwrap();
    let f = env.write("docs/a", b"a2, changed");
    set_mtime(&f, 1_700_000_000, 0);
    let out = env.backup(&["--json"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    let s: serde_json::Value = serde_json::from_str(&so).unwrap();
    // Only the one changed file is stored: the rebuilt index knew the rest.
    assert_eq!(
        (s["copied"].as_u64(), s["changed"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(
        se.contains("damaged") || so.contains("damaged"),
        "said once: {se}"
    );
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    assert_same_tree(&kept, &tree(&env.dist.join(&first)));
    let s = env.backup_json();
    assert_eq!(s["copied"], 0, "index agrees with the mirror again: {s}");
    let idx = env.mirror_state();
    assert_eq!(idx["files"]["data/b"]["tracked"], false);
}

/// A first run over a source where nothing is selected yet is a backup of nothing: every
/// command opens it (it used to be "not a backup"), and nothing is said about rebuilding.
#[test]
fn a_first_run_with_nothing_selected_leaves_a_backup_every_command_opens() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    let dist = env.dist.to_str().unwrap();
    for args in [vec!["list"], vec!["check"], vec!["search", "--mask", "*"]] {
        let mut full = vec![dist];
        full.extend(args.iter().copied());
        let out = env.tool(&full);
        let (so, se) = text(&out);
        assert!(out.status.success(), "{args:?}: {so}{se}");
        assert!(!se.contains("rebuilt"), "{args:?}: {se}");
    }
    env.write("docs/a.txt", b"now something");
    env.backup_ok(&[]);
    assert_eq!(env.increments().len(), 1);
}
