//! `backup-tool check [--verify]`: consistency of mirror, index, increments and metadata.

use std::io::Write;

use backup_core::explore::check::{self, ProblemKind};

use super::out;
use crate::term::plural;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup check            sizes, times and presence of every stored file\n  \
    backup-tool -c usb.json check --verify         also re-read and re-hash every stored file\n\n\
Exit status: 0 consistent, 1 problems found (each listed), 2 not a backup.")]
pub struct Args {
    /// Also re-read every stored file and compare it with its recorded blake3 hash.
    #[arg(long)]
    pub verify: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn describe(k: &ProblemKind) -> String {
    match k {
        ProblemKind::Missing => "missing (recorded, not on disk)".into(),
        ProblemKind::Extra => "extra (on disk, not recorded)".into(),
        ProblemKind::SizeMismatch { expected, actual } => {
            format!("size {actual} differs from recorded {expected}")
        }
        ProblemKind::MtimeMismatch {
            expected_ns,
            actual_ns,
        } => format!(
            "mtime {} differs from recorded {}",
            out::date_ns(*actual_ns),
            out::date_ns(*expected_ns)
        ),
        ProblemKind::KindMismatch => "file/symlink differs from recorded kind".into(),
        ProblemKind::HashMismatch { expected, actual } => format!(
            "content differs from recorded hash (blake3 {}… vs {}…)",
            &actual[..12.min(actual.len())],
            &expected[..12.min(expected.len())]
        ),
        ProblemKind::Unreadable { error } => format!("unreadable: {error}"),
        ProblemKind::NoMetadata { reason } => format!(
            "increment without readable metadata (interrupted run or damage; see `recreate`): {reason}"
        ),
        ProblemKind::BadMetadata { file, message } => {
            format!("metadata entry skipped by every command ({file}): {message}")
        }
        ProblemKind::LooksLikeIncrement { reason } => reason.clone(),
        ProblemKind::Leftover => "left over by an interrupted run".into(),
    }
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let (backup, mut o) = super::open(repo, None, args.json)?;
    let report = if args.verify {
        let pb = crate::progress::bar("verifying");
        let sink = crate::progress::work_sink(&pb, "files");
        let r = check::check_with_progress(&backup, true, &sink);
        crate::progress::finish(&pb);
        r?
    } else {
        check::check(&backup, false)?
    };
    let code = if report.problems.is_empty() {
        0
    } else {
        crate::exit::PARTIAL
    };
    if args.json {
        o.json(&report)?;
        return Ok(code);
    }
    if let Some(r) = &report.running {
        writeln!(
            o.w,
            "{} a backup is running on this backup{}: its work in progress and the mirror were not judged; run `check` again when it has finished",
            o.paint("33", "note:"),
            r.increment
                .as_ref()
                .map(|n| format!(" (writing {n})"))
                .unwrap_or_default()
        )?;
    }
    let mut last = None;
    for p in &report.problems {
        if last != Some(&p.location) {
            writeln!(o.w, "{}", o.paint("1", &p.location))?;
            last = Some(&p.location);
        }
        let path = p.path.as_deref().map(out::show).unwrap_or_default();
        writeln!(o.w, "  {} {}", o.paint("31", &path), describe(&p.kind))?;
    }
    writeln!(
        o.w,
        "{}: {}, {}{}{}",
        if report.problems.is_empty() {
            o.paint("32", "OK")
        } else {
            o.paint("31", &plural(report.problems.len(), "problem", "problems"))
        },
        plural(report.increments, "increment", "increments"),
        plural(report.files_checked, "file checked", "files checked"),
        if args.verify {
            format!(", {} re-hashed", report.files_verified)
        } else {
            String::new()
        },
        if args.verify && report.files_without_hash > 0 {
            format!(" ({} recorded without a hash)", report.files_without_hash)
        } else {
            String::new()
        }
    )?;
    o.w.flush()?;
    Ok(code)
}
