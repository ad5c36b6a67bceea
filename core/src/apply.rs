//! Apply: carry out a [`Plan`] on the repository.
//!
//! Invariant 1 of SPEC §2 lives here: no byte is ever written into an inode that the mirror or
//! an increment already holds. Every new version is copied into a fresh temporary file in the
//! staging dir (hashed with blake3 while copying, mtime and mode set on it), hard-linked into
//! `backup_X/track/<rel>` when it is a tracked new/changed file, and only then renamed over
//! `mirror/<rel>`. Tracked deletions are renamed from the mirror into `backup_X/deleted/<rel>`.
//!
//! Order: deletions, pruning of emptied directories, then copies — so a path that turned from
//! a file into a directory (or back) is free before it is written.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use backup_platform::fs as pfs;

use crate::durable::{DirRole, SyncSet};
use crate::format::{Category, ContentHash, FileKind, IndexEntry, MTime, Op};
use crate::plan::{CopyItem, DeleteItem, Plan};
use crate::progress::{Event, EventSink, FileError, RunNote};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository};

/// How often a file that keeps changing while it is copied is tried before it is reported.
const COPY_ATTEMPTS: usize = 3;

/// Shared state of the workers of one run.
pub struct Stage {
    repo: Repository,
    src: PathBuf,
    increment: Option<IncrementName>,
    /// Selected directories named in `preserved_dirs`: kept (with everything inside) even empty.
    preserved: HashSet<RelPath>,
    copy_fallback: AtomicBool,
    disk_full: AtomicBool,
    /// What the commit must make durable; each new version is fsynced here as it is staged.
    sync: Arc<SyncSet>,
    next_temp: AtomicU64,
    mirror_dirs: Mutex<HashSet<RelPath>>,
    increment_dirs: Mutex<HashSet<(Category, RelPath)>>,
    events: EventSink,
}

impl Stage {
    pub fn new(
        repo: Repository,
        src: PathBuf,
        increment: Option<IncrementName>,
        preserved: &[RelPath],
        sync: Arc<SyncSet>,
        events: EventSink,
    ) -> Self {
        Stage {
            repo,
            src,
            increment,
            preserved: preserved.iter().cloned().collect(),
            copy_fallback: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            sync,
            next_temp: AtomicU64::new(0),
            mirror_dirs: Mutex::new(HashSet::new()),
            increment_dirs: Mutex::new(HashSet::new()),
            events,
        }
    }
}

/// A version now in the mirror.
#[derive(Clone, Debug)]
pub struct Copied {
    pub rel: RelPath,
    pub entry: IndexEntry,
    /// The increment event stored in `track/` (`None`: untracked, nothing stored).
    pub stored: Option<Op>,
}

/// A path removed from the mirror.
#[derive(Clone, Debug)]
pub struct Deleted {
    pub rel: RelPath,
    pub previous: IndexEntry,
    /// True when the last version was kept in `deleted/` of the increment.
    pub stored: bool,
}

#[derive(Debug, Default)]
pub struct ApplyOutcome {
    pub copied: Vec<Copied>,
    pub copied_bytes: u64,
    pub deleted: Vec<Deleted>,
    pub errors: Vec<FileError>,
    pub notes: Vec<RunNote>,
    pub disk_full: bool,
    pub link_fallback: bool,
    /// Copies not attempted because the disk was full.
    pub skipped_disk_full: usize,
}

enum CopyResult {
    Done(Copied),
    Vanished(RelPath),
    Failed(FileError, bool),
    Skipped,
}

fn io_err(rel: &RelPath, op: &'static str, e: &io::Error) -> (FileError, bool) {
    let full = pfs::is_disk_full(e);
    let msg = if full {
        format!("the disk is full ({e})")
    } else {
        e.to_string()
    };
    (FileError::new(Some(rel), op, msg), full)
}

