//! Directory handles for walking a tree fast and safely.
//!
//! On Unix a [`DirHandle`] is an open directory descriptor: children are listed with
//! `getdents`, `lstat`ed with `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)` and entered with
//! `openat(dirfd, name, O_NOFOLLOW)`. The kernel then resolves one path component per call
//! instead of the whole path from `/` (measured: a 100k-file stat walk takes about half the
//! time of `walkdir`'s full-path `lstat`s), path length never hits `PATH_MAX`, and a directory
//! swapped for a symlink while walking is refused instead of followed.
//!
//! Elsewhere the handle is a path and the same operations go through `std::fs`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

/// The type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    /// The listing did not say (some file systems); `lstat` will.
    Unknown,
}

impl EntryKind {
    /// The kind std reports for an entry (of the link itself for `symlink_metadata`).
    pub fn of(ft: std::fs::FileType) -> EntryKind {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                return EntryKind::Fifo;
            } else if ft.is_socket() {
                return EntryKind::Socket;
            } else if ft.is_block_device() {
                return EntryKind::BlockDevice;
            } else if ft.is_char_device() {
                return EntryKind::CharDevice;
            }
        }
        if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else {
            EntryKind::Unknown
        }
    }

    /// A human name for notes ("FIFO", "socket", ...).
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "FIFO",
            EntryKind::Socket => "socket",
            EntryKind::BlockDevice => "block device",
            EntryKind::CharDevice => "character device",
            EntryKind::Unknown => "special file",
        }
    }
}

/// One name from a directory listing.
#[derive(Debug)]
pub struct ListedEntry {
    pub name: OsString,
    /// From the listing itself (`d_type`); may be `Unknown`.
    pub kind: EntryKind,
    pub ino: u64,
}

/// What `lstat` says about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// `st_mode & 0o7777` (on Windows: 0o444 read-only, else 0o644).
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
    /// Owner and group (0 where the platform has none).
    pub uid: u32,
    pub gid: u32,
    /// Hard links to the inode (files with more than one are hard-link groups).
    pub nlink: u64,
    /// Bytes allocated on disk (`st_blocks * 512`): less than `size` for a file with holes.
    pub allocated: u64,
    /// Inode change time (chmod, chown, xattrs, link count), nanoseconds since the epoch.
    pub ctime_ns: i64,
}

/// An open directory.
#[derive(Debug)]
pub struct DirHandle {
    /// Listing and `*at` calls share the descriptor: the `*at` calls do not depend on the
    /// file position that listing moves.
    #[cfg(unix)]
    dir: rustix::fs::Dir,
    #[cfg(not(unix))]
    path: PathBuf,
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
    use std::os::unix::ffi::OsStrExt;

    const DIR_FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::CLOEXEC)
        .union(OFlags::NOCTTY);

    pub(crate) fn kind(ft: FileType) -> EntryKind {
        match ft {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            FileType::BlockDevice => EntryKind::BlockDevice,
            FileType::CharacterDevice => EntryKind::CharDevice,
            _ => EntryKind::Unknown,
        }
    }

    pub(crate) fn stat_of(st: &rfs::Stat) -> EntryStat {
        #[allow(clippy::unnecessary_cast)]
        let mtime_ns = (st.st_mtime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64);
        #[allow(clippy::unnecessary_cast)]
        EntryStat {
            kind: kind(FileType::from_raw_mode(st.st_mode as _)),
            size: st.st_size as u64,
            mtime_ns,
            mode: crate::meta::permission_bits(st.st_mode as u32),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            nlink: st.st_nlink as u64,
            allocated: (st.st_blocks as u64).saturating_mul(512),
            ctime_ns: (st.st_ctime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec as i64),
        }
    }

    impl DirHandle {
        /// Opens a directory by path (symlinks in `path` are followed: it is the root the
        /// user named).
        pub fn open(path: &Path) -> io::Result<DirHandle> {
            let fd = rfs::openat(rfs::CWD, path, DIR_FLAGS, Mode::empty())?;
            Ok(DirHandle {
                dir: rfs::Dir::new(fd)?,
            })
        }

        /// Opens the child directory `name`, refusing to follow a symlink.
        pub fn open_child(&self, name: &OsStr) -> io::Result<DirHandle> {
            let fd = rfs::openat(
                self.fd()?,
                name,
                DIR_FLAGS | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            Ok(DirHandle {
                dir: rfs::Dir::new(fd)?,
            })
        }

        fn fd(&self) -> io::Result<rustix::fd::BorrowedFd<'_>> {
            Ok(self.dir.fd()?)
        }

        /// Every name in the directory except `.` and `..`.
        /// Call once: the listing reads the descriptor to its end.
        pub fn list(&mut self) -> io::Result<Vec<ListedEntry>> {
            let mut out = Vec::new();
            while let Some(entry) = self.dir.read() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                out.push(ListedEntry {
                    name: OsStr::from_bytes(name).to_os_string(),
                    kind: kind(entry.file_type()),
                    ino: entry.ino(),
                });
            }
            Ok(out)
        }

        /// `lstat` of the child `name`.
        pub fn lstat(&self, name: &OsStr) -> io::Result<EntryStat> {
            Ok(stat_of(&rfs::statat(
                self.fd()?,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            )?))
        }

        /// `fstat` of the directory itself.
        pub fn stat(&self) -> io::Result<EntryStat> {
            Ok(stat_of(&rfs::fstat(self.fd()?)?))
        }

        /// The target of the symlink `name`, as stored.
        pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
            let target = rfs::readlinkat(self.fd()?, name, Vec::new())?;
            Ok(PathBuf::from(OsStr::from_bytes(target.to_bytes())))
        }
    }
}

