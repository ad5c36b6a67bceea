//! The platform-neutral read-only tree of a backup (mirror, increments, snapshots, history),
//! served to the kernel by the adapters in `backup-platform`; unit-testable without a mount.
//!
//! ```text
//! mirror/                         the mirror on disk
//! increments/<name>/              each increment as stored (track/, deleted/, its .json)
//! snapshots/<name>/               the point-in-time fold of all increments up to <name>
//! snapshots/latest/               the newest snapshot, as a directory (see docs/mount.md)
//! history/<dir>/<file>.versions/  every stored version of that file, `YYYY-MM-DD_HHMMSS_<name>`
//! ```
//!
//! Every request is answered from the backup's index (`dist/.backup-index.sqlite`): a folder
//! of a snapshot is one query for its children, a file's versions one query for its
//! timeline. Nothing is built for the whole tree, so memory follows what the kernel holds,
//! not the size of the backup. Each request thread reads through its own connection.
//! Inode numbers are keyed hashes of the location ([`inodes`]), stable for the whole mount.
//! What a reload replaces is one value ([`Loaded`]); a request takes it once and passes it to
//! every helper, so its reply never mixes the increments before a reload with those after.

mod inodes;
mod prefetch;
mod views;
pub mod watch;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use backup_core::format::{FormatProblem, IndexEntry};
use backup_core::history::Holder;
use backup_core::identity::IncrementTime;
use backup_core::index::{IncrementState, Index, IndexError, IndexNote, Opened, SnapNode};
use backup_core::repo::RepoError;
use backup_core::{FileKind, IncrementName, RelPath, Repository, Version};
use backup_platform::dir::EntryKind;
use backup_platform::fs as pfs;
use backup_platform::meta::{self as pmeta, Xattr};
use backup_platform::rofs::{
    CacheInvalidator, DirEntry, Freshness, FsError, FsResult, FsStats, Ino, NodeAttr, NodeKind,
    ReadOnlyFs, ROOT_INO,
};

use inodes::{InoMap, Inodes, Remember, XattrCache};
use prefetch::Prefetch;

pub use views::{version_file_name, versions_folder_name, VERSIONS_SUFFIX};

pub const MIRROR: &str = "mirror";
pub const INCREMENTS: &str = "increments";
pub const SNAPSHOTS: &str = "snapshots";
pub const HISTORY: &str = "history";
pub const LATEST: &str = "latest";

/// Inodes the kernel may hold before the oldest folders are dropped from its caches (with
/// their contents): about 300 bytes each here, so the table stays near 20 MiB. (At 100,000 a
/// fast cold `find` over a million-file snapshot took the daemon past 128 MiB.)
const HELD_BUDGET: usize = 64_000;

/// What [`BackupFs::present_node`] does with the inode table.
enum Keep<'a> {
    /// The kernel takes a reference (a lookup): counted until its `forget`.
    Count,
    /// Kept only while the kernel's references are not counted; else just numbered.
    IfUncounting,
    /// As `IfUncounting`, and what was found is added to the listing's entries kept aside for
    /// a `hold` that follows (see [`BackupFs::set_aside`]).
    Listed(&'a mut Vec<(Ino, Listed)>),
}

/// An entry a listing numbered without storing it (see [`BackupFs::hold`]).
struct Listed {
    loc: Loc,
    parent: Ino,
    name: Box<[u8]>,
    dir: bool,
    xattrs: XattrCache,
}

/// How many [`Listed`] entries are kept aside at most (a few listings' worth).
const LISTED_MAX: usize = 8192;

/// Entries nobody counts (a listing taken for an adapter without `forget`) kept once unused
/// for [`CACHE_AGE`].
const CACHE_KEEP: usize = 50_000;
const CACHE_AGE: Duration = Duration::from_secs(30);
/// Threads listing ahead of walks (see [`prefetch`]). One is the busiest thread of a `find`
/// over a million files (nine tenths of a core), yet two made that `find` slower on two
/// cores (1.4-1.7 s against 2.1-2.3 s, side by side): they take the core the walker and the
/// request threads need.
const PREFETCH_THREADS: usize = 1;
/// Read connections kept for the request threads.
const POOL_MAX: usize = 8;
/// Page cache of each read connection, and folder ids each remembers.
const READER_CACHE_KIB: u32 = 4096;
const READER_DIR_CACHE: usize = 20_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SnapKey {
    Latest,
    Named(Arc<IncrementName>),
}

/// A place in the virtual tree; its inode number is a hash of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Loc {
    Root,
    Mirror(Option<RelPath>),
    IncrementsRoot,
    Increment(Arc<IncrementName>, Option<RelPath>),
    SnapshotsRoot,
    Snapshot(SnapKey, Option<RelPath>),
    HistoryRoot,
    /// A real folder of the history.
    HistoryDir(RelPath),
    /// The versions folder of a file (`<name>.versions`).
    HistoryFile(RelPath),
    /// One version of the file, by its shown name.
    HistoryVersion(RelPath, Box<[u8]>),
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
            Loc::HistoryDir(p) | Loc::HistoryFile(p) => match p.parent() {
                Some(pp) => Loc::HistoryDir(pp),
                None => Loc::HistoryRoot,
            },
            Loc::HistoryVersion(p, _) => Loc::HistoryFile(p.clone()),
        }
    }

    /// The root and the four views: few, and never dropped from the kernel's caches by us.
    pub(crate) fn is_top(&self) -> bool {
        matches!(
            self,
            Loc::Root
                | Loc::Mirror(None)
                | Loc::IncrementsRoot
                | Loc::SnapshotsRoot
                | Loc::HistoryRoot
        )
    }

    /// Disk-backed places change behind our back; the rest changes only on a reload, which
    /// invalidates what the kernel cached.
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

    fn in_history(&self) -> bool {
        matches!(
            self,
            Loc::HistoryRoot | Loc::HistoryDir(_) | Loc::HistoryFile(_) | Loc::HistoryVersion(..)
        )
    }
}

/// The metadata a synthesised or recorded folder is shown with.
#[derive(Clone, Debug)]
struct DirMeta {
    mtime: SystemTime,
    perm: u16,
    uid: u32,
    gid: u32,
    xattrs: Option<Arc<Vec<Xattr>>>,
}

/// What a `Loc` currently is.
enum Node {
    /// A folder that exists only in the tree, or one recorded by the catalog.
    Dir(DirMeta),
    /// A file or folder on disk, shown as it is.
    Disk(PathBuf, Metadata),
    /// One stored version of a tracked file, with the target shown for a symlink when it is
    /// not the stored one (history/).
    Version(Box<Version>, Option<OsString>),
}

/// One increment the tree shows.
#[derive(Clone, Debug)]
struct Inc {
    name: Arc<IncrementName>,
    time: IncrementTime,
}

/// The increments with usable metadata, oldest first: all the tree keeps of the catalog.
#[derive(Default)]
struct Catalog {
    incs: Vec<Inc>,
    pos: HashMap<IncrementName, usize>,
    problems: Vec<FormatProblem>,
}

impl Catalog {
    fn load(index: &Index, repo: &Repository) -> Result<Catalog, IndexError> {
        let mut c = Catalog::default();
        for r in index.increments()? {
            match r.state {
                IncrementState::Ok => {
                    c.pos.insert(r.name.clone(), c.incs.len());
                    c.incs.push(Inc {
                        name: Arc::new(r.name),
                        time: r.time,
                    });
                }
                // Being written (its metadata lands last): shown once it is there.
                IncrementState::NoMetadata => {}
                IncrementState::Unreadable => c.problems.push(FormatProblem {
                    file: repo.increment_meta_path(&r.name).display().to_string(),
                    key: None,
                    message: r.problem.unwrap_or_else(|| "unreadable metadata".into()),
                }),
            }
        }
        Ok(c)
    }

