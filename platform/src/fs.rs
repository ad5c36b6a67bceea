//! Durable file-system primitives.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` so that a reader sees either the old file or the complete new one
/// (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(data))
}

/// Writes what `fill` produces to `path` so that a reader sees either the old file or the
/// complete new one: a temporary sibling is written, fsynced and renamed over `path`, then
/// the folder is fsynced. Streaming through `fill` spares holding a large index in memory
/// twice; a failed write removes the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = io::BufWriter::with_capacity(256 * 1024, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `(device, inode)`: two paths with the same id are links to one file. `None` on Windows,
/// where std exposes no stable file id.
pub fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// Whether a process with this id exists. In doubt (it exists but may not be queried), true,
/// so callers keep what such a process might still own.
pub fn process_alive(pid: i32) -> bool {
    if pid as u32 == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only asks whether the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }
    #[cfg(windows)]
    {
        liveness(windows_probe(pid))
    }
    #[cfg(not(any(unix, windows)))]
    {
        true
    }
}

/// What asking Windows about a process id found (`OpenProcess`, `GetExitCodeProcess`).
#[cfg_attr(not(windows), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcessProbe {
    /// Opened; its exit code (`STILL_ACTIVE` = 259 while it runs).
    ExitCode(u32),
    /// It exists, but this user may not open it.
    AccessDenied,
    /// No process has this id (`ERROR_INVALID_PARAMETER`), or the id is not one.
    NoSuchProcess,
}

#[cfg_attr(not(windows), allow(dead_code))]
const STILL_ACTIVE: u32 = 259;

#[cfg_attr(not(windows), allow(dead_code))]
fn liveness(p: ProcessProbe) -> bool {
    match p {
        // A process that really exited with 259 is taken for alive: keeping its temporary
        // files a little longer is the safe mistake.
        ProcessProbe::ExitCode(code) => code == STILL_ACTIVE,
        ProcessProbe::AccessDenied => true,
        ProcessProbe::NoSuchProcess => false,
    }
}

#[cfg(windows)]
fn windows_probe(pid: i32) -> ProcessProbe {
    use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_ACCESS_DENIED};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    let Ok(pid) = u32::try_from(pid) else {
        return ProcessProbe::NoSuchProcess;
    };
    // SAFETY: OpenProcess takes plain values; a non-null handle is closed below.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        // SAFETY: reads this thread's last error.
        return match unsafe { GetLastError() } {
            ERROR_ACCESS_DENIED => ProcessProbe::AccessDenied,
            _ => ProcessProbe::NoSuchProcess,
        };
    }
    let mut code = 0u32;
    // SAFETY: `h` is a valid process handle and `code` a writable u32.
    let ok = unsafe { GetExitCodeProcess(h, &mut code) } != 0;
    // SAFETY: `h` was opened above and is closed once.
    unsafe { CloseHandle(h) };
    if ok {
        ProcessProbe::ExitCode(code)
    } else {
        ProcessProbe::AccessDenied
    }
}

/// Size figures of the file system holding a path (for a mount's `statfs` / volume size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeStats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free for this user (quotas, reserved blocks).
    pub available_bytes: u64,
    /// Allocation unit: fragment size on Unix, cluster size on Windows.
    pub block_size: u32,
    /// Inode count, where the platform has one.
    pub files: Option<u64>,
    /// Free inodes, where the platform has them.
    pub files_free: Option<u64>,
    pub name_max: u32,
}

impl VolumeStats {
    /// Whole blocks of [`VolumeStats::block_size`] in the volume.
    pub fn blocks(&self) -> u64 {
        self.total_bytes / u64::from(self.block_size.max(1))
    }
}

/// The size figures of the file system holding `path`: `statvfs` on Unix, the volume's
/// cluster size and `GetDiskFreeSpaceExW` figures on Windows (through `fs4`).
pub fn volume_stats(path: &Path) -> io::Result<VolumeStats> {
    #[cfg(unix)]
    {
        let s = rustix::fs::statvfs(path)?;
        #[allow(clippy::unnecessary_cast)]
        let frsize = s.f_frsize as u64;
        Ok(VolumeStats {
            total_bytes: frsize.saturating_mul(s.f_blocks as u64),
            free_bytes: frsize.saturating_mul(s.f_bfree as u64),
            available_bytes: frsize.saturating_mul(s.f_bavail as u64),
            block_size: u32::try_from(frsize).unwrap_or(u32::MAX),
            files: Some(s.f_files as u64),
            files_free: Some(s.f_ffree as u64),
            name_max: u32::try_from(s.f_namemax).unwrap_or(u32::MAX),
        })
    }
    #[cfg(not(unix))]
    {
        let s = fs4::statvfs(path)?;
        Ok(VolumeStats {
            total_bytes: s.total_space(),
            free_bytes: s.free_space(),
            available_bytes: s.available_space(),
            block_size: u32::try_from(s.allocation_granularity()).unwrap_or(4096),
            files: None,
            files_free: None,
            // NTFS and exFAT: 255 UTF-16 units per name.
            name_max: 255,
        })
    }
}

