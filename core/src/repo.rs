//! The layout of a backup at `dist` and read access to it.

use std::path::{Path, PathBuf};

use backup_platform::fs::FileLock;

use crate::format::{FormatError, FormatProblem, IncrementMeta, MirrorIndex};
use crate::relpath::RelPath;

pub const MIRROR_DIR: &str = "mirror";
pub const MIRROR_INDEX: &str = "mirror.json";
pub const TRACK_DIR: &str = "track";
pub const DELETED_DIR: &str = "deleted";
pub use crate::identity::{IncrementName, INCREMENT_PREFIX};
/// Files we add at `dist`. Dot-names that do not start with `backup_`, so the original tool,
/// which looks for `backup_*` folders, ignores them.
pub const LOCK_FILE: &str = ".backup.lock";
pub const JOURNAL_FILE: &str = ".backup-journal.json";
pub const STAGING_DIR: &str = ".backup-staging";
/// The index of the mirror and the catalog of all increments (SQLite; see `docs/format.md`).
pub const INDEX_FILE: &str = ".backup-index.sqlite";

/// Proof that this process holds the backup's writer lock: every function that changes a
/// backup takes one, so none can run beside a `backup` (or another writer).
#[derive(Debug)]
pub struct WriteLock {
    _lock: FileLock,
}

/// A backup at `dist`.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0} is not a backup (no mirror/, mirror.json or backup_* increments)")]
    NotABackup(String),
    #[error("cannot list {path}: {source}")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "another backup is running on {dist} (lock {lock} is held); try again when it has finished"
    )]
    Locked { dist: String, lock: String },
    #[error("cannot take the lock {path}: {source}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Repository {
    /// A handle on `root` without checking anything (the engine creates a new backup here).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Repository { root: root.into() }
    }

    /// Opens an existing backup, refusing a folder that holds none.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RepoError> {
        let repo = Repository::at(root);
        if repo.mirror_dir().is_dir()
            || repo.mirror_index_path().is_file()
            || !repo.increment_names()?.is_empty()
        {
            Ok(repo)
        } else {
            Err(RepoError::NotABackup(repo.root.display().to_string()))
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn mirror_dir(&self) -> PathBuf {
        self.root.join(MIRROR_DIR)
    }
    pub fn mirror_index_path(&self) -> PathBuf {
        self.root.join(MIRROR_INDEX)
    }
    pub fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
    pub fn journal_path(&self) -> PathBuf {
        self.root.join(JOURNAL_FILE)
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }
    pub fn increment_dir(&self, name: &IncrementName) -> PathBuf {
        self.root.join(name.as_str())
    }
    pub fn increment_meta_path(&self, name: &IncrementName) -> PathBuf {
        self.increment_dir(name)
            .join(format!("{}.json", name.as_str()))
    }
    /// `backup_X/track/<rel>` or `backup_X/deleted/<rel>`.
    pub fn increment_file(
        &self,
        name: &IncrementName,
        category: crate::format::Category,
        rel: &RelPath,
    ) -> PathBuf {
        rel.under(&self.increment_dir(name).join(category.dir_name()))
    }
    pub fn mirror_file(&self, rel: &RelPath) -> PathBuf {
        rel.under(&self.mirror_dir())
    }

    /// Increment folders present on disk, oldest first (with or without metadata).
    pub fn increment_names(&self) -> Result<Vec<IncrementName>, RepoError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RepoError::List {
                    path: self.root.display().to_string(),
                    source,
                })
            }
        };
        let mut names: Vec<IncrementName> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().and_then(IncrementName::parse))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Takes the one lock every command that changes this backup holds (`backup`, recovery,
    /// `recreate`, `delete`, `prune`), without waiting: a second writer is refused.
    pub fn lock_for_writing(&self) -> Result<WriteLock, RepoError> {
        let path = self.lock_path();
        match FileLock::try_acquire(&path) {
            Ok(Some(l)) => Ok(WriteLock { _lock: l }),
            Ok(None) => Err(RepoError::Locked {
                dist: self.root.display().to_string(),
                lock: path.display().to_string(),
            }),
            Err(source) => Err(RepoError::Lock {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Whether a writer (a running `backup`, or a changing `backup-tool` command) holds the lock
    /// right now. Read-only commands use it to describe a run in progress instead of taking its
    /// journal and staging files for leftovers of a crash.
    pub fn writer_running(&self) -> bool {
        FileLock::is_held(&self.lock_path()).unwrap_or(false)
    }

    pub fn load_mirror_index(&self) -> Result<(MirrorIndex, Vec<FormatProblem>), FormatError> {
        let p = self.mirror_index_path();
        if !p.exists() {
            return Ok((MirrorIndex::default(), Vec::new()));
        }
        MirrorIndex::load(&p)
    }

    /// For readers that go on without an index: an unreadable `mirror.json` becomes a problem
    /// and an empty index.
    pub fn load_mirror_index_or_report(&self, problems: &mut Vec<FormatProblem>) -> MirrorIndex {
        match self.load_mirror_index() {
            Ok((m, p)) => {
                problems.extend(p);
                m
            }
            Err(e) => {
                problems.push(FormatProblem {
                    file: self.mirror_index_path().display().to_string(),
                    key: None,
                    message: e.to_string(),
                });
                MirrorIndex::default()
            }
        }
    }

    pub fn load_increment(
        &self,
        name: &IncrementName,
    ) -> Result<(IncrementMeta, Vec<FormatProblem>), FormatError> {
        IncrementMeta::load(&self.increment_meta_path(name))
    }
}