    fn latest(&self) -> Option<&Inc> {
        self.incs.last()
    }

    fn get(&self, name: &IncrementName) -> Option<&Inc> {
        self.pos.get(name).map(|&i| &self.incs[i])
    }

    fn resolve(&self, key: &SnapKey) -> Option<&Inc> {
        match key {
            SnapKey::Latest => self.latest(),
            SnapKey::Named(n) => self.get(n),
        }
    }

    /// An increment's recorded time, or its name's once it is gone.
    fn time_of(&self, name: &IncrementName) -> IncrementTime {
        self.get(name)
            .map(|i| i.time)
            .unwrap_or_else(|| IncrementTime::of(None, name))
    }

    fn names(&self) -> Vec<IncrementName> {
        self.incs.iter().map(|i| (*i.name).clone()).collect()
    }
}

/// Read connections to the index, one per request thread at a time (an `Index` is not
/// shared between threads), taken and given back around each request.
struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Index>>,
}

impl Pool {
    fn with<T>(&self, f: impl FnOnce(&Index) -> Result<T, IndexError>) -> FsResult<T> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let index = match taken {
            Some(i) => i,
            None => {
                let i = Index::open_at(&self.path, true).map_err(fs_err)?;
                i.set_cache_kib(READER_CACHE_KIB).map_err(fs_err)?;
                i.set_dir_cache_max(READER_DIR_CACHE);
                i
            }
        };
        let out = index.read(f).map_err(fs_err);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(index);
        }
        out
    }
}

fn fs_err(e: IndexError) -> FsError {
    tracing::warn!("index: {e}");
    FsError::Io(e.to_string())
}

/// A folder's entries: where each is, its name, what it is.
type Listing = Vec<(Loc, Vec<u8>, Node)>;

/// A folder's entries for a caller that wants their names only: where each is, its name, its
/// kind (nothing read of the versions).
type Names = Vec<(Loc, Vec<u8>, NodeKind)>;

/// Which of the two listings a request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shape {
    Full,
    Names,
}

/// A listing of either shape (what the listing thread computes ahead).
enum ShapedListing {
    Full(Listing),
    Names(Names),
}

impl ShapedListing {
    fn len(&self) -> usize {
        match self {
            ShapedListing::Full(l) => l.len(),
            ShapedListing::Names(l) => l.len(),
        }
    }

    /// The subfolders a walk enters from here.
    fn walkable_dirs(&self) -> Vec<Loc> {
        match self {
            ShapedListing::Full(l) => l
                .iter()
                .filter(|(l, _, node)| matches!(node, Node::Dir(_)) && walkable(l))
                .map(|(l, _, _)| l.clone())
                .collect(),
            ShapedListing::Names(l) => l
                .iter()
                .filter(|(l, _, kind)| *kind == NodeKind::Dir && walkable(l))
                .map(|(l, _, _)| l.clone())
                .collect(),
        }
    }
}

/// Folders whose listings come from the index alone (so one computed ahead stays right until
/// a reload): those of snapshots and of the history.
fn walkable(l: &Loc) -> bool {
    matches!(
        l,
        Loc::Snapshot(..) | Loc::HistoryDir(_) | Loc::HistoryFile(_)
    )
}

/// A version as `history/` shows it: its name, the version, the shown symlink target.
type ShownVersion = (Vec<u8>, Version, Option<OsString>);

/// Hard-link groups recorded by the catalog: first path → the other members.
type LinkMap = HashMap<RelPath, Vec<RelPath>>;

/// What a reload changed, for the caller's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reload {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What a reload replaces, as one value: the increments the tree shows and the hard-link
/// groups the catalog records. A request takes it once ([`ReadOnlyFs::state`]) and hands it
/// to every helper, so nothing in one reply is computed against a catalog swapped in while
/// it was being built: `lookup` resolves the name, builds the node and counts its hard-link
/// group from the same increments. (The index itself is read one query at a time; a query
/// names the increment it asks about, which stays readable until a prune removes it.)
pub struct Loaded {
    catalog: Arc<Catalog>,
    /// `None` until [`BackupFs::load_metadata`] has read them.
    links: Option<Arc<LinkMap>>,
}

/// The read-only tree of one backup.
pub struct BackupFs {
    repo: Repository,
    /// The connection that keeps the catalog in step with `dist` (only [`BackupFs::refresh`]
    /// uses it); it also keeps a temporary index alive on a read-only drive.
    writer: Mutex<Opened>,
    pool: Pool,
    inodes: Arc<Inodes>,
    /// Swapped whole by a reload; each request reads the one it took (see [`Loaded`]).
    loaded: RwLock<Arc<Loaded>>,
    invalidator: Mutex<Option<Arc<dyn CacheInvalidator>>>,
    counting: AtomicBool,
    stop: Arc<AtomicBool>,
    reloads: AtomicU64,
    /// Set once the index was found to record no extended attribute anywhere.
    no_xattrs: AtomicBool,
    /// What the last listings found for each entry they numbered, for the `hold` that follows
    /// when the kernel takes the entry (no second query); bounded, cleared when full.
    listed: Mutex<InoMap<Listed>>,
    /// Listings computed ahead of a walk (see [`prefetch`]); used once
    /// [`BackupFs::start_prefetch`] started its thread.
    prefetch: Arc<Prefetch<(Loc, Shape), Loaded, ShapedListing>>,
    prefetching: AtomicBool,
    /// Owner of `dist`: shown where nothing else is recorded.
    uid: u32,
    gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MountFsError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Permission bits of a recorded mode as the kernel is shown them.
fn perm(mode: u32) -> u16 {
    pmeta::permission_bits(mode) as u16
}

fn kind_of(meta: &Metadata) -> NodeKind {
    match EntryKind::of(meta.file_type()) {
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink => NodeKind::Symlink,
        // A FIFO or device in increments/ is served as an (unreadable) file.
        _ => NodeKind::File,
    }
}

fn node_kind(k: FileKind) -> NodeKind {
    match k {
        FileKind::File => NodeKind::File,
        FileKind::Symlink => NodeKind::Symlink,
        FileKind::Dir => NodeKind::Dir,
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

fn allocated_blocks(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p)
        .ok()
        .as_ref()
        .and_then(pmeta::blocks_of)
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

/// The extended attributes of a file on disk (mirror/, increments/).
fn disk_xattrs(p: &Path) -> Option<Arc<Vec<Xattr>>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
        let mut names = vec![0u8; 4096];
        // SAFETY: valid C string and buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n <= 0 {
            return None;
        }
        names.truncate(n as usize);
        let mut out = Vec::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(cn) = std::ffi::CString::new(name) else {
                continue;
            };
            let mut value = vec![0u8; 65536];
            // SAFETY: valid C strings and buffer of the given length.
            let len = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cn.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if len >= 0 {
                value.truncate(len as usize);
                out.push(Xattr {
                    name: name.to_vec(),
                    value,
                });
            }
        }
        (!out.is_empty()).then(|| Arc::new(out))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = p;
        None
    }
}