/// Opens a file of the backup for reading without following a symlink in its last component
/// and, where the kernel allows it (the file's owner or root), without touching its access
/// time: serving a backup must not change it, not even its timestamps.
pub fn open_backing(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |extra: i32| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | extra)
                .open(path)
        };
        #[cfg(target_os = "linux")]
        let first = open(libc::O_NOATIME);
        #[cfg(not(target_os = "linux"))]
        let first = open(0);
        match first {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        File::open(path)
    }
}

/// A hidden temporary name next to `path`, unique per process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Makes a directory's entries (creations, renames) durable. A no-op where directories cannot
/// be opened for syncing (Windows).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir) {
            Ok(f) => match f.sync_all() {
                Ok(()) => Ok(()),
                // Some file systems (FUSE mounts, exFAT drivers) refuse fsync on directories.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// What [`copy_new_observed`] saw of the source: its metadata right before and right after the
/// bytes were read, so the caller can tell a file that changed while being copied.
#[derive(Debug)]
pub struct CopyOutcome {
    pub len: u64,
    pub before: fs::Metadata,
    pub after: fs::Metadata,
    /// The new file, still open for writing: an fsync through it works whatever mode is set
    /// on the file afterwards.
    pub output: File,
}

const COPY_BUF: usize = 256 * 1024;

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; COPY_BUF]);
}

/// Copies the regular file `src` into a new file `dst` (refusing to open an existing one, so
/// an existing inode is never written into), handing every chunk read to `observe` (a hasher).
/// `dst` is removed again when the copy fails.
pub fn copy_new_observed(
    src: &Path,
    dst: &Path,
    observe: &mut dyn FnMut(&[u8]),
) -> io::Result<CopyOutcome> {
    use std::io::Read;
    let mut input = File::open(src)?;
    let before = input.metadata()?;
    if !before.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let result = BUF.with(|buf| -> io::Result<u64> {
        let mut buf = buf.borrow_mut();
        let mut len = 0u64;
        loop {
            let n = match input.read(&mut buf[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            observe(&buf[..n]);
            output.write_all(&buf[..n])?;
            len += n as u64;
        }
        Ok(len)
    });
    let len = match result {
        Ok(len) => len,
        Err(e) => {
            drop(output);
            let _ = fs::remove_file(dst);
            return Err(e);
        }
    };
    let after = input.metadata()?;
    Ok(CopyOutcome {
        len,
        before,
        after,
        output,
    })
}

/// A new file with no name, in `dir`'s file system (Linux `O_TMPFILE`), written and then
/// named with [`link_unnamed`]. The inode is allocated where `dir`'s are (ext4 places a new
/// inode in its folder's group: creating every file of a run in one staging folder makes
/// each allocation scan that one group), and a crash before it is named leaves nothing behind.
/// `Unsupported` where the file system or the OS has no such files (exFAT, FUSE, macOS).
pub fn create_unnamed(dir: &Path) -> io::Result<fs::File> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(fs::File::from(fd)),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => Err(io::ErrorKind::Unsupported.into()),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = dir;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Gives a file made by [`create_unnamed`] the name `to` (which must not exist).
pub fn link_unnamed(file: &fs::File, to: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{AtFlags, CWD};
        match rustix::fs::linkat(file, "", CWD, to, AtFlags::EMPTY_PATH) {
            Ok(()) => Ok(()),
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; through /proc any owner may link it.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
                use std::os::fd::AsRawFd;
                let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
                rustix::fs::linkat(CWD, proc.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW)
                    .map_err(io::Error::from)
            }
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (file, to);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// True when the file system cannot hold symlinks (exFAT through FUSE says ENOSYS, FAT EPERM).
pub fn is_symlink_unsupported(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::Unsupported || e.kind() == io::ErrorKind::PermissionDenied
    }
}

/// The longest symlink target stored as a plain file (Linux's `PATH_MAX`).
pub const STORED_LINK_MAX: u64 = 4096;

/// Where `dist` cannot hold symlinks, a symlink is stored as a plain file holding its target
/// (the index and catalog say it is a symlink). `target_of_stored` reads either form.
pub fn target_of_stored_file(f: fs::File) -> io::Result<PathBuf> {
    use std::io::Read;
    let mut b = Vec::new();
    f.take(STORED_LINK_MAX + 1).read_to_end(&mut b)?;
    if b.len() as u64 > STORED_LINK_MAX || b.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a stored symlink target",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(b)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(b)
            .map(PathBuf::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The target of a stored symlink at `path`: the link's own, or the content of the plain file
/// standing in for it (see [`target_of_stored_file`]).
pub fn read_stored_link(path: &Path) -> io::Result<PathBuf> {
    match fs::read_link(path) {
        Ok(t) => Ok(t),
        Err(_) if fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) => {
            target_of_stored_file(fs::File::open(path)?)
        }
        Err(e) => Err(e),
    }
}

/// Stores a symlink to `target` at `link`, or, where the file system cannot hold symlinks, a
/// plain file holding the target. Returns false for the plain-file form.
pub fn store_symlink(target: &Path, link: &Path) -> io::Result<bool> {
    match symlink(target, link) {
        Ok(()) => Ok(true),
        Err(e) if is_symlink_unsupported(&e) => {
            fs::write(link, target.as_os_str().as_encoded_bytes())?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Sets the modification time of `path` itself (a symlink is not followed), leaving atime.
pub fn set_mtime_nofollow(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let atime = filetime::FileTime::from_last_access_time(&fs::symlink_metadata(path)?);
    filetime::set_symlink_file_times(path, atime, file_time(mtime_ns))
}

/// Sets both times of `path` itself (a symlink is not followed) to `ns`.
pub fn set_times_nofollow(path: &Path, ns: i64) -> io::Result<()> {
    filetime::set_symlink_file_times(path, file_time(ns), file_time(ns))
}

/// Nanoseconds since the epoch (negative before it) as a `FileTime`.
fn file_time(ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Sets permission bits (`mode & 0o7777`) of a file (not for symlinks).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// [`set_mode`], falling back to the plain permission bits (`mode & 0o777`) where the file
/// system refuses setuid, setgid and sticky bits (exFAT); the index keeps the full mode, so
/// what the file system cannot hold is not an error.
pub fn set_mode_lenient(path: &Path, mode: u32) {
    if set_mode(path, mode).is_err() {
        let _ = set_mode(path, mode & 0o777);
    }
}

/// Creates a symlink `link` pointing at `target` (the target is stored, never resolved).
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::symlink_file(target, link)
    }
}

/// True when a `link(2)` failure means the file system cannot hard-link at all (exFAT/FAT,
/// some network shares), as opposed to a problem with this one file.
pub fn is_link_unsupported(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EPERM)
                | Some(libc::EOPNOTSUPP)
                | Some(libc::ENOSYS)
                | Some(libc::EXDEV)
                | Some(libc::EMLINK)
        ) || e.kind() == io::ErrorKind::Unsupported
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::Unsupported
    }
}

/// True for "no space left on device" and "disk quota exceeded".
pub fn is_disk_full(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || e.kind() == io::ErrorKind::StorageFull
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::StorageFull
    }
}

/// Flushes every dirty page of the file system holding `dir` (Linux `syncfs`); elsewhere a
/// fsync of the directory.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let f = File::open(dir)?;
        // SAFETY: the descriptor is valid for the lifetime of `f`.
        if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        fsync_dir(dir)
    }
}

