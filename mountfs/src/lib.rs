//! The platform-neutral read-only tree of a backup (mirror, increments, snapshots, history),
//! served to the kernel by the adapters in `backup-platform`; unit-testable without a mount.
//!
//! ```text
//! mirror/                    the mirror on disk
//! increments/<name>/         each increment as stored (track/, deleted/, its .json)
//! snapshots/<name>/          the point-in-time fold of all increments up to <name>
//! snapshots/latest/          the newest snapshot, as a directory (see docs/mount.md)
//! history/<rel path>/        every stored version of that file, `YYYY-MM-DD_HHMMSS_<name>`
//! ```
//!
//! Laziness: the root, `increments/` and `snapshots/` are answered from the loaded metadata;
//! the index that serves every snapshot's directories is built when a snapshot is first
//! entered. Inode numbers
//! are keyed by virtual location, so a path keeps its number for the whole mount.

mod views;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use backup_core::format::FormatProblem;
use backup_core::identity::IncrementTime;
use backup_core::repo::RepoError;
use backup_core::{History, IncrementName, RelPath, Repository, Version};
use backup_platform::rofs::{
    CacheInvalidator, DirEntry, Freshness, FsError, FsResult, FsStats, Ino, NodeAttr, NodeKind,
    ReadOnlyFs, ROOT_INO,
};

use views::{HistChild, HistTree, SnapIndex};

pub const MIRROR: &str = "mirror";
pub const INCREMENTS: &str = "increments";
pub const SNAPSHOTS: &str = "snapshots";
pub const HISTORY: &str = "history";
pub const LATEST: &str = "latest";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SnapKey {
    Latest,
    Named(IncrementName),
}

/// A place in the virtual tree. Inode numbers are handed out per `Loc`, never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Loc {
    Root,
    Mirror(Option<RelPath>),
    IncrementsRoot,
    Increment(IncrementName, Option<RelPath>),
    SnapshotsRoot,
    Snapshot(SnapKey, Option<RelPath>),
    HistoryRoot,
    HistoryDir(RelPath),
    HistoryVersion(RelPath, Vec<u8>),
}

impl Loc {
    fn parent(&self) -> Loc {
        fn up(r: &Option<RelPath>) -> Option<RelPath> {
            r.as_ref().and_then(RelPath::parent)
        }
        match self {
            Loc::Root | Loc::IncrementsRoot | Loc::SnapshotsRoot | Loc::HistoryRoot => Loc::Root,
            Loc::Mirror(None) => Loc::Root,
            Loc::Mirror(r) => Loc::Mirror(up(r)),
            Loc::Increment(_, None) => Loc::IncrementsRoot,
            Loc::Increment(n, r) => Loc::Increment(n.clone(), up(r)),
            Loc::Snapshot(_, None) => Loc::SnapshotsRoot,
            Loc::Snapshot(k, r) => Loc::Snapshot(k.clone(), up(r)),
            Loc::HistoryDir(p) => match p.parent() {
                Some(pp) => Loc::HistoryDir(pp),
                None => Loc::HistoryRoot,
            },
            Loc::HistoryVersion(p, _) => Loc::HistoryDir(p.clone()),
        }
    }

    /// Disk-backed places change behind our back; the rest changes only on a reload.
    fn freshness(&self) -> Freshness {
        match self {
            Loc::Root
            | Loc::Mirror(_)
            | Loc::IncrementsRoot
            | Loc::Increment(..)
            | Loc::SnapshotsRoot
            | Loc::HistoryRoot => Freshness::Live,
            _ => Freshness::Notified,
        }
    }
}

#[derive(Default)]
struct InodeTable {
    by_loc: HashMap<Loc, Ino>,
    /// `locs[ino - 1]`
    locs: Vec<Loc>,
}

impl InodeTable {
    fn new() -> Self {
        let mut t = InodeTable::default();
        t.ino(&Loc::Root);
        t
    }
    fn ino(&mut self, loc: &Loc) -> Ino {
        if let Some(&i) = self.by_loc.get(loc) {
            return i;
        }
        self.locs.push(loc.clone());
        let i = self.locs.len() as Ino;
        self.by_loc.insert(loc.clone(), i);
        i
    }
    fn loc(&self, ino: Ino) -> Option<&Loc> {
        usize::try_from(ino.checked_sub(1)?)
            .ok()
            .and_then(|i| self.locs.get(i))
    }
}

