//! The layout of a backup at `dist` and read access to it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use crate::format::{FormatError, FormatProblem, IncrementMeta, MirrorIndex};
use crate::relpath::RelPath;

pub const MIRROR_DIR: &str = "mirror";
pub const MIRROR_INDEX: &str = "mirror.json";
pub const TRACK_DIR: &str = "track";
pub const DELETED_DIR: &str = "deleted";
pub const INCREMENT_PREFIX: &str = "backup_";
/// Files we add at `dist`. Dot-names that do not start with `backup_`, so the original tool,
/// which looks for `backup_*` folders, ignores them.
pub const LOCK_FILE: &str = ".backup.lock";
pub const JOURNAL_FILE: &str = ".backup-journal.json";
pub const STAGING_DIR: &str = ".backup-staging";

/// A validated increment name: `backup_YYYYMMDD_HHMMSS` with an optional `_NN` suffix that keeps
/// names unique (and sorted by time) when two runs start in the same second.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncrementName(String);

impl IncrementName {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(INCREMENT_PREFIX)?;
        let b = rest.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() < 15 || !digits(0..8) || b[8] != b'_' || !digits(9..15) {
            return None;
        }
        if b.len() > 15 && (b[15] != b'_' || b.len() == 16 || !digits(16..b.len())) {
            return None;
        }
        NaiveDateTime::parse_from_str(&rest[..15], "%Y%m%d_%H%M%S").ok()?;
        Some(IncrementName(s.to_owned()))
    }

    /// The name for a run started at `when`, distinct from (and sorting after) every name in
    /// `existing`.
    pub fn for_time(when: DateTime<Local>, existing: &[IncrementName]) -> Self {
        let base = format!("{INCREMENT_PREFIX}{}", when.format("%Y%m%d_%H%M%S"));
        let mut name = IncrementName(base.clone());
        let mut n = 0u32;
        while existing.iter().any(|e| e >= &name) {
            n += 1;
            name = IncrementName(format!("{base}_{n:02}"));
            if n > 9999 {
                break;
            }
        }
        // A clock that went backwards: sort after the newest name instead.
        if let Some(last) = existing.iter().max() {
            if &name <= last {
                let mut n = 1u32;
                loop {
                    let cand = IncrementName(format!("{}_{n:02}", last.0));
                    if !existing.contains(&cand) {
                        return cand;
                    }
                    n += 1;
                }
            }
        }
        name
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local time the name encodes.
    pub fn time(&self) -> DateTime<Local> {
        let naive =
            NaiveDateTime::parse_from_str(&self.0[INCREMENT_PREFIX.len()..][..15], "%Y%m%d_%H%M%S")
                .expect("validated at parse");
        Local
            .from_local_datetime(&naive)
            .earliest()
            .unwrap_or_else(|| Local.from_utc_datetime(&naive))
    }
}

impl std::fmt::Display for IncrementName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_stay_unique_and_sorted() {
        assert!(IncrementName::parse("backup_20240105_100000").is_some());
        assert!(IncrementName::parse("backup_20240105_100000_01").is_some());
        assert!(IncrementName::parse("backup_20240105_1000").is_none());
        assert!(IncrementName::parse("backup_20241305_100000").is_none());
        assert!(IncrementName::parse("backup_20240105_100000_").is_none());
        let t = Local.with_ymd_and_hms(2024, 1, 5, 10, 0, 0).unwrap();
        let a = IncrementName::for_time(t, &[]);
        let b = IncrementName::for_time(t, std::slice::from_ref(&a));
        let c = IncrementName::for_time(t, &[a.clone(), b.clone()]);
        assert!(a < b && b < c, "{a} {b} {c}");
        let later = IncrementName::for_time(
            t + chrono::Duration::seconds(1),
            &[a.clone(), b.clone(), c.clone()],
        );
        assert!(later > c);
        let earlier =
            IncrementName::for_time(t - chrono::Duration::hours(1), std::slice::from_ref(&a));
        assert!(earlier > a);
    }
}
