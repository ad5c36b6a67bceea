//! The journal of a run in progress (`dist/.backup-journal.json`) and the recovery of a run
//! that was interrupted (kill -9, power loss, full disk).
//!
//! The journal is written before the first change to the repository and removed after the
//! index committed the run. It only names the increment being built: recovery does not trust a
//! log of operations, it looks at what is actually on disk —
//! 1. the partial increment: its `track/` and `deleted/` files are real versions (each was
//!    staged, verified and made durable before anything linked it), so recovery finishes its
//!    metadata from them with the one function `recreate` uses
//!    ([`crate::explore::recreate::rebuild_increment_meta`]), or removes it when it holds
//!    nothing;
//! 2. the index: the run's transaction never committed, so the index still describes the
//!    mirror before the run; the catalog is synced (it picks up the finished increment) and the
//!    mirror table is reconciled with `mirror/` ([`Index::reconcile_mirror`]): files the run
//!    renamed in are recognised as the versions the increment holds, others described anew
//!    (hashed from the mirror, so `check --verify` can vouch for them).
//!    The next plan then compares the source with what the mirror really holds and converges.
//!
//! An increment whose metadata was already written is checked against it (a power cut on a
//! drive that did not keep what it was told to, or a run of an older version): a missing or
//! different file is put back from the mirror or the staging folder when one holds the same
//! bytes, and what cannot be found is dropped from the catalog and reported as lost — the
//! metadata never promises what the disk does not hold.
//!
//! Before recovery writes metadata or commits the index, everything they describe is made
//! durable ([`SyncSet`]), as a run does.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use backup_platform::dir::EntryKind;
use backup_platform::fs as pfs;

use crate::durable::{DirRole, SyncSet};
use crate::format::{CatalogEntry, ContentHash, FileKind, IncrementMeta, MTime};
use crate::identity::{timestamp_of, IncrementTime};
use crate::index::{Index, IndexError, Touched};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository, WriteLock};

#[derive(Debug, Serialize, Deserialize)]
struct JournalJson {
    /// The increment this run creates, if it stores anything.
    increment: Option<String>,
    started: String,
    pid: u32,
}

/// What the journal of a run in progress (or of an interrupted one) says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalInfo {
    pub increment: Option<IncrementName>,
    pub started: Option<String>,
}

/// Reads the journal, if there is one (read-only: used to describe a running backup).
pub fn read(repo: &Repository) -> Option<JournalInfo> {
    let text = std::fs::read(repo.journal_path()).ok()?;
    let j = serde_json::from_slice::<JournalJson>(&text).ok();
    Some(JournalInfo {
        increment: j
            .as_ref()
            .and_then(|j| j.increment.as_deref())
            .and_then(IncrementName::parse),
        started: j.map(|j| j.started),
    })
}

/// An open journal; [`Journal::close`] removes it after the commit.
#[derive(Debug)]
pub struct Journal {
    _private: (),
}

impl Journal {
    pub fn open(
        repo: &Repository,
        increment: Option<&IncrementName>,
        started: chrono::DateTime<chrono::Local>,
    ) -> io::Result<Journal> {
        let j = JournalJson {
            increment: increment.map(|n| n.as_str().to_owned()),
            started: timestamp_of(started),
            pid: std::process::id(),
        };
        let data = serde_json::to_vec_pretty(&j).map_err(io::Error::other)?;
        fail::fail_point!("journal::write", |_| Err(io::Error::other(format!(
            "injected fault at journal::write: write {}",
            repo.journal_path().display()
        ))));
        pfs::write_atomic(&repo.journal_path(), &data)?;
        Ok(Journal { _private: () })
    }

