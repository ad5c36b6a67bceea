//! Apply: carry out the steps of a plan on the repository, one at a time, as the plan hands
//! them out (see `pipeline`).
//!
//! Invariant 1 of `docs/format.md` lives here: no byte is ever written into an inode that the mirror or
//! an increment already holds. Every new version is copied into a fresh temporary file in the
//! staging dir (hashed with blake3 while copying, holes kept as holes, owner, mode, xattrs and
//! mtime set on it, and made durable), hard-linked into `backup_X/track/<rel>` when it is a
//! tracked new/changed file, and only then renamed over `mirror/<rel>`. Tracked deletions are
//! renamed from the mirror into `backup_X/deleted/<rel>`. The other names of a hard-link group
//! are links to the first one's inode, in the mirror and in the increment alike. A folder of the
//! mirror is changed in place (no increment shares a folder): created with its recorded mode
//! and owner, and given its mtime (and a restrictive mode) only once its entries are done.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use backup_platform::fs as pfs;
use backup_platform::meta::{self as pmeta, Owners};

use crate::durable::{DirRole, SyncSet};
use crate::format::{Attrs, Category, ContentHash, FileKind, IndexEntry, MTime, Op, Owner};
use crate::plan::{CopyItem, DeleteItem, FolderItem};
use crate::progress::{Event, EventSink, FileError, RunNote};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository};

/// How often a file that keeps changing while it is copied is tried before it is reported.
const COPY_ATTEMPTS: usize = 3;

/// Shared state of the steps of one run (the plan's thread and the copy workers).
pub struct Stage {
    repo: Repository,
    src: PathBuf,
    /// The run's increment, once a step first stores something (named then, by the pipeline).
    increment: RwLock<Option<IncrementName>>,
    copy_fallback: AtomicBool,
    /// `dist` cannot hold symlinks: they are stored as plain files holding their targets.
    symlink_fallback: AtomicBool,
    disk_full: AtomicBool,
    /// New versions start as unnamed files in their mirror folder (until a file system says
    /// it has none).
    unnamed_files: AtomicBool,
    /// What the commit must make durable; each new version is fsynced here as it is staged.
    sync: std::sync::Arc<SyncSet>,
    next_temp: AtomicU64,
    mirror_dirs: Mutex<HashSet<RelPath>>,
    increment_dirs: Mutex<HashSet<(Category, RelPath)>>,
    /// Folders of the mirror whose entries this run changed: their mtimes (and, when not
    /// running as root, restrictive modes) are set once everything inside is done.
    touched_folders: Mutex<HashSet<RelPath>>,
    /// Folders of the mirror a deletion emptied, pruned at the end unless preserved.
    emptied: Mutex<HashSet<RelPath>>,
    preserved: Mutex<HashSet<RelPath>>,
    owners: Mutex<Owners>,
    root: bool,
    events: EventSink,
}

impl Stage {
    pub fn new(
        repo: Repository,
        src: PathBuf,
        sync: std::sync::Arc<SyncSet>,
        events: EventSink,
    ) -> Self {
        Stage {
            repo,
            src,
            increment: RwLock::new(None),
            copy_fallback: AtomicBool::new(false),
            symlink_fallback: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            unnamed_files: AtomicBool::new(true),
            sync,
            next_temp: AtomicU64::new(0),
            mirror_dirs: Mutex::new(HashSet::new()),
            increment_dirs: Mutex::new(HashSet::new()),
            touched_folders: Mutex::new(HashSet::new()),
            emptied: Mutex::new(HashSet::new()),
            preserved: Mutex::new(HashSet::new()),
            owners: Mutex::new(Owners::default()),
            root: pmeta::is_root(),
            events,
        }
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    pub fn sync(&self) -> &SyncSet {
        &self.sync
    }

    /// The run's increment from now on (the pipeline names and creates it).
    pub fn set_increment(&self, name: IncrementName) {
        *self.increment.write().unwrap_or_else(|p| p.into_inner()) = Some(name);
    }

    pub fn increment(&self) -> Option<IncrementName> {
        self.increment
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn emit(&self, e: Event) {
        (self.events)(e)
    }

    pub fn link_fallback(&self) -> bool {
        self.copy_fallback.load(Ordering::SeqCst)
    }

    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::SeqCst)
    }

    /// From now on the run copies nothing more; what it did is still recorded.
    pub fn mark_disk_full(&self) {
        self.disk_full.store(true, Ordering::SeqCst);
    }

