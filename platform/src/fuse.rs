//! FUSE adapter (Linux, macOS via macFUSE): serves a [`ReadOnlyFs`] through `fuser`.
//!
//! Pure translation: every request is answered from the tree or refused. Write-type requests
//! get `EROFS`; nothing here can panic on a request path. Reads use kernel FUSE passthrough
//! where the kernel accepts it (the kernel then reads the backing file itself), otherwise
//! `pread` on the descriptor held since `open`. Each handler takes the tree's state once and
//! answers from it alone (see [`ReadOnlyFs`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fuser::{
    BackingId, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use crate::rofs::{
    CacheInvalidator, DirEntry, Freshness, FsError, Ino, NodeAttr, NodeKind, ReadOnlyFs,
};

mod callers;
use callers::Callers;

/// How long the kernel may keep attributes and names of nodes that change behind our back.
const LIVE_TTL: Duration = Duration::from_secs(1);
/// For nodes whose changes the tree announces through the invalidator.
const NOTIFIED_TTL: Duration = Duration::from_secs(60);

/// What the caller asks of a mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Shown as the source in `/proc/mounts` and `df`.
    pub fs_name: String,
    /// Let other users see the mount (needs `user_allow_other` for non-root).
    pub allow_other: bool,
    /// Ask the kernel for FUSE passthrough; falls back to reads through the daemon.
    pub passthrough: bool,
    /// Request-handling threads.
    pub threads: usize,
    /// Testing only, never false in the product: `false` mounts without the kernel's
    /// read-only flag, so a write-type call reaches this adapter and meets its own `EROFS`
    /// (cli/tests/mount_safety.rs) instead of the kernel's.
    pub kernel_read_only: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            fs_name: "backup".into(),
            allow_other: false,
            passthrough: true,
            threads: 4,
            kernel_read_only: true,
        }
    }
}

struct OpenFile {
    file: Arc<File>,
    /// Held until `release`: dropping it earlier makes the kernel fail reads with EIO.
    _backing: Option<Arc<BackingId>>,
}

/// A folder's listing, taken at the first readdir of an open handle.
#[derive(Clone)]
enum Listing {
    Plain(Arc<Vec<DirEntry>>),
    Plus(Arc<Vec<(DirEntry, NodeAttr)>>),
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::Plain(l) => l.len(),
            Listing::Plus(l) => l.len(),
        }
    }

    /// Entry `i`, whichever way the listing was taken.
    fn entry(&self, i: usize) -> &DirEntry {
        match self {
            Listing::Plain(l) => &l[i],
            Listing::Plus(l) => &l[i].0,
        }
    }
}

#[derive(Default)]
struct Handles {
    files: HashMap<u64, OpenFile>,
    /// Per open directory: its listing, taken at the first readdir.
    dirs: HashMap<u64, Option<Listing>>,
    /// One backing id per inode while any handle has it open: the kernel requires every
    /// passthrough open of an inode to use the same backing file.
    backing_by_ino: HashMap<Ino, Weak<BackingId>>,
}

struct Adapter<F: ReadOnlyFs> {
    fs: Arc<F>,
    handles: Mutex<Handles>,
    next_fh: AtomicU64,
    want_passthrough: bool,
    stats: Arc<Stats>,
    callers: Callers,
}

/// What the kernel agreed to and how much the daemon served, for the caller to report.
#[derive(Debug, Default)]
pub struct Stats {
    passthrough: AtomicBool,
    daemon_reads: AtomicU64,
    passthrough_opens: AtomicU64,
    lookups: AtomicU64,
    listed_with_attributes: AtomicU64,
    listed_bare: AtomicU64,
}

impl Stats {
    /// True when the kernel accepted FUSE passthrough at mount time.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }
    /// Read requests answered by this process (zero when every open went through passthrough).
    pub fn daemon_reads(&self) -> u64 {
        self.daemon_reads.load(Ordering::Relaxed)
    }
    /// Opens handed to the kernel as passthrough.
    pub fn passthrough_opens(&self) -> u64 {
        self.passthrough_opens.load(Ordering::Relaxed)
    }
    /// LOOKUP requests answered.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
    /// Listed entries sent with their attributes (the kernel links each one until it forgets
    /// it), and sent as names only.
    pub fn listed(&self) -> (u64, u64) {
        (
            self.listed_with_attributes.load(Ordering::Relaxed),
            self.listed_bare.load(Ordering::Relaxed),
        )
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
    }
}