/// Runs the plan. Deletions and pruning happen on one blocking thread, copies on up to
/// `max_workers` blocking threads at once.
pub async fn apply(
    plan: Plan,
    stage: Arc<Stage>,
    max_workers: usize,
    preserved_dirs: Vec<RelPath>,
) -> ApplyOutcome {
    let mut out = ApplyOutcome::default();
    let setup = {
        let stage = stage.clone();
        tokio::task::spawn_blocking(move || prepare(&stage)).await
    };
    match setup {
        Ok(Ok(())) => {}
        Ok(Err((err, full))) => {
            out.disk_full = full;
            out.errors.push(err);
            out.skipped_disk_full = plan.copies.len();
            return out;
        }
        Err(join) => {
            out.errors
                .push(FileError::new(None, "prepare", join.to_string()));
            return out;
        }
    }

    let Plan {
        copies, deletes, ..
    } = plan;
    let del_stage = stage.clone();
    let del = tokio::task::spawn_blocking(move || {
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        for d in deletes {
            match delete_one(&del_stage, &d) {
                Ok(true) => deleted.push(Deleted {
                    stored: d.is_tracked() && del_stage.increment.is_some(),
                    rel: d.rel,
                    previous: d.previous,
                }),
                Ok(false) => {
                    notes.push(RunNote::MissingFromMirror { rel: d.rel.clone() });
                    deleted.push(Deleted {
                        rel: d.rel,
                        previous: d.previous,
                        stored: false,
                    });
                }
                Err(e) => {
                    let (err, full) = io_err(&d.rel, "remove from mirror", &e);
                    if full {
                        del_stage.disk_full.store(true, Ordering::SeqCst);
                    }
                    errors.push(err);
                }
            }
        }
        errors.extend(prune_dirs(&del_stage, deleted.iter().map(|d| &d.rel)));
        for p in &preserved_dirs {
            let _ = ensure_dir(
                &del_stage.repo.mirror_dir(),
                Some(p),
                &del_stage.mirror_dirs,
                true,
                &del_stage.sync,
            );
        }
        (deleted, errors, notes)
    })
    .await;
    match del {
        Ok((deleted, errors, notes)) => {
            for e in &errors {
                (stage.events)(Event::Error(e.clone()));
            }
            out.deleted = deleted;
            out.errors.extend(errors);
            out.notes.extend(notes);
        }
        Err(join) => out
            .errors
            .push(FileError::new(None, "delete", join.to_string())),
    }

    let sem = Arc::new(tokio::sync::Semaphore::new(max_workers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let collect = |r: Result<CopyResult, tokio::task::JoinError>, out: &mut ApplyOutcome| match r {
        Ok(CopyResult::Done(c)) => {
            out.copied_bytes += c.entry.size;
            out.copied.push(c);
        }
        Ok(CopyResult::Vanished(rel)) => out.notes.push(RunNote::Vanished { rel }),
        Ok(CopyResult::Failed(e, full)) => {
            out.disk_full |= full;
            out.errors.push(e);
        }
        Ok(CopyResult::Skipped) => out.skipped_disk_full += 1,
        Err(join) => out
            .errors
            .push(FileError::new(None, "copy", join.to_string())),
    };
    for item in copies {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let stage = stage.clone();
        tasks.spawn_blocking(move || {
            let r = copy_one(&stage, item);
            drop(permit);
            r
        });
        // Collect finished results as we go so memory stays bounded by the pool.
        while let Some(r) = tasks.try_join_next() {
            collect(r, &mut out);
        }
    }
    while let Some(r) = tasks.join_next().await {
        collect(r, &mut out);
    }
    out.disk_full |= stage.disk_full.load(Ordering::SeqCst);
    out.link_fallback = stage.copy_fallback.load(Ordering::SeqCst);
    out
}

fn prepare(stage: &Stage) -> Result<(), (FileError, bool)> {
    let mk = |p: &Path, what: &'static str| {
        stage.sync.create_dir_all(DirRole::Dist, p).map_err(|e| {
            let full = pfs::is_disk_full(&e);
            (
                FileError::new(None, what, format!("{}: {e}", p.display())),
                full,
            )
        })
    };
    mk(&stage.repo.mirror_dir(), "create mirror")?;
    // The staging dir need not be durable: recovery removes whatever is left of it.
    std::fs::create_dir_all(stage.repo.staging_dir()).map_err(|e| {
        let full = pfs::is_disk_full(&e);
        (
            FileError::new(
                None,
                "create staging dir",
                format!("{}: {e}", stage.repo.staging_dir().display()),
            ),
            full,
        )
    })?;
    // The increment folder was created (exclusively) when the run named it.
    Ok(())
}

/// Makes sure `root/rel` is a real directory, replacing anything else found on the way (a file
/// or a symlink left there, which must never be followed out of the mirror). Results are
/// cached, so each directory is checked once per run.
fn ensure_dir(
    root: &Path,
    rel: Option<&RelPath>,
    cache: &Mutex<HashSet<RelPath>>,
    replace_non_dirs: bool,
    sync: &SyncSet,
) -> io::Result<()> {
    let Some(rel) = rel else { return Ok(()) };
    if cache.lock().map(|c| c.contains(rel)).unwrap_or(false) {
        return Ok(());
    }
    let mut cur: Option<RelPath> = None;
    for comp in rel.components() {
        let next = match &cur {
            None => RelPath::from_bytes(comp),
            Some(c) => c.join(comp),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if !cache.lock().map(|c| c.contains(&next)).unwrap_or(false) {
            let path = next.under(root);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) if replace_non_dirs => {
                    std::fs::remove_file(&path)?;
                    mkdir_tolerant(&path)?;
                    sync.entry_changed(DirRole::Mirror, &path);
                }
                Ok(_) => {
                    mkdir_tolerant(&path)?;
                    sync.entry_changed(DirRole::Mirror, &path);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    mkdir_tolerant(&path)?;
                    sync.entry_changed(DirRole::Mirror, &path);
                }
                Err(e) => return Err(e),
            }
            if let Ok(mut c) = cache.lock() {
                c.insert(next.clone());
            }
        }
        cur = Some(next);
    }
    Ok(())
}

