//! The journal of a run in progress (`dist/.backup-journal.json`) and the recovery of a run
//! that was interrupted (kill -9, power loss, full disk).
//!
//! The journal is written before the first change to the repository and removed after
//! `mirror.json` is written. It only names the increment being built: recovery does not trust a
//! log of operations, it looks at what is actually on disk —
//! 1. the partial increment: its `track/` and `deleted/` files are real versions (each was
//!    staged, verified and linked before anything else happened to it), so recovery finishes
//!    its metadata from them (or removes it when it holds nothing);
//! 2. the mirror: files already renamed in or removed make `mirror.json` stale, so every
//!    index entry is checked against the file now in the mirror and re-described (re-hashed)
//!    when it differs; files the index does not know are added. The next plan then compares
//!    the source with what the mirror really holds and converges.
//!
//! An increment whose metadata was already written is checked against it (a power cut on a
//! drive that did not keep what it was told to, or a run of an older version): a missing or
//! different file is put back from the mirror or the staging folder when one holds the same
//! bytes, and what cannot be found is dropped from the catalog and reported as lost — the
//! metadata never promises what the disk does not hold.
//!
//! Before recovery writes metadata or the index, everything they describe is made durable
//! ([`SyncSet`]), as a run does.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use backup_platform::fs as pfs;

use crate::durable::{DirRole, SyncSet};
use crate::format::{
    CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, IndexEntry, MTime, MirrorIndex,
    Op,
};
use crate::identity::{timestamp_of, IncrementTime};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository};

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
}

impl RecoveryError {
    pub fn is_disk_full(&self) -> bool {
        let RecoveryError::Io { source, .. } = self;
        pfs::is_disk_full(source)
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
}

/// Metadata of one file as found on disk.
struct Found {
    kind: FileKind,
    size: u64,
    mtime: MTime,
    mode: Option<u32>,
    ino: Option<(u64, u64)>,
}

fn describe(m: &std::fs::Metadata) -> Found {
    let kind = if m.file_type().is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::File
    };
    Found {
        kind,
        size: m.len(),
        mtime: MTime::of(m),
        mode: match kind {
            FileKind::File | FileKind::Dir => backup_platform::fs::mode_bits(m),
            FileKind::Symlink => None,
        },
        ino: backup_platform::fs::file_id(m),
    }
}

