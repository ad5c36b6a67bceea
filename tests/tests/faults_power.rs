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
