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
    pub fn bad(what: &'static str, value: &str, message: impl Into<String>) -> Self {
        ExploreError::BadArgument {
            what,
            value: value.to_owned(),
            message: message.into(),
        }
    }
}

/// A backup loaded for exploring: the increments' metadata, the mirror index, the history fold
/// (built on first use: listing and search do not need it), and whatever could not be read
/// (kept so `check` can report it and other commands can warn).
#[derive(Debug)]
pub struct Backup {
    pub repo: Repository,
    /// Increments with readable metadata, oldest first.
    pub increments: Vec<IncrementInfo>,
    pub mirror: MirrorIndex,
    history: std::sync::OnceLock<History>,
    /// Entries or files of metadata that were skipped while reading.
    pub problems: Vec<FormatProblem>,
    /// Increment folders whose metadata is missing or unreadable.
    pub without_metadata: Vec<IncrementName>,
}

impl Backup {
    pub fn load(repo: &Repository) -> Result<Backup, ExploreError> {
        let names = repo.increment_names()?;
        let loaded = load_parallel(repo, &names);
        let mut problems = Vec::new();
        let mut increments = Vec::with_capacity(names.len());
        let mut without_metadata = Vec::new();
        for (name, result) in names.into_iter().zip(loaded) {
            match result {
                Ok((meta, p)) => {
                    problems.extend(p);
                    increments.push(IncrementInfo::new(name, meta));
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
        let mirror = repo.load_mirror_index_or_report(&mut problems);
        Ok(Backup {
            repo: repo.clone(),
            increments,
            mirror,
            history: std::sync::OnceLock::new(),
            problems,
            without_metadata,
        })
    }

    /// The point-in-time fold over every increment and the mirror.
    pub fn history(&self) -> &History {
        self.history
            .get_or_init(|| History::build(self.increments.clone(), &self.mirror))
    }

    /// The fold over only the paths `keep` accepts: each path's history is independent of the
    /// others, so `log PATH` or a restore of one folder need not fold the whole backup.
    pub fn history_of(&self, keep: impl Fn(&RelPath) -> bool) -> History {
        let increments = self
            .increments
            .iter()
            .map(|i| IncrementInfo {
                name: i.name.clone(),
                time: i.time,
                meta: crate::format::IncrementMeta {
                    backup_name: i.meta.backup_name.clone(),
                    timestamp: i.meta.timestamp.clone(),
                    version: i.meta.version.clone(),
                    file_catalog: i
                        .meta
                        .file_catalog
                        .iter()
                        .filter(|(p, _)| keep(p))
                        .map(|(p, e)| (p.clone(), e.clone()))
                        .collect(),
                    summary: i.meta.summary.clone(),
                    extra: serde_json::Map::new(),
                    folders: Default::default(),
                },
            })
            .collect();
        let mirror = MirrorIndex {
            files: self
                .mirror
                .files
                .iter()
                .filter(|(p, _)| keep(p))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect(),
            updated: self.mirror.updated.clone(),
        };
        History::build(increments, &mirror)
    }

    pub fn increment(&self, name: &IncrementName) -> Result<&IncrementInfo, ExploreError> {
        self.increments
            .binary_search_by(|i| i.name.cmp(name))
            .map(|k| &self.increments[k])
            .map_err(|_| ExploreError::NoSuchIncrement(name.to_string()))
    }
}

type Loaded =
    Result<(crate::format::IncrementMeta, Vec<FormatProblem>), crate::format::FormatError>;

/// Reads and parses every increment's metadata on all cores: with a thousand increments the
/// JSON parsing, not the disk, is what `list` and `search` wait for.
fn load_parallel(repo: &Repository, names: &[IncrementName]) -> Vec<Loaded> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads <= 1 || names.len() < 16 {
        return names.iter().map(|n| repo.load_increment(n)).collect();
    }
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|n| repo.load_increment(n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
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
