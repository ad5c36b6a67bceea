//! `backup-tool delete NAME --mask GLOB...`: remove matching files from one increment.

use std::io::Write;

use backup_core::explore::{delete, mask::Masks};

use super::out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup delete backup_20240105_100000 --mask '*.iso' -n\n  \
    backup-tool /media/usb/backup delete backup_20240105_100000 --mask 'secrets/**'")]
pub struct Args {
    /// The increment.
    pub name: backup_core::IncrementName,
    /// Files to remove (same masks as `search`). At least one.
    #[arg(long = "mask", short = 'm', value_name = "GLOB", required = true)]
    pub masks: Vec<String>,
    /// Show what would be removed, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let masks = Masks::new(&args.masks)?;
    // Taken before loading, so what is loaded cannot change under the command.
    let lock = super::lock_unless(repo, args.dry_run)?;
    let (backup, mut o) = super::open(repo, lock.as_ref(), args.json)?;
    let report = delete::delete(&backup, &args.name, &masks, lock.as_ref())?;
    if args.json {
        o.json(&report)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for r in &report.removed {
            writeln!(
                o.w,
                "{verb} {}/{}/{}  {}",
                report.increment,
                r.category.dir_name(),
                out::rel(&r.path),
                out::size(r.size)
            )?;
        }
        for (p, e) in &report.failed {
            eprintln!("backup-tool: {}: {e}", out::show(p));
        }
        writeln!(
            o.w,
            "{verb} {} from {}",
            crate::term::plural(report.removed.len(), "file", "files"),
            report.increment
        )?;
    }
    o.w.flush()?;
    Ok(if report.failed.is_empty() {
        0
    } else {
        crate::exit::PARTIAL
    })
}
