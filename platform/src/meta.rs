//! The metadata of an entry beyond size and mtime — owner, full mode, extended attributes and
//! POSIX ACLs, link count, allocated blocks — read and applied by handle, never following a
//! symlink.
//!
//! ACLs are the raw `system.posix_acl_access` / `system.posix_acl_default` xattr values (as
//! restic stores them), so they round-trip without libacl. Applying follows the order the
//! kernel imposes: owner first (chown clears setuid/setgid and file capabilities), then mode,
//! then xattrs (an access ACL rewrites the group bits of the mode), mtime last (every change
//! before it touches ctime only, but a later xattr write on some file systems also bumps
//! mtime).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use crate::dir::EntryKind;
use crate::sandbox::{FsError, SafeDir};

/// One extended attribute, name and value as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Everything `lstat` and the xattr calls say about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryKind,
    /// `st_mode & 0o7777` (setuid, setgid and sticky included).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    /// Allocated 512-byte blocks (`st_blocks`): less than `size / 512` for a sparse file.
    pub blocks: u64,
    /// Sorted by name. `user.*` always; `security.*`, `trusted.*` (root only) and the POSIX
    /// ACLs when readable. Empty on file systems without xattrs.
    pub xattrs: Vec<Xattr>,
}

/// What to set on an entry; `None` leaves that part alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Apply<'a> {
    /// Permission bits (`& 0o7777`); ignored for symlinks.
    pub mode: Option<u32>,
    /// `(uid, gid)`; applied only when the caller may change owners ([`is_root`]).
    pub owner: Option<(u32, u32)>,
    pub mtime_ns: Option<i64>,
    /// The exact set to leave on the entry: missing names are added, names not in the set are
    /// removed (for the namespaces this process may write; never `security.selinux`, which
    /// the target system's policy assigns).
    pub xattrs: Option<&'a [Xattr]>,
}

/// Whether this process can give files away (`chown` to any owner) and write `trusted.*`.
pub fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The permission bits of a raw `st_mode` (setuid, setgid and sticky included): what the
/// index records, and all of a mode that may be applied to a file.
pub fn permission_bits(st_mode: u32) -> u32 {
    st_mode & 0o7777
}

/// The permission bits of an entry; `None` where the platform keeps none (Windows), so a
/// caller can tell "unknown" from a real mode.
pub fn mode_bits(m: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(permission_bits(m.mode()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// [`mode_bits`], or where there are none the read-only flag as 0o444 / 0o644: what a scan
/// records on Windows.
pub fn mode_or_readonly(m: &std::fs::Metadata) -> u32 {
    mode_bits(m).unwrap_or(if m.permissions().readonly() {
        0o444
    } else {
        0o644
    })
}

/// `(uid, gid)` of an entry; `(0, 0)` where the platform has no numeric owners.
pub fn owner_of(m: &std::fs::Metadata) -> (u32, u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        (0, 0)
    }
}

/// Allocated 512-byte blocks (`st_blocks`): fewer than the size implies for a file with
/// holes. `None` where the platform does not say.
pub fn blocks_of(m: &std::fs::Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(m.blocks())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// Names kept when reading: the namespaces restic and `rsync -X -A` carry.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_recorded(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name.starts_with(b"security.")
        || name.starts_with(b"trusted.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Names this process may set or remove.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_writable(name: &[u8], root: bool) -> bool {
    if name == b"security.selinux" {
        return false;
    }
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || (root && (name.starts_with(b"trusted.") || name.starts_with(b"security.")))
}

/// user and group names by id, each looked up once.
#[derive(Debug, Default)]
pub struct Owners {
    // Shared, so that a million entries of one owner hold one copy of the name.
    users: HashMap<u32, Option<std::sync::Arc<str>>>,
    groups: HashMap<u32, Option<std::sync::Arc<str>>>,
}

impl Owners {
    /// The user name of `uid`, `None` when the system does not know it.
    pub fn user(&mut self, uid: u32) -> Option<std::sync::Arc<str>> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                #[cfg(unix)]
                {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                        .ok()
                        .flatten()
                        .map(|u| u.name.into())
                }
                #[cfg(not(unix))]
                {
                    None
                }
            })
            .clone()
    }

    /// The group name of `gid`, `None` when the system does not know it.
    pub fn group(&mut self, gid: u32) -> Option<std::sync::Arc<str>> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                #[cfg(unix)]
                {
                    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                        .ok()
                        .flatten()
                        .map(|g| g.name.into())
                }
                #[cfg(not(unix))]
                {
                    None
                }
            })
            .clone()
    }
}

