//! Progress events and run notes: how the pipeline tells its caller what is happening without
//! printing anything itself.

use serde::Serialize;

use crate::relpath::RelPath;
use crate::scan::ScanNote;

/// Something the user should hear about once; not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunNote {
    Scan(ScanNote),
    /// `dist` cannot hard-link: increments hold copies instead of links.
    SymlinkFallback {
        dist: String,
    },
    LinkFallback {
        dist: String,
        reason: String,
    },
    /// A file disappeared between the scan and its copy; the next run sees the deletion.
    Vanished {
        rel: RelPath,
    },
    /// The mirror had lost a file the index listed (someone removed it by hand).
    MissingFromMirror {
        rel: RelPath,
    },
    /// An interrupted earlier run was found and its partial increment finished or removed.
    Recovered {
        increment: Option<String>,
        kept_files: usize,
        /// Recorded versions that were missing and were put back from the mirror or staging.
        restored: usize,
    },
    /// Copies of the interrupted run whose bytes had not reached the disk when the power went
    /// (shorter than their source: delayed allocation on a file system trusted with one
    /// `syncfs`): left out of its increment; this run copies them again.
    UnwrittenCopies {
        increment: String,
        count: usize,
    },
    /// Indexed files left in place because their source directory could not be read.
    KeptUnreadable {
        count: usize,
    },
    /// Something the index said when it was opened (created, imported, rebuilt, increments
    /// changed by hand).
    Index(String),
}

impl std::fmt::Display for RunNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunNote::Scan(ScanNote::SkippedSpecial { rel, what }) => {
                write!(f, "skipped {what} {} (not a regular file or symlink)", rel.display())
            }
            RunNote::Scan(ScanNote::SkippedDist { rel }) => write!(
                f,
                "skipped {} inside the source: it is the backup itself",
                rel.display()
            ),
            RunNote::Scan(ScanNote::UnmatchedRule { key, pattern }) => {
                write!(f, "rule {key} {pattern:?} matches nothing")
            }
            RunNote::Index(s) => f.write_str(s),
            RunNote::LinkFallback { dist, reason } => write!(
                f,
                "{dist} cannot hard-link ({reason}): increments store copies instead of links"
            ),
            RunNote::SymlinkFallback { dist } => write!(
                f,
                "{dist} cannot hold symlinks: each is stored as a small file holding its \
                 target, and restored as a symlink"
            ),
            RunNote::Vanished { rel } => {
                write!(f, "{} vanished during the run; not copied", rel.display())
            }
            RunNote::MissingFromMirror { rel } => {
                write!(f, "{} was missing from the mirror", rel.display())
            }
            RunNote::Recovered {
                increment: Some(name),
                kept_files,
                restored: 0,
            } => write!(
                f,
                "an interrupted run was found: finished its increment {name} ({kept_files} files) and reconciled the index with the mirror"
            ),
            RunNote::Recovered {
                increment: Some(name),
                kept_files,
                restored,
            } => write!(
                f,
                "an interrupted run was found: finished its increment {name} ({kept_files} files, {restored} of them put back from the mirror or staging) and reconciled the index with the mirror"
            ),
            RunNote::Recovered {
                increment: None, ..
            } => write!(
                f,
                "an interrupted run was found: removed its empty increment and reconciled the index with the mirror"
            ),
            RunNote::KeptUnreadable { count } => write!(
                f,
                "{count} files kept in the mirror because their source directory could not be read"
            ),
            RunNote::UnwrittenCopies { increment, count } => write!(
                f,
                "{count} copies of the interrupted run had not reached the disk when it stopped; left out of {increment} and copied again"
            ),
        }
    }
}

/// A file the run could not handle; the run goes on and exits with status 1.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileError {
    /// The path relative to `src` (lossy for display; see `path_encoded`).
    pub path: String,
    /// The JSON (lossless) form of the path.
    pub path_encoded: String,
    /// What was being done: `copy`, `link`, `rename`, `delete`, `scan`, ...
    pub operation: &'static str,
    pub message: String,
}

impl FileError {
    pub fn new(rel: Option<&RelPath>, operation: &'static str, message: String) -> Self {
        FileError {
            path: rel.map(|r| r.display().into_owned()).unwrap_or_default(),
            path_encoded: rel.map(|r| r.encode()).unwrap_or_default(),
            operation,
            message,
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.operation, self.message)
        } else {
            write!(
                f,
                "{}: {} failed: {}",
                self.path, self.operation, self.message
            )
        }
    }
}

/// Progress of a run, in the order the stages happen.
#[derive(Clone, Debug)]
pub enum Event {
    Scanned {
        files: usize,
    },
    Planned {
        copies: usize,
        bytes: u64,
        deletes: usize,
    },
    /// Bytes of the file being copied read so far (in chunks), so a big file shows progress
    /// before it is done; the bytes of a retried copy are sent again.
    Copying {
        bytes: u64,
    },
    /// One file copied into the mirror (or failed: `ok == false`).
    FileDone {
        bytes: u64,
        ok: bool,
    },
    Note(RunNote),
    Error(FileError),
    Committed,
}

/// Where events go. Called from worker threads.
pub type EventSink = std::sync::Arc<dyn Fn(Event) + Send + Sync>;

/// Progress of a long `backup-tool` command (restore, check --verify, recreate, prune): the
/// work ahead, then each item (a file, or an increment for prune) as it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// What lies ahead: items and their bytes (0 when unknown).
    Start { items: u64, bytes: u64 },
    /// One item done, with its bytes (those not already told by [`Work::Bytes`]).
    Item { bytes: u64 },
    /// Bytes of the item in progress (a big file being copied or hashed), told as they go.
    Bytes { bytes: u64 },
}

/// How often [`Work::Bytes`] is told: often enough for a bar to move, rarely enough to cost
/// nothing.
pub const WORK_BYTES_STEP: u64 = 4 << 20;

/// Where [`Work`] events go; `&|_| {}` for none.
pub type WorkSink<'a> = &'a (dyn Fn(Work) + Sync);
