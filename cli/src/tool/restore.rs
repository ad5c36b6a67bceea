//! `backup-tool restore`: files as they were at a point in time, under a target folder.

use std::io::Write;
use std::path::PathBuf;

use backup_core::explore::mask::Selection;
use backup_core::explore::point::{self, Point};
use backup_core::explore::restore::{self, ItemResult, Outcome, Overwrite, ResultKind};
use backup_core::explore::ExploreError;

use super::out::{self, Out};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Replace existing files.
    Always,
    /// Replace existing files unless size and mtime already match.
    IfChanged,
    /// Replace existing files only when the version's mtime is newer.
    IfNewer,
    /// Keep existing files (the default).
    Never,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /mnt/usb/backup restore --to /tmp/r                  everything, as the mirror holds it now (a full restore)\n  \
    backup-tool /mnt/usb/backup restore --at backup_20240105_100000 --to /tmp/r\n  \
    backup-tool /mnt/usb/backup restore 'projects/' '*.odt' --at 2024-01-05 --to /tmp/r -n\n  \
    backup-tool /mnt/usb/backup restore projects/ --to ~/projects --overwrite if-newer --delete -n\n  \
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
    /// List what would be done (create, replace, skip, delete, mkdir), change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// What to do with files that already exist in DIR.
    #[arg(long, value_enum, default_value = "never")]
    pub overwrite: OverwriteArg,
    /// Make each restored folder equal to the version: remove, inside DIR only, the files and
    /// folders it does not have (of those the PATH|GLOB arguments select). Symlinks are
    /// removed themselves, never followed.
    #[arg(long)]
    pub delete: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Human lines of results, and the counts of the last line.
struct Human {
    would: &'static str,
}

