//! LazyFS: a writable in-memory FUSE file system that models power loss, for durability tests.
//!
//! # The durability model (strict POSIX, stricter than ext4)
//!
//! The file system keeps two states: the *volatile* one that every request sees, and a
//! *durable image* — what a disk would hold after the power goes out.
//!
//! - `fsync(file)` (FUSE `FSYNC`, also for `fdatasync`) copies that inode's data, size,
//!   attributes and extended attributes into the durable image. Its names are not touched.
//! - `fsync(dir)` (FUSE `FSYNCDIR`) copies that directory's entries (name → inode) and its
//!   attributes into the durable image. Symlinks and special files cannot be opened for an
//!   fsync, so their attributes (a symlink's mtime) become durable with a directory that names
//!   them.
//! - Nothing else is durable. A created, renamed, linked or unlinked name is volatile until its
//!   directory is fsynced; bytes written to a file are volatile until the file is fsynced.
//!   `syncfs(2)`/`sync(2)` do nothing here, as on a real FUSE mount: the kernel does not
//!   forward them to a `/dev/fuse` daemon (only virtiofs gets them).
//! - An inode is born durable but empty: its kind, creation attributes and (for a symlink) its
//!   target. So an inode reachable through durable entries but never fsynced comes back empty,
//!   size 0, as after a crash of ext4 with `data=writeback`.
//!
//! [`LazyMount::power_cut`] atomically replaces the volatile state by the durable image: the
//! root directory with its durable entries, each inode reachable from there with its last
//! durable content, link counts recounted. A directory reachable twice (renamed, both parents
//! synced at different moments) is kept where the walk first meets it. Unreachable inodes are
//! gone. The mount stays up: the machine "rebooted" with the same disk. Inode numbers are never
//! reused, so the kernel's caches never confuse an old inode with a new one; entries and
//! attributes are served with a zero TTL and files opened without `KEEP_CACHE`, so no stale
//! page survives a cut.
//!
//! POSIX locks and `flock` are left to the kernel (no `getlk`/`setlk`), which handles them
//! locally. Shared writable `mmap` (SQLite's WAL `-shm`) works because files are not opened with
//! `direct_io`: the kernel turns dirty pages into `WRITE` requests.
//!
//! Everything lives in memory: meant for trees of a few thousand small files.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

#[derive(Clone, Debug)]
struct Attrs {
    perm: u16,
    uid: u32,
    gid: u32,
    rdev: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

#[derive(Clone, Debug)]
enum Content {
    /// Shared with the durable image until the next write (copy on write).
    File(Arc<Vec<u8>>),
    Dir(BTreeMap<OsString, u64>),
    Symlink(OsString),
    /// A fifo, socket or device node: no content.
    Special(FileType),
}

impl Content {
    fn kind(&self) -> FileType {
        match self {
            Content::File(_) => FileType::RegularFile,
            Content::Dir(_) => FileType::Directory,
            Content::Symlink(_) => FileType::Symlink,
            Content::Special(k) => *k,
        }
    }
}

#[derive(Clone, Debug)]
struct Node {
    kind: FileType,
    attrs: Attrs,
    content: Content,
    xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Names pointing here (files); directories count `2 + subdirectories` on the fly.
    nlink: u32,
    /// For directories: where `..` leads.
    parent: u64,
}

impl Node {
    fn size(&self) -> u64 {
        match &self.content {
            Content::File(d) => d.len() as u64,
            Content::Dir(e) => e.len() as u64,
            Content::Symlink(t) => t.len() as u64,
            Content::Special(_) => 0,
        }
    }
    fn entries(&self) -> Option<&BTreeMap<OsString, u64>> {
        match &self.content {
            Content::Dir(e) => Some(e),
            _ => None,
        }
    }
}

/// What the durability-relevant requests did since the mount (or the last reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub writes: u64,
    pub power_cuts: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    durable: HashMap<u64, Node>,
    next_ino: u64,
    next_fh: u64,
    /// Directory listings taken at `opendir` (and again at offset 0), so a directory that
    /// changes while it is read is listed consistently.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    counters: Counters,
}