impl BackupFs {
    /// Opens the tree of `repo`: opens (creating or bringing up to date) its index, and reads
    /// the list of increments. Nothing else is read before a request asks for it.
    pub fn open(repo: Repository) -> Result<BackupFs, MountFsError> {
        let opened = Index::open_for(&repo, None)?;
        opened.index.set_cache_kib(READER_CACHE_KIB)?;
        opened.index.set_dir_cache_max(READER_DIR_CACHE);
        let catalog = Catalog::load(&opened.index, &repo)?;
        let root_meta = std::fs::metadata(repo.root()).ok();
        let (uid, gid) = root_meta.as_ref().map(pmeta::owner_of).unwrap_or((0, 0));
        let pool = Pool {
            path: opened.index.path().to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        Ok(BackupFs {
            repo,
            writer: Mutex::new(opened),
            pool,
            inodes: Arc::new(Inodes::new()),
            loaded: RwLock::new(Arc::new(Loaded {
                catalog: Arc::new(catalog),
                links: None,
            })),
            invalidator: Mutex::new(None),
            counting: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            reloads: AtomicU64::new(0),
            no_xattrs: AtomicBool::new(false),
            listed: Mutex::new(InoMap::default()),
            prefetch: Arc::new(Prefetch::new()),
            prefetching: AtomicBool::new(false),
            uid,
            gid,
        })
    }

    /// What is worth saying about the index once (created, imported, lagging behind).
    pub fn index_notes(&self) -> Vec<IndexNote> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .notes
            .clone()
    }

