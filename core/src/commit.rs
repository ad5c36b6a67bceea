//! Commit: record what was applied in the index — the mirror's rows and the increment's
//! catalog — inside one write transaction that a run holds from its first change to its end,
//! then, once everything is durable, write the increment's metadata and commit.
//!
//! The order is what makes a crash (or a power cut) harmless ([`crate::journal::recover`]):
//! every file and directory entry the metadata speaks of is durable ([`SyncSet::flush`]), then
//! the metadata file (atomic, fsynced with its folder), then the index's commit, then the
//! journal goes. Until the commit, readers see the backup as the previous run left it.

use std::io;

use backup_platform::fs as pfs;

use crate::apply::{self, Copied, Deleted, Stage};
use crate::durable::SyncError;
use crate::format::{
    CatalogEntry, Category, FileKind, FolderEntry, IncrementHeader, IndexEntry, Op,
};
use crate::identity::{timestamp_of, IncrementTime};
use crate::index::{Index, IndexError, Touched};
use crate::journal::Journal;
use crate::progress::FileError;
use crate::relpath::RelPath;
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
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A bug: a stored version reached the recorder before its increment.
    #[error("internal error: {0} was stored before its increment was recorded")]
    Order(RelPath),
}

impl CommitError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            CommitError::Write { source, .. } => pfs::is_disk_full(source),
            CommitError::Sync(e) => pfs::is_disk_full(&e.source),
            CommitError::Index(e) => e.is_disk_full(),
            CommitError::Order(_) => false,
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

/// Something a step of the run did, for the index.
#[derive(Debug)]
pub enum Record {
    /// The run named and created its increment (before its first tracked change).
    IncrementCreated(IncrementName),
    Copied(Copied),
    Deleted(Deleted),
    /// A folder of the selection, new or with new metadata.
    Folder(RelPath, IndexEntry),
    /// An unchanged entry whose ctime moved: its row, with the new ctime.
    Touch(RelPath, IndexEntry),
    /// The increment records this folder's metadata.
    FolderRecord(RelPath),
}

/// Writes a run into the index as it goes (one write transaction for the whole run).
pub struct Recorder {
    index: Index,
    repo: Repository,
    started: chrono::DateTime<chrono::Local>,
    increment: Option<(i64, IncrementName)>,
    /// Folder records that came before the increment existed (walk order puts a folder's
    /// record after its content, but a folder record may precede the first tracked change
    /// elsewhere): written once it exists, dropped if it never does.
    pending_folders: Vec<RelPath>,
    /// Folders recorded into this run's increment: remembered again if the increment is
    /// dropped after all.
    recorded_folders: Vec<RelPath>,
    touched: Touched,
    /// Anything changed at all (else nothing is committed).
    changed: bool,
}