/// What a `Loc` currently is.
enum Node {
    /// A directory that exists only in the tree (root, listings, snapshot and history dirs).
    VirtualDir,
    /// A file or directory on disk, shown as it is.
    Disk(PathBuf, Metadata),
    /// One stored version of a tracked file.
    Version(Version),
}

/// What the change watcher compares to decide whether to reload: the increment folders and
/// their modification times, and the mirror index.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Signature {
    increments: Vec<(String, Option<SystemTime>)>,
    mirror_index: Option<(SystemTime, u64)>,
}

fn signature(repo: &Repository) -> Signature {
    let mut increments = Vec::new();
    if let Ok(rd) = std::fs::read_dir(repo.root()) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if IncrementName::parse(name).is_some() {
                let mtime = e.metadata().ok().and_then(|m| m.modified().ok());
                increments.push((name.to_owned(), mtime));
            }
        }
    }
    increments.sort();
    let mirror_index = std::fs::metadata(repo.mirror_index_path())
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())));
    Signature {
        increments,
        mirror_index,
    }
}

/// Everything known from the metadata at one moment. Replaced whole on a reload.
struct State {
    signature: Signature,
    repo: Repository,
    /// Increments whose metadata file exists, oldest first. Enough for the root,
    /// `increments/` and `snapshots/`, so those answer before any metadata is parsed.
    names: Vec<IncrementName>,
    /// Parsed on first need (or by [`BackupFs::load_metadata`] right after mounting).
    history: OnceLock<History>,
    problems: Mutex<Vec<FormatProblem>>,
    snap_index: Mutex<Option<Arc<SnapIndex>>>,
    history_tree: Mutex<Option<Arc<HistTree>>>,
}

impl State {
    fn quick(repo: &Repository) -> Result<State, RepoError> {
        let signature = signature(repo);
        let names = repo
            .increment_names()?
            .into_iter()
            .filter(|n| repo.increment_meta_path(n).is_file())
            .collect();
        Ok(State {
            signature,
            repo: repo.clone(),
            names,
            history: OnceLock::new(),
            problems: Mutex::new(Vec::new()),
            snap_index: Mutex::new(None),
            history_tree: Mutex::new(None),
        })
    }

    /// The parsed metadata; the first caller parses it while the others wait.
    fn history(&self) -> &History {
        self.history.get_or_init(|| {
            let (history, problems) = match History::load(&self.repo) {
                Ok(hp) => hp,
                Err(e) => (
                    History::default(),
                    vec![FormatProblem {
                        file: self.repo.root().display().to_string(),
                        key: None,
                        message: e.to_string(),
                    }],
                ),
            };
            *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
            history
        })
    }

    /// The increment a snapshot key names, with its index (position among the names).
    fn resolve_key(&self, key: &SnapKey) -> Option<(u32, &IncrementName)> {
        match key {
            SnapKey::Latest => self
                .names
                .last()
                .map(|n| ((self.names.len() - 1) as u32, n)),
            SnapKey::Named(n) => self
                .names
                .binary_search(n)
                .ok()
                .map(|i| (i as u32, &self.names[i])),
        }
    }

    fn snap_index(&self) -> Arc<SnapIndex> {
        let mut slot = self.snap_index.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(t) => Arc::clone(t),
            None => {
                // Built under the lock so two threads never build it twice.
                let t = Arc::new(SnapIndex::build(self.history(), &self.names));
                *slot = Some(Arc::clone(&t));
                t
            }
        }
    }

    fn hist_tree(&self) -> Arc<HistTree> {
        let mut slot = self.history_tree.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(t) => Arc::clone(t),
            None => {
                let t = Arc::new(HistTree::build(self.history()));
                *slot = Some(Arc::clone(&t));
                t
            }
        }
    }

    /// An increment's time: recorded in its metadata once that is parsed; until then (the root
    /// and `snapshots/` answer before any parsing) the name's.
    fn time_of(&self, name: &IncrementName) -> IncrementTime {
        self.history
            .get()
            .and_then(|h| h.increment(name))
            .map(|i| i.time)
            .unwrap_or_else(|| IncrementTime::of(None, name))
    }

    fn version(&self, path: &RelPath, index: usize) -> Option<Version> {
        self.history()
            .versions(path)
            .get(index)
            .map(|v| (*v).clone())
    }
}