fn mkdir_tolerant(p: &Path) -> io::Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        // Another worker made it in between.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn increment_parent(
    stage: &Stage,
    name: &IncrementName,
    cat: Category,
    rel: &RelPath,
) -> io::Result<PathBuf> {
    let root = stage.repo.increment_dir(name).join(cat.dir_name());
    if let Some(parent) = rel.parent() {
        let key = (cat, parent.clone());
        let known = stage
            .increment_dirs
            .lock()
            .map(|c| c.contains(&key))
            .unwrap_or(false);
        if !known {
            stage
                .sync
                .create_dir_all(DirRole::Increment, &parent.under(&root))?;
            stage
                .sync
                .dir_changed(DirRole::Increment, &parent.under(&root));
            if let Ok(mut c) = stage.increment_dirs.lock() {
                c.insert(key);
            }
        }
    } else {
        stage.sync.create_dir_all(DirRole::Increment, &root)?;
        stage.sync.dir_changed(DirRole::Increment, &root);
    }
    Ok(rel.under(&root))
}

/// Returns `Ok(false)` when the file was already gone from the mirror.
fn delete_one(stage: &Stage, d: &DeleteItem) -> io::Result<bool> {
    let mirror = stage.repo.mirror_file(&d.rel);
    fail::fail_point!("apply::remove", |_| Err(io::Error::other(format!(
        "injected fault at apply::remove: remove {}",
        mirror.display()
    ))));
    match (&stage.increment, d.is_tracked()) {
        (Some(name), true) => {
            let dest = increment_parent(stage, name, Category::Deleted, &d.rel)?;
            match std::fs::rename(&mirror, &dest) {
                Ok(()) => {
                    stage.sync.entry_changed(DirRole::Mirror, &mirror);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => match std::fs::remove_file(&mirror) {
            Ok(()) => {
                stage.sync.entry_changed(DirRole::Mirror, &mirror);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
    }
}

fn is_preserved(stage: &Stage, rel: &RelPath) -> bool {
    let mut cur = Some(rel.clone());
    while let Some(c) = cur {
        if stage.preserved.contains(&c) {
            return true;
        }
        cur = c.parent();
    }
    false
}

/// Removes `rel` when it holds nothing but (recursively) empty, unpreserved directories. Stops
/// at the first file it meets, so a big directory costs one short read. `Ok(false)`: something
/// is still inside; an error other than that is returned, for the run to report.
fn remove_if_empty(stage: &Stage, root: &Path, rel: &RelPath) -> io::Result<bool> {
    if is_preserved(stage, rel) {
        return Ok(false);
    }
    let path = rel.under(root);
    if let Some(done) = remove_empty_dir(&path)? {
        stage.sync.entry_changed(DirRole::Mirror, &path);
        return Ok(done);
    }
    let Ok(rd) = std::fs::read_dir(&path) else {
        return Ok(false);
    };
    let mut subdirs = Vec::new();
    for e in rd {
        let Ok(e) = e else { return Ok(false) };
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                let Ok(child) = rel.join(e.file_name().as_encoded_bytes()) else {
                    return Ok(false);
                };
                subdirs.push(child);
            }
            _ => return Ok(false),
        }
    }
    for d in &subdirs {
        if !remove_if_empty(stage, root, d)? {
            return Ok(false);
        }
    }
    let removed = remove_empty_dir(&path)?.unwrap_or(false);
    if removed {
        stage.sync.entry_changed(DirRole::Mirror, &path);
    }
    Ok(removed)
}

/// `Some(true)`: removed or already gone; `None`: not empty.
fn remove_empty_dir(path: &Path) -> io::Result<Option<bool>> {
    fail::fail_point!("apply::prune", |_| Err(io::Error::other(format!(
        "injected fault at apply::prune: remove empty folder {}",
        path.display()
    ))));
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(true)),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes directories of the mirror that the deletions left empty, deepest first, except
/// selected preserved ones (and everything inside them: a `.git` keeps its empty `refs/tags`).
/// Failures other than "still holds something" are reported.
fn prune_dirs<'a>(stage: &Stage, removed: impl Iterator<Item = &'a RelPath>) -> Vec<FileError> {
    let mut errors = Vec::new();
    let mut dirs: HashSet<RelPath> = HashSet::new();
    for rel in removed {
        let mut p = rel.parent();
        while let Some(d) = p {
            if !dirs.insert(d.clone()) {
                break;
            }
            p = d.parent();
        }
    }
    let mut dirs: Vec<RelPath> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.depth()));
    let root = stage.repo.mirror_dir();
    for d in dirs {
        if let Err(e) = remove_if_empty(stage, &root, &d) {
            errors.push(io_err(&d, "prune directory", &e).0);
        }
    }
    errors
}

