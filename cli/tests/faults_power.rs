//! Power-cut campaign, short mode: `dist` on LazyFS (a FUSE file system that loses everything
//! not fsynced when the power goes), cuts at random moments of `backup` and right after it
//! exits 0. The long mode (≥ 50 trials) is `scripts/power_campaign.sh`.

use backup_tests::power::{power_campaign, PowerOptions};

#[test]
fn a_power_cut_loses_nothing_a_finished_run_stored_and_the_next_run_converges() {
    let opts = PowerOptions::from_env(4, 150);
    let Some(r) = power_campaign(&opts) else {
        return;
    };
    eprintln!("{r:?}");
    assert_eq!(r.trials, opts.trials);
    // The campaign must cut both during runs and after them, or it proves little.
    assert!(r.cuts_after_exit >= 1 && r.cuts_mid_run >= 1, "{r:?}");
    assert!(r.increments_verified >= 1, "{r:?}");
}

/// What a drive that did not keep what it was told to (or a run of an older version) leaves:
/// an increment whose metadata is written while some of its files are missing or wrong, and
/// the journal still there. Recovery puts back what the mirror still holds and names what is
/// lost; `check --verify` is then truthful and clean.
#[test]
fn recovery_puts_back_or_names_what_a_recorded_increment_lacks() {
    use backup_tests::{text, TestEnv};
    let env = TestEnv::new();
    for (f, body) in [
        ("a", "alpha"),
        ("b", "bravo"),
        ("c", "charlie"),
        ("d", "delta"),
    ] {
        env.write(format!("docs/{f}.txt"), body.as_bytes());
    }
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    let inc = env.increments().pop().expect("an increment");
    let track = env.dist.join(&inc).join("track/docs");
    // Missing (the mirror still has it), emptied (a new empty inode), missing everywhere.
    std::fs::remove_file(track.join("a.txt")).unwrap();
    std::fs::remove_file(track.join("b.txt")).unwrap();
    std::fs::write(track.join("b.txt"), b"").unwrap();
    std::fs::remove_file(track.join("c.txt")).unwrap();
    std::fs::remove_file(env.mirror().join("docs/c.txt")).unwrap();
    std::fs::write(
        env.dist.join(".backup-journal.json"),
        serde_json::to_vec(&serde_json::json!({
            "increment": inc, "started": "2026-01-01T00:00:00+00:00", "pid": 1
        }))
        .unwrap(),
    )
    .unwrap();

    let out = env.backup(&[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("docs/c.txt") && stderr.contains("not on the disk"),
        "the lost version must be named: {stderr}"
    );
    assert!(
        !stderr.contains("docs/a.txt") && !stderr.contains("docs/b.txt"),
        "{stderr}"
    );
    let meta = env.increment_meta(&inc);
    let cat = meta["file_catalog"].as_object().unwrap();
    let mut names: Vec<&str> = cat.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["docs/a.txt", "docs/b.txt", "docs/d.txt"]);
    assert_eq!(std::fs::read(track.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(track.join("b.txt")).unwrap(), b"bravo");
    let check = env.tool(&[env.dist.to_str().unwrap(), "check", "--verify"]);
    assert!(check.status.success(), "{:?}", text(&check));
    // The source still has c: the next run stores it again and all is clean.
    env.backup_ok(&[]);
    let check = env.tool(&[env.dist.to_str().unwrap(), "check", "--verify"]);
    assert!(check.status.success(), "{:?}", text(&check));
}

/// Where one `syncfs` makes a run durable (ext4, XFS, tmpfs…), a cut in the middle of a run
/// can leave a copy in the partial increment whose bytes never reached the disk: delayed
/// allocation brings it back empty or short. Recovery leaves such a copy out (it would be a
/// version that never existed) and keeps the complete ones; nothing else is touched.
#[test]
fn recovery_leaves_out_copies_that_never_reached_the_disk() {
    use backup_tests::{text, TestEnv};
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"alpha v1");
    env.write("docs/b.txt", b"bravo v1");
    env.backup_ok(&[]);
    env.write("docs/a.txt", b"alpha, the second version");
    env.write("docs/b.txt", b"bravo, the second version");
    // What the cut left of a run that had stored both: a short copy of a, a whole b.
    let inc = "backup_29990101_000000";
    let track = env.dist.join(inc).join("track/docs");
    std::fs::create_dir_all(&track).unwrap();
    std::fs::write(track.join("a.txt"), b"alp").unwrap();
    std::fs::write(track.join("b.txt"), b"bravo, the second version").unwrap();
    std::fs::write(
        env.dist.join(".backup-journal.json"),
        serde_json::to_vec(&serde_json::json!({
            "increment": inc, "started": "2999-01-01T00:00:00+00:00", "pid": 1
        }))
        .unwrap(),
    )
    .unwrap();

    let out = env.backup_env(&[("BACKUP_SYNC".into(), "syncfs".into())], &[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(
        format!("{so}{se}").contains("1 copies of the interrupted run had not reached the disk"),
        "the left-out copy must be said: {so}\n{se}"
    );
    let meta = env.increment_meta(inc);
    let cat = meta["file_catalog"].as_object().unwrap();
    assert_eq!(cat.keys().collect::<Vec<_>>(), ["docs/b.txt"], "{meta}");
    assert!(!track.join("a.txt").exists());
    // The recovering run stored a again, whole; every version in history is a real one.
    let log = env.tool(&[env.dist.to_str().unwrap(), "log", "docs/a.txt", "--json"]);
    assert!(log.status.success(), "{:?}", text(&log));
    let versions = text(&log).0;
    assert!(
        versions.contains(&format!("\"size\": {}", b"alpha, the second version".len()))
            || versions.contains(&format!("\"size\":{}", b"alpha, the second version".len())),
        "{versions}"
    );
    assert!(
        !versions.contains("\"size\": 3") && !versions.contains("\"size\":3"),
        "{versions}"
    );
    let check = env.tool(&[env.dist.to_str().unwrap(), "check", "--verify"]);
    assert!(check.status.success(), "{:?}", text(&check));
}

/// `delete`, `recreate` and `prune` on a FUSE drive: what they report done survives a power
/// cut right after they exit 0.
#[test]
fn the_tool_s_changes_survive_a_power_cut() {
    use backup_tests::lazyfs::{fsync_path, mount_for_test};
    use backup_tests::{text, TestEnv};
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = mount_for_test(&tmp.path().join("disk")) else {
        return;
    };
    let env = TestEnv::with_dist(m.mountpoint.join("dist"));
    let dist = env.dist.to_str().unwrap().to_owned();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"a1");
    env.write("docs/b.txt", b"b1");
    env.write("docs/sub/c.txt", b"c1");
    env.backup_ok(&[]);
    env.write("docs/a.txt", b"a2 longer");
    env.backup_ok(&[]);
    env.write("docs/a.txt", b"a3 longer still");
    env.remove("docs/b.txt");
    env.backup_ok(&[]);
    let incs = env.increments();
    assert_eq!(incs.len(), 3, "{incs:?}");
    let check_clean = |when: &str| {
        let out = env.tool(&[&dist, "check", "--verify"]);
        assert!(out.status.success(), "{when}: {:?}", text(&out));
    };

    // delete
    let out = env.tool(&[&dist, "delete", &incs[2], "--mask", "docs/a.txt"]);
    assert!(out.status.success(), "{:?}", text(&out));
    m.power_cut();
    let meta = env.increment_meta(&incs[2]);
    assert!(meta["file_catalog"].get("docs/a.txt").is_none(), "{meta}");
    assert!(!env.dist.join(&incs[2]).join("track/docs/a.txt").exists());
    check_clean("after delete and a power cut");

    // recreate (metadata removed durably first, as damage would)
    let meta_path = env.dist.join(&incs[1]).join(format!("{}.json", incs[1]));
    std::fs::remove_file(&meta_path).unwrap();
    fsync_path(&env.dist.join(&incs[1])).unwrap();
    let out = env.tool(&[&dist, "recreate"]);
    assert!(out.status.success(), "{:?}", text(&out));
    m.power_cut();
    assert!(
        meta_path.is_file(),
        "recreated metadata lost in the power cut"
    );
    check_clean("after recreate and a power cut");

    // prune
    let out = env.tool(&[&dist, "prune", "--keep-last", "1"]);
    assert!(out.status.success(), "{:?}", text(&out));
    m.power_cut();
    assert_eq!(env.increments(), vec![incs[2].clone()]);
    let hidden: Vec<_> = std::fs::read_dir(&env.dist)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-prune"))
        .collect();
    assert!(
        hidden.is_empty(),
        "half-removed increments left: {hidden:?}"
    );
    check_clean("after prune and a power cut");
    env.backup_ok(&[]);
    check_clean("after the next run");
}
