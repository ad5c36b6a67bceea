//! `backup-tool restore`: files as they were at a point in time, under a target folder.

use std::io::Write;
use std::path::PathBuf;

use backup_core::explore::mask::Selection;
use backup_core::explore::point::{self, Point};
use backup_core::explore::restore::{self, Outcome, Overwrite};

use super::out::{self, Out};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Replace existing files.
    Always,
    /// Replace existing files unless size and mtime already match.
    IfChanged,
    /// Keep existing files (the default).
    Never,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /mnt/usb/backup restore --to /tmp/r                  everything, as the mirror holds it now (a full restore)\n  \
    backup-tool /mnt/usb/backup restore --at backup_20240105_100000 --to /tmp/r\n  \
    backup-tool /mnt/usb/backup restore 'projects/' '*.odt' --at 2024-01-05 --to /tmp/r -n\n  \
    backup-tool -c usb.json restore ~/Documents/notes/a.md --at latest --to /tmp/r\n\n\
Without --at, files come from the mirror: every selected file, tracked or not. With --at,\n\
from a snapshot: tracked files only (untracked files have no history).")]
pub struct Args {
    /// Files or folders (relative to the source root, or absolute inside the profile's src)
    /// or globs; none restores everything.
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
    /// Increment name, `latest`, `mirror`, or a time: the newest increment at or before it
    /// (a bare date includes that whole day). Default: the mirror (the current state).
    #[arg(long, value_name = "NAME|TIME")]
    pub at: Option<String>,
    /// Target folder (created if missing). Nothing is ever written outside it.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Show what would be restored, write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "never")]
    pub overwrite: OverwriteArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    repo: &backup_core::Repository,
    profile: Option<&backup_core::config::Config>,
    args: &Args,
) -> anyhow::Result<i32> {
    let paths = args
        .paths
        .iter()
        .map(|p| super::source_relative(p, profile))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = Selection::new(&paths)?;
    let backup = super::load(repo)?;
    let at = match &args.at {
        Some(a) => point::resolve(a, &backup.increments)?,
        None => Point::Mirror,
    };
    let plan = restore::plan(&backup, &at, &selection);
    if plan.items.is_empty() {
        let msg = format!(
            "nothing to restore at {}{}",
            plan.at,
            if args.paths.is_empty() {
                ""
            } else {
                " matches those paths"
            }
        );
        eprintln!("backup-tool: {msg}");
        if args.json {
            println!("{}", crate::json_error(&msg, crate::exit::PARTIAL));
        }
        return Ok(crate::exit::PARTIAL);
    }
    let overwrite = match args.overwrite {
        OverwriteArg::Always => Overwrite::Always,
        OverwriteArg::IfChanged => Overwrite::IfChanged,
        OverwriteArg::Never => Overwrite::Never,
    };
    let pb = crate::progress::bar("restoring");
    let sink = crate::progress::work_sink(&pb, "files");
    let report = restore::apply_with_progress(&plan, &args.to, overwrite, args.dry_run, &sink);
    crate::progress::finish(&pb);
    let report = report?;
    let failed = report.count(|o| matches!(o, Outcome::Failed { .. }));
    let mut o = Out::new();
    if args.json {
        o.json(&report)?;
    } else {
        let verb = if args.dry_run {
            "would restore"
        } else {
            "restored"
        };
        for r in &report.results {
            match &r.outcome {
                Outcome::Restored => writeln!(
                    o.w,
                    "{} {:<40} {:>10}  from {}",
                    o.status("restored").replace("restored", verb),
                    out::rel(&r.path),
                    out::size(r.size),
                    r.from
                )?,
                Outcome::SkippedExists => writeln!(o.w, "kept existing {}", out::rel(&r.path))?,
                Outcome::SkippedUnchanged => writeln!(o.w, "unchanged {}", out::rel(&r.path))?,
                Outcome::Failed { error } => {
                    eprintln!("backup-tool: {}: {error}", out::rel(&r.path))
                }
            }
        }
        writeln!(
            o.w,
            "{} {} at {} into {}; {} kept, {} failed",
            verb,
            crate::term::plural(report.count(|o| *o == Outcome::Restored), "file", "files"),
            report.at,
            report.to,
            report.count(|o| matches!(o, Outcome::SkippedExists | Outcome::SkippedUnchanged)),
            failed
        )?;
    }
    o.w.flush()?;
    Ok(if failed > 0 { crate::exit::PARTIAL } else { 0 })
}