    /// Reads what the tree needs besides the index's answers (the hard-link groups the
    /// catalog records) and returns the problems found in the metadata (unreadable
    /// increments), which the tree leaves out. Meant for a background thread after mounting.
    pub fn load_metadata(&self) -> Vec<FormatProblem> {
        self.load_links();
        match self.pool.with(|i| i.records_xattrs()) {
            Ok(any) => self.no_xattrs.store(!any, Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot look for extended attributes: {e}"),
        }
        self.loaded().catalog.problems.clone()
    }

    fn load_links(&self) {
        if let Some(map) = self.read_links() {
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            // Under the lock: a reload swapping the catalog meanwhile keeps its catalog.
            *loaded = Arc::new(Loaded {
                catalog: Arc::clone(&loaded.catalog),
                links: Some(Arc::new(map)),
            });
        }
    }

    fn read_links(&self) -> Option<LinkMap> {
        match self.pool.with(|i| i.hardlink_pairs()) {
            Ok(pairs) => {
                let mut map: LinkMap = HashMap::new();
                for (member, first) in pairs {
                    if member != first {
                        map.entry(first).or_default().push(member);
                    }
                }
                Some(map)
            }
            Err(e) => {
                tracing::warn!("cannot read hard-link groups: {e}");
                None
            }
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn counting(&self) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    fn loc(&self, ino: Ino) -> FsResult<Loc> {
        self.inodes.loc(ino).ok_or(FsError::NotFound)
    }

    fn top_meta(&self, cat: &Catalog) -> DirMeta {
        DirMeta {
            mtime: cat
                .latest()
                .map(|i| SystemTime::from(i.time.at))
                .unwrap_or(SystemTime::UNIX_EPOCH),
            perm: 0o755,
            uid: self.uid,
            gid: self.gid,
            xattrs: None,
        }
    }

    /// A folder's recorded metadata at `at` (its own mtime, mode, owner, xattrs); a folder
    /// nothing records is shown 0755 with the increment's time.
    fn folder_meta(&self, index: &Index, dir: &RelPath, at: &Inc) -> Result<DirMeta, IndexError> {
        Ok(match index.folder_at(dir, &at.name)? {
            Some(f) => DirMeta {
                mtime: f.mtime.to_system_time(),
                perm: f.mode.map(perm).unwrap_or(0o755),
                uid: f.attrs.owner.as_ref().map(|o| o.uid).unwrap_or(self.uid),
                gid: f.attrs.owner.as_ref().map(|o| o.gid).unwrap_or(self.gid),
                xattrs: (!f.attrs.xattrs.is_empty()).then(|| Arc::new(f.attrs.xattrs)),
            },
            None => DirMeta {
                mtime: SystemTime::from(at.time.at),
                perm: 0o755,
                uid: self.uid,
                gid: self.gid,
                xattrs: None,
            },
        })
    }

    /// The location of `name` inside `parent`, checked only as far as the name's form goes
    /// (history names are checked against the index).
    fn child(&self, st: &Loaded, parent: &Loc, name: &[u8]) -> FsResult<Loc> {
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
            Loc::IncrementsRoot => {
                let n = text
                    .and_then(IncrementName::parse)
                    .ok_or(FsError::NotFound)?;
                let inc = st.catalog.get(&n).ok_or(FsError::NotFound)?;
                Loc::Increment(Arc::clone(&inc.name), None)
            }
            Loc::Increment(n, r) => Loc::Increment(n.clone(), Some(rel_join(r, name)?)),
            Loc::SnapshotsRoot => match text {
                Some(LATEST) => Loc::Snapshot(SnapKey::Latest, None),
                _ => {
                    let n = text
                        .and_then(IncrementName::parse)
                        .ok_or(FsError::NotFound)?;
                    let inc = st.catalog.get(&n).ok_or(FsError::NotFound)?;
                    Loc::Snapshot(SnapKey::Named(Arc::clone(&inc.name)), None)
                }
            },
            Loc::Snapshot(k, r) => Loc::Snapshot(k.clone(), Some(rel_join(r, name)?)),
            Loc::HistoryRoot => self.history_child(None, name)?,
            Loc::HistoryDir(p) => self.history_child(Some(p), name)?,
            Loc::HistoryFile(p) => Loc::HistoryVersion(p.clone(), name.into()),
            Loc::HistoryVersion(..) => return Err(FsError::NotDir),
        })
    }

    /// `name` in `history/<dir>`: a real folder keeps its name; a file's versions folder is
    /// `<file>.versions` (see [`versions_folder_name`]).
    fn history_child(&self, dir: Option<&RelPath>, name: &[u8]) -> FsResult<Loc> {
        let base = dir.cloned();
        let path = rel_join(&base, name)?;
        self.pool
            .with(|index| {
                if index.history_has_dir(&path)? {
                    return Ok(Loc::HistoryDir(path));
                }
                let Some(file) = name.strip_suffix(VERSIONS_SUFFIX.as_bytes()) else {
                    return Ok(Loc::Root);
                };
                let Ok(fpath) = rel_join(&base, file) else {
                    return Ok(Loc::Root);
                };
                let shown = versions_folder_name(file, |n| {
                    rel_join(&base, n)
                        .ok()
                        .map(|p| index.history_has_dir(&p).unwrap_or(false))
                        .unwrap_or(false)
                });
                Ok(if shown == name {
                    Loc::HistoryFile(fpath)
                } else {
                    Loc::Root
                })
            })
            .and_then(|l| match l {
                Loc::Root => Err(FsError::NotFound),
                l => Ok(l),
            })
    }

    /// A path of the mirror as the index records it (the owner, mode and attributes of the
    /// source, which a `dist` on exFAT cannot hold), with the stored file's content; what the
    /// index does not know (a run is writing it) as it is on disk.
    fn mirror_node(&self, r: &RelPath, entry: Option<IndexEntry>) -> FsResult<Node> {
        let Some(e) = entry else {
            return self.disk(self.repo.mirror_file(r));
        };
        if e.kind == FileKind::Dir {
            return Ok(Node::Dir(DirMeta {
                mtime: e.mtime.to_system_time(),
                perm: e.mode.map(perm).unwrap_or(0o755),
                uid: e.attrs.owner.as_ref().map(|o| o.uid).unwrap_or(self.uid),
                gid: e.attrs.owner.as_ref().map(|o| o.gid).unwrap_or(self.gid),
                xattrs: (!e.attrs.xattrs.is_empty()).then(|| Arc::new(e.attrs.xattrs)),
            }));
        }
        Ok(Node::Version(
            Box::new(Version {
                path: r.clone(),
                start: e.version_of,
                holder: Holder::Mirror,
                size: e.size,
                mtime: e.mtime,
                mode: e.mode,
                kind: e.kind,
                hash: e.hash,
                attrs: e.attrs,
            }),
            None,
        ))
    }

    fn disk(&self, p: PathBuf) -> FsResult<Node> {
        let m = lstat(&p)?;
        Ok(Node::Disk(p, m))
    }

    /// What `loc` is now, or `NotFound` when it no longer exists.
    fn resolve(&self, st: &Loaded, loc: &Loc) -> FsResult<Node> {
        let cat: &Catalog = &st.catalog;
        match loc {
            Loc::Root | Loc::IncrementsRoot | Loc::SnapshotsRoot | Loc::HistoryRoot => {
                Ok(Node::Dir(self.top_meta(cat)))
            }
            Loc::Mirror(None) => match self.disk(self.repo.mirror_dir()) {
                // A backup without a mirror yet still shows an (empty) mirror/.
                Err(FsError::NotFound) => Ok(Node::Dir(self.top_meta(cat))),
                other => other,
            },
            Loc::Mirror(Some(r)) => {
                let entry = self.pool.with(|i| i.mirror_get(r))?;
                self.mirror_node(r, entry)
            }
            Loc::Increment(n, r) => {
                if cat.get(n).is_none() {
                    return Err(FsError::NotFound);
                }
                let dir = self.repo.increment_dir(n);
                match r {
                    None => self.disk(dir),
                    Some(r) => self.disk(r.under(&dir)),
                }
            }
            Loc::Snapshot(k, r) => {
                let inc = cat.resolve(k).ok_or(FsError::NotFound)?;
                let Some(r) = r else {
                    return Ok(Node::Dir(DirMeta {
                        mtime: SystemTime::from(inc.time.at),
                        ..self.top_meta(cat)
                    }));
                };
                self.pool
                    .with(|index| {
                        Ok(match index.snapshot_lookup(&inc.name, r)? {
                            Some(SnapNode::Dir) => {
                                Some(Node::Dir(self.folder_meta(index, r, inc)?))
                            }
                            Some(SnapNode::File(v)) => Some(Node::Version(v, None)),
                            None => None,
                        })
                    })?
                    .ok_or(FsError::NotFound)
            }
            Loc::HistoryDir(p) => {
                let latest = cat.latest().ok_or(FsError::NotFound)?;
                self.pool
                    .with(|index| {
                        Ok(if index.history_has_dir(p)? {
                            Some(Node::Dir(self.folder_meta(index, p, latest)?))
                        } else {
                            None
                        })
                    })?
                    .ok_or(FsError::NotFound)
            }
            Loc::HistoryFile(p) => {
                let versions = self.pool.with(|i| i.timeline(p))?;
                let last = versions
                    .iter()
                    .rev()
                    .find_map(|f| f.version.as_ref())
                    .ok_or(FsError::NotFound)?;
                Ok(Node::Dir(self.versions_folder_meta(cat, last)))
            }
            Loc::HistoryVersion(p, name) => {
                let list = self.version_list(cat, p)?;
                let (_, v, target) = list
                    .into_iter()
                    .find(|(n, _, _)| **n == **name)
                    .ok_or(FsError::NotFound)?;
                Ok(Node::Version(Box::new(v), target))
            }
        }
    }

    /// A versions folder: 0755 (each version keeps its own mode), the time of the newest
    /// version's increment.
    fn versions_folder_meta(&self, cat: &Catalog, newest: &Version) -> DirMeta {
        DirMeta {
            mtime: newest
                .start
                .as_ref()
                .map(|s| SystemTime::from(cat.time_of(s).at))
                .unwrap_or_else(|| newest.mtime.to_system_time()),
            ..self.top_meta(cat)
        }
    }

    /// The versions of `path` as `history/` shows them: (name, version, shown symlink target).
    fn version_list(&self, cat: &Catalog, path: &RelPath) -> FsResult<Vec<ShownVersion>> {
        let timeline = self.pool.with(|i| i.timeline(path))?;
        let mut out: Vec<ShownVersion> = Vec::new();
        for (i, f) in timeline.iter().enumerate() {
            let Some(v) = &f.version else { continue };
            let time = v.start.as_ref().map(|s| cat.time_of(s));
            // Same-second increments (`backup_…_01`) are told apart by their own suffix, so a
            // version keeps its name when another one is pruned; a counter only settles what
            // is left (recorded times equal to the second without a suffix).
            let mut n = v.start.as_ref().map(views::same_second_number).unwrap_or(0);
            let mut name = version_file_name(time.as_ref(), n, path.file_name());
            while out.iter().any(|(x, _, _)| *x == name) {
                n += 1;
                name = version_file_name(time.as_ref(), n, path.file_name());
            }
            let target = if v.kind == FileKind::Symlink {
                let next = timeline.get(i + 1).and_then(|f| f.at.as_ref());
                self.history_link_target(cat, v, f.at.as_ref(), next)
            } else {
                None
            };
            out.push((name, v.clone(), target));
        }
        Ok(out)
    }

    /// A relative symlink target shown in `history/`, rewritten to point into the snapshot of
    /// the first increment that shows this version (where it resolves as in the source);
    /// absolute targets, and versions no snapshot shows any more, keep the stored target.
    fn history_link_target(
        &self,
        cat: &Catalog,
        v: &Version,
        from: Option<&IncrementName>,
        to: Option<&IncrementName>,
    ) -> Option<OsString> {
        let stored = pfs::read_stored_link(&v.backing_path(&self.repo)).ok()?;
        let inc = cat
            .incs
            .iter()
            .find(|i| from.is_none_or(|f| *i.name >= *f) && to.is_none_or(|t| *i.name < *t))?;
        views::snapshot_link_target(&v.path, inc.name.as_str(), stored.as_os_str())
    }

    fn version_attr(&self, ino: Ino, v: &Version, shown: Option<&OsString>) -> NodeAttr {
        // Recorded metadata is the truth (a dist on exFAT cannot hold modes or owners); the
        // stored file fills in what old metadata does not record.
        let disk = if v.mode.is_none() {
            std::fs::symlink_metadata(v.backing_path(&self.repo)).ok()
        } else {
            None
        };
        let perm = match (v.mode, &disk) {
            (Some(m), _) => perm(m),
            (None, Some(m)) => perm(pmeta::mode_or_readonly(m)),
            (None, None) if v.kind == FileKind::Symlink => 0o777,
            (None, None) => 0o644,
        };
        let (uid, gid) = match &v.attrs.owner {
            Some(o) => (o.uid, o.gid),
            None => (self.uid, self.gid),
        };
        // Only a version recorded with holes pays a stat of its stored file.
        let blocks = match v.attrs.sparse {
            true => allocated_blocks(&v.backing_path(&self.repo)),
            false => None,
        };
        NodeAttr {
            blocks,
            ino,
            kind: node_kind(v.kind),
            size: match shown {
                Some(t) => t.len() as u64,
                None => v.size,
            },
            mtime: v.mtime.to_system_time(),
            perm,
            nlink: 1,
            uid,
            gid,
        }
    }

    fn attr(&self, ino: Ino, node: &Node) -> NodeAttr {
        match node {
            Node::Dir(m) => NodeAttr {
                ino,
                kind: NodeKind::Dir,
                size: 0,
                mtime: m.mtime,
                perm: m.perm,
                // 1 = "unknown number of subdirectories": find must not skip any.
                nlink: 1,
                uid: m.uid,
                gid: m.gid,
                blocks: None,
            },
            Node::Disk(_, m) => {
                let (uid, gid) = pmeta::owner_of(m);
                let kind = kind_of(m);
                NodeAttr {
                    ino,
                    kind,
                    size: if kind == NodeKind::Dir { 0 } else { m.len() },
                    mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    perm: perm(pmeta::mode_or_readonly(m)),
                    nlink: 1,
                    uid,
                    gid,
                    blocks: pmeta::blocks_of(m),
                }
            }
            Node::Version(v, shown) => self.version_attr(ino, v, shown.as_ref()),
        }
    }

    fn xattrs_of(node: &Node) -> XattrCache {
        match node {
            Node::Dir(m) => XattrCache::Known(m.xattrs.clone()),
            Node::Disk(p, _) => XattrCache::Known(disk_xattrs(p)),
            Node::Version(v, _) => XattrCache::Known(
                (!v.attrs.xattrs.is_empty()).then(|| Arc::new(v.attrs.xattrs.clone())),
            ),
        }
    }

    /// `link_group` for the mirror: members whose recorded version is the first path's.
    fn mirror_link_group(&self, st: &Loaded, path: &RelPath, v: &Version) -> Option<(Loc, u32)> {
        let links = &st.links;
        let first = v.attrs.hardlink_of.as_ref();
        let root = first.unwrap_or(path);
        let members = links.as_ref()?.get(root)?;
        let counted = self.pool.with(|index| {
            let Some(root_e) = index.mirror_get(root)? else {
                return Ok(None);
            };
            if root_e.kind != FileKind::File || (first.is_some() && root_e.hash != v.hash) {
                return Ok(None);
            }
            let mut n = 1u32;
            for m in members {
                if let Some(me) = index.mirror_get(m)? {
                    if me.attrs.hardlink_of.as_ref() == Some(root) && me.hash == root_e.hash {
                        n += 1;
                    }
                }
            }
            Ok(Some(n))
        });
        match counted {
            Ok(Some(n)) if n > 1 => Some((Loc::Mirror(Some(root.clone())), n)),
            _ => None,
        }
    }

    /// For a member of a recorded hard-link group in a snapshot: the location of the group's
    /// first path when that holds the same version there (then both are one inode), and the
    /// group's size at that point. `None`: the file stands alone, at `loc`, with one link
    /// (nearly every file: no copy of its location is made for it).
    fn link_group(&self, st: &Loaded, loc: &Loc, v: &Version) -> Option<(Loc, u32)> {
        if let Loc::Mirror(Some(path)) = loc {
            return self.mirror_link_group(st, path, v);
        }
        let Loc::Snapshot(k, Some(path)) = loc else {
            return None;
        };
        let links = &st.links;
        let first = v.attrs.hardlink_of.clone();
        let has_members = links
            .as_ref()
            .is_some_and(|l| l.contains_key(first.as_ref().unwrap_or(path)));
        if first.is_none() && !has_members {
            return None;
        }
        let inc = st.catalog.resolve(k)?;
        let same = |a: &Version, b: &Version| {
            a.kind == FileKind::File
                && b.kind == FileKind::File
                && (a.hash.is_none() || b.hash.is_none() || a.hash == b.hash)
        };
        let root = first.clone().unwrap_or_else(|| path.clone());
        let counted = self.pool.with(|index| {
            let root_v = if first.is_some() {
                match index.version_at(&root, &inc.name)? {
                    Some(rv) if same(&rv, v) => Some(rv),
                    _ => None,
                }
            } else {
                Some(v.clone())
            };
            let Some(root_v) = root_v else {
                return Ok(None);
            };
            let mut n = 1u32;
            let members = links
                .as_ref()
                .and_then(|l| l.get(&root).cloned())
                .unwrap_or_default();
            for m in &members {
                if let Some(mv) = index.version_at(m, &inc.name)? {
                    if mv.attrs.hardlink_of.as_ref() == Some(&root) && same(&mv, &root_v) {
                        n += 1;
                    }
                }
            }
            // Before the groups are read (or a member the catalog scan has not seen): at least
            // this member and its first path.
            Ok(Some(n.max(if first.is_some() { 2 } else { 1 })))
        });
        match counted {
            Ok(Some(n)) => Some((Loc::Snapshot(k.clone(), Some(root)), n)),
            _ => None,
        }
    }

    /// The shown location and attributes of `loc` now, remembered (counted when asked) under
    /// its number.
    fn present(
        &self,
        st: &Loaded,
        parent: Ino,
        name: &[u8],
        loc: Loc,
        count: bool,
    ) -> FsResult<NodeAttr> {
        let node = self.resolve(st, &loc)?;
        let keep = match count {
            true => Keep::Count,
            false => Keep::IfUncounting,
        };
        Ok(self.present_node(st, parent, name, loc, node, keep))
    }

    fn present_node(
        &self,
        st: &Loaded,
        parent: Ino,
        name: &[u8],
        loc: Loc,
        node: Node,
        keep: Keep<'_>,
    ) -> NodeAttr {
        let group = match &node {
            Node::Version(v, _) => self.link_group(st, &loc, v),
            _ => None,
        };
        let (loc, nlink) = group.unwrap_or((loc, 1));
        let count = matches!(keep, Keep::Count);
        let store = match keep {
            Keep::Count => true,
            Keep::IfUncounting | Keep::Listed(_) => !self.counting(),
        };
        let dir = matches!(&node, Node::Dir(_)) || matches!(&node, Node::Disk(_, m) if m.is_dir());
        let ino = if store {
            self.inodes.remember(Remember {
                loc: &loc,
                parent,
                name,
                dir,
                xattrs: Self::xattrs_of(&node),
                count,
            })
        } else {
            let ino = self.inodes.ino_of(&loc);
            if let Keep::Listed(aside) = keep {
                // The caller takes the lock once for the whole listing.
                aside.push((
                    ino,
                    Listed {
                        loc: loc.clone(),
                        parent,
                        name: name.into(),
                        dir,
                        xattrs: Self::xattrs_of(&node),
                    },
                ));
            }
            ino
        };
        let mut a = self.attr(ino, &node);
        a.nlink = a.nlink.max(nlink);
        a
    }

    /// Keeps a listing's entries aside for `hold` (bounded: the oldest listings go first; of a
    /// folder larger than the bound, its first entries, as the kernel takes a listing from
    /// its start). One lock per listing, not per entry: the request threads of a `find` took
    /// turns on it.
    fn set_aside(&self, mut aside: Vec<(Ino, Listed)>) {
        if aside.is_empty() {
            return;
        }
        aside.truncate(LISTED_MAX);
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if listed.len() + aside.len() > LISTED_MAX {
            // Freed after the lock is let go.
            let old = std::mem::replace(
                &mut *listed,
                InoMap::with_capacity_and_hasher(LISTED_MAX, Default::default()),
            );
            listed.extend(aside);
            drop(listed);
            drop(old);
            return;
        }
        listed.extend(aside);
    }

    /// Lists, on a thread of its own, the folders of snapshots and of the history that walks
    /// are about to enter (see [`prefetch`]). The thread ends with the tree.
    pub fn start_prefetch(self: &Arc<Self>) {
        if self.prefetching.swap(true, Ordering::Relaxed) {
            return;
        }
        for i in 0..PREFETCH_THREADS {
            let fs = Arc::downgrade(self);
            let prefetch = Arc::clone(&self.prefetch);
            let spawned = std::thread::Builder::new()
                .name(format!("prefetch-{i}"))
                .spawn(move || {
                    while let Some((st, key)) = prefetch.next() {
                        // Held only while listing, so the tree can go meanwhile.
                        let Some(fs) = fs.upgrade() else { break };
                        let listing = fs.listing_of_shape(&st, &key.0, key.1).ok().map(|l| {
                            let n = l.len();
                            (l, n)
                        });
                        drop(fs);
                        prefetch.finish(&key, listing);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a listing thread: {e}");
            }
        }
    }

    fn listing_of_shape(&self, st: &Loaded, loc: &Loc, shape: Shape) -> FsResult<ShapedListing> {
        match shape {
            Shape::Full => self.listing(st, loc).map(ShapedListing::Full),
            Shape::Names => self.names_listing(st, loc).map(ShapedListing::Names),
        }
    }

    /// The listing of `loc` for a request: the one computed ahead when a walk was expected
    /// here; then the subfolders a walk enters next are wished for, in the same shape.
    fn listing_for_request(
        &self,
        st: &Arc<Loaded>,
        loc: &Loc,
        shape: Shape,
    ) -> FsResult<ShapedListing> {
        if !self.prefetching.load(Ordering::Relaxed)
            || !(walkable(loc) || matches!(loc, Loc::HistoryRoot))
        {
            return self.listing_of_shape(st, loc, shape);
        }
        let key = (loc.clone(), shape);
        let listing = match self.prefetch.take(st, &key) {
            Some(l) => l,
            None => self.listing_of_shape(st, loc, shape)?,
        };
        let next = listing
            .walkable_dirs()
            .into_iter()
            .map(|l| (l, shape))
            .collect();
        self.prefetch.want(st, next);
        Ok(listing)
    }

    fn full_listing_for_request(&self, st: &Arc<Loaded>, loc: &Loc) -> FsResult<Listing> {
        match self.listing_for_request(st, loc, Shape::Full)? {
            ShapedListing::Full(l) => Ok(l),
            ShapedListing::Names(_) => self.listing(st, loc),
        }
    }

    fn names_for_request(&self, st: &Arc<Loaded>, loc: &Loc) -> FsResult<Names> {
        match self.listing_for_request(st, loc, Shape::Names)? {
            ShapedListing::Names(l) => Ok(l),
            ShapedListing::Full(l) => Ok(self.names_of(st, l)),
        }
    }

    /// A full listing by name and kind, each entry at the location it is shown at.
    fn names_of(&self, st: &Loaded, listing: Listing) -> Names {
        listing
            .into_iter()
            .map(|(l, name, node)| {
                let kind = self.attr(0, &node).kind;
                (self.shown_loc(st, l, &node), name, kind)
            })
            .collect()
    }

    /// The entries of folder `loc` by name and kind only. A snapshot's folder is read from the
    /// index without its versions (a third of the columns, no version built per entry);
    /// other folders are listed in full. Each entry is at the location it is shown at (its
    /// hard-link group's), so its listed number is the one `stat` gives.
    fn names_listing(&self, st: &Loaded, loc: &Loc) -> FsResult<Names> {
        let Loc::Snapshot(k, r) = loc else {
            return Ok(self.names_of(st, self.listing(st, loc)?));
        };
        let inc = st.catalog.resolve(k).ok_or(FsError::NotFound)?;
        let names = self
            .pool
            .with(|index| index.snapshot_names(&inc.name, r.as_ref()))?;
        let Some(names) = names else {
            return match self.resolve(st, loc)? {
                Node::Version(..) => Err(FsError::NotDir),
                _ => Err(FsError::NotFound),
            };
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let Ok(path) = rel_join(r, &n.name) else {
                continue;
            };
            let mut l = Loc::Snapshot(k.clone(), Some(path));
            if n.link_member {
                // Its listed number must be its group's, as `stat` gives it (rare: read in
                // full). A group's first path is shown at its own place.
                if let Ok(node) = self.resolve(st, &l) {
                    l = self.shown_loc(st, l, &node);
                }
            }
            out.push((l, n.name, node_kind(n.kind)));
        }
        Ok(out)
    }

    /// Where `loc` is shown: the location of its hard-link group when it belongs to one (whose
    /// number it then has).
    fn shown_loc(&self, st: &Loaded, loc: Loc, node: &Node) -> Loc {
        match node {
            Node::Version(v, _) => match self.link_group(st, &loc, v) {
                Some((group, _)) => group,
                None => loc,
            },
            _ => loc,
        }
    }

    /// Every entry of the folder `loc`, with what it is.
    fn listing(&self, st: &Loaded, loc: &Loc) -> FsResult<Listing> {
        let cat: &Catalog = &st.catalog;
        let mut out = Vec::new();
        match loc {
            Loc::Root => {
                for (l, n) in [
                    (Loc::Mirror(None), MIRROR),
                    (Loc::IncrementsRoot, INCREMENTS),
                    (Loc::SnapshotsRoot, SNAPSHOTS),
                    (Loc::HistoryRoot, HISTORY),
                ] {
                    let node = self.resolve(st, &l)?;
                    out.push((l, n.as_bytes().to_vec(), node));
                }
            }
            Loc::IncrementsRoot => {
                for i in &cat.incs {
                    let l = Loc::Increment(Arc::clone(&i.name), None);
                    if let Ok(node) = self.resolve(st, &l) {
                        out.push((l, i.name.as_str().as_bytes().to_vec(), node));
                    }
                }
            }
            Loc::SnapshotsRoot => {
                for i in &cat.incs {
                    out.push((
                        Loc::Snapshot(SnapKey::Named(Arc::clone(&i.name)), None),
                        i.name.as_str().as_bytes().to_vec(),
                        Node::Dir(DirMeta {
                            mtime: SystemTime::from(i.time.at),
                            ..self.top_meta(cat)
                        }),
                    ));
                }
                if let Some(i) = cat.latest() {
                    out.push((
                        Loc::Snapshot(SnapKey::Latest, None),
                        LATEST.as_bytes().to_vec(),
                        Node::Dir(DirMeta {
                            mtime: SystemTime::from(i.time.at),
                            ..self.top_meta(cat)
                        }),
                    ));
                }
            }
            Loc::Mirror(_) | Loc::Increment(..) => {
                let p = match (loc, self.resolve(st, loc)?) {
                    (Loc::Mirror(r), Node::Dir(_)) => match r {
                        Some(r) => self.repo.mirror_file(r),
                        None => self.repo.mirror_dir(),
                    },
                    (_, Node::Dir(_)) => return Ok(out),
                    (_, Node::Disk(p, m)) if m.is_dir() => p,
                    _ => return Err(FsError::NotDir),
                };
                let rd = std::fs::read_dir(&p).map_err(|e| FsError::from_io(&e))?;
                let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
                for e in rd {
                    let e = e.map_err(|e| FsError::from_io(&e))?;
                    entries.push((name_bytes(&e.file_name()).to_vec(), e.path()));
                }
                // Sorted, so listings (and offsets) are stable and file managers need not sort.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                if let Loc::Mirror(_) = loc {
                    // One read of the index for the whole folder.
                    let mut children = Vec::with_capacity(entries.len());
                    for (name, _) in &entries {
                        if let Loc::Mirror(Some(r)) = self.child(st, loc, name)? {
                            children.push(r);
                        }
                    }
                    let recorded = self.pool.with(|i| {
                        children
                            .iter()
                            .map(|r| i.mirror_get(r))
                            .collect::<Result<Vec<_>, _>>()
                    })?;
                    for ((name, _), (r, e)) in
                        entries.into_iter().zip(children.into_iter().zip(recorded))
                    {
                        let Ok(node) = self.mirror_node(&r, e) else {
                            continue;
                        };
                        out.push((Loc::Mirror(Some(r)), name, node));
                    }
                    return Ok(out);
                }
                for (name, path) in entries {
                    let Ok(m) = lstat(&path) else { continue };
                    let child = self.child(st, loc, &name)?;
                    out.push((child, name, Node::Disk(path, m)));
                }
            }
            Loc::Snapshot(k, r) => {
                let inc = cat.resolve(k).ok_or(FsError::NotFound)?;
                let children = self.pool.with(|index| {
                    let Some(children) = index.snapshot_dir(&inc.name, r.as_ref())? else {
                        return Ok(None);
                    };
                    let mut v = Vec::with_capacity(children.len());
                    for c in children {
                        let Ok(path) = rel_join(r, &c.name) else {
                            continue;
                        };
                        let node = match c.node {
                            SnapNode::Dir => Node::Dir(self.folder_meta(index, &path, inc)?),
                            SnapNode::File(ver) => Node::Version(ver, None),
                        };
                        v.push((Loc::Snapshot(k.clone(), Some(path)), c.name, node));
                    }
                    Ok(Some(v))
                })?;
                return match children {
                    Some(c) => Ok(c),
                    None => match self.resolve(st, loc)? {
                        Node::Version(..) => Err(FsError::NotDir),
                        _ => Err(FsError::NotFound),
                    },
                };
            }
            Loc::HistoryRoot | Loc::HistoryDir(_) => {
                let dir = match loc {
                    Loc::HistoryDir(p) => Some(p.clone()),
                    _ => None,
                };
                let latest = cat.latest().ok_or(FsError::NotFound)?;
                let entries = self.pool.with(|index| {
                    let Some(children) = index.history_dir(dir.as_ref())? else {
                        return Ok(None);
                    };
                    let dirs: std::collections::HashSet<&[u8]> = children
                        .iter()
                        .filter(|(_, is_dir)| *is_dir)
                        .map(|(n, _)| n.as_slice())
                        .collect();
                    let mut v = Vec::with_capacity(children.len());
                    let mut shown_files = std::collections::HashSet::new();
                    for (name, is_dir) in &children {
                        let Ok(path) = rel_join(&dir, name) else {
                            continue;
                        };
                        if *is_dir {
                            let meta = self.folder_meta(index, &path, latest)?;
                            v.push((Loc::HistoryDir(path), name.clone(), Node::Dir(meta)));
                            continue;
                        }
                        let shown = versions_folder_name(name, |n| dirs.contains(n));
                        // A name clash the rule cannot settle (see docs/mount.md): the first
                        // one wins.
                        if dirs.contains(shown.as_slice()) || !shown_files.insert(shown.clone()) {
                            continue;
                        }
                        let timeline = index.timeline(&path)?;
                        let Some(newest) = timeline.iter().rev().find_map(|f| f.version.as_ref())
                        else {
                            continue;
                        };
                        let meta = self.versions_folder_meta(cat, newest);
                        v.push((Loc::HistoryFile(path), shown, Node::Dir(meta)));
                    }
                    v.sort_by(|a, b| a.1.cmp(&b.1));
                    Ok(Some(v))
                })?;
                return entries.ok_or(FsError::NotFound);
            }
            Loc::HistoryFile(p) => {
                for (name, v, target) in self.version_list(cat, p)? {
                    out.push((
                        Loc::HistoryVersion(p.clone(), name.clone().into()),
                        name,
                        Node::Version(Box::new(v), target),
                    ));
                }
                if out.is_empty() {
                    return Err(FsError::NotFound);
                }
            }
            Loc::HistoryVersion(..) => return Err(FsError::NotDir),
        }
        Ok(out)
    }

    /// Brings the catalog in step with `dist` (increments added, removed or rewritten) and,
    /// when something changed, shows the new state and tells the kernel what to forget.
    /// Returns `None` when nothing changed. Runs on the watcher's thread, never a request's.
    pub fn refresh(&self) -> Result<Option<Reload>, MountFsError> {
        let (report, new) = {
            let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let report = w.index.sync_catalog(&self.repo, None)?;
            let new = Catalog::load(&w.index, &self.repo)?;
            (report, new)
        };
        let old = self.loaded();
        let old_names = old.catalog.names();
        let new_names = new.names();
        if report.is_empty() && old_names == new_names {
            return Ok(None);
        }
        let reload = Reload {
            added: new_names
                .iter()
                .filter(|n| !old_names.contains(n))
                .map(|n| n.to_string())
                .collect(),
            removed: old_names
                .iter()
                .filter(|n| !new_names.contains(n))
                .map(|n| n.to_string())
                .collect(),
        };
        let only_appended = report.removed.is_empty()
            && report.reread.is_empty()
            && reload.removed.is_empty()
            && new_names
                .iter()
                .filter(|n| !old_names.contains(n))
                .all(|n| old_names.last().is_none_or(|last| n > last));
        // Hard-link groups read before the swap, so the new catalog is never shown with the
        // old groups (once they were loaded at all).
        let links = old.links.as_ref().and_then(|_| self.read_links());
        {
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            *loaded = Arc::new(Loaded {
                catalog: Arc::new(new),
                // Kept when rereading failed, or when they were loaded meanwhile.
                links: links.map(Arc::new).or_else(|| loaded.links.clone()),
            });
        }
        self.prefetch.clear();
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.invalidate(&reload, only_appended);
        Ok(Some(reload))
    }

    /// How many listings computed ahead of a walk were used (for tests and `-v`).
    pub fn prefetched_listings_used(&self) -> u64 {
        self.prefetch.used()
    }

    /// How many reloads showed a changed catalog (for tests and `-v`).
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    fn invalidate(&self, reload: &Reload, only_appended: bool) {
        if !only_appended {
            self.inodes.clear_xattrs();
        }
        let Some(inv) = self
            .invalidator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let incs = self.inodes.ino_of(&Loc::IncrementsRoot);
        let snaps = self.inodes.ino_of(&Loc::SnapshotsRoot);
        for name in &reload.removed {
            inv.inval_entry(incs, OsStr::new(name));
            inv.inval_entry(snaps, OsStr::new(name));
        }
        // `latest` and everything below it: one call drops the whole subtree.
        inv.inval_entry(snaps, OsStr::new(LATEST));
        inv.inval_inode(incs);
        inv.inval_inode(snaps);
        // A new increment after all others (the nightly case) changes only `latest` and the
        // history's listings; anything else (a prune, a rewritten catalog, an increment that
        // sorts earlier) may take versions out of any view. Either way only what the kernel
        // holds is walked.
        let mut entries: Vec<(Ino, Ino, Box<[u8]>, bool)> = Vec::new();
        self.inodes.for_each(&mut |ino, e| {
            let wanted = match &e.loc {
                l if l.in_history() => true,
                Loc::Snapshot(SnapKey::Named(_), _) => !only_appended,
                _ => false,
            };
            if wanted {
                entries.push((ino, e.parent, e.name.clone(), e.dir));
            }
        });
        for (ino, parent, name, dir) in entries {
            if only_appended && !dir {
                // A history version never changes once stored; its folder's listing does.
                continue;
            }
            inv.inval_inode(ino);
            if !only_appended {
                inv.inval_entry(parent, &os_name(&name));
            }
        }
    }

    /// The attributes of a virtual path like `snapshots/latest/a/b` (for tests and tools).
    pub fn lookup_path(&self, path: &str) -> FsResult<NodeAttr> {
        let st = self.state();
        let mut attr = self.getattr(&st, ROOT_INO)?;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            attr = self.lookup(&st, attr.ino, OsStr::new(comp))?;
        }
        Ok(attr)
    }

    /// Inodes held by the kernel, and cached ones (for tests and `-v`).
    pub fn inode_counts(&self) -> (usize, usize) {
        (self.inodes.held(), self.inodes.cached())
    }

    /// Keeps the inode table bounded: asks the kernel to drop the folders used longest ago
    /// (their entries come back as `forget`s) while it holds more than the budget, and drops
    /// cache entries nobody used for a while. Runs on its own thread, never a request's.
    fn janitor(
        inodes: Arc<Inodes>,
        inv: Arc<dyn CacheInvalidator>,
        stop: Arc<AtomicBool>,
        counting: bool,
    ) {
        let mut pressed = false;
        while !stop.load(Ordering::Relaxed) {
            // Faster while over budget: a `find` brings in 100,000+ entries a second.
            std::thread::sleep(Duration::from_millis(if pressed { 50 } else { 200 }));
            let before = inodes.now().saturating_sub(CACHE_AGE.as_millis() as u64);
            inodes.evict_cached(CACHE_KEEP, before);
            let held = inodes.held();
            pressed = counting && held > HELD_BUDGET;
            if pressed {
                // Down to three quarters of the budget, so a walk does not keep it at the
                // edge; a folder dropped takes its whole subtree with it.
                let excess = held - HELD_BUDGET * 3 / 4;
                let dirs = inodes.oldest_dirs((excess / 16).clamp(256, 16_384));
                for (parent, name) in dirs {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    inv.inval_entry(parent, &os_name(&name));
                }
            }
        }
    }
}

impl Drop for BackupFs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.prefetch.stop();
    }
}

