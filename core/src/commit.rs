//! Commit: record what was applied — the increment metadata, then `mirror.json` — each written
//! atomically, then drop the journal. Until the journal is gone a crash is recovered by
//! [`crate::journal::recover`], so the order matters: every file and directory entry the
//! metadata speaks of durable ([`SyncSet::flush`]), then the metadata, the index, the journal.

use std::io;

use backup_platform::fs as pfs;

use crate::apply::ApplyOutcome;
use crate::durable::{SyncError, SyncSet};
use crate::format::{CatalogEntry, Category, IncrementMeta, MirrorIndex, Op};
use crate::identity::timestamp_of;
use crate::journal::Journal;
use crate::repo::{IncrementName, Repository};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    /// What the run wrote could not be made durable: no metadata may claim it.
    #[error("{0}")]
    Sync(#[from] SyncError),
}

impl CommitError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            CommitError::Write { source, .. } => pfs::is_disk_full(source),
            CommitError::Sync(e) => pfs::is_disk_full(&e.source),
        }
    }
}

/// What the commit recorded.
#[derive(Debug, Default, Clone)]
pub struct Committed {
    /// The increment, when it holds at least one event.
    pub increment: Option<IncrementName>,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
}

/// Folds the applied changes into `index` (in place) and builds the increment catalog.
pub fn fold(
    index: &mut MirrorIndex,
    applied: ApplyOutcome,
    increment: Option<&IncrementName>,
    started: chrono::DateTime<chrono::Local>,
) -> Option<IncrementMeta> {
    let mut meta = increment.map(|n| IncrementMeta::new(n.as_str(), timestamp_of(started)));
    for d in applied.deleted {
        index.files.remove(&d.rel);
        if let (true, Some(meta)) = (d.stored, meta.as_mut()) {
            let p = &d.previous;
            meta.file_catalog.insert(
                d.rel.clone(),
                CatalogEntry {
                    size: p.size,
                    mtime: p.mtime,
                    category: Category::Deleted,
                    op: Some(Op::Deleted),
                    kind: p.kind,
                    mode: p.mode,
                    hash: p.hash,
                    version_of: p.version_of.clone(),
                    attrs: Default::default(),
                },
            );
            meta.summary.deleted += 1;
            meta.summary.bytes += p.size;
        }
    }
    for c in applied.copied {
        if let (Some(op), Some(meta)) = (c.stored, meta.as_mut()) {
            let e = &c.entry;
            meta.file_catalog.insert(
                c.rel.clone(),
                CatalogEntry {
                    size: e.size,
                    mtime: e.mtime,
                    category: Category::Tracked,
                    op: Some(op),
                    kind: e.kind,
                    mode: e.mode,
                    hash: e.hash,
                    version_of: None,
                    attrs: Default::default(),
                },
            );
            match op {
                Op::New => meta.summary.new += 1,
                _ => meta.summary.changed += 1,
            }
            meta.summary.bytes += e.size;
        }
        index.files.insert(c.rel, c.entry);
    }
    meta.filter(|m| !m.file_catalog.is_empty())
}

fn write(
    path: &std::path::Path,
    fill: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<(), CommitError> {
    pfs::write_atomic_with(path, fill).map_err(|source| CommitError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the increment metadata (or removes an increment folder that ended up empty) and the
/// new `mirror.json`, then closes the journal.
pub fn commit(
    repo: &Repository,
    increment: Option<&IncrementName>,
    meta: Option<&IncrementMeta>,
    index: &mut MirrorIndex,
    journal: Option<Journal>,
    sync: &SyncSet,
) -> Result<Committed, CommitError> {
    // Leftover temporaries of failed copies are referenced by nothing; drop them first so a
    // run stopped by a full disk still has room to record what it did.
    let _ = std::fs::remove_dir_all(repo.staging_dir());
    // Everything the metadata is about must be durable before the metadata says it is: the
    // workers fsynced each new version; now the directories that name them.
    fail::fail_point!("commit::sync", |_| Err(CommitError::Sync(SyncError {
        path: repo.root().display().to_string(),
        source: io::Error::other(format!(
            "injected fault at commit::sync: fsync {}/",
            repo.root().display()
        )),
    })));
    sync.flush()?;
    let mut out = Committed::default();
    match (increment, meta) {
        (Some(name), Some(meta)) => {
            fail::fail_point!("commit::increment_meta", |_| Err(CommitError::Write {
                path: repo.increment_meta_path(name).display().to_string(),
                source: io::Error::other(format!(
                    "injected fault at commit::increment_meta: write {}",
                    repo.increment_meta_path(name).display()
                )),
            }));
            write(&repo.increment_meta_path(name), |w| meta.write_json(w))?;
            out.increment = Some(name.clone());
            out.new = meta.summary.new;
            out.changed = meta.summary.changed;
            out.deleted = meta.summary.deleted;
        }
        (Some(name), None) => {
            // Nothing was stored after all (every tracked copy failed): no empty increment.
            let _ = std::fs::remove_dir_all(repo.increment_dir(name));
        }
        _ => {}
    }
    index.updated = Some(chrono::Local::now().to_rfc3339());
    fail::fail_point!("commit::mirror_index", |_| Err(CommitError::Write {
        path: repo.mirror_index_path().display().to_string(),
        source: io::Error::other(format!(
            "injected fault at commit::mirror_index: write {}",
            repo.mirror_index_path().display()
        )),
    }));
    write(&repo.mirror_index_path(), |w| index.write_json(w))?;
    if let Some(j) = journal {
        j.close(repo);
    }
    Ok(out)
}
