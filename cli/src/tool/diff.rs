//! `backup-tool diff A B`: what was added, changed or deleted between two points.

use std::io::Write;

use backup_core::explore::{diff, point};

use super::out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup diff backup_20240105_100000 mirror\n  \
    backup-tool /media/usb/backup diff 2024-01-01 latest")]
pub struct Args {
    /// Increment name, `latest`, `mirror`, or a time (the newest increment at or before it).
    pub a: String,
    /// Same forms as A.
    pub b: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let (backup, mut o) = super::open(repo, None, args.json)?;
    let incs = backup.increments()?;
    let a = point::resolve(&args.a, &incs, repo)?;
    let b = point::resolve(&args.b, &incs, repo)?;
    let report = diff::diff(&backup, &a, &b)?;
    if args.json {
        o.json(&report)?;
        return Ok(0);
    }
    writeln!(
        o.w,
        "{}",
        o.paint("1", &format!("{} -> {}", report.from, report.to))
    )?;
    let (mut added, mut changed, mut deleted) = (0, 0, 0);
    for c in &report.changes {
        let (mark, detail) = match c.change {
            "added" => {
                added += 1;
                ("+", out::size(c.size_after.unwrap_or(0)))
            }
            "deleted" => {
                deleted += 1;
                ("-", out::size(c.size_before.unwrap_or(0)))
            }
            _ => {
                changed += 1;
                (
                    "~",
                    format!(
                        "{} -> {}",
                        out::size(c.size_before.unwrap_or(0)),
                        out::size(c.size_after.unwrap_or(0))
                    ),
                )
            }
        };
        writeln!(
            o.w,
            "{} {}  ({})",
            o.status(c.change).replace(c.change, mark),
            out::rel(&c.path),
            detail
        )?;
    }
    writeln!(o.w, "{added} added, {changed} changed, {deleted} deleted")?;
    o.w.flush()?;
    Ok(0)
}
