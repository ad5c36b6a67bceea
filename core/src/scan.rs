//! Scan: walk `src` by the selection rules and return what is selected, with the metadata the
//! plan compares against `mirror.json`.
//!
//! INTERFACE STUB — signatures are the contract with the pipeline; bodies to be written.

use std::path::PathBuf;

use crate::config::Config;
use crate::format::{FileKind, MTime};
use crate::relpath::RelPath;

/// One selected entry of the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    pub rel: RelPath,
    pub kind: FileKind,
    pub tracked: bool,
    pub size: u64,
    pub mtime: MTime,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// For symlinks: the link target as stored (never followed).
    pub symlink_target: Option<PathBuf>,
}

/// Something the user should hear about once, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanNote {
    /// A FIFO, socket or device under a selected directory, not backed up.
    SkippedSpecial { rel: RelPath, what: &'static str },
    /// `dist` lies inside `src`; the scan left it out.
    SkippedDist { rel: RelPath },
    /// A rule that matched nothing today (people misspell folders).
    UnmatchedRule { key: &'static str, pattern: String },
}

/// A path the scan could not read.
#[derive(Debug)]
pub struct ScanError {
    pub rel: Option<RelPath>,
    pub error: std::io::Error,
}

#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Selected files and symlinks, sorted by `rel`.
    pub entries: Vec<SourceEntry>,
    /// Selected directories whose name is in `preserved_dirs`: kept in the mirror even empty.
    pub preserved_dirs: Vec<RelPath>,
    pub notes: Vec<ScanNote>,
    pub errors: Vec<ScanError>,
}

/// Walks `config.src` (blocking: call it from `spawn_blocking`).
pub fn scan(config: &Config) -> ScanOutcome {
    let _ = config;
    todo!("scan")
}