type Res<T> = Result<T, Errno>;

impl State {
    fn new() -> Self {
        let now = SystemTime::now();
        let root = Node {
            kind: FileType::Directory,
            attrs: Attrs {
                perm: 0o755,
                uid: 0,
                gid: 0,
                rdev: 0,
                atime: now,
                mtime: now,
                ctime: now,
            },
            content: Content::Dir(BTreeMap::new()),
            xattrs: BTreeMap::new(),
            nlink: 2,
            parent: ROOT,
        };
        State {
            nodes: HashMap::from([(ROOT, root.clone())]),
            durable: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            next_fh: 1,
            listings: HashMap::new(),
            counters: Counters::default(),
        }
    }

    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }
    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }
    fn dir(&self, ino: u64) -> Res<&BTreeMap<OsString, u64>> {
        self.node(ino)?.entries().ok_or(Errno::ENOTDIR)
    }
    fn dir_mut(&mut self, ino: u64) -> Res<&mut BTreeMap<OsString, u64>> {
        match &mut self.node_mut(ino)?.content {
            Content::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }
    fn child(&self, parent: u64, name: &OsStr) -> Res<u64> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        let n = self.node(ino)?;
        let nlink = match &n.content {
            Content::Dir(e) => {
                2 + e
                    .values()
                    .filter(|c| {
                        self.nodes
                            .get(c)
                            .is_some_and(|c| c.kind == FileType::Directory)
                    })
                    .count() as u32
            }
            _ => n.nlink,
        };
        let size = n.size();
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.attrs.atime,
            mtime: n.attrs.mtime,
            ctime: n.attrs.ctime,
            crtime: n.attrs.ctime,
            kind: n.kind,
            perm: n.attrs.perm,
            nlink,
            uid: n.attrs.uid,
            gid: n.attrs.gid,
            rdev: n.attrs.rdev,
            blksize: 4096,
            flags: 0,
        })
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            let now = SystemTime::now();
            n.attrs.mtime = now;
            n.attrs.ctime = now;
        }
    }

    /// Creates an inode named `name` in `parent`. The inode is born durable but empty.
    fn create(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        perm: u32,
        rdev: u32,
        content: Content,
    ) -> Res<u64> {
        let kind = content.kind();
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let now = SystemTime::now();
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            kind,
            attrs: Attrs {
                perm: (perm & 0o7777) as u16,
                uid: req.uid(),
                gid: req.gid(),
                rdev,
                atime: now,
                mtime: now,
                ctime: now,
            },
            content,
            xattrs: BTreeMap::new(),
            nlink: 1,
            parent,
        };
        let mut born = node.clone();
        born.content = match &node.content {
            Content::File(_) => Content::File(Arc::default()),
            Content::Dir(_) => Content::Dir(BTreeMap::new()),
            Content::Symlink(t) => Content::Symlink(t.clone()),
            Content::Special(k) => Content::Special(*k),
        };
        self.durable.insert(ino, born);
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    /// Drops one name of `ino` (the entry itself is already gone).
    fn unlinked(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.attrs.ctime = SystemTime::now();
        }
    }

    fn file_data(&mut self, ino: u64) -> Res<&mut Vec<u8>> {
        match &mut self.node_mut(ino)?.content {
            Content::File(d) => Ok(Arc::make_mut(d)),
            Content::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?;
        let moving_dir = self.node(ino)?.kind == FileType::Directory;
        if let Some(&target) = self.dir(newparent)?.get(newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == ino {
                return Ok(());
            }
            let t = self.node(target)?;
            match (moving_dir, t.entries()) {
                (true, None) => return Err(Errno::ENOTDIR),
                (false, Some(_)) => return Err(Errno::EISDIR),
                (true, Some(e)) if !e.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            self.dir_mut(newparent)?.remove(newname);
            self.unlinked(target);
        }
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(newparent)?.insert(newname.to_owned(), ino);
        let now = SystemTime::now();
        let n = self.node_mut(ino)?;
        n.attrs.ctime = now;
        if moving_dir {
            n.parent = newparent;
        }
        self.touch(parent);
        self.touch(newparent);
        Ok(())
    }

    fn fsync(&mut self, ino: u64) -> Res<()> {
        let n = self.node(ino)?.clone();
        self.counters.fsyncs += 1;
        self.durable.insert(ino, n);
        Ok(())
    }

    fn fsyncdir(&mut self, ino: u64) -> Res<()> {
        let n = self.node(ino)?.clone();
        let entries = n.entries().ok_or(Errno::ENOTDIR)?.clone();
        self.counters.fsyncdirs += 1;
        self.durable.insert(ino, n);
        // Symlinks and special files cannot be fsynced themselves: their directory does it.
        for child in entries.values() {
            if let Some(c) = self.nodes.get(child) {
                if matches!(c.content, Content::Symlink(_) | Content::Special(_)) {
                    self.durable.insert(*child, c.clone());
                }
            }
        }
        Ok(())
    }

    /// The volatile state becomes the durable image (see the module doc).
    fn power_cut(&mut self) {
        let mut nodes: HashMap<u64, Node> = HashMap::new();
        let mut names: HashMap<u64, u32> = HashMap::new();
        let mut queue = VecDeque::from([(ROOT, ROOT)]);
        let mut seen: HashSet<u64> = HashSet::from([ROOT]);
        while let Some((ino, parent)) = queue.pop_front() {
            let Some(mut node) = self.durable.get(&ino).cloned() else {
                continue;
            };
            node.parent = parent;
            if let Content::Dir(entries) = &mut node.content {
                entries.retain(|_, child| {
                    let Some(c) = self.durable.get(child) else {
                        return false;
                    };
                    let first = seen.insert(*child);
                    if c.kind == FileType::Directory && !first {
                        // A directory has one place; the walk met this one already.
                        return false;
                    }
                    if c.kind != FileType::Directory {
                        *names.entry(*child).or_default() += 1;
                    }
                    if first {
                        queue.push_back((*child, ino));
                    }
                    true
                });
            }
            nodes.insert(ino, node);
        }
        for (ino, n) in nodes.iter_mut() {
            if n.kind != FileType::Directory {
                n.nlink = names.get(ino).copied().unwrap_or(1);
            }
        }
        self.durable.retain(|ino, _| nodes.contains_key(ino));
        self.nodes = nodes;
        self.listings.clear();
        self.counters.power_cuts += 1;
    }

    fn listing(&self, ino: u64) -> Res<Vec<(u64, FileType, OsString)>> {
        let n = self.node(ino)?;
        let entries = n.entries().ok_or(Errno::ENOTDIR)?;
        let mut out = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (n.parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in entries {
            if let Some(c) = self.nodes.get(child) {
                out.push((*child, c.kind, name.clone()));
            }
        }
        Ok(out)
    }
}

fn kind_of(mode: u32) -> Res<FileType> {
    Ok(match mode & libc::S_IFMT {
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => return Err(Errno::EPERM),
    })
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The file system served to the kernel; the test holds the same state through [`LazyMount`].
struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn entry(&self, reply: ReplyEntry, r: Res<u64>) {
        let s = self.lock();
        match r.and_then(|ino| s.attr(ino)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.lock().child(parent.0, name);
        self.entry(reply, r)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let r = (|| -> Res<FileAttr> {
            if let Some(len) = size {
                s.file_data(ino.0)?.resize(len as usize, 0);
                s.touch(ino.0);
            }
            let n = s.node_mut(ino.0)?;
            if let Some(m) = mode {
                n.attrs.perm = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                n.attrs.uid = u;
            }
            if let Some(g) = gid {
                n.attrs.gid = g;
            }
            if let Some(t) = atime {
                n.attrs.atime = time_of(t);
            }
            if let Some(t) = mtime {
                n.attrs.mtime = time_of(t);
            }
            n.attrs.ctime = SystemTime::now();
            s.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.lock().node(ino.0).map(|n| n.content.clone()) {
            Ok(Content::Symlink(t)) => reply.data(t.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = kind_of(mode).and_then(|kind| {
            let content = if kind == FileType::RegularFile {
                Content::File(Arc::default())
            } else {
                Content::Special(kind)
            };
            self.lock().create(req, parent.0, name, mode, rdev, content)
        });
        self.entry(reply, r)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .lock()
            .create(req, parent.0, name, mode, 0, Content::Dir(BTreeMap::new()));
        self.entry(reply, r)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = (|| {
            let ino = s.child(parent.0, name)?;
            if s.node(ino)?.kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            s.dir_mut(parent.0)?.remove(name);
            s.unlinked(ino);
            s.touch(parent.0);
            Ok(())
        })();
        empty(reply, r)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = (|| {
            let ino = s.child(parent.0, name)?;
            if !s.dir(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            s.dir_mut(parent.0)?.remove(name);
            s.touch(parent.0);
            Ok(())
        })();
        empty(reply, r)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.lock().create(
            req,
            parent.0,
            link_name,
            0o777,
            0,
            Content::Symlink(target.as_os_str().to_owned()),
        );
        self.entry(reply, r)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .lock()
            .rename(parent.0, name, newparent.0, newname, flags);
        empty(reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let r = (|| {
            if s.node(ino.0)?.kind == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if s.dir(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            s.dir_mut(newparent.0)?.insert(newname.to_owned(), ino.0);
            let n = s.node_mut(ino.0)?;
            n.nlink += 1;
            n.attrs.ctime = SystemTime::now();
            s.touch(newparent.0);
            Ok(ino.0)
        })();
        drop(s);
        self.entry(reply, r)
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No KEEP_CACHE: the kernel drops its cached pages at every open, so nothing read
        // before a power cut is served after it.
        match self.lock().node(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        match s.node(ino.0).map(|n| &n.content) {
            Ok(Content::File(d)) => {
                let start = (offset as usize).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end])
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let d = s.file_data(ino.0)?;
            let end = offset as usize + data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
            s.touch(ino.0);
            s.counters.writes += 1;
            Ok(data.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
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
        // close() promises nothing about durability.
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.lock().fsync(ino.0);
        empty(reply, r)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        match s.listing(ino.0) {
            Ok(l) => {
                let fh = s.next_fh;
                s.next_fh += 1;
                s.listings.insert(fh, l);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        if offset == 0 {
            match s.listing(ino.0) {
                Ok(l) => {
                    s.listings.insert(fh.0, l);
                }
                Err(e) => return reply.error(e),
            }
        }
        let Some(list) = s.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (child, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut s = self.lock();
        if offset == 0 {
            match s.listing(ino.0) {
                Ok(l) => {
                    s.listings.insert(fh.0, l);
                }
                Err(e) => return reply.error(e),
            }
        }
        let Some(list) = s.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (child, _kind, name)) in list.iter().enumerate().skip(offset as usize) {
            let Ok(a) = s.attr(*child) else { continue };
            if reply.add(INodeNo(*child), i as u64 + 1, name, &TTL, &a, Generation(0)) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().listings.remove(&fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.lock().fsyncdir(ino.0);
        empty(reply, r)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.lock();
        let used: u64 = s.nodes.values().map(|n| n.size().div_ceil(4096)).sum();
        let total = 1u64 << 22; // 16 GiB of 4 KiB blocks
        let free = total.saturating_sub(used);
        let files = 1u64 << 24;
        reply.statfs(
            total,
            free,
            free,
            files,
            files.saturating_sub(s.nodes.len() as u64),
            4096,
            255,
            4096,
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let n = s.node_mut(ino.0)?;
            let exists = n.xattrs.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(Errno::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(Errno::ENODATA);
            }
            n.xattrs.insert(name.to_owned(), value.to_vec());
            n.attrs.ctime = SystemTime::now();
            Ok(())
        })();
        empty(reply, r)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let s = self.lock();
        let value = match s.node(ino.0) {
            Ok(n) => match n.xattrs.get(name) {
                Some(v) => v.clone(),
                None => return reply.error(Errno::ENODATA),
            },
            Err(e) => return reply.error(e),
        };
        xattr_reply(reply, size, &value)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let s = self.lock();
        let names = match s.node(ino.0) {
            Ok(n) => n.xattrs.keys().fold(Vec::new(), |mut v, k| {
                v.extend_from_slice(k.as_bytes());
                v.push(0);
                v
            }),
            Err(e) => return reply.error(e),
        };
        xattr_reply(reply, size, &names)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = s.node_mut(ino.0).and_then(|n| {
            n.xattrs.remove(name).map(|_| ()).ok_or(Errno::ENODATA)?;
            n.attrs.ctime = SystemTime::now();
            Ok(())
        });
        empty(reply, r)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        let r = self.lock().node(ino.0).map(|_| ());
        empty(reply, r)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let r = s
            .create(req, parent.0, name, mode, 0, Content::File(Arc::default()))
            .and_then(|ino| s.attr(ino));
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let d = s.file_data(ino.0)?;
            let end = (offset + length) as usize;
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let zero = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
            let known =
                libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            if mode & !known != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            if zero {
                let stop = end.min(d.len());
                if (offset as usize) < stop {
                    d[offset as usize..stop].fill(0);
                }
            }
            if !keep_size && d.len() < end {
                d.resize(end, 0);
            }
            s.touch(ino.0);
            Ok(())
        })();
        empty(reply, r)
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // No sparse files here: all data, one hole at the end.
        let size = match self.lock().node(ino.0) {
            Ok(n) => n.size() as i64,
            Err(e) => return reply.error(e),
        };
        match whence {
            libc::SEEK_DATA if offset < size => reply.offset(offset),
            libc::SEEK_HOLE if offset < size => reply.offset(size),
            libc::SEEK_DATA | libc::SEEK_HOLE => reply.error(Errno::ENXIO),
            _ => reply.error(Errno::EINVAL),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(value)
    }
}

/// A mounted LazyFS; unmounted on drop.
pub struct LazyMount {
    session: Option<fuser::BackgroundSession>,
    pub mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
}

impl LazyMount {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes out and comes back: everything not durable is gone, at once. Processes
    /// using the mount must be stopped first (see [`LazyMount::kill_and_cut`]).
    pub fn power_cut(&self) {
        self.lock().power_cut()
    }

    /// `kill -9` the process, wait until it is gone (its requests to this file system are
    /// then answered or dropped), then cut the power: one step for the test.
    pub fn kill_and_cut(&self, child: &mut Child) {
        let _ = child.kill();
        let _ = child.wait();
        self.power_cut();
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    pub fn reset_counters(&self) {
        self.lock().counters = Counters::default();
    }

    /// Inodes in the volatile state (the live tree and open-but-unlinked files).
    pub fn inode_count(&self) -> usize {
        self.lock().nodes.len()
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
    }
}

/// Mounts an empty LazyFS at `mountpoint` (writable, visible to every user).
pub fn mount(mountpoint: &Path) -> std::io::Result<LazyMount> {
    let state = Arc::new(Mutex::new(State::new()));
    let fs = LazyFs {
        state: state.clone(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RW,
        MountOption::FSName("lazyfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    let session = fuser::Session::new(fs, mountpoint, &config)?;
    Ok(LazyMount {
        session: Some(session.spawn()?),
        mountpoint: mountpoint.to_path_buf(),
        state,
    })
}

/// Mounts a LazyFS for a test at `mountpoint` (created). Where FUSE is missing the test is
/// skipped (`None`), except under CI (`capability::under_ci`), where that is a failure.
pub fn mount_for_test(mountpoint: &Path) -> Option<LazyMount> {
    std::fs::create_dir_all(mountpoint).expect("create the mount point");
    match mount(mountpoint) {
        Ok(m) => Some(m),
        Err(e) if crate::capability::under_ci() => {
            panic!("cannot mount LazyFS (FUSE) under CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot mount FUSE here: {e}");
            None
        }
    }
}

/// `fsync(2)` of a file or directory by path.
pub fn fsync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}