#[cfg(unix)]
pub use imp::{
    apply_fd, apply_symlink, read_at, read_fd, set_xattrs_fd, xattrs_of_fd, xattrs_of_path,
};

/// Applies `m` to an open regular file.
pub fn apply_file(
    f: &std::fs::File,
    path: &Path,
    m: &Apply<'_>,
    may_chown: bool,
) -> Result<(), FsError> {
    #[cfg(unix)]
    {
        apply_fd(f, path, m, may_chown)
    }
    #[cfg(not(unix))]
    {
        let _ = may_chown;
        if let Some(mode) = m.mode {
            let mut p = f
                .metadata()
                .map_err(|e| FsError::new("stat", path, e))?
                .permissions();
            p.set_readonly(mode & 0o222 == 0);
            f.set_permissions(p)
                .map_err(|e| FsError::new("change mode", path, e))?;
        }
        if let Some(ns) = m.mtime_ns {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
            f.set_modified(t)
                .map_err(|e| FsError::new("set mtime", path, e))?;
        }
        Ok(())
    }
}

/// Applies `m` to an open folder.
pub fn apply_dir(d: &SafeDir, m: &Apply<'_>, may_chown: bool) -> Result<(), FsError> {
    #[cfg(unix)]
    {
        apply_fd(d, d.path(), m, may_chown)
    }
    #[cfg(not(unix))]
    {
        // Folder metadata is not restored on Windows yet.
        let _ = (d, m, may_chown);
        Ok(())
    }
}

/// Extended attributes are not read on Windows (alternate data streams are not kept yet).
#[cfg(not(unix))]
pub fn xattrs_of_path(_path: &Path) -> std::io::Result<Vec<Xattr>> {
    Ok(Vec::new())
}

/// Extended attributes are not read on Windows (see [`xattrs_of_path`]).
#[cfg(not(unix))]
pub fn xattrs_of_fd(_f: &std::fs::File) -> std::io::Result<Vec<Xattr>> {
    Ok(Vec::new())
}

