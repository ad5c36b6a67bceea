//! Crash campaign, short mode: kill -9 at random moments of `backup` on a mutating corpus,
//! then prove that nothing committed changed and that the next run converges. The full
//! campaign (≥ 100 trials on a bigger corpus) is `scripts/crash_campaign.sh`.

use backup_tests::faults::{crash_campaign, CampaignOptions};

#[test]
fn kill_minus_nine_loses_nothing_and_the_next_run_converges() {
    let opts = CampaignOptions::from_env(10, 400);
    let r = crash_campaign(&opts);
    eprintln!("{r:?}");
    assert_eq!(r.trials, opts.trials);
    assert_eq!(r.failures, 0);
    // The campaign must actually interrupt runs, or it proves nothing.
    assert!(
        r.kills_mid_run * 2 >= opts.trials,
        "too few kills landed mid-run: {r:?}"
    );
}