impl Human {
    fn result(&self, o: &mut Out, r: &ItemResult) -> anyhow::Result<()> {
        let (word, color) = match &r.outcome {
            Outcome::Create => ("create", "restored"),
            Outcome::Replace => ("replace", "restored"),
            Outcome::SkipExists => ("skip (exists)", ""),
            Outcome::SkipUnchanged => ("skip (unchanged)", ""),
            Outcome::Delete => ("delete", "deleted"),
            Outcome::Mkdir => ("mkdir", ""),
            Outcome::Failed { error } => {
                eprintln!("backup-tool: {}: {error}", out::rel(&r.path));
                return Ok(());
            }
        };
        let word = format!("{}{word}", self.would);
        let word = if color.is_empty() {
            word
        } else {
            o.status(color).replace(color, &word)
        };
        let path = match r.kind {
            ResultKind::Folder => format!("{}/", out::rel(&r.path)),
            _ => out::rel(&r.path),
        };
        if r.outcome.is_written() {
            writeln!(
                o.w,
                "{word} {path:<40} {:>10}  from {}",
                out::size(r.size),
                r.from
            )?;
        } else {
            writeln!(o.w, "{word} {path}")?;
        }
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct Tail<'a> {
    owners_kept: bool,
    /// Catalog entries left out (unsafe or malformed), present only when there are.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    skipped: &'a [restore::Skipped],
}

/// Counts of a finished restore, for the last line and the exit status.
struct Counts {
    at: String,
    to: String,
    written: usize,
    kept: usize,
    deleted: usize,
    failed: usize,
    owners_kept: bool,
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
    let (backup, mut o) = super::open(repo, None, args.json)?;
    let at = match &args.at {
        Some(a) => point::resolve(a, &backup.increments()?, repo)?,
        None => Point::Mirror,
    };
    let warnings = restore::warnings(&backup, &at)?;
    super::warn_unreadable(
        &warnings.unreadable_before,
        &format!(
            "files it changed may show an older version (or be missing) at {}",
            at.label()
        ),
    );
    for s in &warnings.skipped {
        eprintln!(
            "backup-tool: warning: skipped {}'s catalog entry {}: {}",
            s.increment,
            out::show(&format!("{:?}", s.key)),
            s.reason
        );
    }
    let nothing = || {
        let msg = format!(
            "nothing to restore at {}{}",
            at.label(),
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
        Ok(crate::exit::PARTIAL)
    };
    let opts = restore::Options {
        overwrite: match args.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        dry_run: args.dry_run,
        delete: args.delete,
    };
    let human = Human {
        would: if args.dry_run { "would " } else { "" },
    };
    let pb = crate::progress::bar("restoring");
    let sink = crate::progress::work_sink(&pb, "files");
    let counts = if args.delete {
        // `--delete` compares each restored folder with the whole plan: held in memory.
        let plan = restore::plan(&backup, &at, &selection)?;
        if plan.items.is_empty() && plan.dirs.is_empty() {
            crate::progress::finish(&pb);
            return nothing();
        }
        let report = restore::apply_with_progress(&plan, &args.to, &opts, &sink);
        crate::progress::finish(&pb);
        let report = report?;
        if args.json {
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                #[serde(flatten)]
                report: &'a restore::Report,
                #[serde(skip_serializing_if = "<[_]>::is_empty")]
                skipped: &'a [restore::Skipped],
            }
            o.json(&Doc {
                report: &report,
                skipped: &warnings.skipped,
            })?;
        } else {
            for r in &report.results {
                human.result(&mut o, r)?;
            }
        }
        Counts {
            at: report.at.clone(),
            to: report.to.clone(),
            written: report.count(Outcome::is_written),
            kept: report.count(|o| matches!(o, Outcome::SkipExists | Outcome::SkipUnchanged)),
            deleted: report.count(|o| *o == Outcome::Delete),
            failed: report.count(|o| matches!(o, Outcome::Failed { .. })),
            owners_kept: report.owners_kept,
        }
    } else {
        // Streamed: each result is printed as it happens; memory does not grow with files.
        let mut stream = restore::stream(&backup, &at, &selection)?;
        let mut entries = stream.entries.peekable();
        if entries.peek().is_none() {
            crate::progress::finish(&pb);
            return nothing();
        }
        stream.entries = Box::new(entries);
        if !pb.is_hidden() {
            // A bar with a total: count what lies ahead first (one more walk, no memory).
            let mut files = 0u64;
            let mut bytes = 0u64;
            for e in restore::stream(&backup, &at, &selection)?.entries {
                if let restore::Entry::File(i) = e? {
                    files += 1;
                    bytes = bytes.saturating_add(i.size);
                }
            }
            stream.totals = Some((files, bytes));
        }
        let mut deleted = 0usize;
        let json = args.json;
        let mut emit = |ev: restore::Event<'_>| -> Result<(), ExploreError> {
            let r = match ev {
                restore::Event::Begin(b) if json => o.json_begin(b, "results"),
                restore::Event::Begin(_) => Ok(()),
                restore::Event::Result(r) => {
                    deleted += usize::from(r.outcome == Outcome::Delete);
                    if json {
                        o.json_item(&r)
                    } else {
                        human.result(&mut o, &r)
                    }
                }
            };
            r.map_err(|e| match e.downcast::<std::io::Error>() {
                Ok(io) => ExploreError::Io {
                    op: "write",
                    path: "standard output".into(),
                    source: io,
                },
                Err(e) => ExploreError::Refused(format!("{e:#}")),
            })
        };
        let summary = restore::apply_stream(stream, &args.to, &opts, &sink, &mut emit);
        crate::progress::finish(&pb);
        let summary = summary?;
        if args.json {
            o.json_end(&Tail {
                owners_kept: summary.owners_kept,
                skipped: &warnings.skipped,
            })?;
        }
        Counts {
            at: summary.at,
            to: summary.to,
            written: summary.written as usize,
            kept: summary.kept as usize,
            deleted,
            failed: summary.failed as usize,
            owners_kept: summary.owners_kept,
        }
    };
    if counts.owners_kept {
        eprintln!(
            "backup-tool: not running as root: restored files keep your own user and group, not the recorded owners"
        );
    }
    if !args.json {
        writeln!(
            o.w,
            "{} {} at {} into {}; {} kept, {}{} failed",
            if args.dry_run {
                "would restore"
            } else {
                "restored"
            },
            crate::term::plural(counts.written, "file", "files"),
            counts.at,
            counts.to,
            counts.kept,
            match counts.deleted {
                0 => String::new(),
                n => format!("{n} deleted, "),
            },
            counts.failed
        )?;
    }
    o.w.flush()?;
    Ok(if counts.failed > 0 {
        crate::exit::PARTIAL
    } else {
        0
    })
}
