//! Directory handles that never follow a symlink: the only way `restore` touches a target
//! folder, and the way it reads a backup.
//!
//! A [`SafeDir`] is an open directory. Every operation names one entry of it (a single path
//! component, never `..`, `.` or a name with `/`), and every call that could resolve a name
//! refuses a symlink there (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `linkat` without
//! `AT_SYMLINK_FOLLOW`). A folder swapped for a symlink between two calls is therefore refused,
//! never followed: checking a path with `lstat` and then using the path (the old way) lets a
//! local user redirect a root-owned restore anywhere. New entries appear atomically: a file is
//! written to a fresh temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`) and renamed over the final
//! name, so an existing symlink there is replaced, never written through.
//!
//! Errors name the operation and the path ([`FsError`]); the path is the handle's display path
//! joined with the entry's name, kept only for messages.
//!
//! Elsewhere than Unix the handle is a path checked with `symlink_metadata` before each use
//! (racy, but those systems have no unprivileged symlinks by default).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::dir::{EntryKind, EntryStat, ListedEntry};

/// A failed file-system operation: what was done, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The entry was a symlink where a real folder or file was needed.
    pub fn is_symlink_refusal(&self) -> bool {
        self.source.to_string().contains(SYMLINK_REFUSED)
    }
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

const SYMLINK_REFUSED: &str = "is a symlink; not following it";

fn symlink_refused() -> io::Error {
    io::Error::other(SYMLINK_REFUSED)
}

/// Refuses anything but one plain name: the handle API never resolves a path.
fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        ));
    }
    #[cfg(windows)]
    if b.contains(&b'\\') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        ));
    }
    Ok(())
}

/// Mode bits for new folders and files: umask applies to folders as with `mkdir`; files start
/// private (`0o600`) and get their final mode by handle before they are renamed into place.
pub const DIR_MODE: u32 = 0o777;
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// An open directory that only ever resolves single names, never following a symlink.
#[derive(Debug)]
pub struct SafeDir {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
    /// For messages on Unix; the real path elsewhere.
    path: PathBuf,
}

/// A fresh temporary entry: its handle-relative name and, for a file, the open file.
#[derive(Debug)]
pub struct TempFile {
    pub file: File,
    pub name: OsString,
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn temp_name(prefix: &str) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    OsString::from(format!("{prefix}{}-{n}-{t:x}", std::process::id()))
}

impl SafeDir {
    /// The display path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The display path of the entry `name`.
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    fn err(&self, op: &'static str, name: &OsStr, e: io::Error) -> FsError {
        FsError::new(op, self.child_path(name), e)
    }