fn fuse_attr(a: &NodeAttr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks.unwrap_or(a.size.div_ceil(512)),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl<F: ReadOnlyFs> Adapter<F> {
    fn ttl(&self, ino: Ino) -> Duration {
        match self.fs.freshness(ino) {
            Freshness::Live => LIVE_TTL,
            Freshness::Notified => NOTIFIED_TTL,
        }
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Handles> {
        // A panic elsewhere while holding the lock must not take every later request down.
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_passthrough(&self, ino: Ino, file: &File, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        if !self.stats.passthrough() {
            return None;
        }
        let mut h = self.lock();
        if let Some(id) = h.backing_by_ino.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                h.backing_by_ino.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                // E.g. a backup on a FUSE file system (exFAT driver): too deep a stack.
                tracing::debug!(
                    "passthrough refused for inode {ino}: {e}; reading through the daemon"
                );
                None
            }
        }
    }
}

impl<F: ReadOnlyFs> Filesystem for Adapter<F> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Listings carry every entry's attributes (`ls -l` of a big folder: no lookup per
        // entry); the kernel chooses per folder whether a plain listing will do.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Symlink targets never change under a name: the kernel may keep them.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        if self.want_passthrough {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.stats.passthrough.store(ok, Ordering::Relaxed);
            tracing::debug!("kernel FUSE passthrough: {ok}");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.fs.state();
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        match self.fs.lookup(&st, parent.0, name) {
            Ok(a) => {
                if a.kind != NodeKind::Dir {
                    self.callers.looked_up_file(req.pid());
                }
                reply.entry(&self.ttl(a.ino), &fuse_attr(&a), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    // `batch_forget` (fuser's default) calls this for each node of the batch.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.fs.state();
        match self.fs.getattr(&st, ino.0) {
            Ok(a) => reply.attr(&self.ttl(a.ino), &fuse_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.fs.state();
        match self.fs.readlink(&st, ino.0) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            reply.error(Errno::EROFS);
            return;
        }
        let st = self.fs.state();
        let file = match self.fs.open(&st, ino.0) {
            Ok(f) => f,
            Err(e) => {
                reply.error(errno(&e));
                return;
            }
        };
        let fh = self.new_fh();
        let backing = self.open_passthrough(ino.0, &file, &reply);
        let mut h = self.lock();
        match &backing {
            Some(id) => {
                // The id must outlive the reply; the kernel drops its own reference on release.
                let id = Arc::clone(id);
                h.files.insert(
                    fh,
                    OpenFile {
                        file: Arc::new(file),
                        _backing: Some(Arc::clone(&id)),
                    },
                );
                drop(h);
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
            }
            None => {
                h.files.insert(
                    fh,
                    OpenFile {
                        file: Arc::new(file),
                        _backing: None,
                    },
                );
                drop(h);
                let flags = match self.fs.freshness(ino.0) {
                    Freshness::Notified => FopenFlags::FOPEN_KEEP_CACHE,
                    Freshness::Live => FopenFlags::empty(),
                };
                reply.opened(FileHandle(fh), flags);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.lock().files.get(&fh.0) {
            Some(o) => Arc::clone(&o.file),
            None => {
                reply.error(Errno::EBADF);
                return;
            }
        };
        self.stats.daemon_reads.fetch_add(1, Ordering::Relaxed);
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0usize;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    reply.error(errno(&FsError::from_io(&e)));
                    return;
                }
            }
        }
        reply.data(&buf[..filled]);
    }

    // SEEK_DATA / SEEK_HOLE (the kernel answers the other kinds itself): `cp`, `rsync -S` and
    // `tar -S` find the holes of a sparse version without reading them.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let file = match self.lock().files.get(&fh.0) {
            Some(o) => Arc::clone(&o.file),
            None => return reply.error(Errno::EBADF),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        let to = match whence {
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset),
            _ => return reply.error(Errno::EINVAL),
        };
        match rustix::fs::seek(&*file, to) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut h = self.lock();
        h.files.remove(&fh.0);
        if let Some(w) = h.backing_by_ino.get(&ino.0) {
            if w.strong_count() == 0 {
                h.backing_by_ino.remove(&ino.0);
            }
        }
        drop(h);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The listing is taken on the first readdir, so a listing the kernel still has cached
        // costs nothing. Metadata-built directories may be cached: the tree invalidates them.
        let flags = match self.fs.freshness(ino.0) {
            Freshness::Notified => FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            Freshness::Live => FopenFlags::empty(),
        };
        let fh = self.new_fh();
        self.lock().dirs.insert(fh, None);
        reply.opened(FileHandle(fh), flags);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let cached = match self.lock().dirs.get(&fh.0) {
            Some(l) => l.clone(),
            None => {
                reply.error(Errno::EBADF);
                return;
            }
        };
        // Asked plainly after a plus listing (the kernel may switch): the same entries, read
        // in place (a copy per call made paging through a big folder quadratic).
        let list = match cached {
            Some(l) => l,
            None => match self.fs.readdir(&self.fs.state(), ino.0) {
                Ok(l) => {
                    let l = Listing::Plain(Arc::new(l));
                    self.lock().dirs.insert(fh.0, Some(l.clone()));
                    l
                }
                Err(e) => {
                    reply.error(errno(&e));
                    return;
                }
            },
        };
        // Offsets: 1 after ".", 2 after "..", 3 + i after entry i of the listing kept at opendir.
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                reply.ok();
                return;
            }
            off = 1;
        }
        if off == 1 {
            let parent = self.fs.parent(ino.0);
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                reply.ok();
                return;
            }
            off = 2;
        }
        let start = usize::try_from(off - 2).unwrap_or(usize::MAX);
        let (mut sent, mut files) = (0u32, 0u32);
        for i in start..list.len() {
            let e = list.entry(i);
            if reply.add(INodeNo(e.ino), 3 + i as u64, file_type(e.kind), &e.name) {
                break;
            }
            sent += 1;
            files += u32::from(e.kind != NodeKind::Dir);
        }
        self.stats
            .listed_bare
            .fetch_add(u64::from(sent), Ordering::Relaxed);
        self.callers.gave_bare(req.pid(), files);
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let cached = match self.lock().dirs.get(&fh.0) {
            Some(l) => l.clone(),
            None => {
                reply.error(Errno::EBADF);
                return;
            }
        };
        // The listing (when not kept from an earlier call), the folder's own attributes and
        // the entries held all come from one state.
        let st = self.fs.state();
        // A caller that has not shown it looks at files' attributes is listed by names (the
        // cheap listing) and gets, with attributes, the folders of this page (needed to
        // descend) up to the first file: the kernel then asks for the rest as a plain listing,
        // links none of it, and the caller's LOOKUPs, if any, teach `callers` otherwise. A
        // page whose first entry is a file is sent whole, as the reply must not be empty
        // before the end.
        let names_only = !self.callers.wants_attributes(req.pid());
        let list = match cached {
            Some(Listing::Plain(plain)) if !names_only => {
                // The caller turned out to want attributes: the same entries with them when
                // the full listing has the same names in the same places (offsets are indexes
                // into the listing kept), else each entry is looked up as it is sent.
                match self.fs.readdir_plus(&st, ino.0) {
                    Ok(full)
                        if full.len() == plain.len()
                            && full
                                .iter()
                                .zip(plain.iter())
                                .all(|(f, p)| f.0.name == p.name) =>
                    {
                        let l = Listing::Plus(Arc::new(full));
                        self.lock().dirs.insert(fh.0, Some(l.clone()));
                        l
                    }
                    _ => Listing::Plain(plain),
                }
            }
            Some(l) => l,
            None => {
                let listed = match names_only {
                    true => self
                        .fs
                        .readdir(&st, ino.0)
                        .map(|l| Listing::Plain(Arc::new(l))),
                    false => self
                        .fs
                        .readdir_plus(&st, ino.0)
                        .map(|l| Listing::Plus(Arc::new(l))),
                };
                match listed {
                    Ok(l) => {
                        self.lock().dirs.insert(fh.0, Some(l.clone()));
                        l
                    }
                    Err(e) => {
                        reply.error(errno(&e));
                        return;
                    }
                }
            }
        };
        let no_ttl = Duration::ZERO;
        // Offsets as in readdir: 1 after ".", 2 after "..", 3 + i after entry i.
        let mut off = offset;
        // The kernel links no entry for "." and "..": the folder's own attributes only fill
        // their slots, so only the first page of a listing needs them.
        if off < 2 {
            let own = match self.fs.getattr(&st, ino.0) {
                Ok(a) => fuse_attr(&a),
                Err(e) => {
                    reply.error(errno(&e));
                    return;
                }
            };
            if off == 0 && reply.add(ino, 1, ".", &no_ttl, &own, Generation(0)) {
                reply.ok();
                return;
            }
            let parent = self.fs.parent(ino.0);
            let mut up = own;
            up.ino = INodeNo(parent);
            if reply.add(INodeNo(parent), 2, "..", &no_ttl, &up, Generation(0)) {
                reply.ok();
                return;
            }
            off = 2;
        }
        let start = usize::try_from(off - 2).unwrap_or(usize::MAX);
        let mut sent = off > offset;
        let mut with_attributes = 0u64;
        for i in start..list.len() {
            let e = list.entry(i);
            if names_only && sent && e.kind != NodeKind::Dir {
                break;
            }
            let (a, looked_up) = match &list {
                Listing::Plus(l) => (l[i].1.clone(), false),
                // Counted by the lookup itself; given back if the entry does not fit.
                Listing::Plain(_) => match self.fs.lookup(&st, ino.0, &e.name) {
                    Ok(a) => (a, true),
                    // Gone since the listing was taken: not shown.
                    Err(_) => continue,
                },
            };
            let ttl = self.ttl(a.ino);
            if reply.add(
                INodeNo(a.ino),
                3 + i as u64,
                &e.name,
                &ttl,
                &fuse_attr(&a),
                Generation(0),
            ) {
                if looked_up {
                    self.fs.forget(a.ino, 1);
                }
                break;
            }
            if !looked_up {
                // The kernel now holds the entry as if looked up: until its forget.
                self.fs.hold(&st, ino.0, e);
            }
            sent = true;
            with_attributes += 1;
        }
        self.stats
            .listed_with_attributes
            .fetch_add(with_attributes, Ordering::Relaxed);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            // The backup volume's real figures, so `df` and file managers show how full the
            // drive is; writes are refused all the same (EROFS).
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_avail,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.block_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.fs.has_xattrs() {
            // `ls -l` asks for every file; a backup that records no attribute at all says so
            // once, and the kernel answers every later call itself (EOPNOTSUPP).
            reply.error(Errno::ENOSYS);
            return;
        }
        match self.fs.getxattr(&self.fs.state(), ino.0, name) {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.fs.has_xattrs() {
            reply.error(Errno::ENOSYS);
            return;
        }
        match self.fs.listxattr(&self.fs.state(), ino.0) {
            Ok(names) => {
                let mut v = Vec::new();
                for n in names {
                    v.extend_from_slice(n.as_encoded_bytes());
                    v.push(0);
                }
                xattr_reply(&v, size, reply);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Only reached without default_permissions; refuse writing, allow the rest.
        if mask.contains(fuser::AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            match self.fs.getattr(&self.fs.state(), ino.0) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _d: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // Every write-type request: read-only file system.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Only ever asked when the destination is on this file system.
        reply.error(Errno::EROFS);
    }
}

fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(u32::try_from(v.len()).unwrap_or(u32::MAX));
    } else if v.len() <= size as usize {
        reply.data(v);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// Sends invalidations to the kernel through the session's notifier.
struct FuseInvalidator {
    notifier: fuser::Notifier,
}

impl CacheInvalidator for FuseInvalidator {
    fn inval_entry(&self, parent: Ino, name: &OsStr) {
        if let Err(e) = self.notifier.inval_entry(INodeNo(parent), name) {
            tracing::debug!("inval_entry({parent}, {name:?}): {e}");
        }
    }
    fn inval_inode(&self, ino: Ino) {
        if let Err(e) = self.notifier.inval_inode(INodeNo(ino), 0, 0) {
            tracing::debug!("inval_inode({ino}): {e}");
        }
    }
}

/// A mounted tree. Unmounts when [`Mounted::unmount`] is called or when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    stats: Arc<Stats>,
}

impl Mounted {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once the kernel ended the session (e.g. someone ran `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session
            .as_ref()
            .map(|s| s.guard.is_finished())
            .unwrap_or(true)
    }

    /// Unmounts and waits for the request threads to end.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts `fs` read-only at `mountpoint` and serves it from background threads.
pub fn mount<F: ReadOnlyFs>(
    fs: Arc<F>,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<Mounted> {
    let mut options = vec![
        MountOption::FSName(cfg.fs_name.clone()),
        MountOption::Subtype("backup".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if cfg.kernel_read_only {
        options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.mount_options = options;
    if cfg!(target_os = "linux") {
        config.n_threads = Some(cfg.threads.max(1));
        config.clone_fd = true;
    }
    let stats = Arc::new(Stats::default());
    let adapter = Adapter {
        fs: Arc::clone(&fs),
        handles: Mutex::new(Handles::default()),
        next_fh: AtomicU64::new(1),
        want_passthrough: cfg.passthrough && cfg!(target_os = "linux"),
        stats: Arc::clone(&stats),
        callers: Callers::default(),
    };
    // Every lookup and every readdirplus entry ends in a forget: the tree keeps only what
    // the kernel holds.
    fs.track_references();
    let session = fuser::Session::new(adapter, mountpoint, &config)?;
    let notifier = session.notifier();
    let bg = session.spawn()?;
    fs.attach_invalidator(Arc::new(FuseInvalidator { notifier }));
    Ok(Mounted {
        session: Some(bg),
        mountpoint: mountpoint.to_path_buf(),
        stats,
    })
}