impl Recorder {
    pub fn new(
        index: Index,
        repo: Repository,
        started: chrono::DateTime<chrono::Local>,
    ) -> Result<Recorder, CommitError> {
        index.begin()?;
        Ok(Recorder {
            index,
            repo,
            started,
            increment: None,
            pending_folders: Vec::new(),
            recorded_folders: Vec::new(),
            touched: Touched::default(),
            changed: false,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn record(&mut self, r: Record) -> Result<(), CommitError> {
        self.changed = true;
        match r {
            Record::IncrementCreated(name) => {
                let time = IncrementTime::of(Some(&timestamp_of(self.started)), &name);
                let ts = timestamp_of(self.started);
                let id = self.index.add_increment(&name, &time, Some(&ts))?;
                self.increment = Some((id, name));
                // Folders changed by earlier runs that made no increment, then this run's.
                let mut rels = self.index.pending_folders()?;
                rels.append(&mut self.pending_folders);
                rels.sort();
                rels.dedup();
                for rel in &rels {
                    self.folder_record(rel)?;
                }
            }
            Record::Copied(c) => {
                self.index.mirror_put(&c.rel, &c.entry)?;
                if c.stored.is_some() && self.increment.is_none() {
                    // A version is in track/ of an increment this recorder was not told of:
                    // recording on would leave it out of the catalog.
                    return Err(CommitError::Order(c.rel.clone()));
                }
                if let (Some(op), Some((id, name))) = (c.stored, &self.increment) {
                    let e = CatalogEntry {
                        size: c.entry.size,
                        mtime: c.entry.mtime,
                        category: Category::Tracked,
                        op: Some(op),
                        kind: c.entry.kind,
                        mode: c.entry.mode,
                        hash: c.entry.hash,
                        version_of: None,
                        attrs: c.entry.attrs.clone(),
                    };
                    // A path that had versions may have some kept by other holders that this
                    // one changes (the mirror no longer holds the old one).
                    let refold = op != Op::New;
                    self.index
                        .add_event(*id, name, &c.rel, &e, refold, &mut self.touched)?;
                }
            }
            Record::Deleted(d) => {
                self.index.mirror_remove(&d.rel)?;
                if let (true, Some((id, name))) = (d.stored, &self.increment) {
                    let p = &d.previous;
                    let e = CatalogEntry {
                        size: p.size,
                        mtime: p.mtime,
                        category: Category::Deleted,
                        op: Some(Op::Deleted),
                        kind: p.kind,
                        mode: p.mode,
                        hash: p.hash,
                        version_of: p.version_of.clone(),
                        attrs: p.attrs.clone(),
                    };
                    self.index
                        .add_event(*id, name, &d.rel, &e, true, &mut self.touched)?;
                }
            }
            Record::Folder(rel, e) => self.index.mirror_put(&rel, &e)?,
            Record::Touch(rel, e) => self.index.mirror_put(&rel, &e)?,
            Record::FolderRecord(rel) => {
                if self.increment.is_some() {
                    self.folder_record(&rel)?;
                } else {
                    self.pending_folders.push(rel);
                }
            }
        }
        Ok(())
    }

    fn folder_record(&mut self, rel: &RelPath) -> Result<(), CommitError> {
        let Some((id, name)) = &self.increment else {
            return Ok(());
        };
        self.recorded_folders.push(rel.clone());
        if let Some(e) = self.index.mirror_get(rel)? {
            if e.kind == FileKind::Dir {
                let f = FolderEntry {
                    mtime: e.mtime,
                    mode: e.mode,
                    attrs: e.attrs,
                };
                self.index.add_folder(*id, name, rel, &f)?;
            }
        }
        Ok(())
    }

    /// The mirror's row of `rel` as this run left it so far.
    pub fn mirror_entry(&self, rel: &RelPath) -> Result<Option<IndexEntry>, CommitError> {
        Ok(self.index.mirror_get(rel)?)
    }

    /// Finishes the run: folders pruned and given their recorded times, everything made
    /// durable, the increment's metadata written, the index committed, the journal closed.
    /// Per-file problems of the finishing steps go to `errors`.
    pub fn finish(
        mut self,
        stage: &Stage,
        journal: Option<Journal>,
        errors: &mut Vec<FileError>,
    ) -> Result<Committed, CommitError> {
        let repo = self.repo.clone();
        // Folders the deletions emptied, then every folder whose entries changed gets its
        // recorded mtime (and mode) now that nothing more happens inside it.
        let (pruned, prune_errors) = apply::prune_dirs(stage);
        errors.extend(prune_errors);
        for rel in &pruned {
            self.index.mirror_remove(rel)?;
        }
        for rel in stage.take_touched_folders() {
            if let Some(e) = self.index.mirror_get(&rel)? {
                if e.kind == FileKind::Dir {
                    if let Err(err) = apply::finish_folder(stage, &rel, &e) {
                        errors.push(FileError::new(
                            Some(&rel),
                            "set folder metadata",
                            err.to_string(),
                        ));
                    }
                }
            }
        }
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
        stage.sync().flush()?;
        let mut out = Committed::default();
        if let Some((id, name)) = self.increment.take() {
            self.index.settle(&mut self.touched)?;
            let dir = repo.increment_dir(&name);
            let has_events = self.index.increment_has_events(id)?;
            if has_events {
                let path = repo.increment_meta_path(&name);
                fail::fail_point!("commit::increment_meta", |_| Err(CommitError::Write {
                    path: path.display().to_string(),
                    source: io::Error::other(format!(
                        "injected fault at commit::increment_meta: write {}",
                        path.display()
                    )),
                }));
                let summary = self.write_metadata(id, &name, &path)?;
                self.index.finish_increment(id, &path)?;
                self.index.pending_folders_clear()?;
                out.increment = Some(name);
                out.new = summary.new;
                out.changed = summary.changed;
                out.deleted = summary.deleted;
            } else {
                // Nothing was stored after all (every tracked copy failed): no empty increment.
                // The folder is this run's own (created exclusively when named).
                self.index.drop_increment_now(id)?;
                let _ = std::fs::remove_dir_all(&dir);
                let _ = pfs::fsync_dir(repo.root());
                self.index.pending_folders_add(&self.recorded_folders)?;
            }
        } else {
            self.index.settle(&mut self.touched)?;
            self.index.pending_folders_add(&self.pending_folders)?;
        }
        self.index.set_setting(
            crate::index::MIRROR_UPDATED,
            &chrono::Local::now().to_rfc3339(),
        )?;
        fail::fail_point!("commit::mirror_index", |_| Err(CommitError::Write {
            path: repo.index_path().display().to_string(),
            source: io::Error::other(format!(
                "injected fault at commit::mirror_index: write {}",
                repo.index_path().display()
            )),
        }));
        self.index.commit()?;
        if let Some(j) = journal {
            j.close(&repo);
        }
        Ok(out)
    }

    /// Writes `backup_X/backup_X.json` from the catalog rows of this run, streaming.
    fn write_metadata(
        &self,
        id: i64,
        name: &IncrementName,
        path: &std::path::Path,
    ) -> Result<crate::format::IncrementSummary, CommitError> {
        let header = IncrementHeader::new(name.as_str(), timestamp_of(self.started));
        let werr = |source: io::Error| CommitError::Write {
            path: path.display().to_string(),
            source,
        };
        let index = &self.index;
        let mut summary = None;
        pfs::write_atomic_with(path, |w| {
            // Streamed from the index: memory does not grow with the increment's size.
            let mut iw = crate::format::IncrementWriter::begin(w, &header)?;
            index
                .increment_events(id, &mut |p, e| {
                    iw.entry(&p, &e)
                        .map_err(|source| crate::index::IndexError::Io {
                            op: "write",
                            path: path.display().to_string(),
                            source,
                        })
                })
                .map_err(io::Error::other)?;
            index
                .increment_folders(id, &mut |p, f| {
                    iw.folder(&p, &f)
                        .map_err(|source| crate::index::IndexError::Io {
                            op: "write",
                            path: path.display().to_string(),
                            source,
                        })
                })
                .map_err(io::Error::other)?;
            summary = Some(iw.finish()?);
            Ok(())
        })
        .map_err(werr)?;
        Ok(summary.unwrap_or_default())
    }

    /// Abandons the run's changes to the index (the journal stays: recovery reconciles).
    pub fn abandon(self) {
        let _ = self.index.rollback();
    }

    /// Whether anything was recorded (a run with no change commits nothing).
    pub fn changed(&self) -> bool {
        self.changed
    }
}