    /// Opens the child folder `name`, or creates it (`mode`, umask applies) when missing.
    /// Returns whether it was created. An existing symlink or file there is refused.
    pub fn open_or_create_dir(&self, name: &OsStr, mode: u32) -> Result<(SafeDir, bool), FsError> {
        match self.open_dir(name) {
            Ok(d) => Ok((d, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let created = match self.mkdir(name, mode) {
                    Ok(()) => true,
                    // Someone else made it meanwhile: open whatever is there (refusing a link).
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(e),
                };
                Ok((self.open_dir(name)?, created))
            }
            Err(e) => Err(e),
        }
    }

    /// The entry `name` (not following a symlink), `None` when it does not exist.
    pub fn stat_opt(&self, name: &OsStr) -> Result<Option<EntryStat>, FsError> {
        match self.lstat(name) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a new file at `name` atomically: `fill` writes a fresh private temporary file
    /// (and may set its metadata by handle), which is then renamed over `name`. The temporary
    /// file is removed when anything fails.
    pub fn write_file<T>(
        &self,
        name: &OsStr,
        fill: impl FnOnce(&File) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        check_name(name).map_err(|e| self.err("create", name, e))?;
        let tmp = self.create_temp(".restore-")?;
        let result = fill(&tmp.file).and_then(|v| {
            self.rename(&tmp.name, self, name)?;
            Ok(v)
        });
        if result.is_err() {
            let _ = self.unlink(&tmp.name);
        }
        result
    }

    /// Creates (or replaces) the symlink `name` → `target`: made at a temporary name, then
    /// renamed over `name`, so an existing entry there is replaced, never followed.
    pub fn replace_symlink(&self, target: &Path, name: &OsStr) -> Result<(), FsError> {
        self.replace_symlink_with(target, name, |_, _| Ok(()))
    }

    /// [`SafeDir::replace_symlink`], calling `prepare(self, temporary name)` before the rename:
    /// the symlink's own metadata is set while nobody else knows where it is (rename keeps it).
    pub fn replace_symlink_with(
        &self,
        target: &Path,
        name: &OsStr,
        prepare: impl FnOnce(&SafeDir, &OsStr) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        check_name(name).map_err(|e| self.err("create symlink", name, e))?;
        for _ in 0..100 {
            let tmp = temp_name(".restore-link-");
            match self.symlink(target, &tmp) {
                Ok(()) => {
                    return prepare(self, &tmp)
                        .and_then(|()| self.rename(&tmp, self, name))
                        .inspect_err(|_| {
                            let _ = self.unlink(&tmp);
                        })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(self.err(
            "create symlink",
            name,
            io::Error::other("no free temporary name"),
        ))
    }

    /// Makes `name` another hard link of `from_dir/from_name` (replacing whatever `name` was).
    /// A symlink at `from_name` is linked as the symlink itself, never its target.
    pub fn replace_with_link(
        &self,
        from_dir: &SafeDir,
        from_name: &OsStr,
        name: &OsStr,
    ) -> Result<(), FsError> {
        check_name(name).map_err(|e| self.err("link", name, e))?;
        for _ in 0..100 {
            let tmp = temp_name(".restore-hl-");
            match self.link_from(from_dir, from_name, &tmp) {
                Ok(()) => {
                    return self.rename(&tmp, self, name).inspect_err(|_| {
                        let _ = self.unlink(&tmp);
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(self.err("link", name, io::Error::other("no free temporary name")))
    }

    /// Removes the entry `name`: a file or symlink (the link itself, never its target) is
    /// unlinked, a folder is emptied through handles and removed. Returns how many entries were
    /// removed.
    pub fn remove_all(&self, name: &OsStr) -> Result<u64, FsError> {
        let st = self.lstat(name)?;
        if st.kind != EntryKind::Dir {
            self.unlink(name)?;
            return Ok(1);
        }
        let mut sub = self.open_dir(name)?;
        let mut n = 0;
        for e in sub.list()? {
            n += sub.remove_all(&e.name)?;
        }
        drop(sub);
        self.rmdir(name)?;
        Ok(n + 1)
    }
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::ffi::OsStrExt;

    const DIR_FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC)
        .union(OFlags::NOCTTY);

    impl AsFd for SafeDir {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    impl SafeDir {
        /// Opens the folder the user named. `path` is resolved once (symlinks the user put in
        /// it are followed, as they meant); the resolved path is then walked from `/` one
        /// component at a time refusing symlinks, so a component swapped meanwhile is refused.
        pub fn open_root(path: &Path) -> Result<SafeDir, FsError> {
            let real = path
                .canonicalize()
                .map_err(|e| FsError::new("resolve", path, e))?;
            let mut dir = SafeDir {
                fd: rfs::openat(rfs::CWD, "/", DIR_FLAGS, Mode::empty())
                    .map_err(|e| FsError::new("open folder", "/", e.into()))?,
                path: PathBuf::from("/"),
            };
            for c in real.components() {
                if let std::path::Component::Normal(name) = c {
                    dir = dir.open_dir(name)?;
                }
            }
            dir.path = real;
            Ok(dir)
        }

        /// The display path used in messages (the handle is what counts).
        pub fn with_display_path(mut self, path: PathBuf) -> SafeDir {
            self.path = path;
            self
        }

        /// Another handle to the same folder.
        pub fn try_clone(&self) -> Result<SafeDir, FsError> {
            Ok(SafeDir {
                fd: self
                    .fd
                    .try_clone()
                    .map_err(|e| FsError::new("duplicate handle", &self.path, e))?,
                path: self.path.clone(),
            })
        }

        /// Opens the child folder `name`, refusing a symlink.
        pub fn open_dir(&self, name: &OsStr) -> Result<SafeDir, FsError> {
            check_name(name).map_err(|e| self.err("open folder", name, e))?;
            match rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Ok(SafeDir {
                    fd,
                    path: self.child_path(name),
                }),
                Err(e) => Err(self.err("open folder", name, self.explain(name, e))),
            }
        }

        /// Opens the folder `rel` below this one (several components), refusing any symlink
        /// on the way: one `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` where the kernel has
        /// it, else one `openat(O_NOFOLLOW)` per component.
        pub fn open_dir_beneath(&self, rel: &Path) -> Result<SafeDir, FsError> {
            if rel.as_os_str().is_empty() {
                return self.try_clone();
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                let how = rfs::ResolveFlags::BENEATH
                    | rfs::ResolveFlags::NO_SYMLINKS
                    | rfs::ResolveFlags::NO_MAGICLINKS;
                match rfs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), how) {
                    Ok(fd) => {
                        return Ok(SafeDir {
                            fd,
                            path: self.path.join(rel),
                        })
                    }
                    // No openat2 (before 5.6, or filtered by seccomp): walk instead.
                    Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {}
                    // Walk for a message naming the component at fault.
                    Err(rustix::io::Errno::LOOP)
                    | Err(rustix::io::Errno::XDEV)
                    | Err(rustix::io::Errno::NOTDIR) => {}
                    Err(e) => {
                        return Err(FsError::new("open folder", self.path.join(rel), e.into()))
                    }
                }
            }
            let mut dir: Option<SafeDir> = None;
            for c in rel.components() {
                let name = match c {
                    std::path::Component::Normal(n) => n,
                    std::path::Component::CurDir => continue,
                    _ => {
                        return Err(FsError::new(
                            "open folder",
                            self.path.join(rel),
                            io::Error::new(io::ErrorKind::InvalidInput, "not a relative path"),
                        ))
                    }
                };
                dir = Some(dir.as_ref().unwrap_or(self).open_dir(name)?);
            }
            match dir {
                Some(d) => Ok(d),
                None => self.try_clone(),
            }
        }

        /// Turns the errno of a refused `O_NOFOLLOW` open into a message that says a symlink
        /// was refused, when that is what happened.
        fn explain(&self, name: &OsStr, e: rustix::io::Errno) -> io::Error {
            if !matches!(e, rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) {
                return e.into();
            }
            match self.lstat(name) {
                Ok(s) if s.kind == EntryKind::Symlink => symlink_refused(),
                // A folder again by now: it was swapped while being opened.
                Ok(s) if s.kind == EntryKind::Dir && e == rustix::io::Errno::NOTDIR => {
                    io::Error::other(format!("{SYMLINK_REFUSED} (it was swapped while opening)"))
                }
                _ if e == rustix::io::Errno::LOOP => symlink_refused(),
                _ => e.into(),
            }
        }

        /// Opens the regular file `name` for reading, refusing a symlink, and without moving
        /// its access time where allowed.
        pub fn open_file(&self, name: &OsStr) -> Result<File, FsError> {
            let op = "open";
            check_name(name).map_err(|e| self.err(op, name, e))?;
            // O_NONBLOCK: a FIFO planted where a file was expected must not hang the open.
            let base = OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY
                | OFlags::NONBLOCK;
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let fd = match rfs::openat(&self.fd, name, base | OFlags::NOATIME, Mode::empty()) {
                // O_NOATIME is refused for files of other owners (EPERM).
                Err(rustix::io::Errno::PERM) => rfs::openat(&self.fd, name, base, Mode::empty()),
                r => r,
            };
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let fd = rfs::openat(&self.fd, name, base, Mode::empty());
            let fd = fd.map_err(|e| self.err(op, name, self.explain(name, e)))?;
            let st = rfs::fstat(&fd).map_err(|e| self.err(op, name, e.into()))?;
            if rfs::FileType::from_raw_mode(st.st_mode as _) != rfs::FileType::RegularFile {
                return Err(self.err(op, name, io::Error::other("not a regular file")));
            }
            // Back to blocking I/O for the reads (keeping O_NOATIME).
            let flags = rfs::fcntl_getfl(&fd).map_err(|e| self.err(op, name, e.into()))?;
            rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
                .map_err(|e| self.err(op, name, e.into()))?;
            Ok(File::from(fd))
        }

        /// Creates a new private file with a fresh name starting with `prefix`.
        pub fn create_temp(&self, prefix: &str) -> Result<TempFile, FsError> {
            let flags = OFlags::RDWR
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY;
            for _ in 0..100 {
                let name = temp_name(prefix);
                match rfs::openat(&self.fd, &name, flags, Mode::from_raw_mode(0o600)) {
                    Ok(fd) => {
                        return Ok(TempFile {
                            file: File::from(fd),
                            name,
                        })
                    }
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(self.err("create", &name, e.into())),
                }
            }
            Err(FsError::new(
                "create",
                &self.path,
                io::Error::other("no free temporary name"),
            ))
        }

        /// `lstat` of the entry `name`.
        pub fn lstat(&self, name: &OsStr) -> Result<EntryStat, FsError> {
            check_name(name).map_err(|e| self.err("stat", name, e))?;
            let st = rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.err("stat", name, e.into()))?;
            Ok(crate::dir::stat_of(&st))
        }

        /// `fstat` of the folder itself.
        /// Makes this folder's entries and attributes durable (`fsync` of its handle).
        pub fn sync(&self) -> Result<(), FsError> {
            rfs::fsync(&self.fd).map_err(|e| FsError::new("fsync", &self.path, e.into()))
        }

        pub fn stat(&self) -> Result<EntryStat, FsError> {
            let st =
                rfs::fstat(&self.fd).map_err(|e| FsError::new("stat", &self.path, e.into()))?;
            Ok(crate::dir::stat_of(&st))
        }

        /// Every name in the folder except `.` and `..`.
        pub fn list(&mut self) -> Result<Vec<ListedEntry>, FsError> {
            let le = |e: rustix::io::Errno| FsError::new("list", &self.path, e.into());
            let mut dir = rfs::Dir::read_from(&self.fd).map_err(le)?;
            let mut out = Vec::new();
            while let Some(entry) = dir.read() {
                let entry = entry.map_err(le)?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                out.push(ListedEntry {
                    name: OsStr::from_bytes(name).to_os_string(),
                    kind: crate::dir::kind_of(entry.file_type()),
                    ino: entry.ino(),
                });
            }
            Ok(out)
        }

        /// The target of the symlink `name`, as stored.
        pub fn read_link(&self, name: &OsStr) -> Result<PathBuf, FsError> {
            check_name(name).map_err(|e| self.err("read symlink", name, e))?;
            let t = rfs::readlinkat(&self.fd, name, Vec::new())
                .map_err(|e| self.err("read symlink", name, e.into()))?;
            Ok(PathBuf::from(OsStr::from_bytes(t.to_bytes())))
        }

        /// The target of a stored symlink `name`: a symlink's, or that of the plain file
        /// standing in for one on a file system without symlinks (`fs::store_symlink`).
        pub fn read_stored_link(&self, name: &OsStr) -> Result<PathBuf, FsError> {
            match self.lstat(name)?.kind {
                EntryKind::File => crate::fs::target_of_stored_file(self.open_file(name)?)
                    .map_err(|e| self.err("read symlink", name, e)),
                _ => self.read_link(name),
            }
        }

        /// `mkdirat`; umask applies.
        pub fn mkdir(&self, name: &OsStr, mode: u32) -> Result<(), FsError> {
            check_name(name).map_err(|e| self.err("create folder", name, e))?;
            rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _))
                .map_err(|e| self.err("create folder", name, e.into()))
        }

        /// `symlinkat`: fails if `name` exists.
        pub fn symlink(&self, target: &Path, name: &OsStr) -> Result<(), FsError> {
            check_name(name).map_err(|e| self.err("create symlink", name, e))?;
            rfs::symlinkat(target, &self.fd, name)
                .map_err(|e| self.err("create symlink", name, e.into()))
        }

        /// `linkat(from_dir, from_name, self, name, 0)`: never follows a symlink.
        pub fn link_from(
            &self,
            from_dir: &SafeDir,
            from_name: &OsStr,
            name: &OsStr,
        ) -> Result<(), FsError> {
            check_name(from_name).map_err(|e| from_dir.err("link", from_name, e))?;
            check_name(name).map_err(|e| self.err("link", name, e))?;
            rfs::linkat(&from_dir.fd, from_name, &self.fd, name, AtFlags::empty())
                .map_err(|e| self.err("link", name, e.into()))
        }

        /// `renameat(self, from, to_dir, to)`: replaces `to` (a symlink there is replaced).
        pub fn rename(&self, from: &OsStr, to_dir: &SafeDir, to: &OsStr) -> Result<(), FsError> {
            check_name(from).map_err(|e| self.err("rename", from, e))?;
            check_name(to).map_err(|e| to_dir.err("rename", to, e))?;
            rfs::renameat(&self.fd, from, &to_dir.fd, to)
                .map_err(|e| to_dir.err("rename", to, e.into()))
        }

        /// Removes the non-folder `name` (a symlink itself, never its target).
        pub fn unlink(&self, name: &OsStr) -> Result<(), FsError> {
            check_name(name).map_err(|e| self.err("remove", name, e))?;
            rfs::unlinkat(&self.fd, name, AtFlags::empty())
                .map_err(|e| self.err("remove", name, e.into()))
        }

        /// Removes the empty folder `name`.
        pub fn rmdir(&self, name: &OsStr) -> Result<(), FsError> {
            check_name(name).map_err(|e| self.err("remove folder", name, e))?;
            rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
                .map_err(|e| self.err("remove folder", name, e.into()))
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    fn stat_path(p: &Path) -> io::Result<EntryStat> {
        Ok(crate::dir::stat_of_metadata(&std::fs::symlink_metadata(p)?))
    }

    impl SafeDir {
        fn real(&self, name: &OsStr, op: &'static str) -> Result<PathBuf, FsError> {
            check_name(name).map_err(|e| self.err(op, name, e))?;
            Ok(self.path.join(name))
        }

        pub fn open_root(path: &Path) -> Result<SafeDir, FsError> {
            let real = path
                .canonicalize()
                .map_err(|e| FsError::new("resolve", path, e))?;
            if !std::fs::metadata(&real)
                .map_err(|e| FsError::new("open folder", &real, e))?
                .is_dir()
            {
                return Err(FsError::new(
                    "open folder",
                    &real,
                    io::Error::other("not a folder"),
                ));
            }
            Ok(SafeDir { path: real })
        }

        pub fn with_display_path(self, _path: PathBuf) -> SafeDir {
            self
        }

        pub fn try_clone(&self) -> Result<SafeDir, FsError> {
            Ok(SafeDir {
                path: self.path.clone(),
            })
        }

        pub fn open_dir(&self, name: &OsStr) -> Result<SafeDir, FsError> {
            let p = self.real(name, "open folder")?;
            let st = stat_path(&p).map_err(|e| FsError::new("open folder", &p, e))?;
            match st.kind {
                EntryKind::Dir => Ok(SafeDir { path: p }),
                EntryKind::Symlink => Err(FsError::new("open folder", &p, symlink_refused())),
                _ => Err(FsError::new(
                    "open folder",
                    &p,
                    io::Error::other("not a folder"),
                )),
            }
        }

        pub fn open_dir_beneath(&self, rel: &Path) -> Result<SafeDir, FsError> {
            let mut dir = self.try_clone()?;
            for c in rel.components() {
                match c {
                    std::path::Component::Normal(n) => dir = dir.open_dir(n)?,
                    std::path::Component::CurDir => {}
                    _ => {
                        return Err(FsError::new(
                            "open folder",
                            self.path.join(rel),
                            io::Error::new(io::ErrorKind::InvalidInput, "not a relative path"),
                        ))
                    }
                }
            }
            Ok(dir)
        }

        pub fn open_file(&self, name: &OsStr) -> Result<File, FsError> {
            let p = self.real(name, "open")?;
            let st = stat_path(&p).map_err(|e| FsError::new("open", &p, e))?;
            if st.kind == EntryKind::Symlink {
                return Err(FsError::new("open", &p, symlink_refused()));
            }
            let f = File::open(&p).map_err(|e| FsError::new("open", &p, e))?;
            if !f
                .metadata()
                .map_err(|e| FsError::new("open", &p, e))?
                .is_file()
            {
                return Err(FsError::new(
                    "open",
                    &p,
                    io::Error::other("not a regular file"),
                ));
            }
            Ok(f)
        }

        pub fn create_temp(&self, prefix: &str) -> Result<TempFile, FsError> {
            for _ in 0..100 {
                let name = temp_name(prefix);
                let p = self.path.join(&name);
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&p)
                {
                    Ok(file) => return Ok(TempFile { file, name }),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(FsError::new("create", p, e)),
                }
            }
            Err(FsError::new(
                "create",
                &self.path,
                io::Error::other("no free temporary name"),
            ))
        }

        pub fn lstat(&self, name: &OsStr) -> Result<EntryStat, FsError> {
            let p = self.real(name, "stat")?;
            stat_path(&p).map_err(|e| FsError::new("stat", p, e))
        }

        /// Folders cannot be flushed on Windows; files written are flushed one by one.
        pub fn sync(&self) -> Result<(), FsError> {
            Ok(())
        }

        pub fn stat(&self) -> Result<EntryStat, FsError> {
            stat_path(&self.path).map_err(|e| FsError::new("stat", &self.path, e))
        }

        pub fn list(&mut self) -> Result<Vec<ListedEntry>, FsError> {
            crate::dir::DirHandle::open(&self.path)
                .and_then(|mut d| d.list())
                .map_err(|e| FsError::new("list", &self.path, e))
        }

        pub fn read_stored_link(&self, name: &OsStr) -> Result<PathBuf, FsError> {
            let p = self.real(name, "read symlink")?;
            crate::fs::read_stored_link(&p).map_err(|e| FsError::new("read symlink", p, e))
        }

        pub fn read_link(&self, name: &OsStr) -> Result<PathBuf, FsError> {
            let p = self.real(name, "read symlink")?;
            std::fs::read_link(&p).map_err(|e| FsError::new("read symlink", p, e))
        }

        pub fn mkdir(&self, name: &OsStr, _mode: u32) -> Result<(), FsError> {
            let p = self.real(name, "create folder")?;
            std::fs::create_dir(&p).map_err(|e| FsError::new("create folder", p, e))
        }

        pub fn symlink(&self, target: &Path, name: &OsStr) -> Result<(), FsError> {
            let p = self.real(name, "create symlink")?;
            crate::fs::symlink(target, &p).map_err(|e| FsError::new("create symlink", p, e))
        }

        pub fn link_from(
            &self,
            from_dir: &SafeDir,
            from_name: &OsStr,
            name: &OsStr,
        ) -> Result<(), FsError> {
            let from = from_dir.real(from_name, "link")?;
            let p = self.real(name, "link")?;
            std::fs::hard_link(from, &p).map_err(|e| FsError::new("link", p, e))
        }

        pub fn rename(&self, from: &OsStr, to_dir: &SafeDir, to: &OsStr) -> Result<(), FsError> {
            let f = self.real(from, "rename")?;
            let t = to_dir.real(to, "rename")?;
            std::fs::rename(f, &t).map_err(|e| FsError::new("rename", t, e))
        }

        pub fn unlink(&self, name: &OsStr) -> Result<(), FsError> {
            let p = self.real(name, "remove")?;
            std::fs::remove_file(&p).map_err(|e| FsError::new("remove", p, e))
        }

        pub fn rmdir(&self, name: &OsStr) -> Result<(), FsError> {
            let p = self.real(name, "remove folder")?;
            std::fs::remove_dir(&p).map_err(|e| FsError::new("remove folder", p, e))
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn refuses_a_symlinked_component_everywhere() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"outside").unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink(outside.path(), t.path().join("link")).unwrap();
        symlink(outside.path().join("f"), t.path().join("flink")).unwrap();
        let root = SafeDir::open_root(t.path()).unwrap();

        let e = root.open_dir(os("link")).unwrap_err();
        assert!(e.is_symlink_refusal(), "{e}");
        assert_eq!(e.op, "open folder");
        assert!(e.to_string().contains("link"), "{e}");
        assert!(root.open_or_create_dir(os("link"), DIR_MODE).is_err());
        let e = root.open_dir_beneath(Path::new("link/x")).unwrap_err();
        assert!(e.to_string().contains("link"), "{e}");
        assert!(root.open_dir_beneath(Path::new("../")).is_err());
        let e = root.open_file(os("flink")).unwrap_err();
        assert!(e.is_symlink_refusal(), "{e}");
        assert!(root.open_file(os("../etc/passwd")).is_err());
        assert!(root.open_dir(os("..")).is_err());
        // The root itself may be named through a symlink (the user's choice) ...
        let via = SafeDir::open_root(&t.path().join("real")).unwrap();
        assert!(via.path().ends_with("real"));
        // ... and writing at a symlink's name replaces the symlink, never its target.
        root.write_file(os("flink"), |f| {
            (&*f)
                .write_all(b"new")
                .map_err(|e| FsError::new("write", "flink", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(outside.path().join("f")).unwrap(), b"outside");
        assert_eq!(std::fs::read(t.path().join("flink")).unwrap(), b"new");
        root.replace_symlink(Path::new("target"), os("real2"))
            .unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("real2")).unwrap(),
            Path::new("target")
        );
        // remove_all removes the link, not what it points to.
        root.remove_all(os("link")).unwrap();
        assert!(outside.path().join("f").exists());
        // No temporary names are left behind.
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec!["flink", "real", "real2"]);
    }

    #[test]
    fn a_held_handle_stays_on_the_real_folder_after_a_swap() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = SafeDir::open_root(t.path()).unwrap();
        let (d, created) = root.open_or_create_dir(os("d"), DIR_MODE).unwrap();
        assert!(created);
        // Swap d for a symlink to outside while the handle is open.
        std::fs::rename(t.path().join("d"), t.path().join("d.moved")).unwrap();
        symlink(outside.path(), t.path().join("d")).unwrap();
        d.write_file(os("x"), |f| {
            (&*f)
                .write_all(b"x")
                .map_err(|e| FsError::new("write", "x", e))
        })
        .unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(t.path().join("d.moved/x").exists());
        // A fresh lookup refuses the symlink.
        assert!(root.open_dir(os("d")).unwrap_err().is_symlink_refusal());
        assert!(root
            .open_or_create_dir(os("d"), DIR_MODE)
            .unwrap_err()
            .is_symlink_refusal());
    }

    #[test]
    fn reads_hard_links_lists_and_removes_by_handle() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::fs::write(t.path().join("a/b/c/f"), b"data").unwrap();
        let root = SafeDir::open_root(t.path()).unwrap();
        let c = root.open_dir_beneath(Path::new("a/b/c")).unwrap();
        let mut s = String::new();
        c.open_file(os("f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "data");
        assert!(c.open_file(os("missing")).unwrap_err().kind() == io::ErrorKind::NotFound);
        root.replace_with_link(&c, os("f"), os("g")).unwrap();
        let st = root.lstat(os("g")).unwrap();
        assert_eq!(st.ino, c.lstat(os("f")).unwrap().ino);
        assert!(root.stat_opt(os("nothing")).unwrap().is_none());
        let mut a = root.open_dir(os("a")).unwrap();
        let names: Vec<_> = a.list().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec![OsString::from("b")]);
        assert_eq!(root.remove_all(os("a")).unwrap(), 4);
        assert!(!t.path().join("a").exists());
        assert_eq!(std::fs::read(t.path().join("g")).unwrap(), b"data");
    }
}