/// Whether `dir` is on a FUSE file system (exfat-fuse, ntfs-3g, sshfs, rclone, ...): there
/// each request is a round trip to a daemon that often serializes them, so concurrency that
/// helps a local disk slows it down. `false` where it cannot be told (other platforms).
pub fn on_fuse(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// Starts writing `file`'s dirty pages to the disk without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` on Linux): a later fsync then has less to wait for. Durability
/// still comes from that fsync only; a no-op elsewhere, and failures are ignored.
pub fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor for the lifetime of `file`; offset 0, length 0 = the
        // whole file.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
    }
}

/// `fsync(2)` of a file by path: its data and attributes become durable. Opened read-only
/// where the platform syncs through any descriptor (a stored file may be read-only); Windows
/// needs write access to flush.
pub fn fsync_file(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .read(true)
        .write(cfg!(windows))
        .open(path)?
        .sync_all()
}

/// An exclusive lock on a file, held until dropped. The kernel releases it when the process
/// dies (even by kill -9), so a stale lock file never blocks a later run. `flock` on Unix,
/// `LockFileEx` on Windows (through `fs4`); never waited for.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock without waiting: `Ok(None)` when another process holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // The trait's name, not method syntax: std's own `File::try_lock` (newer than the
        // declared rust-version) would be picked where it exists.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => return Ok(None),
            // Some FUSE file systems have no flock; an O_EXCL pid file would need manual
            // staleness checks, so refuse to pretend and report the error.
            Err(fs4::TryLockError::Error(e)) => return Err(e),
        }
        // Who holds it, for people looking at the file; the lock itself is the flock.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Some(FileLock {
            _file: file,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another process holds the lock now, without taking it for longer than the
    /// question takes and without creating the file (read-only commands must not write).
    pub fn is_held(path: &Path) -> io::Result<bool> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // A shared lock conflicts only with the writer's exclusive one.
            // SAFETY: the descriptor is valid for the lifetime of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(true);
                }
                return Err(e);
            }
            // Dropping `file` releases the shared lock.
            Ok(false)
        }
        #[cfg(not(unix))]
        {
            drop(file);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn copy_observes_every_byte_and_refuses_existing_target() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let dst = d.path().join("d");
        let mut seen = Vec::new();
        let out = copy_new_observed(&src, &dst, &mut |c| seen.extend_from_slice(c)).unwrap();
        assert_eq!(out.len, data.len() as u64);
        assert_eq!(seen, data);
        assert_eq!(fs::read(&dst).unwrap(), data);
        assert!(copy_new_observed(&src, &dst, &mut |_| {}).is_err());
    }

    #[test]
    fn mtime_is_set_on_the_symlink_itself() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        fs::write(&target, b"x").unwrap();
        let link = d.path().join("l");
        symlink(&target, &link).unwrap();
        set_mtime_nofollow(&link, 1_000_000_123).unwrap();
        let lm = fs::symlink_metadata(&link).unwrap();
        assert_eq!((lm.mtime(), lm.mtime_nsec()), (1, 123));
        assert_ne!(fs::metadata(&target).unwrap().mtime(), 1);
    }

    #[test]
    fn mtime_leaves_atime_and_handles_times_before_1970() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        set_times_nofollow(&f, 5_000_000_007).unwrap();
        set_mtime_nofollow(&f, -1_500_000_000).unwrap();
        let m = fs::symlink_metadata(&f).unwrap();
        let mtime = filetime::FileTime::from_last_modification_time(&m);
        let atime = filetime::FileTime::from_last_access_time(&m);
        assert_eq!(
            (mtime.unix_seconds(), mtime.nanoseconds()),
            (-2, 500_000_000)
        );
        assert_eq!((atime.unix_seconds(), atime.nanoseconds()), (5, 7));
    }

    #[test]
    fn process_liveness_from_what_windows_answers() {
        assert!(liveness(ProcessProbe::ExitCode(STILL_ACTIVE)));
        assert!(!liveness(ProcessProbe::ExitCode(0)));
        assert!(!liveness(ProcessProbe::ExitCode(1)));
        assert!(liveness(ProcessProbe::AccessDenied));
        assert!(!liveness(ProcessProbe::NoSuchProcess));
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn volume_stats_agree_with_statvfs() {
        let d = tempfile::tempdir().unwrap();
        let v = volume_stats(d.path()).unwrap();
        let s = rustix::fs::statvfs(d.path()).unwrap();
        assert_eq!(v.block_size as u64, s.f_frsize);
        assert_eq!(v.blocks(), s.f_blocks);
        assert_eq!(v.files, Some(s.f_files));
        assert!(v.total_bytes >= v.free_bytes && v.free_bytes >= v.available_bytes);
        assert!(volume_stats(&d.path().join("missing")).is_err());
        let cluster = VolumeStats {
            total_bytes: 10 * 4096 + 100,
            free_bytes: 0,
            available_bytes: 0,
            block_size: 4096,
            files: None,
            name_max: 255,
            files_free: Default::default(),
        };
        assert_eq!(cluster.blocks(), 10);
        assert_eq!(
            VolumeStats {
                block_size: 0,
                ..cluster
            }
            .blocks(),
            cluster.total_bytes
        );
    }

    #[test]
    fn a_lock_held_by_another_process_is_refused_and_freed_when_it_dies() {
        use std::io::BufRead;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        // A shell takes the lock with flock(1), says so, and becomes `sleep` (same process,
        // same descriptor): killing it is the holder dying.
        let mut holder = std::process::Command::new("sh")
            .args([
                "-c",
                r#"exec 9>>"$0"; flock -x -n 9 && echo locked && exec sleep 600"#,
            ])
            .arg(&p)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line, "locked\n",
            "flock(1) (util-linux) could not take the lock"
        );
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(acquired_soon(&p));
    }

    /// A test running beside this one may fork between our open and our drop: until the
    /// child's exec closes its copy of the descriptor (O_CLOEXEC), the copy shares the open
    /// file description and so the flock. That holds for milliseconds, so allow a few seconds
    /// before calling the lock stuck (found by CI: the other lock test spawns `sh`).
    fn acquired_soon(p: &Path) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if FileLock::try_acquire(p).unwrap().is_some() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let first = FileLock::try_acquire(&p).unwrap().unwrap();
        // flock locks belong to the open file description, so a second open conflicts.
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(acquired_soon(&p));
    }
}