struct Staged {
    temp: PathBuf,
    entry: IndexEntry,
}

fn mode_of(m: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        0o644
    }
}

enum StageError {
    Vanished,
    Io(&'static str, io::Error),
    KeptChanging,
}

fn temp_path(stage: &Stage) -> PathBuf {
    let n = stage.next_temp.fetch_add(1, Ordering::Relaxed);
    stage.repo.staging_dir().join(format!("{n}.tmp"))
}

/// Copies the source version into a fresh staging file with its mtime and mode.
fn stage_version(stage: &Stage, item: &CopyItem) -> Result<Staged, StageError> {
    let src = item.entry.rel.under(&stage.src);
    let vanished = |op, e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            StageError::Vanished
        } else {
            StageError::Io(op, e)
        }
    };
    match item.entry.kind {
        FileKind::Dir => Err(StageError::Io(
            "copy",
            io::Error::other("folders are not staged"),
        )),
        FileKind::Symlink => {
            let meta = std::fs::symlink_metadata(&src).map_err(|e| vanished("stat", e))?;
            if !meta.file_type().is_symlink() {
                return Err(StageError::Io(
                    "copy",
                    io::Error::other("changed from a symlink into something else during the run"),
                ));
            }
            let target = std::fs::read_link(&src).map_err(|e| vanished("read link", e))?;
            let temp = temp_path(stage);
            pfs::symlink(&target, &temp).map_err(|e| StageError::Io("create symlink", e))?;
            let mtime = MTime::of(&meta);
            if let Err(e) = pfs::set_mtime_nofollow(&temp, mtime.ns) {
                let _ = std::fs::remove_file(&temp);
                return Err(StageError::Io("set mtime", e));
            }
            let bytes = target.as_os_str().as_encoded_bytes();
            Ok(Staged {
                temp,
                entry: IndexEntry {
                    size: bytes.len() as u64,
                    mtime,
                    tracked: item.entry.tracked,
                    kind: FileKind::Symlink,
                    mode: None,
                    hash: Some(ContentHash::of(bytes)),
                    version_of: None,
                    attrs: Default::default(),
                    ctime_ns: Default::default(),
                },
            })
        }
        FileKind::File => {
            fail::fail_point!("apply::copy", |_| Err(StageError::Io(
                "copy",
                io::Error::other(format!(
                    "injected fault at apply::copy: copy {}",
                    src.display()
                ))
            )));
            for _ in 0..COPY_ATTEMPTS {
                let temp = temp_path(stage);
                let mut hasher = blake3::Hasher::new();
                let out = pfs::copy_new_observed(&src, &temp, &mut |c| {
                    hasher.update(c);
                    (stage.events)(Event::Copying {
                        bytes: c.len() as u64,
                    });
                })
                .map_err(|e| vanished("copy", e))?;
                let (b, a) = (&out.before, &out.after);
                let stable = b.len() == a.len()
                    && out.len == a.len()
                    && MTime::of(b) == MTime::of(a)
                    && mode_of(b) == mode_of(a);
                if !stable {
                    let _ = std::fs::remove_file(&temp);
                    continue;
                }
                let mtime = MTime::of(a);
                let mode = mode_of(a);
                let finish = pfs::set_mode(&temp, mode)
                    .map_err(|e| StageError::Io("set permissions", e))
                    .and_then(|_| {
                        pfs::set_mtime_nofollow(&temp, mtime.ns)
                            .map_err(|e| StageError::Io("set mtime", e))
                    });
                // Durable before anything links to it: a name that survives a power cut then
                // always leads to the whole version, with its mtime and mode.
                let finish = finish.and_then(|_| {
                    stage
                        .sync
                        .handle(&out.output)
                        .map_err(|e| StageError::Io("sync", e))
                });
                drop(out.output);
                if let Err(e) = finish {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
                return Ok(Staged {
                    temp,
                    entry: IndexEntry {
                        size: out.len,
                        mtime,
                        tracked: item.entry.tracked,
                        kind: FileKind::File,
                        mode: Some(mode),
                        hash: Some(hasher.finalize().into()),
                        version_of: None,
                        attrs: Default::default(),
                        ctime_ns: Default::default(),
                    },
                });
            }
            Err(StageError::KeptChanging)
        }
    }
}

