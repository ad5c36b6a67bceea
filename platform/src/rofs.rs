//! The neutral read-only file-system interface that the FUSE and WinFsp adapters serve.
//!
//! A tree implements [`ReadOnlyFs`] with plain types (inode numbers, names as `OsStr`, errors
//! as [`FsError`]); the adapters only translate. Inode numbers must stay stable while mounted:
//! the same path always answers with the same number.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

/// An inode number. [`ROOT_INO`] is the root directory.
pub type Ino = u64;

pub const ROOT_INO: Ino = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
}

/// Attributes of one node, as the kernel should see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    pub ino: Ino,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits only (`0o7777`).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// 512-byte blocks allocated, when they differ from what `size` implies (a file with
    /// holes): `du` and `cp --sparse=auto` through the mount then see the holes.
    pub blocks: Option<u64>,
}

/// One entry of a directory listing (without `.` and `..`, which the adapters add).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: NodeKind,
    pub name: OsString,
}

/// Figures for `statfs` / the volume size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    /// Free blocks of the volume holding the backup, and those available to unprivileged
    /// users: shown as they are (`df` tells how full the backup drive is), though nothing can
    /// be written through the tree.
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub block_size: u32,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// Why a request failed. Each maps to one errno (and one NTSTATUS on Windows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only file system")]
    ReadOnly,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("no such attribute")]
    NoData,
    #[error("input/output error: {0}")]
    Io(String),
}

impl FsError {
    /// The errno the kernel should see.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSymlink => libc::EINVAL,
            FsError::NoData => no_data_errno(),
            FsError::Io(_) => libc::EIO,
        }
    }

    /// Classifies an error met while touching a backing file: a vanished file (an increment
    /// pruned under us) is `NotFound`, anything else is an I/O error.
    pub fn from_io(e: &std::io::Error) -> FsError {
        match e.kind() {
            std::io::ErrorKind::NotFound => FsError::NotFound,
            _ => match e.raw_os_error() {
                Some(libc::ENOTDIR) => FsError::NotDir,
                Some(libc::ELOOP) => FsError::NotFound,
                _ => FsError::Io(e.to_string()),
            },
        }
    }
}

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
fn no_data_errno() -> i32 {
    libc::ENOATTR
}
#[cfg(not(any(target_os = "macos", target_os = "freebsd")))]
fn no_data_errno() -> i32 {
    libc::ENODATA
}

pub type FsResult<T> = Result<T, FsError>;

/// How long the kernel may cache what a node answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Mirrors files on disk that change behind our back: short cache.
    Live,
    /// Built from metadata; the tree tells the kernel itself when it changes.
    Notified,
}

/// Tells the kernel to drop what it cached. Supplied by the adapter once mounted; calls must
/// never come from inside a request handler (the kernel may wait on that very request).
pub trait CacheInvalidator: Send + Sync {
    /// Forget the name `name` in directory `parent` (and, for a directory, all below it).
    fn inval_entry(&self, parent: Ino, name: &OsStr);
    /// Forget the attributes and cached data of `ino`.
    fn inval_inode(&self, ino: Ino);
}

/// A read-only tree served by a mount adapter. Every method may be called from several
/// threads at once and must never panic: failures are `FsError`s.
///
/// One request, one state: what a tree answers from can be replaced while it serves (a
/// reload of the backup's increments), so an adapter takes [`ReadOnlyFs::state`] once at the
/// top of each request and passes that same handle to every call the request makes. A reply
/// built from several calls (a listing, then the folder's own attributes, then each entry
/// held) then describes one state, never half of the old and half of the new.
pub trait ReadOnlyFs: Send + Sync + 'static {
    /// A handle on the state requests are answered from, as loaded when it was taken.
    type State: Send + Sync;
    /// The current state; later reloads do not change what a taken handle answers.
    fn state(&self) -> Self::State;
    /// The child `name` of directory `parent`.
    fn lookup(&self, st: &Self::State, parent: Ino, name: &OsStr) -> FsResult<NodeAttr>;
    fn getattr(&self, st: &Self::State, ino: Ino) -> FsResult<NodeAttr>;
    /// The whole listing of a directory, in a stable order. The adapters keep the listing per
    /// open directory handle, so offsets stay valid while the tree changes.
    fn readdir(&self, st: &Self::State, ino: Ino) -> FsResult<Vec<DirEntry>>;
    fn readlink(&self, st: &Self::State, ino: Ino) -> FsResult<OsString>;
    /// Opens the backing file for reading; the adapter reads from it (or hands it to the
    /// kernel for passthrough) until the handle is released.
    fn open(&self, st: &Self::State, ino: Ino) -> FsResult<File>;
    /// The figures of the volume holding the tree (not part of the state: the disk's).
    fn statfs(&self) -> FsResult<FsStats>;
    /// Depends on where a number points only, which no reload changes.
    fn freshness(&self, ino: Ino) -> Freshness;
    /// The parent of a directory (for `..`); the root is its own parent. Like
    /// [`ReadOnlyFs::freshness`], a property of the number.
    fn parent(&self, ino: Ino) -> Ino;
    fn getxattr(&self, _st: &Self::State, _ino: Ino, _name: &OsStr) -> FsResult<Vec<u8>> {
        Err(FsError::NoData)
    }
    fn listxattr(&self, _st: &Self::State, _ino: Ino) -> FsResult<Vec<OsString>> {
        Ok(Vec::new())
    }
    /// The listing with each entry's attributes (FUSE `readdirplus`: `ls -l` of a folder in
    /// one go). The default asks [`ReadOnlyFs::getattr`] for each entry.
    fn readdir_plus(&self, st: &Self::State, ino: Ino) -> FsResult<Vec<(DirEntry, NodeAttr)>> {
        Ok(self
            .readdir(st, ino)?
            .into_iter()
            .filter_map(|e| self.getattr(st, e.ino).ok().map(|a| (e, a)))
            .collect())
    }
    /// Called once, before serving, by an adapter that reports the end of every reference it
    /// took (each successful `lookup`, each entry it passed on from `readdir_plus`) through
    /// [`ReadOnlyFs::forget`]: the tree may then keep only what is referenced. Without this
    /// call a tree must keep answering for every number it handed out recently.
    fn track_references(&self) {}
    /// The adapter passed on `entry` of folder `parent`, taken from `readdir_plus`: one more
    /// reference to it, as if it had been looked up (in `st`, should it be looked up again).
    fn hold(&self, _st: &Self::State, _parent: Ino, _entry: &DirEntry) {}
    /// False once the tree knows no node has extended attributes: an adapter may then tell
    /// the kernel to stop asking (FUSE: `ENOSYS`, for the rest of the mount).
    fn has_xattrs(&self) -> bool {
        true
    }
    /// `n` references to `ino` ended.
    fn forget(&self, _ino: Ino, _n: u64) {}
    /// Called once the tree is mounted, with the way to invalidate kernel caches.
    fn attach_invalidator(&self, _inv: Arc<dyn CacheInvalidator>) {}
}
