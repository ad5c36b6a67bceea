//! Crash campaign, short mode: kill -9 at random moments of `backup` on a mutating corpus,
//! then prove that nothing committed changed and that the next run converges. The full
//! campaign (≥ 100 trials on a bigger corpus) is `scripts/crash_campaign.sh`. The campaign's
//! own checks are shown to fail on a damaged backup.

use backup_tests::faults::{
    committed_versions, crash_campaign, verify_after_kill, verify_converged, CampaignOptions,
};
use backup_tests::{serde_json::json, TestEnv};

#[test]
fn kill_minus_nine_loses_nothing_and_the_next_run_converges() {
    let opts = CampaignOptions::from_env(10, 400);
    let r = crash_campaign(&opts);
    eprintln!(
        "{} trials, {} kills mid-run ({} of a recovering run), {} finished first, {} increments \
         and {} files re-verified",
        r.trials,
        r.kills_mid_run,
        r.double_kills,
        r.finished_before_kill,
        r.increments_checked,
        r.files_checked
    );
    assert_eq!(r.failures, 0, "{}", r.problems.join("\n---\n"));
    assert_eq!(r.trials, opts.trials);
    // The campaign must actually interrupt runs, or it proves nothing.
    assert!(
        r.kills_mid_run * 2 >= opts.trials,
        "too few kills landed mid-run: {r:?}"
    );
}

/// Two real runs of a small tree: the second stores an increment.
fn two_runs() -> TestEnv {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["music"]}));
    env.write("docs/a.txt", b"a1");
    env.write("docs/b.txt", b"b1");
    env.write("music/m.bin", b"m1");
    env.backup_ok(&["-q"]);
    env.write("docs/a.txt", b"a2, a longer second version");
    env.write("docs/c.txt", b"c1");
    env.backup_ok(&["-q"]);
    assert_eq!(env.increments().len(), 2);
    env
}

#[test]
fn the_campaign_checks_report_a_corrupted_or_lost_increment() {
    let env = two_runs();
    let top = ["docs", "music"];
    let recorded = committed_versions(&env.dist);
    // A healthy backup: nothing to report (so the failures below come from the damage).
    assert_eq!(
        verify_converged(&env.src, &top, &env.dist, &recorded, &recorded),
        Vec::<String>::new()
    );

    // One stored version's bytes change (same size, so only the content hash tells).
    let inc = &env.increments()[1];
    let stored = env.dist.join(inc).join("track/docs/a.txt");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 0x20;
    let _ = std::fs::remove_file(&stored);
    std::fs::write(&stored, &bytes).unwrap();
    let found = verify_after_kill(&env.dist, &recorded, &recorded);
    assert!(
        found
            .iter()
            .any(|p| p.contains(inc.as_str()) && p.contains("changed track/docs/a.txt")),
        "a corrupted version went unreported: {found:?}"
    );

    // An increment loses its metadata: gone for the kill check, an orphan for convergence.
    std::fs::remove_file(env.dist.join(inc).join(format!("{inc}.json"))).unwrap();
    let found = verify_converged(&env.src, &top, &env.dist, &recorded, &recorded);
    assert!(
        found
            .iter()
            .any(|p| p.contains(&format!("{inc}: increment"))),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("without metadata") && p.contains(inc.as_str())),
        "{found:?}"
    );
}

#[test]
fn the_campaign_checks_report_a_mirror_that_did_not_converge() {
    let env = two_runs();
    let recorded = committed_versions(&env.dist);
    // The source moves on without a run: the mirror no longer equals the selection.
    env.write("docs/new.txt", b"never backed up");
    std::fs::remove_file(env.mirror().join("music/m.bin")).unwrap();
    let found = verify_converged(
        &env.src,
        &["docs", "music"],
        &env.dist,
        &recorded,
        &recorded,
    );
    for want in ["missing \"docs/new.txt\"", "missing \"music/m.bin\""] {
        assert!(
            found.iter().any(|p| p.contains(want)),
            "{want} not reported: {found:?}"
        );
    }
}
