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
    for (f, body) in [("a", "alpha"), ("b", "bravo"), ("c", "charlie"), ("d", "delta")] {
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
    assert!(!stderr.contains("docs/a.txt") && !stderr.contains("docs/b.txt"), "{stderr}");
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