/// Puts the staged version into `track/` of the increment: a hard link, or a copy where the
/// file system cannot link (said once per run).
fn store_in_increment(
    stage: &Stage,
    name: &IncrementName,
    rel: &RelPath,
    s: &Staged,
) -> io::Result<PathBuf> {
    let dest = increment_parent(stage, name, Category::Tracked, rel)?;
    fail::fail_point!("apply::link", |_| Err(io::Error::other(format!(
        "injected fault at apply::link: hard link {}",
        dest.display()
    ))));
    if !stage.copy_fallback.load(Ordering::SeqCst) {
        match std::fs::hard_link(&s.temp, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if pfs::is_link_unsupported(&e) => {
                if !stage.copy_fallback.swap(true, Ordering::SeqCst) {
                    (stage.events)(Event::Note(RunNote::LinkFallback {
                        dist: stage.repo.root().display().to_string(),
                        reason: e.to_string(),
                    }));
                }
            }
            Err(e) => return Err(e),
        }
    }
    match s.entry.kind {
        FileKind::Dir => return Err(io::Error::other("folders are not stored")),
        FileKind::Symlink => {
            let target = std::fs::read_link(&s.temp)?;
            pfs::symlink(&target, &dest)?;
        }
        FileKind::File => {
            let mut sink = |_: &[u8]| {};
            let out = pfs::copy_new_observed(&s.temp, &dest, &mut sink)?;
            if let Some(mode) = s.entry.mode {
                pfs::set_mode(&dest, mode)?;
            }
            pfs::set_mtime_nofollow(&dest, s.entry.mtime.ns)?;
            stage.sync.handle(&out.output)?;
            return Ok(dest);
        }
    }
    pfs::set_mtime_nofollow(&dest, s.entry.mtime.ns)?;
    Ok(dest)
}

