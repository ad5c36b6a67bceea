//! Exploring and managing a backup without the engine: listing increments (the catalog),
//! search, point-in-time restore, consistency checks, metadata recreation, and the two commands
//! that change a backup (`delete` and `prune`).
//!
//! Everything reads the index (`dist/.backup-index.sqlite`, [`crate::index`]): the catalog of
//! every increment and the state of the mirror, on disk. Each command holds in memory only what
//! it shows: the increments' rows for `list`, one increment's folder list and one folder's
//! entries for `show`, `search` and `check`, one path's history for `log`, one folder listing per
//! level of a snapshot walk for `restore` and `diff`. The disk is touched only where the index
//! cannot answer (exclusive bytes, check, restore). Paths from metadata are always
//! [`RelPath`]s, so no entry can name a file outside the backup.

pub mod catalog;
pub mod check;
pub mod delete;
pub mod diff;
pub mod export;
pub mod mask;
pub mod point;
pub mod prune;
pub mod recreate;
pub mod restore;
pub mod search;
pub mod walk;

use std::path::PathBuf;

use crate::index::{IncrementRecord, IncrementState, Index, IndexError, IndexNote, Opened};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, RepoError, Repository, WriteLock};

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
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("no increment named {0}")]
    NoSuchIncrement(String),
    /// The increment's metadata is missing or unreadable: nothing may answer for it (not the
    /// increment before it, not a half-read catalog).
    #[error(
        "increment {name} has no readable metadata ({reason}); it is not answered from another \
         increment. Rebuild its metadata from its files with `backup-tool {dist} recreate \
         --backup {name}`, then try again"
    )]
    Damaged {
        name: IncrementName,
        reason: String,
        dist: String,
    },
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

/// Why an increment's metadata cannot be used, in words.
pub fn damage_reason(rec: &IncrementRecord) -> String {
    match (rec.state, &rec.problem) {
        (IncrementState::Ok, _) => String::new(),
        (IncrementState::NoMetadata, _) => "its metadata file is missing".into(),
        (_, Some(p)) => p.clone(),
        (_, None) => "its metadata file cannot be read".into(),
    }
}

/// A backup opened for one command: its index (created, imported or brought in step with the
/// increment folders on open, see [`Index::open_for`]) and the notes about that, which the
/// command prints once.
pub struct Backup {
    pub repo: Repository,
    opened: Opened,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("repo", &self.repo)
            .field("index", &self.opened.index)
            .finish()
    }
}

impl Backup {
    /// Opens the index of `repo`. Writers pass their lock, taken before: what they read
    /// cannot change under them.
    pub fn open(repo: &Repository, lock: Option<&WriteLock>) -> Result<Backup, ExploreError> {
        Ok(Backup {
            repo: repo.clone(),
            opened: Index::open_for(repo, lock)?,
        })
    }

    pub fn index(&self) -> &Index {
        &self.opened.index
    }

    /// What the command should say once about the index it opened.
    pub fn notes(&self) -> &[IndexNote] {
        &self.opened.notes
    }

    /// Every increment folder at `dist`, oldest first, readable or not.
    pub fn increments(&self) -> Result<Vec<IncrementRecord>, ExploreError> {
        Ok(self.index().increments()?)
    }

    /// The increment named `name`, whatever the state of its metadata.
    pub fn increment(&self, name: &IncrementName) -> Result<IncrementRecord, ExploreError> {
        self.index()
            .increment(name)?
            .ok_or_else(|| ExploreError::NoSuchIncrement(name.to_string()))
    }

    /// The increment named `name`, refused when its metadata cannot be used.
    pub fn readable(&self, name: &IncrementName) -> Result<IncrementRecord, ExploreError> {
        let rec = self.increment(name)?;
        readable(&self.repo, rec)
    }

    /// Brings the catalog in step after a command changed increment folders or metadata, so
    /// the index is current when it exits.
    pub fn sync(&self, lock: &WriteLock) -> Result<crate::index::SyncReport, ExploreError> {
        Ok(self.index().sync_catalog(&self.repo, Some(lock))?)
    }
}

/// `rec`, or the refusal that names it and how to repair it.
pub fn readable(repo: &Repository, rec: IncrementRecord) -> Result<IncrementRecord, ExploreError> {
    if rec.state == IncrementState::Ok {
        return Ok(rec);
    }
    Err(ExploreError::Damaged {
        reason: damage_reason(&rec),
        name: rec.name,
        dist: repo.root().display().to_string(),
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