#[cfg(not(unix))]
pub(crate) use imp::stat_of as stat_of_metadata;
#[cfg(unix)]
pub(crate) use imp::{kind as kind_of, stat_of};

#[cfg(not(unix))]
mod imp {
    use super::*;

    pub(crate) fn stat_of(m: &std::fs::Metadata) -> EntryStat {
        let mtime_ns = match m.modified() {
            Ok(t) => match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
            },
            Err(_) => 0,
        };
        EntryStat {
            kind: EntryKind::of(m.file_type()),
            size: m.len(),
            mtime_ns,
            mode: crate::meta::mode_or_readonly(m),
            dev: 0,
            ino: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            allocated: m.len(),
            ctime_ns: mtime_ns,
        }
    }

    impl DirHandle {
        pub fn open(path: &Path) -> io::Result<DirHandle> {
            if !std::fs::metadata(path)?.is_dir() {
                return Err(io::Error::other("not a directory"));
            }
            Ok(DirHandle {
                path: path.to_path_buf(),
            })
        }

        pub fn open_child(&self, name: &OsStr) -> io::Result<DirHandle> {
            let path = self.path.join(name);
            let m = std::fs::symlink_metadata(&path)?;
            if !m.is_dir() {
                return Err(io::Error::other("not a directory"));
            }
            Ok(DirHandle { path })
        }

        pub fn list(&mut self) -> io::Result<Vec<ListedEntry>> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(&self.path)? {
                let e = e?;
                out.push(ListedEntry {
                    name: e.file_name(),
                    kind: e
                        .file_type()
                        .map(EntryKind::of)
                        .unwrap_or(EntryKind::Unknown),
                    ino: 0,
                });
            }
            Ok(out)
        }

        pub fn lstat(&self, name: &OsStr) -> io::Result<EntryStat> {
            Ok(stat_of(&std::fs::symlink_metadata(self.path.join(name))?))
        }

        pub fn stat(&self) -> io::Result<EntryStat> {
            Ok(stat_of(&std::fs::metadata(&self.path)?))
        }

        pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
            std::fs::read_link(self.path.join(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_stats_and_refuses_to_follow() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"hello").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(t.path().join("d"), t.path().join("l")).unwrap();
        let mut root = DirHandle::open(t.path()).unwrap();
        let mut names: Vec<_> = root
            .list()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        names.sort();
        assert_eq!(names[0], (OsString::from("d"), EntryKind::Dir));
        #[cfg(unix)]
        {
            assert_eq!(names[1], (OsString::from("l"), EntryKind::Symlink));
            assert!(root.open_child(OsStr::new("l")).is_err());
            assert_eq!(
                root.lstat(OsStr::new("l")).unwrap().kind,
                EntryKind::Symlink
            );
            assert_eq!(root.read_link(OsStr::new("l")).unwrap(), t.path().join("d"));
        }
        let d = root.open_child(OsStr::new("d")).unwrap();
        let st = d.lstat(OsStr::new("f")).unwrap();
        assert_eq!((st.kind, st.size), (EntryKind::File, 5));
        let m = std::fs::metadata(t.path().join("d/f")).unwrap();
        let want = m
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert_eq!(st.mtime_ns, want);
        assert_eq!(d.stat().unwrap().kind, EntryKind::Dir);
        assert!(d.lstat(OsStr::new("missing")).is_err());
    }

    #[test]
    fn kinds_from_std_match_the_listing() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
            assert!(std::process::Command::new("mkfifo")
                .arg(t.path().join("p"))
                .status()
                .unwrap()
                .success());
        }
        let mut root = DirHandle::open(t.path()).unwrap();
        for e in root.list().unwrap() {
            let m = std::fs::symlink_metadata(t.path().join(&e.name)).unwrap();
            assert_eq!(EntryKind::of(m.file_type()), e.kind, "{:?}", e.name);
        }
    }
}
