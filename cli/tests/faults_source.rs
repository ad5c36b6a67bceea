//! Faults on the source side: I/O errors (a FUSE file system answering EIO for chosen files)
//! and files the user running `backup` may not read (run as `nobody` through `setpriv`, since
//! root reads everything). Each time: the run names every failed file, exits 1, keeps
//! everything else, and the next run after the fault is repaired converges.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use backup_tests::capability::{self, require};
use backup_tests::faultfs::{self, FailAt};
use backup_tests::faults::{
    assert_check_clean, assert_no_orphan_increment, assert_versions_kept, committed_versions,
};
use backup_tests::{assert_same_tree, bin, serde_json::json, text, tree, TestEnv, Tree};

fn without(t: &Tree, gone: &[&str]) -> Tree {
    let mut t = t.clone();
    for g in gone {
        t.remove(g.as_bytes());
    }
    t
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    std::fs::write(p, data).unwrap();
}

#[test]
fn eio_on_source_files_is_named_the_rest_kept_and_retried_next_time() {
    let env = TestEnv::new();
    let real = env.dir.path().join("real");
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    for i in 0..5 {
        write(
            &real,
            &format!("docs/good{i}.txt"),
            format!("good {i}").as_bytes(),
        );
    }
    write(&real, "docs/bad_read.txt", &big);
    write(&real, "docs/bad_open.txt", b"cannot even open me");
    write(&real, "music/bad_music.bin", &big);
    write(&real, "music/ok.bin", b"fine");
    let Some(fs) = require(
        "FUSE mount (/dev/fuse)",
        faultfs::mount(&real, &env.src).map_err(|e| e.to_string()),
    ) else {
        return;
    };
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["music"]}));
    let bad = [
        "docs/bad_read.txt",
        "docs/bad_open.txt",
        "music/bad_music.bin",
    ];
    fs.set_fault(bad[0], Some(FailAt::Read));
    fs.set_fault(bad[1], Some(FailAt::Open));
    fs.set_fault(bad[2], Some(FailAt::Read));

    // 1. First run: three files fail, everything else is backed up.
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
    for b in bad {
        assert!(se.contains(b), "the error for {b} is not named:\n{se}");
    }
    assert_eq!(fs.served_errors().len(), 3, "every fault was hit");
    assert_same_tree(&without(&tree(&real), &bad), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after EIO");
    assert_no_orphan_increment(&env.dist, "after EIO");

    // 2. The disk is repaired: the next run picks them up.
    for b in bad {
        fs.set_fault(b, None);
    }
    env.backup_ok(&[]);
    assert_same_tree(&tree(&real), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after repair");
    let stored = committed_versions(&env.dist);
    assert!(
        stored
            .values()
            .any(|t| t.contains_key(b"track/docs/bad_read.txt".as_slice())),
        "the retried file is stored in an increment"
    );

    // 3. A changed file that fails to read: the old version stays in the mirror and in the
    //    increments, and the error is named again.
    let mut big2 = big.clone();
    big2[10_000] ^= 0xff;
    write(&real, "docs/bad_read.txt", &big2);
    write(&real, "docs/good0.txt", b"good 0, changed");
    let mirror_before = tree(&env.mirror());
    fs.set_fault(bad[0], Some(FailAt::Read));
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
    assert!(se.contains(bad[0]), "{se}");
    assert_eq!(
        tree(&env.mirror()).get(bad[0].as_bytes()),
        mirror_before.get(bad[0].as_bytes()),
        "the mirror keeps the last good version"
    );
    assert_versions_kept(&env.dist, &stored, "after EIO on a changed file");
    assert_check_clean(&env.dist, "after EIO on a changed file");

    fs.set_fault(bad[0], None);
    env.backup_ok(&[]);
    assert_same_tree(&tree(&real), &tree(&env.mirror()));
    assert_versions_kept(&env.dist, &stored, "after the second repair");
    assert_check_clean(&env.dist, "after the second repair");
}

/// `cmd` as `nobody:nogroup` with no supplementary groups.
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    c
}

fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn unreadable_files_as_an_unprivileged_user_are_named_and_retried() {
    if require("root (to switch to nobody)", capability::root()).is_none() {
        return;
    }
    let probe = capability::run_probe(as_nobody(Path::new("true")).stdin(Stdio::null()));
    if require("setpriv --reuid=nobody (util-linux)", probe).is_none() {
        return;
    }
    let env = TestEnv::new();
    // tempfile makes 0700 folders; nobody must reach src, dist and the config.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write("docs/a.txt", b"readable");
    env.write("docs/secret.txt", b"root only");
    env.write("docs/locked/inside.txt", b"in a folder nobody may list");
    env.write("docs/ok/b.txt", b"readable too");
    env.config(json!({"track_dirs": ["docs"]}));
    std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown_nobody(&env.src);
    std::fs::create_dir(&env.dist).unwrap();
    chown_nobody(&env.dist);
    // Owned by root, no permission for others.
    let secret = env.src.join("docs/secret.txt");
    let locked = env.src.join("docs/locked");
    Command::new("chown")
        .arg("root:root")
        .arg(&secret)
        .status()
        .unwrap();
    Command::new("chown")
        .arg("root:root")
        .arg(&locked)
        .status()
        .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();

    // Copies of the binaries nobody can reach wherever the checkout lies.
    let bins = env.dir.path().join("bin");
    std::fs::create_dir(&bins).unwrap();
    for b in ["backup", "backup-tool"] {
        std::fs::copy(bin(b), bins.join(b)).unwrap();
        std::fs::set_permissions(bins.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = || {
        as_nobody(&bins.join("backup"))
            .arg("--config")
            .arg(&env.config_path)
            .output()
            .expect("run backup as nobody")
    };
    let out = run();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
    assert!(
        se.contains("docs/secret.txt"),
        "unreadable file not named:\n{se}"
    );
    assert!(
        se.contains("docs/locked"),
        "unreadable folder not named:\n{se}"
    );
    let mirror = tree(&env.mirror());
    assert!(mirror.contains_key(b"docs/a.txt".as_slice()));
    assert!(mirror.contains_key(b"docs/ok/b.txt".as_slice()));
    assert!(!mirror.contains_key(b"docs/secret.txt".as_slice()));
    let check = as_nobody(&bins.join("backup-tool"))
        .arg(&env.dist)
        .arg("check")
        .output()
        .unwrap();
    assert!(check.status.success(), "{:?}", text(&check));

    // The user fixes the permissions; the next run converges.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after fixing permissions");
    assert_no_orphan_increment(&env.dist, "after fixing permissions");
}

#[test]
fn symlink_loops_are_stored_as_links_never_followed() {
    let env = TestEnv::new();
    env.write("docs/a.txt", b"a");
    std::fs::create_dir_all(env.src.join("docs/sub")).unwrap();
    std::os::unix::fs::symlink(".", env.src.join("docs/self")).unwrap();
    std::os::unix::fs::symlink("..", env.src.join("docs/sub/up")).unwrap();
    std::os::unix::fs::symlink("loop2", env.src.join("docs/loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", env.src.join("docs/loop2")).unwrap();
    std::os::unix::fs::symlink(&env.src, env.src.join("docs/root")).unwrap();
    env.config(json!({"track_dirs": ["docs"], "track_files": ["docs/self/a.txt"]}));
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{so}\n{se}");
    assert!(!se.contains("panicked"), "{se}");
    // Every link is in the mirror as a link, nothing was followed into a loop.
    let src = tree(&env.src);
    let mirror = tree(&env.mirror());
    assert_same_tree(&src, &mirror);
    assert_check_clean(&env.dist, "after loops");
    let out = env.backup(&["--json", "-q"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    let v: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert!(
        v["increment"].is_null(),
        "a second run stored something: {so}"
    );
}

#[test]
fn a_source_changing_during_the_run_finishes_sensibly_and_then_converges() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = TestEnv::new();
    for i in 0..300 {
        env.write(
            format!("docs/d{}/f{i}.txt", i % 10),
            format!("file {i}").repeat(50).as_bytes(),
        );
    }
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let src = env.src.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let d = src.join(format!("docs/d{}", n % 12));
                let _ = std::fs::create_dir_all(&d);
                let _ = std::fs::write(
                    d.join(format!("churn{}.txt", n % 40)),
                    n.to_string().repeat(100),
                );
                let _ =
                    std::fs::remove_file(src.join(format!("docs/d{}/f{}.txt", n % 10, n % 300)));
                let _ = std::fs::remove_file(d.join(format!("churn{}.txt", (n + 20) % 40)));
                if n.is_multiple_of(50) {
                    // A whole folder vanishes and comes back.
                    let gone = src.join(format!("docs/d{}", 10 + n % 2));
                    let _ = std::fs::remove_dir_all(&gone);
                }
            }
            n
        })
    };
    let mut codes = Vec::new();
    for round in 0..6 {
        let recorded = committed_versions(&env.dist);
        let out = env.backup(&[]);
        let (so, se) = text(&out);
        assert!(!se.contains("panicked"), "{se}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "round {round}: {so}\n{se}"
        );
        codes.push(out.status.code());
        assert_versions_kept(&env.dist, &recorded, "during churn");
        assert_check_clean(&env.dist, "during churn");
        assert_no_orphan_increment(&env.dist, "during churn");
    }
    stop.store(true, Ordering::Relaxed);
    let changes = churn.join().unwrap();
    assert!(changes > 100, "the source hardly changed ({changes})");
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after churn");
    eprintln!("exit codes during churn: {codes:?}, {changes} source changes");
}