/// What a reload changed, for the caller's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reload {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// The read-only tree of one backup.
pub struct BackupFs {
    repo: Repository,
    inodes: RwLock<InodeTable>,
    state: RwLock<Arc<State>>,
    invalidator: Mutex<Option<Arc<dyn CacheInvalidator>>>,
    uid: u32,
    gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MountFsError {
    #[error(transparent)]
    Repo(#[from] RepoError),
}

fn owner(meta: Option<&Metadata>) -> (u32, u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.map(|m| (m.uid(), m.gid())).unwrap_or((0, 0))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

fn perm_of(meta: &Metadata) -> u16 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.mode() & 0o7777) as u16
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() {
            0o555
        } else if meta.is_dir() {
            0o755
        } else {
            0o644
        }
    }
}

fn kind_of(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else {
        NodeKind::File
    }
}

fn lstat(p: &Path) -> FsResult<Metadata> {
    std::fs::symlink_metadata(p).map_err(|e| FsError::from_io(&e))
}

/// Refuses a backing file whose folder lies outside the backup: `O_NOFOLLOW` guards only the
/// last component, and a folder of an increment replaced by a symlink (damage, or a crafted
/// backup) must not make the mount serve bytes from elsewhere.
fn inside_backup(root: &Path, p: &Path) -> FsResult<()> {
    let parent = p.parent().ok_or(FsError::NotFound)?;
    let real_root = std::fs::canonicalize(root).map_err(|e| FsError::from_io(&e))?;
    let real = std::fs::canonicalize(parent).map_err(|e| FsError::from_io(&e))?;
    if real.starts_with(&real_root) {
        Ok(())
    } else {
        Err(FsError::Io(format!(
            "{} leads outside the backup",
            p.display()
        )))
    }
}

/// Opens a backing file for reading without following a symlink and, where allowed, without
/// touching its access time (the backup must not change, not even its timestamps).
fn open_backing(p: &Path) -> FsResult<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |extra: i32| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | extra)
                .open(p)
        };
        #[cfg(target_os = "linux")]
        let first = open(libc::O_NOATIME);
        #[cfg(not(target_os = "linux"))]
        let first = open(0);
        match first {
            Ok(f) => Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                open(0).map_err(|e| FsError::from_io(&e))
            }
            Err(e) => Err(FsError::from_io(&e)),
        }
    }
    #[cfg(not(unix))]
    {
        File::open(p).map_err(|e| FsError::from_io(&e))
    }
}

fn rel_join(base: &Option<RelPath>, name: &[u8]) -> FsResult<RelPath> {
    match base {
        Some(b) => b.join(name),
        None => RelPath::from_bytes(name),
    }
    .map_err(|_| FsError::NotFound)
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_encoded_bytes()
}