fn hash_of(path: &Path, kind: FileKind) -> io::Result<ContentHash> {
    match kind {
        FileKind::Dir => Err(io::Error::other("a folder has no content hash")),
        FileKind::Symlink => {
            let t = std::fs::read_link(path)?;
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
            pfs::symlink(&std::fs::read_link(from)?, dest)?;
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
        meta.summary = Default::default();
        for e in meta.file_catalog.values() {
            match e.op() {
                Op::New => meta.summary.new += 1,
                Op::Changed => meta.summary.changed += 1,
                Op::Deleted => meta.summary.deleted += 1,
            }
            meta.summary.bytes = meta.summary.bytes.saturating_add(e.size);
        }
    }
    (restored, lost)
}

/// Finishes or rolls back an interrupted run, if the journal says there was one.
pub fn recover(repo: &Repository) -> Result<Option<Recovered>, RecoveryError> {
    // Killed while writing the journal, `mirror.json` or (below) the increment metadata.
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
    let old = repo.load_mirror_index().map(|(i, _)| i).unwrap_or_default();
    let sync = SyncSet::new(repo.root());
    // A file this process cannot open was not written by a run of this user: leave it.
    let synced = |p: &Path| match sync.file(p) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        r => r.map_err(rio("sync", p)),
    };
    let mut restored = 0;
    let mut lost = Vec::new();

    // 1. The partial increment.
    let mut meta: Option<IncrementMeta> = None;
    let mut meta_written = false;
    let mut track_found: std::collections::HashMap<RelPath, (Found, Option<ContentHash>)> =
        Default::default();
    if let Some(name) = &increment {
        let dir = repo.increment_dir(name);
        remove_temp_siblings(&dir);
        if dir.is_dir() {
            let track = walk(&dir.join(Category::Tracked.dir_name()));
            let existing = repo.load_increment(name).ok().map(|(m, _)| m);
            // The run's own start, as a finished run would have recorded it.
            let time = IncrementTime::of(started.as_deref(), name);
            let mut built = IncrementMeta::new(name.as_str(), time.at.to_rfc3339());
            for (rel, path, m) in track {
                let f = describe(&m);
                if f.kind == FileKind::File {
                    synced(&path)?;
                }
                let hash = match existing.as_ref().and_then(|x| x.file_catalog.get(&rel)) {
                    Some(c) if c.hash.is_some() => c.hash,
                    _ => hash_of(&path, f.kind).ok(),
                };
                let op = match old.files.get(&rel) {
                    Some(p) if p.tracked => Op::Changed,
                    _ => Op::New,
                };
                built.file_catalog.insert(
                    rel.clone(),
                    CatalogEntry {
                        size: f.size,
                        mtime: f.mtime,
                        category: Category::Tracked,
                        op: Some(op),
                        kind: f.kind,
                        mode: f.mode,
                        hash,
                        version_of: None,
                        attrs: Default::default(),
                    },
                );
                match op {
                    Op::New => built.summary.new += 1,
                    _ => built.summary.changed += 1,
                }
                built.summary.bytes += f.size;
                track_found.insert(rel, (f, hash));
            }
            for (rel, path, m) in walk(&dir.join(Category::Deleted.dir_name())) {
                let f = describe(&m);
                if f.kind == FileKind::File {
                    synced(&path)?;
                }
                let prev = old.files.get(&rel);
                let hash = prev
                    .and_then(|p| p.hash)
                    .or_else(|| hash_of(&path, f.kind).ok());
                built.file_catalog.insert(
                    rel,
                    CatalogEntry {
                        size: f.size,
                        mtime: f.mtime,
                        category: Category::Deleted,
                        op: Some(Op::Deleted),
                        kind: f.kind,
                        mode: f.mode,
                        hash,
                        version_of: prev.and_then(|p| p.version_of.clone()),
                        attrs: Default::default(),
                    },
                );
                built.summary.deleted += 1;
                built.summary.bytes += f.size;
            }
            meta = match existing {
                // The run got as far as writing its metadata: keep it, once the disk is known
                // to hold what it records.
                Some(mut m) => {
                    meta_written = true;
                    let (r, l) = complete_recorded(repo, name, &mut m, &sync);
                    restored = r;
                    lost = l;
                    (r > 0 || !lost.is_empty()).then_some(m)
                }
                None if built.file_catalog.is_empty() => None,
                None => Some(built),
            };
        }
    }

    // 2. The mirror as it really is.
    let mut index = MirrorIndex::default();
    for (rel, path, m) in walk(&repo.mirror_dir()) {
        let f = describe(&m);
        let prev = old.files.get(&rel);
        let same_meta = prev.is_some_and(|p| {
            p.kind == f.kind
                && p.size == f.size
                && p.mtime == f.mtime
                && (f.kind == FileKind::Symlink || p.mode == f.mode)
        });
        if same_meta {
            if let Some(p) = prev {
                index.files.insert(rel, p.clone());
            }
            continue;
        }
        let Ok(hash) = hash_of(&path, f.kind) else {
            continue;
        };
        // Re-described from what is there now: that must be what stays after a power cut.
        if f.kind == FileKind::File {
            synced(&path)?;
        }
        let in_increment = track_found.get(&rel).is_some_and(|(t, h)| {
            (t.ino.is_some() && t.ino == f.ino) || (t.size == f.size && *h == Some(hash))
        });
        let entry = if in_increment {
            IndexEntry {
                size: f.size,
                mtime: f.mtime,
                tracked: true,
                kind: f.kind,
                mode: f.mode,
                hash: Some(hash),
                version_of: increment.clone(),
                attrs: Default::default(),
                ctime_ns: Default::default(),
            }
        } else if let Some(p) = prev.filter(|p| p.hash == Some(hash) && p.size == f.size) {
            // Same bytes, metadata rounded by the file system (exFAT keeps 10 ms): keep.
            p.clone()
        } else {
            IndexEntry {
                size: f.size,
                mtime: f.mtime,
                tracked: prev.is_some_and(|p| p.tracked),
                kind: f.kind,
                mode: f.mode,
                hash: Some(hash),
                version_of: None,
                attrs: Default::default(),
                ctime_ns: Default::default(),
            }
        };
        index.files.insert(rel, entry);
    }

    prune_empty_dirs(&repo.mirror_dir());

    // Which entries the interrupted run changed is not known: every folder it may have
    // touched is synced (increment first, then the mirror, then `dist`).
    if let Some(name) = &increment {
        for d in dirs_under(&repo.increment_dir(name)) {
            sync.dir_changed(DirRole::Increment, &d);
        }
    }
    for d in dirs_under(&repo.mirror_dir()) {
        sync.dir_changed(DirRole::Mirror, &d);
    }
    sync.dir_changed(DirRole::Dist, repo.root());
    sync.flush().map_err(|e| RecoveryError::Io {
        op: "sync",
        path: e.path,
        source: e.source,
    })?;
    let mut kept_files = 0;
    let mut finished = None;
    if let Some(name) = &increment {
        match &meta {
            Some(m) if m.file_catalog.is_empty() => {
                // Everything it recorded was lost: no empty increment.
                let d = repo.increment_dir(name);
                std::fs::remove_dir_all(&d).map_err(rio("remove", &d))?;
            }
            Some(m) => {
                kept_files = m.file_catalog.len();
                let p = repo.increment_meta_path(name);
                pfs::write_atomic_with(&p, |w| m.write_json(w)).map_err(rio("write", &p))?;
                finished = Some(name.clone());
            }
            None if meta_written => finished = Some(name.clone()),
            None => {
                let d = repo.increment_dir(name);
                if d.exists() {
                    std::fs::remove_dir_all(&d).map_err(rio("remove", &d))?;
                }
            }
        }
    }
    index.updated = Some(chrono::Local::now().to_rfc3339());
    let ip = repo.mirror_index_path();
    pfs::write_atomic_with(&ip, |w| index.write_json(w)).map_err(rio("write", &ip))?;
    let _ = std::fs::remove_dir_all(repo.staging_dir());
    std::fs::remove_file(&jpath).map_err(rio("remove", &jpath))?;
    pfs::fsync_dir(repo.root()).map_err(rio("sync", repo.root()))?;
    Ok(Some(Recovered {
        increment: finished,
        kept_files,
        restored,
        lost,
    }))
}