fn install_in_mirror(stage: &Stage, rel: &RelPath, temp: &Path) -> io::Result<()> {
    let root = stage.repo.mirror_dir();
    ensure_dir(
        &root,
        rel.parent().as_ref(),
        &stage.mirror_dirs,
        true,
        &stage.sync,
    )?;
    let dest = rel.under(&root);
    stage.sync.entry_changed(DirRole::Mirror, &dest);
    fail::fail_point!("apply::rename", |_| Err(io::Error::other(format!(
        "injected fault at apply::rename: rename into {}",
        dest.display()
    ))));
    match std::fs::rename(temp, &dest) {
        Ok(()) => Ok(()),
        Err(e) => match std::fs::symlink_metadata(&dest) {
            // A directory (left over where the source now has a file) is in the way.
            Ok(m) if m.is_dir() => {
                std::fs::remove_dir_all(&dest)?;
                std::fs::rename(temp, &dest)
            }
            _ => Err(e),
        },
    }
}

fn copy_one(stage: &Stage, item: CopyItem) -> CopyResult {
    if stage.disk_full.load(Ordering::SeqCst) {
        return CopyResult::Skipped;
    }
    let rel = item.entry.rel.clone();
    let report = |(err, full): (FileError, bool)| {
        if full {
            stage.disk_full.store(true, Ordering::SeqCst);
        }
        (stage.events)(Event::Error(err.clone()));
        (stage.events)(Event::FileDone {
            bytes: 0,
            ok: false,
        });
        CopyResult::Failed(err, full)
    };
    let staged = match stage_version(stage, &item) {
        Ok(s) => s,
        Err(StageError::Vanished) => {
            (stage.events)(Event::Note(RunNote::Vanished { rel: rel.clone() }));
            return CopyResult::Vanished(rel);
        }
        Err(StageError::Io(op, e)) => return report(io_err(&rel, op, &e)),
        Err(StageError::KeptChanging) => {
            return report((
                FileError::new(
                    Some(&rel),
                    "copy",
                    format!("the file kept changing while being copied ({COPY_ATTEMPTS} attempts); not recorded"),
                ),
                false,
            ))
        }
    };
    let op = item.increment_op();
    let mut entry = staged.entry.clone();
    let mut stored_at = None;
    if let (Some(op), Some(name)) = (op, &stage.increment) {
        match store_in_increment(stage, name, &rel, &staged) {
            Ok(p) => {
                stored_at = Some(p);
                entry.version_of = Some(name.clone());
                let _ = op;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged.temp);
                return report(io_err(&rel, "store in increment", &e));
            }
        }
    }
    if let Err(e) = install_in_mirror(stage, &rel, &staged.temp) {
        let _ = std::fs::remove_file(&staged.temp);
        // Keep the increment consistent with its metadata: without the mirror update the
        // catalog will not list this version.
        if let Some(p) = stored_at {
            let _ = std::fs::remove_file(p);
        }
        return report(io_err(&rel, "rename into mirror", &e));
    }
    (stage.events)(Event::FileDone {
        bytes: entry.size,
        ok: true,
    });
    CopyResult::Done(Copied {
        rel,
        entry,
        stored: if stored_at.is_some() { op } else { None },
    })
}