fn os_name(bytes: &[u8]) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(bytes).to_os_string()
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl BackupFs {
    /// Opens the tree of `repo`, reading only the list of increments: the metadata is parsed
    /// on first need, or by [`BackupFs::load_metadata`].
    pub fn open(repo: Repository) -> Result<BackupFs, MountFsError> {
        let state = State::quick(&repo)?;
        let root_meta = std::fs::metadata(repo.root()).ok();
        let (uid, gid) = owner(root_meta.as_ref());
        Ok(BackupFs {
            repo,
            inodes: RwLock::new(InodeTable::new()),
            state: RwLock::new(Arc::new(state)),
            invalidator: Mutex::new(None),
            uid,
            gid,
        })
    }

    /// Parses the metadata now (if not yet done) and returns the problems found in it
    /// (unreadable increments, skipped entries), which the tree leaves out.
    pub fn load_metadata(&self) -> Vec<FormatProblem> {
        let state = self.state();
        state.history();
        // Ready before anyone enters a snapshot; nothing waits for it meanwhile.
        state.snap_index();
        let problems = state.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.clone()
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn state(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn loc(&self, ino: Ino) -> FsResult<Loc> {
        self.inodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .loc(ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn ino(&self, loc: &Loc) -> Ino {
        if let Some(&i) = self
            .inodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_loc
            .get(loc)
        {
            return i;
        }
        self.inodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .ino(loc)
    }

    /// The location of `name` inside `parent`, without checking that it exists.
    fn child(&self, parent: &Loc, name: &[u8]) -> FsResult<Loc> {
        let text = std::str::from_utf8(name).ok();
        Ok(match parent {
            Loc::Root => match text {
                Some(MIRROR) => Loc::Mirror(None),
                Some(INCREMENTS) => Loc::IncrementsRoot,
                Some(SNAPSHOTS) => Loc::SnapshotsRoot,
                Some(HISTORY) => Loc::HistoryRoot,
                _ => return Err(FsError::NotFound),
            },
            Loc::Mirror(r) => Loc::Mirror(Some(rel_join(r, name)?)),
            Loc::IncrementsRoot => Loc::Increment(
                text.and_then(IncrementName::parse)
                    .ok_or(FsError::NotFound)?,
                None,
            ),
            Loc::Increment(n, r) => Loc::Increment(n.clone(), Some(rel_join(r, name)?)),
            Loc::SnapshotsRoot => match text {
                Some(LATEST) => Loc::Snapshot(SnapKey::Latest, None),
                _ => Loc::Snapshot(
                    SnapKey::Named(
                        text.and_then(IncrementName::parse)
                            .ok_or(FsError::NotFound)?,
                    ),
                    None,
                ),
            },
            Loc::Snapshot(k, r) => Loc::Snapshot(k.clone(), Some(rel_join(r, name)?)),
            Loc::HistoryRoot => Loc::HistoryDir(rel_join(&None, name)?),
            Loc::HistoryDir(p) => {
                let state = self.state();
                let tree = state.hist_tree();
                match tree.dirs.get(p.as_bytes()).and_then(|c| c.get(name)) {
                    Some(HistChild::Dir) => Loc::HistoryDir(rel_join(&Some(p.clone()), name)?),
                    Some(HistChild::Version { .. }) => {
                        Loc::HistoryVersion(p.clone(), name.to_vec())
                    }
                    None => return Err(FsError::NotFound),
                }
            }
            Loc::HistoryVersion(..) => return Err(FsError::NotDir),
        })
    }

    fn disk(&self, p: PathBuf) -> FsResult<Node> {
        let m = lstat(&p)?;
        Ok(Node::Disk(p, m))
    }

    /// What `loc` is now, or `NotFound` when it no longer exists.
    fn resolve(&self, loc: &Loc) -> FsResult<Node> {
        match loc {
            Loc::Root | Loc::IncrementsRoot | Loc::SnapshotsRoot | Loc::HistoryRoot => {
                Ok(Node::VirtualDir)
            }
            Loc::Mirror(None) => match self.disk(self.repo.mirror_dir()) {
                // A backup without a mirror yet still shows an (empty) mirror/.
                Err(FsError::NotFound) => Ok(Node::VirtualDir),
                other => other,
            },
            Loc::Mirror(Some(r)) => self.disk(self.repo.mirror_file(r)),
            Loc::Increment(n, r) => {
                if !self.state().names.contains(n) {
                    return Err(FsError::NotFound);
                }
                let dir = self.repo.increment_dir(n);
                match r {
                    None => self.disk(dir),
                    Some(r) => self.disk(r.under(&dir)),
                }
            }
            Loc::Snapshot(k, r) => {
                let state = self.state();
                let (idx, name) = state.resolve_key(k).ok_or(FsError::NotFound)?;
                let Some(r) = r else {
                    // Stat'ing every entry of snapshots/ builds nothing.
                    return Ok(Node::VirtualDir);
                };
                if state.snap_index().is_dir(Some(r), idx) {
                    return Ok(Node::VirtualDir);
                }
                match state.history().version_at(r, name) {
                    Some(v) => Ok(Node::Version(v.clone())),
                    None => Err(FsError::NotFound),
                }
            }
            Loc::HistoryDir(p) => {
                if self.state().hist_tree().dirs.contains_key(p.as_bytes()) {
                    Ok(Node::VirtualDir)
                } else {
                    Err(FsError::NotFound)
                }
            }
            Loc::HistoryVersion(p, name) => {
                let state = self.state();
                let tree = state.hist_tree();
                match tree.dirs.get(p.as_bytes()).and_then(|c| c.get(name)) {
                    Some(HistChild::Version { path, index }) => state
                        .version(path, *index)
                        .map(Node::Version)
                        .ok_or(FsError::NotFound),
                    _ => Err(FsError::NotFound),
                }
            }
        }
    }

    fn dir_mtime(&self, loc: &Loc) -> SystemTime {
        let state = self.state();
        let name = match loc {
            Loc::Snapshot(k, _) => state.resolve_key(k).map(|(_, n)| n),
            _ => state.names.last(),
        };
        name.map(|n| SystemTime::from(state.time_of(n).at))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn attr(&self, ino: Ino, loc: &Loc, node: &Node) -> NodeAttr {
        match node {
            Node::VirtualDir => NodeAttr {
                ino,
                kind: NodeKind::Dir,
                size: 0,
                mtime: self.dir_mtime(loc),
                perm: 0o755,
                // 1 = "unknown number of subdirectories": find must not skip any.
                nlink: 1,
                uid: self.uid,
                gid: self.gid,
            },
            Node::Disk(_, m) => {
                let (uid, gid) = owner(Some(m));
                let kind = kind_of(m);
                NodeAttr {
                    ino,
                    kind,
                    size: if kind == NodeKind::Dir { 0 } else { m.len() },
                    mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    perm: perm_of(m),
                    nlink: 1,
                    uid,
                    gid,
                }
            }
            Node::Version(v) => {
                // The stored file itself is the truth; metadata only fills in when it is gone
                // (opening it then fails cleanly).
                match std::fs::symlink_metadata(v.backing_path(&self.repo)) {
                    Ok(m) => {
                        let (uid, gid) = owner(Some(&m));
                        NodeAttr {
                            ino,
                            kind: kind_of(&m),
                            size: m.len(),
                            mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            perm: perm_of(&m),
                            nlink: 1,
                            uid,
                            gid,
                        }
                    }
                    Err(_) => NodeAttr {
                        ino,
                        kind: match v.kind {
                            backup_core::FileKind::File => NodeKind::File,
                            backup_core::FileKind::Symlink => NodeKind::Symlink,
                            backup_core::FileKind::Dir => NodeKind::Dir,
                        },
                        size: v.size,
                        mtime: v.mtime.to_system_time(),
                        perm: v.mode.map(|m| (m & 0o7777) as u16).unwrap_or(0o644),
                        nlink: 1,
                        uid: self.uid,
                        gid: self.gid,
                    },
                }
            }
        }
    }

    fn listing(&self, loc: &Loc, node: &Node) -> FsResult<Vec<(Loc, NodeKind, OsString)>> {
        let mut out = Vec::new();
        match (loc, node) {
            (_, Node::Version(_)) => return Err(FsError::NotDir),
            (Loc::Root, _) => {
                for (l, n) in [
                    (Loc::Mirror(None), MIRROR),
                    (Loc::IncrementsRoot, INCREMENTS),
                    (Loc::SnapshotsRoot, SNAPSHOTS),
                    (Loc::HistoryRoot, HISTORY),
                ] {
                    out.push((l, NodeKind::Dir, OsString::from(n)));
                }
            }
            (Loc::IncrementsRoot, _) => {
                for n in &self.state().names {
                    out.push((
                        Loc::Increment(n.clone(), None),
                        NodeKind::Dir,
                        OsString::from(n.as_str()),
                    ));
                }
            }
            (Loc::SnapshotsRoot, _) => {
                let state = self.state();
                for n in &state.names {
                    out.push((
                        Loc::Snapshot(SnapKey::Named(n.clone()), None),
                        NodeKind::Dir,
                        OsString::from(n.as_str()),
                    ));
                }
                if !state.names.is_empty() {
                    out.push((
                        Loc::Snapshot(SnapKey::Latest, None),
                        NodeKind::Dir,
                        OsString::from(LATEST),
                    ));
                }
            }
            (Loc::Mirror(_) | Loc::Increment(..), Node::VirtualDir) => {}
            (Loc::Mirror(_) | Loc::Increment(..), Node::Disk(p, m)) => {
                if !m.is_dir() {
                    return Err(FsError::NotDir);
                }
                let rd = std::fs::read_dir(p).map_err(|e| FsError::from_io(&e))?;
                let mut entries: Vec<(Vec<u8>, NodeKind)> = Vec::new();
                for e in rd {
                    let e = e.map_err(|e| FsError::from_io(&e))?;
                    let kind = match e.file_type() {
                        Ok(t) if t.is_dir() => NodeKind::Dir,
                        Ok(t) if t.is_symlink() => NodeKind::Symlink,
                        Ok(_) => NodeKind::File,
                        Err(_) => continue,
                    };
                    entries.push((name_bytes(&e.file_name()).to_vec(), kind));
                }
                // Sorted, so listings (and offsets) are stable and file managers need not sort.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, kind) in entries {
                    let child = self.child(loc, &name)?;
                    out.push((child, kind, os_name(&name)));
                }
            }
            (Loc::Snapshot(k, r), _) => {
                let state = self.state();
                let (idx, name) = state.resolve_key(k).ok_or(FsError::NotFound)?;
                let index = state.snap_index();
                let key = r.as_ref().map(RelPath::as_bytes).unwrap_or_default();
                let Some(dir) = index.dirs.get(key) else {
                    return Ok(out);
                };
                for (n, kinds) in &dir.children {
                    let Ok(child) = rel_join(r, n) else { continue };
                    let kind = if kinds.dir && index.is_dir(Some(&child), idx) {
                        NodeKind::Dir
                    } else if kinds.file {
                        match state.history().version_at(&child, name) {
                            Some(v) if v.kind == backup_core::FileKind::Symlink => {
                                NodeKind::Symlink
                            }
                            Some(_) => NodeKind::File,
                            None => continue,
                        }
                    } else {
                        continue;
                    };
                    out.push((Loc::Snapshot(k.clone(), Some(child)), kind, os_name(n)));
                }
            }
            (Loc::HistoryRoot | Loc::HistoryDir(_), _) => {
                let tree = self.state().hist_tree();
                let (key, base) = match loc {
                    Loc::HistoryDir(p) => (p.as_bytes(), Some(p.clone())),
                    _ => (&b""[..], None),
                };
                let children = tree.dirs.get(key).ok_or(FsError::NotFound)?;
                for (n, c) in children {
                    let (l, kind) = match (c, &base) {
                        (HistChild::Dir, _) => {
                            (Loc::HistoryDir(rel_join(&base, n)?), NodeKind::Dir)
                        }
                        (HistChild::Version { .. }, Some(p)) => {
                            (Loc::HistoryVersion(p.clone(), n.clone()), NodeKind::File)
                        }
                        (HistChild::Version { .. }, None) => continue,
                    };
                    out.push((l, kind, os_name(n)));
                }
            }
            (Loc::HistoryVersion(..), _) => return Err(FsError::NotDir),
        }
        Ok(out)
    }

    /// Compares the backup on disk with what is loaded and reloads when increments were
    /// added, removed or rewritten, or the mirror index changed; then tells the kernel to drop
    /// what it cached of the metadata views. Returns `None` when nothing changed.
    pub fn refresh(&self) -> Result<Option<Reload>, MountFsError> {
        let old = self.state();
        if signature(&self.repo) == old.signature {
            return Ok(None);
        }
        let new = State::quick(&self.repo)?;
        // Parsed here, off the request path, before the new state is visible.
        new.history();
        new.snap_index();
        let reload = Reload {
            added: new
                .names
                .iter()
                .filter(|n| !old.names.contains(n))
                .map(|n| n.to_string())
                .collect(),
            removed: old
                .names
                .iter()
                .filter(|n| !new.names.contains(n))
                .map(|n| n.to_string())
                .collect(),
        };
        let latest_moved = old.names.last() != new.names.last();
        let only_appended = reload.removed.is_empty()
            && !reload.added.is_empty()
            && new
                .names
                .iter()
                .filter(|n| !old.names.contains(n))
                .all(|n| old.names.last().is_none_or(|last| n > last));
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.invalidate(&reload, latest_moved, only_appended);
        Ok(Some(reload))
    }

    fn invalidate(&self, reload: &Reload, latest_moved: bool, only_appended: bool) {
        let Some(inv) = self
            .invalidator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let incs = self.ino(&Loc::IncrementsRoot);
        let snaps = self.ino(&Loc::SnapshotsRoot);
        for name in &reload.removed {
            inv.inval_entry(incs, OsStr::new(name));
            inv.inval_entry(snaps, OsStr::new(name));
        }
        if latest_moved {
            inv.inval_entry(snaps, OsStr::new(LATEST));
        }
        inv.inval_inode(incs);
        inv.inval_inode(snaps);
        // New increments after all others (the nightly case) change only `latest` and
        // history listings; anything else (a prune, a rewritten catalog, an increment that
        // sorts earlier) may change any view: then drop every metadata-built node. Inodes the
        // kernel no longer holds cost one cheap refusal each.
        let inos: Vec<Ino> = {
            let t = self.inodes.read().unwrap_or_else(|p| p.into_inner());
            t.locs
                .iter()
                .enumerate()
                .filter(|(_, l)| match l {
                    Loc::Snapshot(SnapKey::Latest, _) | Loc::HistoryRoot | Loc::HistoryDir(_) => {
                        true
                    }
                    _ => !only_appended && l.freshness() == Freshness::Notified,
                })
                .map(|(i, _)| i as Ino + 1)
                .collect()
        };
        if !only_appended {
            for n in &self.state().names {
                inv.inval_entry(snaps, OsStr::new(n.as_str()));
            }
        }
        for i in inos {
            inv.inval_inode(i);
        }
    }

    /// Stable inode number of a virtual path like `snapshots/latest/a/b` (for tests and tools).
    pub fn lookup_path(&self, path: &str) -> FsResult<NodeAttr> {
        let mut attr = self.getattr(ROOT_INO)?;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            attr = self.lookup(attr.ino, OsStr::new(comp))?;
        }
        Ok(attr)
    }
}

impl ReadOnlyFs for BackupFs {
    fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<NodeAttr> {
        let ploc = self.loc(parent)?;
        let child = self.child(&ploc, name_bytes(name))?;
        let node = self.resolve(&child)?;
        let ino = self.ino(&child);
        Ok(self.attr(ino, &child, &node))
    }

    fn getattr(&self, ino: Ino) -> FsResult<NodeAttr> {
        let loc = self.loc(ino)?;
        let node = self.resolve(&loc)?;
        Ok(self.attr(ino, &loc, &node))
    }

    fn readdir(&self, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let loc = self.loc(ino)?;
        let node = self.resolve(&loc)?;
        let listing = self.listing(&loc, &node)?;
        let mut table = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        Ok(listing
            .into_iter()
            .map(|(l, kind, name)| DirEntry {
                ino: table.ino(&l),
                kind,
                name,
            })
            .collect())
    }

    fn readlink(&self, ino: Ino) -> FsResult<OsString> {
        let loc = self.loc(ino)?;
        let path = match self.resolve(&loc)? {
            Node::Disk(p, m) if m.file_type().is_symlink() => p,
            Node::Version(v) => v.backing_path(&self.repo),
            _ => return Err(FsError::NotSymlink),
        };
        match std::fs::read_link(&path) {
            Ok(t) => Ok(t.into_os_string()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(FsError::NotSymlink),
            Err(e) => Err(FsError::from_io(&e)),
        }
    }

    fn open(&self, ino: Ino) -> FsResult<File> {
        let loc = self.loc(ino)?;
        let path = match self.resolve(&loc)? {
            Node::VirtualDir => return Err(FsError::IsDir),
            Node::Disk(_, m) if m.is_dir() => return Err(FsError::IsDir),
            Node::Disk(p, _) => p,
            Node::Version(v) => v.backing_path(&self.repo),
        };
        inside_backup(self.repo.root(), &path)?;
        open_backing(&path)
    }

    fn statfs(&self) -> FsResult<FsStats> {
        let v = backup_platform::fs::volume_stats(self.repo.root())
            .map_err(|e| FsError::from_io(&e))?;
        Ok(FsStats {
            blocks: v.blocks(),
            block_size: v.block_size,
            files: v.files.unwrap_or(0),
            name_max: v.name_max,
        })
    }

    fn freshness(&self, ino: Ino) -> Freshness {
        self.loc(ino)
            .map(|l| l.freshness())
            .unwrap_or(Freshness::Live)
    }

    fn parent(&self, ino: Ino) -> Ino {
        match self.loc(ino) {
            Ok(l) => self.ino(&l.parent()),
            Err(_) => ROOT_INO,
        }
    }

    fn attach_invalidator(&self, inv: Arc<dyn CacheInvalidator>) {
        *self.invalidator.lock().unwrap_or_else(|p| p.into_inner()) = Some(inv);
    }
}

#[cfg(test)]
mod tests;
