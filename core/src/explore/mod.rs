//! Exploring and managing a backup without the engine: listing increments (the catalog),
//! search, point-in-time restore, consistency checks, metadata recreation, and the two commands
//! that change a backup (`delete` and `prune`).
//!
//! Everything reads metadata first and touches the disk only where metadata cannot answer
//! (exclusive bytes, check, restore). Paths from metadata are always [`RelPath`]s, so no entry
//! can name a file outside the backup.

pub mod catalog;
pub mod check;
pub mod delete;
pub mod diff;
pub mod mask;
pub mod point;
pub mod prune;
pub mod recreate;
pub mod restore;
mod safefs;
pub mod search;

use std::path::PathBuf;

use crate::format::{FormatProblem, MirrorIndex};
use crate::history::{History, IncrementInfo};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, RepoError, Repository};

/// Why an explorer operation failed as a whole (per-file failures are part of the results).
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("no increment named {0}")]
    NoSuchIncrement(String),
    #[error("invalid {what} {value:?}: {message}")]
    BadArgument {
        what: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Refused(String),
}

impl ExploreError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ExploreError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
    pub(crate) fn bad(what: &'static str, value: &str, message: impl Into<String>) -> Self {
        ExploreError::BadArgument {
            what,
            value: value.to_owned(),
            message: message.into(),
        }
    }
}

/// A backup loaded for exploring: the history fold, the mirror index, and whatever could not be
/// read (kept so `check` can report it and other commands can warn).
#[derive(Debug)]
pub struct Backup {
    pub repo: Repository,
    pub history: History,
    pub mirror: MirrorIndex,
    /// Entries or files of metadata that were skipped while reading.
    pub problems: Vec<FormatProblem>,
    /// Increment folders whose metadata is missing or unreadable.
    pub without_metadata: Vec<IncrementName>,
}

impl Backup {
    pub fn load(repo: &Repository) -> Result<Backup, ExploreError> {
        let mut problems = Vec::new();
        let mut increments = Vec::new();
        let mut without_metadata = Vec::new();
        for name in repo.increment_names()? {
            match repo.load_increment(&name) {
                Ok((meta, p)) => {
                    problems.extend(p);
                    increments.push(IncrementInfo { name, meta });
                }
                Err(e) => {
                    problems.push(FormatProblem {
                        file: repo.increment_meta_path(&name).display().to_string(),
                        key: None,
                        message: e.to_string(),
                    });
                    without_metadata.push(name);
                }
            }
        }
        let mirror = match repo.load_mirror_index() {
            Ok((m, p)) => {
                problems.extend(p);
                m
            }
            Err(e) => {
                problems.push(FormatProblem {
                    file: repo.mirror_index_path().display().to_string(),
                    key: None,
                    message: e.to_string(),
                });
                MirrorIndex::default()
            }
        };
        Ok(Backup {
            repo: repo.clone(),
            history: History::build(increments, &mirror),
            mirror,
            problems,
            without_metadata,
        })
    }

    pub fn increment(&self, name: &str) -> Result<&IncrementInfo, ExploreError> {
        self.history
            .increment(name)
            .ok_or_else(|| ExploreError::NoSuchIncrement(name.to_owned()))
    }
}

/// `dist/<increment>/<category>` or `dist/mirror`: the folder a holder's files live under.
pub(crate) fn holder_root(repo: &Repository, holder: &crate::history::Holder) -> PathBuf {
    match holder {
        crate::history::Holder::Increment { name, category } => {
            repo.increment_dir(name).join(category.dir_name())
        }
        crate::history::Holder::Mirror => repo.mirror_dir(),
    }
}

/// A relative path typed by a user (`projects/a.txt`, `./projects/`, `/projects`).
pub fn parse_user_path(s: &str) -> Result<RelPath, ExploreError> {
    let trimmed = s.trim_start_matches("./").trim_matches('/');
    RelPath::parse(trimmed).map_err(|e| ExploreError::bad("path", s, e.to_string()))
}