    fn touched(&self, folder: Option<RelPath>) {
        if let (Some(f), Ok(mut t)) = (folder, self.touched_folders.lock()) {
            t.insert(f);
        }
    }

    /// The recorded owner of an entry, with names where the system knows them.
    fn owner(&self, uid: u32, gid: u32) -> Owner {
        let mut o = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        Owner {
            uid,
            gid,
            user: o.user(uid),
            group: o.group(gid),
        }
    }

    /// The folders whose metadata must be set last, deepest first (and forgets them).
    pub fn take_touched_folders(&self) -> Vec<RelPath> {
        let set = std::mem::take(
            &mut *self
                .touched_folders
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut v: Vec<RelPath> = set.into_iter().collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.depth()));
        v
    }
}

/// A version now in the mirror.
#[derive(Clone, Debug)]
pub struct Copied {
    pub rel: RelPath,
    pub entry: IndexEntry,
    /// The increment event stored in `track/` (`None`: untracked or a repair, nothing stored).
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

/// What one copy came to.
pub enum CopyResult {
    Done(Copied),
    Vanished(RelPath),
    /// (A full disk also sets the stage's flag: the copies still queued are skipped.)
    Failed(FileError),
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

/// Creates the mirror and staging folders (once, before the first change).
pub fn prepare(stage: &Stage) -> Result<(), (FileError, bool)> {
    let failed = |op: &'static str, dir: PathBuf| {
        move |e: io::Error| {
            let full = pfs::is_disk_full(&e);
            let msg = format!("{}: {e}", dir.display());
            (FileError::new(None, op, msg), full)
        }
    };
    let mirror = stage.repo.mirror_dir();
    stage
        .sync
        .create_dir_all(DirRole::Dist, &mirror)
        .map_err(failed("create mirror", mirror.clone()))?;
    // The staging dir need not be durable: recovery removes whatever is left of it.
    let staging = stage.repo.staging_dir();
    std::fs::create_dir_all(&staging).map_err(failed("create staging dir", staging.clone()))
}

/// The mode a folder of the mirror gets: the recorded one, plus what this process needs to
/// keep working in it when it is not root (root needs no permission bits; the index keeps the
/// real mode, which restores and the mount show).
fn mirror_folder_mode(stage: &Stage, recorded: u32) -> u32 {
    let mode = pmeta::permission_bits(recorded);
    if stage.root {
        mode
    } else {
        mode | 0o700
    }
}

/// Makes sure `root/rel` is a real directory, replacing anything else found on the way (a file
/// or a symlink left there, which must never be followed out of the mirror). Results are
/// cached, so each directory is checked once per run.
fn ensure_dir(stage: &Stage, rel: Option<&RelPath>) -> io::Result<()> {
    let Some(rel) = rel else { return Ok(()) };
    let cache = &stage.mirror_dirs;
    if cache.lock().map(|c| c.contains(rel)).unwrap_or(false) {
        return Ok(());
    }
    let root = stage.repo.mirror_dir();
    let mut cur: Option<RelPath> = None;
    for comp in rel.components() {
        let next = match &cur {
            None => RelPath::from_bytes(comp),
            Some(c) => c.join(comp),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if !cache.lock().map(|c| c.contains(&next)).unwrap_or(false) {
            let path = next.under(&root);
            let made = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => false,
                Ok(_) => {
                    std::fs::remove_file(&path)?;
                    mkdir_tolerant(&path)?
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_tolerant(&path)?,
                Err(e) => return Err(e),
            };
            if made {
                stage.sync.entry_changed(DirRole::Mirror, &path);
                stage.touched(next.parent());
                stage.touched(Some(next.clone()));
            }
            if let Ok(mut c) = cache.lock() {
                c.insert(next.clone());
            }
        }
        cur = Some(next);
    }
    Ok(())
}

/// `Ok(true)` when this call made it.
fn mkdir_tolerant(p: &Path) -> io::Result<bool> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(true),
        // Another worker made it in between.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A folder of the selection that is new or whose metadata changed: made, with its owner,
/// mode and xattrs (its mtime comes last, see [`finish_folder`]).
pub fn apply_folder(stage: &Stage, f: &FolderItem) -> Result<IndexEntry, (FileError, bool)> {
    let rel = &f.folder.rel;
    let err = |op, e: &io::Error| io_err(rel, op, e);
    ensure_dir(stage, Some(rel)).map_err(|e| err("create folder", &e))?;
    if f.folder.preserved {
        if let Ok(mut p) = stage.preserved.lock() {
            p.insert(rel.clone());
        }
    }
    let xattrs = match &f.xattrs {
        Some(x) => x.clone(),
        None => f
            .previous
            .as_ref()
            .map(|p| p.attrs.xattrs.clone())
            .unwrap_or_default(),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let path = rel.under(&stage.repo.mirror_dir());
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| err("open folder", &e))?;
        let apply = pmeta::Apply {
            mode: Some(mirror_folder_mode(stage, f.folder.mode)),
            owner: Some((f.folder.uid, f.folder.gid)),
            mtime_ns: None,
            // Only what this process may set; the index keeps the whole set.
            xattrs: Some(&xattrs),
        };
        if let Err(e) = pmeta::apply_fd(&dir, &path, &apply, stage.root) {
            // Attributes a file system cannot hold (exFAT has no xattrs or owners) are in the
            // index; the mirror's folder only carries what it can.
            tracing::debug!("folder metadata of {}: {e}", path.display());
        }
    }
    stage.touched(Some(rel.clone()));
    Ok(IndexEntry {
        size: 0,
        mtime: f.folder.mtime,
        tracked: false,
        kind: FileKind::Dir,
        mode: Some(f.folder.mode),
        hash: None,
        version_of: None,
        attrs: Attrs {
            owner: Some(stage.owner(f.folder.uid, f.folder.gid)),
            xattrs,
            ..Default::default()
        },
        ctime_ns: Some(f.folder.ctime_ns),
    })
}

/// Gives a mirror folder its recorded mtime (and mode), after everything inside it changed.
pub fn finish_folder(stage: &Stage, rel: &RelPath, recorded: &IndexEntry) -> io::Result<()> {
    let path = rel.under(&stage.repo.mirror_dir());
    if let Some(mode) = recorded.mode {
        let want = mirror_folder_mode(stage, mode);
        match std::fs::symlink_metadata(&path) {
            // Where no mode is kept (Windows) there is nothing to compare or set.
            Ok(m) if m.is_dir() && pmeta::mode_bits(&m).is_some_and(|have| have != want) => {
                pfs::set_mode(&path, want)?
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    match pfs::set_mtime_nofollow(&path, recorded.mtime.ns) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
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

/// Removes a path that left the selection from the mirror: a tracked file's last version is
/// renamed into the increment's `deleted/`, anything else unlinked; a folder is left for the
/// pruning at the end (it may still hold what other rows describe).
pub fn delete_one(stage: &Stage, d: &DeleteItem) -> Result<Deleted, (FileError, bool)> {
    let mirror = stage.repo.mirror_file(&d.rel);
    let run = || -> io::Result<bool> {
        fail::fail_point!("apply::remove", |_| Err(io::Error::other(format!(
            "injected fault at apply::remove: remove {}",
            mirror.display()
        ))));
        if d.previous.kind == FileKind::Dir {
            if let Ok(mut e) = stage.emptied.lock() {
                e.insert(d.rel.clone());
            }
            return Ok(true);
        }
        let increment = stage.increment();
        let gone = match (&increment, d.is_tracked()) {
            (Some(name), true) => {
                let dest = increment_parent(stage, name, Category::Deleted, &d.rel)?;
                std::fs::rename(&mirror, &dest)
            }
            _ => std::fs::remove_file(&mirror),
        };
        match gone {
            Ok(()) => {
                stage.sync.entry_changed(DirRole::Mirror, &mirror);
                stage.touched(d.rel.parent());
                if let (Some(p), Ok(mut e)) = (d.rel.parent(), stage.emptied.lock()) {
                    e.insert(p);
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    };
    match run() {
        Ok(found) => {
            if !found {
                (stage.events)(Event::Note(RunNote::MissingFromMirror {
                    rel: d.rel.clone(),
                }));
            }
            Ok(Deleted {
                stored: found && d.is_tracked() && stage.increment().is_some(),
                rel: d.rel.clone(),
                previous: d.previous.clone(),
            })
        }
        Err(e) => {
            let (err, full) = io_err(&d.rel, "remove from mirror", &e);
            if full {
                stage.mark_disk_full();
            }
            Err((err, full))
        }
    }
}

fn is_preserved(preserved: &HashSet<RelPath>, rel: &RelPath) -> bool {
    let mut cur = Some(rel.clone());
    while let Some(c) = cur {
        if preserved.contains(&c) {
            return true;
        }
        cur = c.parent();
    }
    false
}

/// Removes `rel` when it holds nothing but (recursively) empty, unpreserved directories. Stops
/// at the first file it meets, so a big directory costs one short read. `Ok(false)`: something
/// is still inside; an error other than that is returned, for the run to report.
fn remove_if_empty(
    stage: &Stage,
    preserved: &HashSet<RelPath>,
    root: &Path,
    rel: &RelPath,
    removed: &mut Vec<RelPath>,
) -> io::Result<bool> {
    if is_preserved(preserved, rel) {
        return Ok(false);
    }
    let path = rel.under(root);
    if let Some(done) = remove_empty_dir(&path)? {
        stage.sync.entry_changed(DirRole::Mirror, &path);
        stage.touched(rel.parent());
        removed.push(rel.clone());
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
        if !remove_if_empty(stage, preserved, root, d, removed)? {
            return Ok(false);
        }
    }
    let gone = remove_empty_dir(&path)?.unwrap_or(false);
    if gone {
        stage.sync.entry_changed(DirRole::Mirror, &path);
        stage.touched(rel.parent());
        removed.push(rel.clone());
    }
    Ok(gone)
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

/// Removes the folders of the mirror that deletions left empty, deepest first, except selected
/// preserved ones (and everything inside them: a `.git` keeps its empty `refs/tags`). Returns
/// the folders removed and the failures (other than "still holds something").
pub fn prune_dirs(stage: &Stage) -> (Vec<RelPath>, Vec<FileError>) {
    let emptied = std::mem::take(&mut *stage.emptied.lock().unwrap_or_else(|p| p.into_inner()));
    let preserved = stage
        .preserved
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let mut dirs: HashSet<RelPath> = HashSet::new();
    for rel in emptied {
        let mut p = Some(rel);
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
    let mut errors = Vec::new();
    let mut removed = Vec::new();
    for d in dirs {
        if let Err(e) = remove_if_empty(stage, &preserved, &root, &d, &mut removed) {
            errors.push(io_err(&d, "prune directory", &e).0);
        }
    }
    (removed, errors)
}

struct Staged {
    out: Output,
    /// The open new file of a named output, for its fsync (an unnamed one is its own handle;
    /// a symlink has none: its directory's fsync makes it durable).
    handle: Option<std::fs::File>,
    entry: IndexEntry,
}

impl Staged {
    /// The open new file to write back and fsync (`None` for a symlink).
    fn file(&self) -> Option<&std::fs::File> {
        match (&self.out, &self.handle) {
            (Output::Unnamed(f), _) => Some(f),
            (Output::Named(_), h) => h.as_ref(),
        }
    }
}

/// A new version, written and complete, before it has its names in the increment and the
/// mirror.
enum Output {
    /// A file (or symlink) in staging.
    Named(PathBuf),
    /// A file with no name yet (see [`pfs::create_unnamed`]): each name it gets is a link
    /// from the handle, with no staging name and no rename.
    Unnamed(std::fs::File),
}

impl Output {
    fn discard(&self) {
        if let Output::Named(t) = self {
            let _ = std::fs::remove_file(t);
        }
    }
}

enum StageError {
    Vanished,
    Io(&'static str, io::Error),
    KeptChanging,
}

/// The file a new version is written to: unnamed in its mirror folder where the file system
/// has such files (named in staging once written), else a named file in staging
/// (`Some(path)`).
fn create_output(
    stage: &Stage,
    rel: &RelPath,
) -> Result<(std::fs::File, Option<PathBuf>), StageError> {
    if stage.unnamed_files.load(Ordering::Relaxed) {
        ensure_dir(stage, rel.parent().as_ref()).map_err(|e| StageError::Io("create folder", e))?;
        let dir = match rel.parent() {
            Some(p) => p.under(&stage.repo.mirror_dir()),
            None => stage.repo.mirror_dir(),
        };
        match pfs::create_unnamed(&dir) {
            Ok(f) => return Ok((f, None)),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                stage.unnamed_files.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(StageError::Io("create", e)),
        }
    }
    let temp = temp_path(stage);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| StageError::Io("create", e))?;
    Ok((f, Some(temp)))
}

fn temp_path(stage: &Stage) -> PathBuf {
    let n = stage.next_temp.fetch_add(1, Ordering::Relaxed);
    stage.repo.staging_dir().join(format!("{n}.tmp"))
}

fn stat_ids(m: &std::fs::Metadata) -> (u32, u32, u32, u64, i64) {
    let (uid, gid) = pmeta::owner_of(m);
    let allocated = pmeta::blocks_of(m).map_or(m.len(), |b| b.saturating_mul(512));
    (pmeta::mode_or_readonly(m), uid, gid, allocated, ctime_ns(m))
}

/// Inode change time; where there is none (Windows), the modification time.
fn ctime_ns(m: &std::fs::Metadata) -> i64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.ctime() * 1_000_000_000 + m.ctime_nsec()
    }
    #[cfg(not(unix))]
    {
        MTime::of(m).ns
    }
}

/// Opens a source file for reading without following a symlink in its last component.
fn open_source(path: &Path) -> io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    o.open(path)
}

/// Copies the source version into a fresh staging file with its attributes.
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
            let real = pfs::store_symlink(&target, &temp)
                .map_err(|e| StageError::Io("create symlink", e))?;
            if !real && !stage.symlink_fallback.swap(true, Ordering::SeqCst) {
                (stage.events)(Event::Note(RunNote::SymlinkFallback {
                    dist: stage.repo.root().display().to_string(),
                }));
            }
            let mtime = MTime::of(&meta);
            let (_, uid, gid, _, ctime) = stat_ids(&meta);
            // (A plain file standing in for a symlink is on a file system without owners.)
            #[cfg(unix)]
            if stage.root && real {
                if let Err(e) = std::os::unix::fs::lchown(&temp, Some(uid), Some(gid)) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(StageError::Io("change owner", e));
                }
            }
            if let Err(e) = pfs::set_mtime_nofollow(&temp, mtime.ns) {
                let _ = std::fs::remove_file(&temp);
                return Err(StageError::Io("set mtime", e));
            }
            let bytes = target.as_os_str().as_encoded_bytes();
            Ok(Staged {
                out: Output::Named(temp),
                handle: None,
                entry: IndexEntry {
                    size: bytes.len() as u64,
                    mtime,
                    tracked: item.entry.tracked,
                    kind: FileKind::Symlink,
                    mode: None,
                    hash: Some(ContentHash::of(bytes)),
                    version_of: None,
                    attrs: Attrs {
                        owner: Some(stage.owner(uid, gid)),
                        ..Default::default()
                    },
                    ctime_ns: Some(ctime),
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
                let input = open_source(&src).map_err(|e| vanished("open", e))?;
                let before = input.metadata().map_err(|e| StageError::Io("stat", e))?;
                if !before.is_file() {
                    return Err(StageError::Io(
                        "copy",
                        io::Error::other("not a regular file any more"),
                    ));
                }
                let (output, named) = create_output(stage, &item.entry.rel)?;
                // Until it is linked into staging, an unnamed file needs no clean-up.
                let discard = |temp: &Option<PathBuf>| {
                    if let Some(t) = temp {
                        let _ = std::fs::remove_file(t);
                    }
                };
                let mut hasher = blake3::Hasher::new();
                let mut observe = |c: &[u8]| {
                    hasher.update(c);
                    (stage.events)(Event::Copying {
                        bytes: c.len() as u64,
                    });
                };
                let copied = backup_platform::sparse::copy_sparse(
                    &input,
                    &output,
                    backup_platform::sparse::Holes::Keep,
                    Some(&mut observe),
                );
                let copied = match copied {
                    Ok(c) => c,
                    Err(e) => {
                        drop(output);
                        discard(&named);
                        return Err(vanished("copy", e));
                    }
                };
                let after = input.metadata().map_err(|e| StageError::Io("stat", e))?;
                let (mode, uid, gid, allocated, ctime) = stat_ids(&before);
                let stable = before.len() == after.len()
                    && copied.len == after.len()
                    && MTime::of(&before) == MTime::of(&after)
                    && stat_ids(&after).0 == mode;
                if !stable {
                    drop(output);
                    discard(&named);
                    continue;
                }
                let mut named = named;
                // Where messages say the file is (an unnamed one has only its destination).
                let shown = named
                    .clone()
                    .unwrap_or_else(|| item.entry.rel.under(&stage.repo.mirror_dir()));
                // Attributes from the open source (what was copied is what is described).
                let xattrs = pmeta::xattrs_of_fd(&input).unwrap_or_default();
                let mtime = MTime::of(&after);
                let apply = pmeta::Apply {
                    mode: Some(mode),
                    owner: Some((uid, gid)),
                    mtime_ns: Some(mtime.ns),
                    xattrs: Some(&xattrs),
                };
                // Owner, mode, xattrs, mtime on the new inode before anything links to it;
                // what the file system cannot hold (exFAT: owners, xattrs) is in the index.
                let finish = match pmeta::apply_file(&output, &shown, &apply, stage.root) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::debug!("attributes of {}: {e}", shown.display());
                        // The fallback works on a name: give an unnamed file one in staging.
                        let temp = match &named {
                            Some(t) => Ok(t.clone()),
                            None => {
                                let t = temp_path(stage);
                                pfs::link_unnamed(&output, &t)
                                    .map(|()| t)
                                    .map_err(|e| StageError::Io("name the new file", e))
                            }
                        };
                        temp.and_then(|t| {
                            named = Some(t.clone());
                            // The index holds the mode whatever the file system keeps of it
                            // (exFAT refuses setuid, setgid and sticky bits, or any mode).
                            pfs::set_mode_lenient(&t, mode);
                            pfs::set_mtime_nofollow(&t, mtime.ns)
                                .map_err(|e| StageError::Io("set mtime", e))
                        })
                    }
                };
                // (Made durable by `install_staged`, before anything links to it.)
                if let Err(e) = finish {
                    drop(output);
                    discard(&named);
                    return Err(e);
                }
                let (out, handle) = match named {
                    Some(t) => (Output::Named(t), Some(output)),
                    None => (Output::Unnamed(output), None),
                };
                return Ok(Staged {
                    out,
                    handle,
                    entry: IndexEntry {
                        size: copied.len,
                        mtime,
                        tracked: item.entry.tracked,
                        kind: FileKind::File,
                        mode: Some(mode),
                        hash: Some(hasher.finalize().into()),
                        version_of: None,
                        attrs: Attrs {
                            owner: Some(stage.owner(uid, gid)),
                            xattrs,
                            sparse: allocated.saturating_add(4096) <= copied.len,
                            hardlink_of: None,
                        },
                        ctime_ns: Some(ctime),
                    },
                });
            }
            Err(StageError::KeptChanging)
        }
    }
}

/// Puts a version (the staged file `out`) into `track/` of the increment: a hard link, or a
/// copy where the file system cannot link (said once per run).
fn store_in_increment(
    stage: &Stage,
    name: &IncrementName,
    rel: &RelPath,
    out: &Output,
    entry: &IndexEntry,
) -> io::Result<PathBuf> {
    let dest = increment_parent(stage, name, Category::Tracked, rel)?;
    fail::fail_point!("apply::link", |_| Err(io::Error::other(format!(
        "injected fault at apply::link: hard link {}",
        dest.display()
    ))));
    let from = match out {
        Output::Named(p) => p,
        // Only file systems with links have unnamed files.
        Output::Unnamed(f) => return pfs::link_unnamed(f, &dest).map(|()| dest),
    };
    if !stage.copy_fallback.load(Ordering::SeqCst) {
        match std::fs::hard_link(from, &dest) {
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
    match entry.kind {
        FileKind::Dir => return Err(io::Error::other("folders are not stored")),
        FileKind::Symlink => {
            let target = pfs::read_stored_link(from)?;
            pfs::store_symlink(&target, &dest)?;
        }
        FileKind::File => {
            let input = std::fs::File::open(from)?;
            let output = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)?;
            backup_platform::sparse::copy_sparse(
                &input,
                &output,
                backup_platform::sparse::Holes::Keep,
                None,
            )?;
            // The catalog holds the mode whatever this file system keeps of it.
            if let Some(mode) = entry.mode {
                pfs::set_mode_lenient(&dest, mode);
            }
            pfs::set_mtime_nofollow(&dest, entry.mtime.ns)?;
            stage.sync.handle(&output)?;
            return Ok(dest);
        }
    }
    pfs::set_mtime_nofollow(&dest, entry.mtime.ns)?;
    Ok(dest)
}

/// Gives the new version its mirror name. A named file is renamed over whatever is there; an
/// unnamed one where nothing is there yet is linked (from its increment name when it has one,
/// so both are one inode), else named in staging and renamed like the rest.
fn install_in_mirror(
    stage: &Stage,
    rel: &RelPath,
    out: Output,
    stored_at: Option<&Path>,
    replaces: bool,
) -> io::Result<()> {
    let named = match &out {
        Output::Named(t) => Some(t.clone()),
        Output::Unnamed(_) => None,
    };
    let placed = place_in_mirror(stage, rel, out, stored_at, replaces);
    if let (Err(_), Some(t)) = (&placed, named) {
        let _ = std::fs::remove_file(t);
    }
    placed
}

fn place_in_mirror(
    stage: &Stage,
    rel: &RelPath,
    out: Output,
    stored_at: Option<&Path>,
    replaces: bool,
) -> io::Result<()> {
    ensure_dir(stage, rel.parent().as_ref())?;
    let dest = rel.under(&stage.repo.mirror_dir());
    stage.sync.entry_changed(DirRole::Mirror, &dest);
    stage.touched(rel.parent());
    fail::fail_point!("apply::rename", |_| Err(io::Error::other(format!(
        "injected fault at apply::rename: rename into {}",
        dest.display()
    ))));
    let temp = match out {
        Output::Named(t) => t,
        Output::Unnamed(f) => {
            if !replaces {
                let linked = match stored_at {
                    Some(p) => std::fs::hard_link(p, &dest),
                    None => pfs::link_unnamed(&f, &dest),
                };
                match linked {
                    Ok(()) => return Ok(()),
                    // Something is there after all (left by an interrupted run): replace it.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            let t = temp_path(stage);
            pfs::link_unnamed(&f, &t)?;
            let renamed = rename_over(&t, &dest);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&t);
            }
            return renamed;
        }
    };
    rename_over(&temp, &dest)
}

/// Renames `temp` to `dest`, removing a folder that is in the way.
fn rename_over(temp: &Path, dest: &Path) -> io::Result<()> {
    match std::fs::rename(temp, dest) {
        Ok(()) => Ok(()),
        Err(e) => match std::fs::symlink_metadata(dest) {
            // A directory (left over where the source now has a file) is in the way.
            Ok(m) if m.is_dir() => {
                std::fs::remove_dir_all(dest)?;
                std::fs::rename(temp, dest)
            }
            _ => Err(e),
        },
    }
}

fn report(stage: &Stage, (err, full): (FileError, bool)) -> CopyResult {
    if full {
        stage.mark_disk_full();
    }
    (stage.events)(Event::Error(err.clone()));
    (stage.events)(Event::FileDone {
        bytes: 0,
        ok: false,
    });
    CopyResult::Failed(err)
}

/// Stores one new version: staged, made durable, linked into the increment when tracked,
/// renamed into the mirror.
pub fn copy_one(stage: &Stage, item: CopyItem) -> CopyResult {
    match stage_one(stage, item) {
        Staging::Staged(staged) => install_staged(stage, staged),
        Staging::Done(done) => done,
    }
}

/// A version written to its new file (with its attributes) but not yet durable nor named:
/// what [`stage_one`] hands to [`install_staged`], possibly on another thread.
pub struct StagedCopy {
    item: CopyItem,
    staged: Staged,
}

/// What [`stage_one`] made of a copy.
// Returned once per copy and matched at once, never stored; the staged copy is boxed because
// it travels through a channel.
#[allow(clippy::large_enum_variant)]
pub enum Staging {
    /// Written, to be installed.
    Staged(Box<StagedCopy>),
    /// Nothing to install: the copy's result.
    Done(CopyResult),
}

/// The first half of [`copy_one`]: reads the source and writes the new file.
pub fn stage_one(stage: &Stage, item: CopyItem) -> Staging {
    if stage.disk_full.load(Ordering::SeqCst) {
        return Staging::Done(CopyResult::Skipped);
    }
    let rel = &item.entry.rel;
    match stage_version(stage, &item) {
        Ok(staged) => {
            // The data goes to the disk now, while the copy waits for its installer: its fsync
            // then mostly waits for the journal (ext4, 200k small files: 13.9 s -> 11.9 s).
            if stage.sync.strategy() == crate::durable::Strategy::EachFile {
                if let Some(f) = staged.file() {
                    pfs::start_writeback(f);
                }
            }
            Staging::Staged(Box::new(StagedCopy { item, staged }))
        }
        Err(StageError::Vanished) => {
            (stage.events)(Event::Note(RunNote::Vanished { rel: rel.clone() }));
            Staging::Done(CopyResult::Vanished(rel.clone()))
        }
        Err(StageError::Io(op, e)) => Staging::Done(report(stage, io_err(rel, op, &e))),
        Err(StageError::KeptChanging) => Staging::Done(report(
            stage,
            (
                FileError::new(
                    Some(rel),
                    "copy",
                    format!("the file kept changing while being copied ({COPY_ATTEMPTS} attempts); not recorded"),
                ),
                false,
            ),
        )),
    }
}

/// The second half of [`copy_one`]: the new file is made durable, then given its names. A
/// name that survives a power cut so always leads to the whole version, with its attributes.
/// Each fsync waits for the disk: the pipeline runs many of these at once, so that a journaling
/// file system commits them together.
pub fn install_staged(stage: &Stage, copy: Box<StagedCopy>) -> CopyResult {
    let StagedCopy { item, staged } = *copy;
    let durable = make_durable(stage, &item, &staged);
    drop(staged.handle);
    if let Err(e) = durable {
        staged.out.discard();
        return report(stage, io_err(&item.entry.rel, "sync", &e));
    }
    install(stage, &item, staged.out, staged.entry)
}

/// The fsync of a staged file (a symlink has nothing to sync: its folder's fsync covers it).
// `item` names the file in an injected fault only.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn make_durable(stage: &Stage, item: &CopyItem, staged: &Staged) -> io::Result<()> {
    fail::fail_point!("apply::fsync", |_| {
        let shown = match &staged.out {
            Output::Named(p) => p.clone(),
            Output::Unnamed(_) => stage.repo.mirror_file(&item.entry.rel),
        };
        Err(io::Error::other(format!(
            "injected fault at apply::fsync: fsync {}",
            shown.display()
        )))
    });
    match staged.file() {
        Some(f) => stage.sync.handle(f),
        None => Ok(()),
    }
}

/// Another name of a hard-link group whose first name (`first`, already in the mirror with its
/// current version) is `first_entry`: linked to that inode, in the mirror and the increment.
pub fn link_one(
    stage: &Stage,
    item: CopyItem,
    first: &RelPath,
    first_entry: &IndexEntry,
) -> CopyResult {
    if stage.disk_full.load(Ordering::SeqCst) {
        return CopyResult::Skipped;
    }
    let rel = item.entry.rel.clone();
    let temp = temp_path(stage);
    if let Err(e) = std::fs::hard_link(stage.repo.mirror_file(first), &temp) {
        if pfs::is_link_unsupported(&e) {
            // exFAT: no links anywhere; the name gets a copy of its own.
            return copy_one(stage, item);
        }
        return report(stage, io_err(&rel, "hard link", &e));
    }
    let mut entry = first_entry.clone();
    entry.tracked = item.entry.tracked;
    entry.version_of = None;
    entry.ctime_ns = Some(item.entry.ctime_ns);
    install(stage, &item, Output::Named(temp), entry)
}

fn install(stage: &Stage, item: &CopyItem, out: Output, mut entry: IndexEntry) -> CopyResult {
    let rel = item.entry.rel.clone();
    entry.attrs.hardlink_of = item.hardlink_of.clone();
    let op = item.increment_op();
    let mut stored_at = None;
    let increment = stage.increment();
    if let (Some(_), Some(name)) = (op, &increment) {
        match store_in_increment(stage, name, &rel, &out, &entry) {
            Ok(p) => {
                stored_at = Some(p);
                entry.version_of = Some(name.clone());
            }
            Err(e) => {
                out.discard();
                return report(stage, io_err(&rel, "store in increment", &e));
            }
        }
    } else if item.repair {
        // The same version as recorded, in a sound copy: the increment that stored it keeps
        // naming it.
        entry.version_of = item.previous.as_ref().and_then(|p| p.version_of.clone());
    }
    let replaces = item.previous.is_some();
    if let Err(e) = install_in_mirror(stage, &rel, out, stored_at.as_deref(), replaces) {
        // Keep the increment consistent with its metadata: without the mirror update the
        // catalog will not list this version.
        if let Some(p) = stored_at {
            let _ = std::fs::remove_file(p);
        }
        return report(stage, io_err(&rel, "rename into mirror", &e));
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

/// The hard-link members held back until the copies of their first names are done, in walk
/// order (bounded by the number of multi-linked files that changed).
#[derive(Default)]
pub struct LinkQueue {
    pub items: BTreeMap<RelPath, CopyItem>,
}