    pub fn close(self, repo: &Repository) {
        let _ = std::fs::remove_dir_all(repo.staging_dir());
        let _ = std::fs::remove_file(repo.journal_path());
        let _ = pfs::fsync_dir(repo.root());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("recovering an interrupted run: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("recovering an interrupted run: {0}")]
    Index(#[from] IndexError),
    #[error("recovering an interrupted run: {0}")]
    Rebuild(String),
}

impl RecoveryError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            RecoveryError::Io { source, .. } => pfs::is_disk_full(source),
            RecoveryError::Index(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

fn rio<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RecoveryError + 'a {
    move |source| RecoveryError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The increment finished from the partial run (`None`: it held nothing and was removed).
    pub increment: Option<IncrementName>,
    pub kept_files: usize,
    /// Recorded versions that were missing or different and were put back from the mirror or
    /// the staging folder.
    pub restored: usize,
    /// Recorded versions found nowhere: dropped from the increment's catalog.
    pub lost: Vec<RelPath>,
    /// Copies of the partial increment that were shorter than their source (see
    /// [`drop_unwritten_copies`]): removed, never cataloged.
    pub unwritten: usize,
}

/// What a file found on disk is, enough to tell whether it can be the recorded version.
struct Found {
    kind: FileKind,
    size: u64,
}

fn describe(m: &std::fs::Metadata) -> Found {
    // The walk keeps only files and symlinks.
    let kind = match EntryKind::of(m.file_type()) {
        EntryKind::Symlink => FileKind::Symlink,
        _ => FileKind::File,
    };
    Found {
        kind,
        size: m.len(),
    }
}

/// blake3 of what a stored file holds (of its target for a symlink, also one stored as a plain
/// file on a dist without symlinks).
pub(crate) fn hash_of(path: &Path, kind: FileKind) -> io::Result<ContentHash> {
    match kind {
        FileKind::Dir => Err(io::Error::other("a folder has no content hash")),
        FileKind::Symlink => {
            let t = pfs::read_stored_link(path)?;
            Ok(ContentHash::of(t.as_os_str().as_encoded_bytes()))
        }
        FileKind::File => {
            let mut h = blake3::Hasher::new();
            h.update_reader(std::fs::File::open(path)?)?;
            Ok(h.finalize().into())
        }
    }
}

/// Files and symlinks under `root`, with their relative paths. Unreadable entries are skipped
/// (recovery must not fail on one odd file; the next plan re-copies what is not indexed).
fn walk(root: &Path) -> Vec<(RelPath, std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    if !root.is_dir() {
        return out;
    }
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_root_links(false)
        .follow_links(false);
    for e in walker {
        let Ok(e) = e else { continue };
        let ft = e.file_type();
        if !(ft.is_file() || ft.is_symlink()) {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(root) else {
            continue;
        };
        let Ok(rel) = RelPath::from_path(rel) else {
            continue;
        };
        let Ok(m) = e.metadata() else { continue };
        out.push((rel, e.path().to_path_buf(), m));
    }
    out
}

/// Removes the directories of the mirror that an interrupted run emptied but did not get to
/// prune (deepest first). Preserved directories go too: the run that follows recovery makes
/// them again, and it knows which they are.
fn prune_empty_dirs(root: &Path) {
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
        .follow_root_links(false)
        .follow_links(false);
    for e in walker.into_iter().flatten() {
        if e.file_type().is_dir() {
            // Fails harmlessly for a directory that holds something.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// True for the temporary sibling that [`pfs::write_atomic`] names `.<file>.tmp-<pid>`.
fn temp_sibling_pid(name: &str) -> Option<i32> {
    let (head, pid) = name.rsplit_once(".tmp-")?;
    if !head.starts_with('.') || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files of atomic writes that a killed process left in `dir` (a kill
/// between creating the temporary file and renaming it). A file whose writer is still alive
/// is left alone.
fn remove_temp_siblings(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(temp_sibling_pid) else {
            continue;
        };
        let alive = backup_platform::fs::process_alive(pid);
        if !alive && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Directories under `root` (itself included), never following a link out.
fn dirs_under(root: &Path) -> Vec<std::path::PathBuf> {
    if !root.is_dir() {
        return Vec::new();
    }
    walkdir::WalkDir::new(root)
        .follow_root_links(false)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect()
}

/// True when `path` holds the version `e` records (kind, size, and content when hashed).
fn holds(path: &Path, e: &CatalogEntry) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let f = describe(&m);
    if f.kind != e.kind || f.size != e.size {
        return false;
    }
    match e.hash {
        Some(h) => hash_of(path, f.kind).is_ok_and(|x| x == h),
        None => true,
    }
}

/// Puts the version `e` at `dest` from `from` (a link when the mtime matches and the file
/// system can, else a copy with its mode and mtime), durably.
fn restore_from(from: &Path, dest: &Path, e: &CatalogEntry, sync: &SyncSet) -> io::Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dest)?,
        Ok(_) => std::fs::remove_file(dest)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(parent) = dest.parent() {
        sync.create_dir_all(DirRole::Increment, parent)?;
    }
    match e.kind {
        FileKind::Dir => return Err(io::Error::other("a folder is not a stored version")),
        FileKind::Symlink => {
            pfs::store_symlink(&pfs::read_stored_link(from)?, dest)?;
            pfs::set_mtime_nofollow(dest, e.mtime.ns)?;
        }
        FileKind::File => {
            let same_mtime =
                std::fs::symlink_metadata(from).is_ok_and(|m| MTime::of(&m) == e.mtime);
            if same_mtime && std::fs::hard_link(from, dest).is_ok() {
                sync.file(dest)?;
            } else {
                let out = pfs::copy_new_observed(from, dest, &mut |_| {})?;
                if let Some(mode) = e.mode {
                    pfs::set_mode(dest, mode)?;
                }
                pfs::set_mtime_nofollow(dest, e.mtime.ns)?;
                sync.handle(&out.output)?;
            }
        }
    }
    sync.entry_changed(DirRole::Increment, dest);
    Ok(())
}

/// Checks an increment that has metadata against it; see the module doc. Returns how many
/// versions were put back and which were lost (both already applied to `meta`).
fn complete_recorded(
    repo: &Repository,
    name: &IncrementName,
    meta: &mut IncrementMeta,
    sync: &SyncSet,
) -> (usize, Vec<RelPath>) {
    let mut restored = 0;
    let mut lost = Vec::new();
    // Staged versions by size, hashed only when a missing version of that size needs one.
    let mut staged: Option<Vec<(std::path::PathBuf, u64)>> = None;
    for (rel, e) in meta.file_catalog.iter() {
        let dest = repo.increment_file(name, e.category, rel);
        if holds(&dest, e) {
            continue;
        }
        let mirror = repo.mirror_file(rel);
        let mut source = holds(&mirror, e).then_some(mirror);
        if source.is_none() && e.kind == FileKind::File && e.hash.is_some() {
            let files = staged.get_or_insert_with(|| {
                walk(&repo.staging_dir())
                    .into_iter()
                    .map(|(_, p, m)| (p, m.len()))
                    .collect()
            });
            source = files
                .iter()
                .find(|(p, size)| *size == e.size && holds(p, e))
                .map(|(p, _)| p.clone());
        }
        match source.map(|from| restore_from(&from, &dest, e, sync)) {
            Some(Ok(())) => restored += 1,
            _ => {
                // Neither here nor anywhere else: a wrong file must not pass for the version.
                if std::fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    let _ = std::fs::remove_file(&dest);
                    sync.entry_changed(DirRole::Increment, &dest);
                }
                lost.push(rel.clone());
            }
        }
    }
    for rel in &lost {
        meta.file_catalog.remove(rel);
    }
    if restored > 0 || !lost.is_empty() {
        meta.recount();
    }
    (restored, lost)
}

/// Finishes or rolls back an interrupted run, if the journal says there was one. Runs under
/// the writer lock.
pub fn recover(
    repo: &Repository,
    lock: &WriteLock,
    src: Option<&Path>,
) -> Result<Option<Recovered>, RecoveryError> {
    // Killed while writing the journal or (below) the increment metadata.
    remove_temp_siblings(repo.root());
    let jpath = repo.journal_path();
    let text = match std::fs::read(&jpath) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A staging dir without a journal: temp files of a run that committed but died
            // before cleaning up. Never referenced by anything.
            let _ = std::fs::remove_dir_all(repo.staging_dir());
            return Ok(None);
        }
        Err(e) => return Err(rio("read", &jpath)(e)),
    };
    let journal = serde_json::from_slice::<JournalJson>(&text).ok();
    let started = journal.as_ref().map(|j| j.started.clone());
    let increment = journal
        .and_then(|j| j.increment)
        .and_then(|n| IncrementName::parse(&n));
    // The staging folder stays until the end: it may hold a version a recorded increment lacks.
    let sync = SyncSet::new(repo.root());
    let opened = Index::open_for(repo, Some(lock))?;
    let index = opened.index;
    let mut restored = 0;
    let mut lost = Vec::new();
    let mut kept_files = 0;
    let mut finished = None;
    let mut unwritten = 0;

    // 1. The partial increment.
    if let Some(name) = &increment {
        let dir = repo.increment_dir(name);
        remove_temp_siblings(&dir);
        if dir.is_dir() {
            // Whatever the run left there must be durable before metadata describes it.
            sync.tree(DirRole::Increment, &dir)
                .map_err(rio("sync", &dir))?;
            let existing = repo.load_increment(name).ok().map(|(m, _)| m);
            let meta = match existing {
                // The run got as far as writing its metadata: keep it, once the disk is known
                // to hold what it records.
                Some(mut m) => {
                    let (r, l) = complete_recorded(repo, name, &mut m, &sync);
                    restored = r;
                    lost = l;
                    if r > 0 || !lost.is_empty() {
                        Some(m)
                    } else {
                        finished = Some(name.clone());
                        None
                    }
                }
                None => {
                    if let Some(src) = src {
                        unwritten = drop_unwritten_copies(repo, name, src);
                    }
                    let mut m =
                        crate::explore::recreate::rebuild_increment_meta(repo, &index, name)
                            .map_err(|e| RecoveryError::Rebuild(e.to_string()))?;
                    // The run's own start, as a finished run would have recorded it.
                    m.timestamp = IncrementTime::of(started.as_deref(), name).at.to_rfc3339();
                    Some(m)
                }
            };
            sync.flush().map_err(|e| RecoveryError::Io {
                op: "sync",
                path: e.path,
                source: e.source,
            })?;
            match meta {
                Some(m) if m.file_catalog.is_empty() => {
                    // Nothing stored, or everything it recorded was lost: no empty increment.
                    std::fs::remove_dir_all(&dir).map_err(rio("remove", &dir))?;
                    finished = None;
                }
                Some(mut m) => {
                    m.recount();
                    kept_files = m.file_catalog.len();
                    let p = repo.increment_meta_path(name);
                    pfs::write_atomic_with(&p, |w| m.write_json(w)).map_err(rio("write", &p))?;
                    finished = Some(name.clone());
                }
                None => {}
            }
        }
    }

    // 2. The index: the catalog with the finished increment, the mirror as it really is.
    index.sync_catalog(repo, Some(lock))?;
    prune_empty_dirs(&repo.mirror_dir());
    index.begin()?;
    let result = (|| -> Result<(), RecoveryError> {
        let mut touched = Touched::default();
        index.reconcile_mirror(repo, &mut touched, true)?;
        index.settle(&mut touched)?;
        // Which entries the interrupted run changed is not known: every folder it may have
        // touched is synced (increment first, then the mirror, then `dist`).
        for d in dirs_under(&repo.mirror_dir()) {
            sync.dir_changed(DirRole::Mirror, &d);
        }
        sync.dir_changed(DirRole::Dist, repo.root());
        sync.flush().map_err(|e| RecoveryError::Io {
            op: "sync",
            path: e.path,
            source: e.source,
        })?;
        Ok(())
    })();
    match result {
        Ok(()) => index.commit()?,
        Err(e) => {
            let _ = index.rollback();
            return Err(e);
        }
    }
    let _ = std::fs::remove_dir_all(repo.staging_dir());
    std::fs::remove_file(&jpath).map_err(rio("remove", &jpath))?;
    pfs::fsync_dir(repo.root()).map_err(rio("sync", repo.root()))?;
    Ok(Some(Recovered {
        increment: finished,
        kept_files,
        restored,
        lost,
        unwritten,
    }))
}

/// A run whose copies were not fsynced one by one (`BACKUP_SYNC=syncfs`, or a version of this
/// tool from before every copy was) can leave, after a power cut in the middle of it, a name in
/// the partial increment's `track/` whose bytes never reached the disk: ext4's and XFS's
/// delayed allocation bring such a file back empty or short, never with wrong bytes at its full
/// length. Such a copy would become a version that never existed; it is removed instead when it
/// is shorter than its source (or the source is gone: nothing can tell). The run never reported
/// these copies, so nothing promised is dropped; the run that recovers copies them again. A
/// copy of a source that has changed size since is removed too: the cost of not trusting a
/// short file. (Which way the interrupted run synced is not recorded: this always runs.)
fn drop_unwritten_copies(repo: &Repository, name: &IncrementName, src: &Path) -> usize {
    let track = repo.increment_dir(name).join(crate::repo::TRACK_DIR);
    let mut dropped = 0;
    for e in walkdir::WalkDir::new(&track)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let Ok(rel) = e.path().strip_prefix(&track) else {
            continue;
        };
        let Ok(copy) = e.metadata() else { continue };
        let matches = std::fs::symlink_metadata(src.join(rel))
            .is_ok_and(|s| s.is_file() && s.len() == copy.len());
        if !matches && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(
                "left out a copy that had not reached the disk: {}",
                rel.display()
            );
            dropped += 1;
        }
    }
    dropped
}