impl ReadOnlyFs for BackupFs {
    type State = Arc<Loaded>;

    fn state(&self) -> Arc<Loaded> {
        self.loaded()
    }

    fn lookup(&self, st: &Arc<Loaded>, parent: Ino, name: &OsStr) -> FsResult<NodeAttr> {
        let ploc = self.loc(parent)?;
        let child = self.child(st, &ploc, name_bytes(name))?;
        self.present(st, parent, name_bytes(name), child, self.counting())
    }

    fn getattr(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<NodeAttr> {
        let loc = self.loc(ino)?;
        let node = self.resolve(st, &loc)?;
        let mut a = self.attr(ino, &node);
        if let Node::Version(v, _) = &node {
            a.nlink = self.link_group(st, &loc, v).map_or(1, |g| g.1);
        }
        self.inodes.set_xattrs(ino, Self::xattrs_of(&node));
        Ok(a)
    }

    fn readdir(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let loc = self.loc(ino)?;
        if self.counting() {
            // Names, kinds and numbers only: the kernel links nothing from a plain listing,
            // so nothing is kept for its entries either.
            return Ok(self
                .names_for_request(st, &loc)?
                .into_iter()
                .map(|(l, name, kind)| DirEntry {
                    ino: self.inodes.ino_of(&l),
                    kind,
                    name: os_name(&name),
                })
                .collect());
        }
        Ok(self
            .full_listing_for_request(st, &loc)?
            .into_iter()
            .map(|(l, name, node)| {
                // Attributes once: building them may stat the stored file.
                let a = self.present_node(st, ino, &name, l, node, Keep::IfUncounting);
                DirEntry {
                    ino: a.ino,
                    kind: a.kind,
                    name: os_name(&name),
                }
            })
            .collect())
    }

    fn readdir_plus(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<Vec<(DirEntry, NodeAttr)>> {
        let loc = self.loc(ino)?;
        let listing = self.full_listing_for_request(st, &loc)?;
        let mut out = Vec::with_capacity(listing.len());
        let mut aside = Vec::with_capacity(listing.len().min(LISTED_MAX));
        for (l, name, node) in listing {
            // Numbered only: `hold` remembers and counts each entry the kernel really takes,
            // from what was found here (kept aside, bounded). Storing every listed entry in
            // the inode table instead doubled the daemon's memory.
            let a = self.present_node(st, ino, &name, l, node, Keep::Listed(&mut aside));
            out.push((
                DirEntry {
                    ino: a.ino,
                    kind: a.kind,
                    name: os_name(&name),
                },
                a,
            ));
        }
        self.set_aside(aside);
        Ok(out)
    }

    fn has_xattrs(&self) -> bool {
        !self.no_xattrs.load(Ordering::Relaxed)
    }

    fn track_references(&self) {
        self.counting.store(true, Ordering::Relaxed);
    }

    fn hold(&self, st: &Arc<Loaded>, parent: Ino, entry: &DirEntry) {
        if self.inodes.hold(entry.ino) {
            return;
        }
        let listed = self
            .listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&entry.ino);
        if let Some(l) = listed {
            self.inodes.remember(Remember {
                loc: &l.loc,
                parent: l.parent,
                name: &l.name,
                dir: l.dir,
                xattrs: l.xattrs,
                count: true,
            });
            return;
        }
        // Not kept aside (a full side table was cleared): look it up again.
        if let Err(e) = self.lookup(st, parent, &entry.name) {
            tracing::debug!("entry {:?} of inode {parent} vanished: {e}", entry.name);
        }
    }

    fn forget(&self, ino: Ino, n: u64) {
        self.inodes.forget(ino, n);
    }

    fn readlink(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<OsString> {
        let loc = self.loc(ino)?;
        let (path, node_is_version) = match self.resolve(st, &loc)? {
            Node::Disk(p, m) if m.file_type().is_symlink() => (p, false),
            Node::Version(_, Some(shown)) => return Ok(shown),
            Node::Version(v, None) if v.kind == FileKind::Symlink => {
                (v.backing_path(&self.repo), true)
            }
            _ => return Err(FsError::NotSymlink),
        };
        let read = match &node_is_version {
            true => pfs::read_stored_link(&path),
            false => std::fs::read_link(&path),
        };
        match read {
            Ok(t) => Ok(t.into_os_string()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(FsError::NotSymlink),
            Err(e) => Err(FsError::from_io(&e)),
        }
    }

    fn open(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<File> {
        let loc = self.loc(ino)?;
        let path = match self.resolve(st, &loc)? {
            Node::Dir(_) => return Err(FsError::IsDir),
            Node::Disk(_, m) if m.is_dir() => return Err(FsError::IsDir),
            Node::Disk(p, _) => p,
            Node::Version(v, _) => v.backing_path(&self.repo),
        };
        inside_backup(self.repo.root(), &path)?;
        pfs::open_backing(&path).map_err(|e| FsError::from_io(&e))
    }

    fn statfs(&self) -> FsResult<FsStats> {
        let v = pfs::volume_stats(self.repo.root()).map_err(|e| FsError::from_io(&e))?;
        let bs = u64::from(v.block_size.max(1));
        Ok(FsStats {
            blocks: v.blocks(),
            blocks_free: v.free_bytes / bs,
            blocks_avail: v.available_bytes / bs,
            block_size: v.block_size,
            files: v.files.unwrap_or(0),
            files_free: v.files_free.unwrap_or(0),
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
            Ok(l) => self.inodes.ino_of(&l.parent()),
            Err(_) => ROOT_INO,
        }
    }

    fn getxattr(&self, st: &Arc<Loaded>, ino: Ino, name: &OsStr) -> FsResult<Vec<u8>> {
        let list = self.xattr_list(st, ino)?;
        list.as_deref()
            .and_then(|l| l.iter().find(|x| x.name == name_bytes(name)))
            .map(|x| x.value.clone())
            .ok_or(FsError::NoData)
    }

    fn listxattr(&self, st: &Arc<Loaded>, ino: Ino) -> FsResult<Vec<OsString>> {
        Ok(self
            .xattr_list(st, ino)?
            .map(|l| l.iter().map(|x| os_name(&x.name)).collect())
            .unwrap_or_default())
    }

    fn attach_invalidator(&self, inv: Arc<dyn CacheInvalidator>) {
        *self.invalidator.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&inv));
        let inodes = Arc::clone(&self.inodes);
        let stop = Arc::clone(&self.stop);
        let counting = self.counting();
        let spawned = std::thread::Builder::new()
            .name("mount-janitor".into())
            .spawn(move || Self::janitor(inodes, inv, stop, counting));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the inode janitor: {e}");
        }
    }
}

impl BackupFs {
    /// The extended attributes of `ino`, from what its entry keeps when it can (no query:
    /// `ls -l` asks for every file).
    fn xattr_list(&self, st: &Loaded, ino: Ino) -> FsResult<Option<Arc<Vec<Xattr>>>> {
        match self.inodes.xattrs(ino) {
            XattrCache::Known(l) => Ok(l),
            XattrCache::Unknown => {
                let loc = self.loc(ino)?;
                let node = self.resolve(st, &loc)?;
                let x = Self::xattrs_of(&node);
                self.inodes.set_xattrs(ino, x.clone());
                match x {
                    XattrCache::Known(l) => Ok(l),
                    XattrCache::Unknown => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