#[cfg(not(unix))]
/// Symlink metadata is not restored on Windows yet.
pub fn apply_symlink(
    _dir: &SafeDir,
    _name: &OsStr,
    _m: &Apply<'_>,
    _may_chown: bool,
) -> Result<(), FsError> {
    Ok(())
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::{self as rfs, AtFlags, Mode, Timespec, Timestamps};
    use std::io;
    use std::os::fd::AsFd;

    fn meta_of(st: &rfs::Stat, xattrs: Vec<Xattr>) -> Meta {
        let s = crate::dir::stat_of(st);
        #[allow(clippy::unnecessary_cast)]
        Meta {
            kind: s.kind,
            mode: s.mode,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mtime_ns: s.mtime_ns,
            size: s.size,
            nlink: st.st_nlink as u64,
            dev: s.dev,
            ino: s.ino,
            blocks: st.st_blocks as u64,
            xattrs,
        }
    }

    /// The metadata of the entry `name` of `dir`, never following a symlink.
    pub fn read_at(dir: &SafeDir, name: &OsStr) -> Result<Meta, FsError> {
        let path = dir.child_path(name);
        // lstat checks the name too.
        dir.lstat(name)?;
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::new("stat", &path, e.into()))?;
        let x = xattr::Target::at(dir, name)
            .list_all()
            .map_err(|e| FsError::new("read xattrs", &path, e))?;
        Ok(meta_of(&st, x))
    }

    /// The extended attributes of the entry at `path` itself (a symlink is not followed), as
    /// [`Meta::xattrs`] holds them.
    pub fn xattrs_of_path(path: &Path) -> io::Result<Vec<Xattr>> {
        xattr::Target::path(path).list_all()
    }

    /// The extended attributes of an open file or folder.
    pub fn xattrs_of_fd(fd: impl AsFd) -> io::Result<Vec<Xattr>> {
        xattr::Target::Fd(fd.as_fd()).list_all()
    }

    /// Sets exactly `want` on an open file (see [`Apply::xattrs`]).
    pub fn set_xattrs_fd(fd: impl AsFd, want: &[Xattr]) -> io::Result<()> {
        xattr::Target::Fd(fd.as_fd()).replace(want, is_root())
    }

    /// The metadata of an open file or folder.
    pub fn read_fd(fd: impl AsFd, path: &Path) -> Result<Meta, FsError> {
        let st = rfs::fstat(&fd).map_err(|e| FsError::new("stat", path, e.into()))?;
        let x = xattr::Target::Fd(fd.as_fd())
            .list_all()
            .map_err(|e| FsError::new("read xattrs", path, e))?;
        Ok(meta_of(&st, x))
    }

    fn timestamps(mtime_ns: i64) -> Timestamps {
        Timestamps {
            // Restoring a file is no reason to claim it was read.
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: mtime_ns.div_euclid(1_000_000_000) as _,
                tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
            },
        }
    }

    /// Applies `m` to an open file or folder (owner only when `may_chown`).
    pub fn apply_fd(
        fd: impl AsFd,
        path: &Path,
        m: &Apply<'_>,
        may_chown: bool,
    ) -> Result<(), FsError> {
        let fd = fd.as_fd();
        if let (Some((uid, gid)), true) = (m.owner, may_chown) {
            rfs::fchown(
                fd,
                Some(rfs::Uid::from_raw(uid)),
                Some(rfs::Gid::from_raw(gid)),
            )
            .map_err(|e| FsError::new("change owner", path, e.into()))?;
        }
        if let Some(mode) = m.mode {
            rfs::fchmod(fd, Mode::from_raw_mode(permission_bits(mode) as _))
                .map_err(|e| FsError::new("change mode", path, e.into()))?;
        }
        if let Some(x) = m.xattrs {
            xattr::Target::Fd(fd)
                .replace(x, is_root())
                .map_err(|e| FsError::new("set xattrs", path, e))?;
        }
        if let Some(ns) = m.mtime_ns {
            rfs::futimens(fd, &timestamps(ns))
                .map_err(|e| FsError::new("set mtime", path, e.into()))?;
        }
        Ok(())
    }

    /// Applies `m` to the symlink `name` itself (its mode is ignored: Linux has none).
    pub fn apply_symlink(
        dir: &SafeDir,
        name: &OsStr,
        m: &Apply<'_>,
        may_chown: bool,
    ) -> Result<(), FsError> {
        let path = dir.child_path(name);
        if dir.lstat(name)?.kind != EntryKind::Symlink {
            return Err(FsError::new(
                "set symlink metadata",
                &path,
                io::Error::other("not a symlink"),
            ));
        }
        if let (Some((uid, gid)), true) = (m.owner, may_chown) {
            chown_symlink(dir, name, uid, gid)
                .map_err(|e| FsError::new("change owner", &path, e))?;
        }
        if let Some(x) = m.xattrs {
            xattr::Target::at(dir, name)
                .replace(x, is_root())
                .map_err(|e| FsError::new("set xattrs", &path, e))?;
        }
        if let Some(ns) = m.mtime_ns {
            rfs::utimensat(dir, name, &timestamps(ns), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| FsError::new("set mtime", &path, e.into()))?;
        }
        Ok(())
    }

    /// `lchown` of exactly the symlink that was checked: on Linux through an `O_PATH` handle
    /// (`fchownat(fd, "", AT_EMPTY_PATH)`), so an entry swapped in after the check — say a hard
    /// link to a file of someone else — is never given away.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn chown_symlink(dir: &SafeDir, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let fd = rfs::openat(
            dir,
            name,
            rfs::OFlags::PATH | rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        if rfs::FileType::from_raw_mode(st.st_mode as _) != rfs::FileType::Symlink {
            return Err(io::Error::other("not a symlink"));
        }
        rfs::chownat(
            &fd,
            "",
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn chown_symlink(dir: &SafeDir, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    mod xattr {
        use super::super::{is_recorded, is_writable, Xattr};
        use rustix::fs as rfs;
        use rustix::io::Errno;
        use std::ffi::OsStr;
        use std::io;
        use std::os::fd::{AsRawFd, BorrowedFd};
        use std::os::unix::ffi::OsStrExt;
        use std::path::PathBuf;

        /// Where xattr calls go: an open file, or an entry of an open folder named through
        /// `/proc/self/fd/DIRFD/NAME` with the `l*` calls — the folder is reached by its
        /// handle and the last component is never followed, which is how a symlink's own
        /// xattrs are read without a path race (Linux has no `getxattrat` before 6.13).
        pub(super) enum Target<'a> {
            Fd(BorrowedFd<'a>),
            Link(PathBuf),
        }

        fn unsupported(e: Errno) -> bool {
            e == Errno::OPNOTSUPP || e == Errno::NOTSUP
        }

        impl Target<'_> {
            pub(super) fn path(p: &std::path::Path) -> Target<'static> {
                Target::Link(p.to_path_buf())
            }

            pub(super) fn at(dir: &crate::sandbox::SafeDir, name: &OsStr) -> Target<'static> {
                use std::os::fd::AsFd;
                let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
                p.push(name);
                Target::Link(p)
            }

            fn list(&self) -> Result<Vec<Vec<u8>>, Errno> {
                let mut buf = vec![0u8; 1024];
                loop {
                    let r = match self {
                        Target::Fd(fd) => rfs::flistxattr(fd, &mut buf[..]),
                        Target::Link(p) => rfs::llistxattr(p, &mut buf[..]),
                    };
                    match r {
                        Ok(n) => {
                            buf.truncate(n);
                            break;
                        }
                        Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                        Err(e) if unsupported(e) => return Ok(Vec::new()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(buf
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect())
            }

            fn get(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
                let name = OsStr::from_bytes(name);
                let mut buf = vec![0u8; 256];
                loop {
                    let r = match self {
                        Target::Fd(fd) => rfs::fgetxattr(fd, name, &mut buf[..]),
                        Target::Link(p) => rfs::lgetxattr(p, name, &mut buf[..]),
                    };
                    match r {
                        Ok(n) => {
                            buf.truncate(n);
                            return Ok(buf);
                        }
                        Err(Errno::RANGE) => buf.resize(buf.len() * 8, 0),
                        Err(e) => return Err(e),
                    }
                }
            }

            fn set(&self, name: &[u8], value: &[u8]) -> Result<(), Errno> {
                let name = OsStr::from_bytes(name);
                let flags = rfs::XattrFlags::empty();
                match self {
                    Target::Fd(fd) => rfs::fsetxattr(fd, name, value, flags),
                    Target::Link(p) => rfs::lsetxattr(p, name, value, flags),
                }
            }

            fn remove(&self, name: &[u8]) -> Result<(), Errno> {
                let name = OsStr::from_bytes(name);
                match self {
                    Target::Fd(fd) => rfs::fremovexattr(fd, name),
                    Target::Link(p) => rfs::lremovexattr(p, name),
                }
            }

            /// Every recorded-namespace xattr that can be read, sorted by name.
            pub(super) fn list_all(&self) -> io::Result<Vec<Xattr>> {
                let mut out = Vec::new();
                for name in self.list()? {
                    if !is_recorded(&name) {
                        continue;
                    }
                    match self.get(&name) {
                        Ok(value) => out.push(Xattr { name, value }),
                        // Gone meanwhile, or not readable by this process.
                        Err(Errno::NODATA | Errno::PERM | Errno::ACCESS) => {}
                        Err(e) => {
                            return Err(io::Error::other(format!(
                                "{}: {}",
                                String::from_utf8_lossy(&name),
                                io::Error::from(e)
                            )))
                        }
                    }
                }
                out.sort();
                Ok(out)
            }

            /// Leaves exactly `want` (for the writable namespaces) on the entry.
            pub(super) fn replace(&self, want: &[Xattr], root: bool) -> io::Result<()> {
                let named = |name: &[u8], e: Errno| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("{}: {}", String::from_utf8_lossy(name), io::Error::from(e)),
                    )
                };
                let have = self.list()?;
                for name in &have {
                    if is_writable(name, root) && !want.iter().any(|x| &x.name == name) {
                        match self.remove(name) {
                            Ok(()) | Err(Errno::NODATA) => {}
                            Err(e) => return Err(named(name, e)),
                        }
                    }
                }
                for x in want {
                    if !is_writable(&x.name, root) {
                        // trusted.* and security.* need root; a user restore keeps going.
                        continue;
                    }
                    if let Ok(v) = self.get(&x.name) {
                        if v == x.value {
                            continue;
                        }
                    }
                    self.set(&x.name, &x.value).map_err(|e| named(&x.name, e))?;
                }
                Ok(())
            }
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    mod xattr {
        use super::super::Xattr;
        use std::ffi::OsStr;
        use std::io;
        use std::os::fd::BorrowedFd;

        /// Extended attributes are read and written on Linux only for now.
        pub(super) enum Target<'a> {
            Fd(#[allow(dead_code)] BorrowedFd<'a>),
            Link,
        }

        impl Target<'_> {
            pub(super) fn path(_p: &std::path::Path) -> Target<'static> {
                Target::Link
            }
            pub(super) fn at(_dir: &crate::sandbox::SafeDir, _name: &OsStr) -> Target<'static> {
                Target::Link
            }
            pub(super) fn list_all(&self) -> io::Result<Vec<Xattr>> {
                Ok(Vec::new())
            }
            pub(super) fn replace(&self, want: &[Xattr], _root: bool) -> io::Result<()> {
                if want.is_empty() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "extended attributes are restored on Linux only",
                    ))
                }
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn std_metadata_helpers_agree_with_lstat() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, vec![1u8; 10_000]).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o1751)).unwrap();
        let root = SafeDir::open_root(t.path()).unwrap();
        let want = read_at(&root, os("f")).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(mode_bits(&m), Some(0o1751));
        assert_eq!(mode_or_readonly(&m), 0o1751);
        assert_eq!(owner_of(&m), (want.uid, want.gid));
        assert_eq!(blocks_of(&m), Some(want.blocks));
        assert_eq!(permission_bits(0o100_4755), 0o4755);
    }

    fn tool(cmd: &str, args: &[&str]) -> bool {
        match Command::new(cmd).args(args).status() {
            Ok(s) => s.success(),
            Err(e) if crate::under_ci() => panic!("{cmd} is needed: {e}"),
            Err(_) => false,
        }
    }

    #[test]
    fn reads_full_metadata_without_following() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"hello").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o4751)).unwrap();
        std::fs::hard_link(&f, t.path().join("g")).unwrap();
        symlink("f", t.path().join("l")).unwrap();
        let dir = SafeDir::open_root(t.path()).unwrap();
        let m = read_at(&dir, os("f")).unwrap();
        assert_eq!(
            (m.kind, m.mode, m.size, m.nlink),
            (EntryKind::File, 0o4751, 5, 2)
        );
        let l = read_at(&dir, os("l")).unwrap();
        assert_eq!((l.kind, l.size), (EntryKind::Symlink, 1));
        assert_ne!(l.ino, m.ino);
        let via_fd = read_fd(std::fs::File::open(&f).unwrap(), &f).unwrap();
        assert_eq!(via_fd.ino, m.ino);
        assert!(read_at(&dir, os("missing")).is_err());
    }

    #[test]
    fn user_xattrs_and_acls_round_trip_and_replace_the_set() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let dir = SafeDir::open_root(t.path()).unwrap();
        let set = |p: &Path, n: &str, v: &[u8]| {
            rustix::fs::setxattr(p, n, v, rustix::fs::XattrFlags::empty())
        };
        if let Err(e) = set(&a, "user.color", b"blue") {
            // tmpfs before 6.6 has no user xattrs; CI runs on a disk-backed /tmp.
            assert!(!crate::under_ci(), "user xattrs on {:?}: {e}", t.path());
            return;
        }
        set(&a, "user.z", b"\0binary\xff").unwrap();
        assert!(tool(
            "setfacl",
            &["-m", "u:1234:rw,g:1234:r", a.to_str().unwrap()]
        ));
        let m = read_at(&dir, os("a")).unwrap();
        let names: Vec<_> = m
            .xattrs
            .iter()
            .map(|x| String::from_utf8_lossy(&x.name).into_owned())
            .collect();
        assert!(names.contains(&"user.color".to_owned()), "{names:?}");
        assert!(
            names.contains(&"system.posix_acl_access".to_owned()),
            "{names:?}"
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // b has an extra xattr that the recorded set does not: replacing removes it.
        set(&b, "user.stale", b"x").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        apply_fd(
            &f,
            &b,
            &Apply {
                mode: Some(m.mode),
                xattrs: Some(&m.xattrs),
                mtime_ns: Some(1_700_000_000_123_456_789),
                ..Apply::default()
            },
            false,
        )
        .unwrap();
        let mb = read_at(&dir, os("b")).unwrap();
        assert_eq!(mb.xattrs, m.xattrs);
        assert_eq!(mb.mode, m.mode);
        assert_eq!(mb.mtime_ns, 1_700_000_000_123_456_789);
        let out = Command::new("getfacl")
            .args(["-cn", b.to_str().unwrap()])
            .output()
            .unwrap();
        let acl = String::from_utf8_lossy(&out.stdout);
        assert!(
            acl.contains("user:1234:rw-") && acl.contains("group:1234:r--"),
            "{acl}"
        );
        // An empty recorded set strips them again.
        apply_fd(
            &f,
            &b,
            &Apply {
                xattrs: Some(&[]),
                ..Apply::default()
            },
            false,
        )
        .unwrap();
        assert!(read_at(&dir, os("b")).unwrap().xattrs.is_empty());
    }

    #[test]
    fn default_acls_on_folders_and_trusted_xattrs_on_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        assert!(tool(
            "setfacl",
            &["-d", "-m", "u:1234:rwx", d.to_str().unwrap()]
        ));
        let root = SafeDir::open_root(t.path()).unwrap();
        let m = read_at(&root, os("d")).unwrap();
        assert!(
            m.xattrs
                .iter()
                .any(|x| x.name == b"system.posix_acl_default"),
            "{m:?}"
        );
        let e = root.open_or_create_dir(os("e"), 0o700).unwrap().0;
        apply_fd(
            &e,
            &t.path().join("e"),
            &Apply {
                xattrs: Some(&m.xattrs),
                ..Apply::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(read_at(&root, os("e")).unwrap().xattrs, m.xattrs);
        // Symlinks: trusted.* (root only), never user.*; their own mtime and owner.
        symlink("nowhere", t.path().join("l")).unwrap();
        if !is_root() {
            return;
        }
        let x = vec![Xattr {
            name: b"trusted.k".to_vec(),
            value: b"v".to_vec(),
        }];
        match apply_symlink(
            &root,
            os("l"),
            &Apply {
                owner: Some((1234, 1234)),
                mtime_ns: Some(5_000_000_007),
                xattrs: Some(&x),
                mode: None,
            },
            true,
        ) {
            Ok(()) => {
                let l = read_at(&root, os("l")).unwrap();
                assert_eq!((l.uid, l.gid, l.mtime_ns), (1234, 1234, 5_000_000_007));
                assert_eq!(l.xattrs, x);
            }
            // tmpfs without trusted xattrs on symlinks.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported && !crate::under_ci() => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn owners_are_applied_by_root_only_and_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o6755)).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let root = SafeDir::open_root(t.path()).unwrap();
        let want = Apply {
            owner: Some((1234, 1234)),
            mode: Some(0o6755),
            ..Apply::default()
        };
        apply_fd(&f, &p, &want, false).unwrap();
        let me = read_at(&root, os("f")).unwrap();
        assert_eq!(me.uid, rustix::process::geteuid().as_raw());
        if !is_root() {
            assert!(!crate::under_ci(), "CI runs tests as root");
            return;
        }
        apply_fd(&f, &p, &want, true).unwrap();
        let m = read_at(&root, os("f")).unwrap();
        // Owner before mode: chown cleared setuid/setgid, the mode put them back.
        assert_eq!((m.uid, m.gid, m.mode), (1234, 1234, 0o6755));
        let mut names = Owners::default();
        assert_eq!(names.user(0).as_deref(), Some("root"));
        assert_eq!(names.group(0).as_deref(), Some("root"));
        assert_eq!(names.user(4_000_000_000), None);
        assert_eq!(names.user(0).as_deref(), Some("root"));
    }
}
