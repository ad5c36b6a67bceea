//! `backup-tool prune`: remove whole increments by a retention policy (flags, or the profile's
//! `"retention"`).

use std::io::Write;

use backup_core::explore::prune::{self, Policy, Within};
use backup_core::explore::ExploreError;

use crate::term::plural;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /mnt/usb/backup prune --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 -n\n  \
    backup-tool /mnt/usb/backup prune --keep-within 2w --keep-monthly 24\n  \
    backup-tool -c usb.json prune             the profile's \"retention\"\n\n\
An increment is kept when any rule keeps it; each line says which rules did. Times are the\n\
increments' local times; --keep-within counts back from the newest increment.")]
pub struct Args {
    /// Keep the N newest increments.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: usize,
    /// Keep the newest increment of each of the last N hours that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_hourly: usize,
    /// Keep the newest increment of each of the last N days that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: usize,
    /// Keep the newest increment of each of the last N ISO weeks that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: usize,
    /// Keep the newest increment of each of the last N months that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: usize,
    /// Keep the newest increment of each of the last N years that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_yearly: usize,
    /// Keep every increment within DURATION of the newest one: `7d`, `2w`, `36h`, `1y2m`
    /// (y years, m months, w weeks, d days, h hours).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Show what would be removed, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn policy(args: &Args, profile: Option<&backup_core::config::Config>) -> anyhow::Result<Policy> {
    let flags = Policy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within.as_deref().map(Within::parse).transpose()?,
    };
    if !flags.is_empty() {
        return Ok(flags);
    }
    match profile.and_then(|c| c.retention.clone().map(|r| (c, r))) {
        Some((c, r)) => {
            tracing::info!("retention of {}: {}", c.file.display(), r.describe());
            Ok(r)
        }
        None => Err(ExploreError::Refused(match profile {
            Some(c) => format!(
                "no --keep-... flag given and {} has no \"retention\"; refusing to remove every increment",
                c.file.display()
            ),
            None => "no --keep-... flag given (and no profile with a \"retention\": use --config); refusing to remove every increment".into(),
        })
        .into()),
    }
}

pub fn run(
    repo: &backup_core::Repository,
    profile: Option<&backup_core::config::Config>,
    args: &Args,
) -> anyhow::Result<i32> {
    let policy = policy(args, profile)?;
    // Taken before loading, so what is loaded cannot change under the command.
    let lock = super::lock_unless(repo, args.dry_run)?;
    let (backup, mut o) = super::open(repo, lock.as_ref(), args.json)?;
    let pb = crate::progress::bar("pruning");
    let sink = crate::progress::work_sink(&pb, "increments");
    let report = prune::prune_with_progress(&backup, &policy, lock.as_ref(), &sink);
    crate::progress::finish(&pb);
    let report = report?;
    if args.json {
        o.json(&report)?;
    } else {
        let width = report
            .decisions
            .iter()
            .map(|d| d.name.as_str().len())
            .max()
            .unwrap_or(0);
        let remove = if args.dry_run {
            "would remove"
        } else {
            "remove"
        };
        let verb_width = remove.len().max("keep".len());
        for d in &report.decisions {
            let time = chrono::DateTime::parse_from_rfc3339(&d.time)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            if d.keep {
                writeln!(
                    o.w,
                    "{:<verb_width$} {:<width$}  {time}  kept by {}",
                    "keep",
                    d.name,
                    d.reasons.join(", ")
                )?;
            } else if report.removed.contains(&d.name) {
                writeln!(
                    o.w,
                    "{} {:<width$}  {time}",
                    o.paint("31", &format!("{remove:<verb_width$}")),
                    d.name
                )?;
            }
        }
        for (n, e) in &report.failed {
            eprintln!("backup-tool: {n}: {e}");
        }
        writeln!(
            o.w,
            "{} {}, kept {} ({})",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            plural(report.removed.len(), "increment", "increments"),
            report.decisions.iter().filter(|d| d.keep).count(),
            report.policy
        )?;
    }
    o.w.flush()?;
    Ok(if report.failed.is_empty() {
        0
    } else {
        crate::exit::PARTIAL
    })
}
