//! A tiny FUSE file system for fault tests: serves a directory read-through and answers `EIO`
//! for the files named in its fault set (on `read`, or already on `open`), like a disk with bad
//! sectors, or holds their reads until the fault is lifted (a source that hangs, so a test
//! knows a run is busy without guessing how long it takes). The set can change while mounted,
//! so a test can "repair the disk" and run again.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
    SessionACL,
};

/// When a faulty file fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailAt {
    Open,
    /// A bad sector past the first 4 KiB: any read that covers a byte there fails (a reader
    /// with small buffers has started its copy when the error comes; one with a large buffer
    /// meets it on its first read).
    Read,
    /// Every read waits until the fault is lifted (`set_fault(rel, None)`), then succeeds.
    Stall,
}

/// Relative paths (as in the served tree) that fail, shared with the test.
pub type FaultSet = Arc<Mutex<HashMap<PathBuf, FailAt>>>;

struct Inodes {
    paths: Vec<PathBuf>,
    by_path: HashMap<PathBuf, u64>,
}

struct FaultFs {
    root: PathBuf,
    faults: FaultSet,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, (Arc<File>, PathBuf)>>,
    next_fh: Mutex<u64>,
    /// Every faulty read or open answered with EIO (for the test's assertions).
    served_errors: Arc<Mutex<HashSet<PathBuf>>>,
    /// Reads held by a `Stall` fault right now.
    stalled: Arc<AtomicUsize>,
}

const TTL: Duration = Duration::ZERO;

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: t(m.atime(), m.atime_nsec()),
        mtime: t(m.mtime(), m.mtime_nsec()),
        ctime: t(m.ctime(), m.ctime_nsec()),
        crtime: t(m.mtime(), m.mtime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl FaultFs {
    fn rel(&self, ino: INodeNo) -> Option<PathBuf> {
        let i = self.inodes.lock().ok()?;
        i.paths.get((ino.0 as usize).checked_sub(1)?).cloned()
    }
    fn intern(&self, rel: PathBuf) -> u64 {
        let mut i = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = i.by_path.get(&rel) {
            return *n;
        }
        i.paths.push(rel.clone());
        let n = i.paths.len() as u64;
        i.by_path.insert(rel, n);
        n
    }
    fn fault(&self, rel: &Path) -> Option<FailAt> {
        self.faults.lock().ok()?.get(rel).copied()
    }
    fn served(&self, rel: &Path) {
        if let Ok(mut s) = self.served_errors.lock() {
            s.insert(rel.to_path_buf());
        }
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(p) = self.rel(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let rel = p.join(name);
        match std::fs::symlink_metadata(self.root.join(&rel)) {
            Ok(m) => {
                let ino = self.intern(rel);
                reply.entry(&TTL, &attr(ino, &m), Generation(0))
            }
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(self.root.join(&rel)) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::read_link(self.root.join(rel)) {
            Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if self.fault(&rel) == Some(FailAt::Open) {
            self.served(&rel);
            return reply.error(Errno::EIO);
        }
        match File::open(self.root.join(&rel)) {
            Ok(f) => {
                let fh = {
                    let mut n = self.next_fh.lock().unwrap_or_else(|p| p.into_inner());
                    *n += 1;
                    *n
                };
                if let Ok(mut files) = self.files.lock() {
                    files.insert(fh, (Arc::new(f), rel));
                }
                // Direct I/O: every read comes here, none is answered from the page cache.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(errno_of(&e)),
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
        let Some((file, rel)) = self.files.lock().ok().and_then(|f| f.get(&fh.0).cloned()) else {
            return reply.error(Errno::EBADF);
        };
        if self.fault(&rel) == Some(FailAt::Read)
            && (offset + u64::from(size) > 4096 || file_len(&file) <= 4096)
        {
            self.served(&rel);
            return reply.error(Errno::EIO);
        }
        if self.fault(&rel) == Some(FailAt::Stall) {
            // Answered from another thread: the session keeps serving every other request.
            let (faults, stalled) = (self.faults.clone(), self.stalled.clone());
            stalled.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let held = || {
                    faults
                        .lock()
                        .map(|f| f.get(&rel) == Some(&FailAt::Stall))
                        .unwrap_or(false)
                };
                while held() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stalled.fetch_sub(1, Ordering::SeqCst);
                read_reply(&file, offset, size, reply);
            });
            return;
        }
        read_reply(&file, offset, size, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        if let Ok(mut f) = self.files.lock() {
            f.remove(&fh.0);
        }
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let rd = match std::fs::read_dir(self.root.join(&rel)) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<_> = rd.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let Ok(ft) = e.file_type() else { continue };
            let kind = if ft.is_dir() {
                FileType::Directory
            } else if ft.is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            };
            let child = self.intern(rel.join(e.file_name()));
            entries.push((child, kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

fn read_reply(file: &File, offset: u64, size: u32, reply: ReplyData) {
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return reply.error(errno_of(&e)),
        }
    }
    reply.data(&buf[..filled])
}

fn file_len(f: &File) -> u64 {
    f.metadata().map(|m| m.len()).unwrap_or(0)
}

/// A mounted fault file system; unmounted on drop.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub mountpoint: PathBuf,
    pub faults: FaultSet,
    served_errors: Arc<Mutex<HashSet<PathBuf>>>,
    stalled: Arc<AtomicUsize>,
}

impl Mounted {
    /// Makes `rel` fail (or, with `None`, heals it).
    pub fn set_fault(&self, rel: impl AsRef<Path>, at: Option<FailAt>) {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        match at {
            Some(a) => f.insert(rel.as_ref().to_path_buf(), a),
            None => f.remove(rel.as_ref()),
        };
    }
    /// Reads held by a `Stall` fault right now.
    pub fn stalled_reads(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
    /// The files for which an EIO was actually served.
    pub fn served_errors(&self) -> HashSet<PathBuf> {
        self.served_errors
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Held reads first: a reader stuck in one would keep the unmount from finishing.
        if let Ok(mut f) = self.faults.lock() {
            f.clear();
        }
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

/// Serves `root` at `mountpoint` (read-only, visible to every user).
pub fn mount(root: &Path, mountpoint: &Path) -> std::io::Result<Mounted> {
    let faults: FaultSet = Arc::default();
    let served_errors: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    let stalled: Arc<AtomicUsize> = Arc::default();
    let fs = FaultFs {
        root: root.to_path_buf(),
        faults: faults.clone(),
        inodes: Mutex::new(Inodes {
            paths: vec![PathBuf::new()],
            by_path: HashMap::from([(PathBuf::new(), 1)]),
        }),
        files: Mutex::default(),
        next_fh: Mutex::new(0),
        served_errors: served_errors.clone(),
        stalled: stalled.clone(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("faultfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    let session = fuser::Session::new(fs, mountpoint, &config)?;
    Ok(Mounted {
        session: Some(session.spawn()?),
        mountpoint: mountpoint.to_path_buf(),
        faults,
        served_errors,
        stalled,
    })
}
