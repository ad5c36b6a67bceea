//! `backup-tool prune`: remove whole increments by a retention policy.

use std::io::Write;

use backup_core::explore::prune::{self, Policy};

use super::out::Out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    backup-tool /mnt/usb/backup prune --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run")]
pub struct Args {
    /// Keep the N newest increments.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: usize,
    /// Keep the newest increment of each of the last N days that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: usize,
    /// Keep the newest increment of each of the last N ISO weeks that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: usize,
    /// Keep the newest increment of each of the last N months that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: usize,
    /// Show what would be removed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let policy = Policy {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    let lock = super::lock_unless(repo, args.dry_run)?;
    let backup = super::load(repo)?;
    let report = prune::prune(&backup, &policy, lock.as_ref())?;
    let mut o = Out::new();
    if args.json {
        o.json(&report)?;
    } else {
        for d in &report.decisions {
            if d.keep {
                writeln!(o.w, "keep   {}  ({})", d.name, d.reasons.join(", "))?;
            } else if report.removed.contains(&d.name) {
                let verb = if args.dry_run {
                    "would remove"
                } else {
                    "remove"
                };
                writeln!(o.w, "{} {}", o.paint("31", verb), d.name)?;
            }
        }
        for (n, e) in &report.failed {
            eprintln!("backup-tool: {n}: {e}");
        }
        writeln!(
            o.w,
            "{} {} increments, kept {}",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            report.removed.len(),
            report.decisions.iter().filter(|d| d.keep).count()
        )?;
    }
    o.w.flush()?;
    Ok(if report.failed.is_empty() {
        0
    } else {
        crate::exit::PARTIAL
    })
}
