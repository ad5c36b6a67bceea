//! WinFsp adapter (Windows): serves a [`ReadOnlyFs`] through `winfsp_wrs` (MIT, by Scille;
//! bindings generated ahead of time, so it type-checks from Linux with no SDK).
//!
//! WinFsp speaks in paths, so each open resolves its path component by component through
//! `lookup`. The volume is created read-only (WinFsp then refuses every write itself) and the
//! write-type callbacks are left undefined, which WinFsp answers with an error. Symbolic links
//! are left out of listings: showing them needs reparse-point support, and following them on
//! Windows could leave the backup. Caches expire after one second instead of being
//! invalidated.
//!
//! The WinFsp DLL itself is GPLv3 with a FLOSS exception; it is not shipped with this program:
//! it is loaded at run time from a WinFsp installation (see README, License).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use winfsp_wrs::{
    CreateOptions, DirInfo, FileAccessRights, FileAttributes, FileInfo, FileSystem,
    FileSystemInterface, PSecurityDescriptor, Params, U16CStr, U16CString, U16String, VolumeInfo,
    VolumeParams, NTSTATUS,
};

use crate::rofs::{FsError, Ino, NodeAttr, NodeKind, ReadOnlyFs, ROOT_INO};

// NTSTATUS values (ntstatus.h).
const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as i32;
const STATUS_NOT_A_DIRECTORY: NTSTATUS = 0xC000_0103_u32 as i32;
const STATUS_FILE_IS_A_DIRECTORY: NTSTATUS = 0xC000_00BA_u32 as i32;
const STATUS_MEDIA_WRITE_PROTECTED: NTSTATUS = 0xC000_00A2_u32 as i32;
const STATUS_IO_DEVICE_ERROR: NTSTATUS = 0xC000_0185_u32 as i32;
const STATUS_NOT_A_REPARSE_POINT: NTSTATUS = 0xC000_0275_u32 as i32;
const STATUS_NO_EAS_ON_FILE: NTSTATUS = 0xC000_0052_u32 as i32;
const STATUS_END_OF_FILE: NTSTATUS = 0xC000_0011_u32 as i32;

const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;

/// Access rights that would change something.
const WRITE_ACCESS: u32 = 0x2 /* FILE_WRITE_DATA */
    | 0x4 /* FILE_APPEND_DATA */
    | 0x10 /* FILE_WRITE_EA */
    | 0x100 /* FILE_WRITE_ATTRIBUTES */
    | 0x1_0000 /* DELETE */
    | 0x4_0000 /* WRITE_DAC */
    | 0x8_0000 /* WRITE_OWNER */;

/// 100 ns intervals between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

/// Longest name a directory entry holds, in UTF-16 units.
const NAME_MAX: usize = 255;

fn nt(e: &FsError) -> NTSTATUS {
    match e {
        FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        FsError::NotDir => STATUS_NOT_A_DIRECTORY,
        FsError::IsDir => STATUS_FILE_IS_A_DIRECTORY,
        FsError::ReadOnly => STATUS_MEDIA_WRITE_PROTECTED,
        FsError::NotSymlink => STATUS_NOT_A_REPARSE_POINT,
        FsError::NoData => STATUS_NO_EAS_ON_FILE,
        FsError::Io(_) => STATUS_IO_DEVICE_ERROR,
    }
}

fn filetime(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => FILETIME_UNIX_EPOCH + (d.as_nanos() / 100) as u64,
        Err(e) => FILETIME_UNIX_EPOCH.saturating_sub((e.duration().as_nanos() / 100) as u64),
    }
}

fn attributes(a: &NodeAttr) -> FileAttributes {
    let dir = a.kind == NodeKind::Dir;
    FileAttributes(FILE_ATTRIBUTE_READONLY | if dir { FILE_ATTRIBUTE_DIRECTORY } else { 0 })
}

fn file_info(a: &NodeAttr) -> FileInfo {
    let size = if a.kind == NodeKind::Dir { 0 } else { a.size };
    let mut info = FileInfo::default();
    info.set_file_attributes(attributes(a))
        .set_reparse_tag(0)
        .set_file_size(size)
        .set_allocation_size(size.div_ceil(4096) * 4096)
        .set_time(filetime(a.mtime))
        .set_index_number(a.ino)
        .set_hard_links(0)
        .set_ea_size(0);
    info
}

/// A directory's entries with their attributes, sorted by name.
type Listing = Arc<Vec<(U16CString, FileInfo)>>;

/// One open file or directory.
pub struct Handle {
    ino: Ino,
    kind: NodeKind,
    file: Option<File>,
    /// A directory's entries (sorted by name), listed on the first read of this handle so
    /// WinFsp can page through a listing that does not move under it.
    listing: Mutex<Option<Listing>>,
}

struct Adapter<F: ReadOnlyFs> {
    fs: Arc<F>,
    label: U16String,
}

impl<F: ReadOnlyFs> Adapter<F> {
    /// `\a\b\c` → the attributes of `c`, walking from the root.
    fn resolve(&self, st: &F::State, name: &U16CStr) -> Result<NodeAttr, FsError> {
        let mut attr = self.fs.getattr(st, ROOT_INO)?;
        for comp in name.as_slice().split(|&c| c == u16::from(b'\\')) {
            if comp.is_empty() {
                continue;
            }
            let comp = OsString::from_wide(comp);
            attr = self.fs.lookup(st, attr.ino, &comp)?;
            if attr.kind == NodeKind::Symlink {
                return Err(FsError::NotFound);
            }
        }
        Ok(attr)
    }

    fn list(&self, h: &Handle) -> Result<Listing, FsError> {
        let mut slot = h.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*slot {
            return Ok(Arc::clone(l));
        }
        let st = self.fs.state();
        let mut out = Vec::new();
        if h.ino != ROOT_INO {
            for (name, ino) in [(".", h.ino), ("..", self.fs.parent(h.ino))] {
                if let (Ok(a), Ok(n)) = (self.fs.getattr(&st, ino), U16CString::from_str(name)) {
                    out.push((n, file_info(&a)));
                }
            }
        }
        let mut rest = Vec::new();
        // Entries with their attributes in one pass (a lookup per entry did the work twice).
        for (e, a) in self.fs.readdir_plus(&st, h.ino)? {
            if e.kind == NodeKind::Symlink {
                continue;
            }
            // Names longer than an entry holds (or with a NUL) are left out rather than cut.
            let Ok(n) = U16CString::from_os_str(&e.name) else {
                continue;
            };
            if n.len() > NAME_MAX {
                continue;
            }
            rest.push((n, file_info(&a)));
        }
        rest.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
        out.extend(rest);
        let l = Arc::new(out);
        *slot = Some(Arc::clone(&l));
        Ok(l)
    }
}

impl<F: ReadOnlyFs> FileSystemInterface for Adapter<F> {
    type FileContext = Arc<Handle>;

    const GET_VOLUME_INFO_DEFINED: bool = true;
    const GET_SECURITY_BY_NAME_DEFINED: bool = true;
    const OPEN_DEFINED: bool = true;
    const CLOSE_DEFINED: bool = true;
    const READ_DEFINED: bool = true;
    const GET_FILE_INFO_DEFINED: bool = true;
    const READ_DIRECTORY_DEFINED: bool = true;

    fn get_volume_info(&self) -> Result<VolumeInfo, NTSTATUS> {
        let s = self.fs.statfs().map_err(|e| nt(&e))?;
        let total = s.blocks.saturating_mul(u64::from(s.block_size));
        let free = s.blocks_avail.saturating_mul(u64::from(s.block_size));
        VolumeInfo::new(total, free, &self.label).map_err(|_| STATUS_IO_DEVICE_ERROR)
    }

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        _find_reparse_point: impl Fn() -> Option<FileAttributes>,
    ) -> Result<(FileAttributes, PSecurityDescriptor, bool), NTSTATUS> {
        let a = self
            .resolve(&self.fs.state(), file_name)
            .map_err(|e| nt(&e))?;
        Ok((attributes(&a), PSecurityDescriptor::default(), false))
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: CreateOptions,
        granted_access: FileAccessRights,
    ) -> Result<(Arc<Handle>, FileInfo), NTSTATUS> {
        if granted_access.0 & WRITE_ACCESS != 0 {
            return Err(STATUS_MEDIA_WRITE_PROTECTED);
        }
        let st = self.fs.state();
        let a = self.resolve(&st, file_name).map_err(|e| nt(&e))?;
        let file = match a.kind {
            NodeKind::File => Some(self.fs.open(&st, a.ino).map_err(|e| nt(&e))?),
            _ => None,
        };
        let h = Handle {
            ino: a.ino,
            kind: a.kind,
            file,
            listing: Mutex::new(None),
        };
        Ok((Arc::new(h), file_info(&a)))
    }

    fn close(&self, _context: Arc<Handle>) {}

    fn get_file_info(&self, context: Arc<Handle>) -> Result<FileInfo, NTSTATUS> {
        let a = self
            .fs
            .getattr(&self.fs.state(), context.ino)
            .map_err(|e| nt(&e))?;
        Ok(file_info(&a))
    }

    fn read(
        &self,
        context: Arc<Handle>,
        buffer: &mut [u8],
        offset: u64,
    ) -> Result<usize, NTSTATUS> {
        let Some(file) = &context.file else {
            return Err(nt(&FsError::IsDir));
        };
        let mut filled = 0usize;
        while filled < buffer.len() {
            match file.seek_read(&mut buffer[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(nt(&FsError::from_io(&e))),
            }
        }
        if filled == 0 && !buffer.is_empty() {
            return Err(STATUS_END_OF_FILE);
        }
        Ok(filled)
    }

    fn read_directory(
        &self,
        context: Arc<Handle>,
        marker: Option<&U16CStr>,
        mut add_dir_info: impl FnMut(DirInfo) -> bool,
    ) -> Result<(), NTSTATUS> {
        if context.kind != NodeKind::Dir {
            return Err(nt(&FsError::NotDir));
        }
        let listing = self.list(&context).map_err(|e| nt(&e))?;
        // Resume after the marker: the last name WinFsp received.
        let start = match marker {
            None => 0,
            Some(m) => listing
                .iter()
                .position(|(n, _)| n.as_ucstr() == m)
                .map(|i| i + 1)
                .unwrap_or_else(|| listing.partition_point(|(n, _)| n.as_slice() <= m.as_slice())),
        };
        for (name, info) in &listing[start..] {
            if !add_dir_info(DirInfo::new(*info, name)) {
                break;
            }
        }
        Ok(())
    }
}

/// What the caller asks of a mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub volume_label: String,
}

/// A mounted tree; unmounts when dropped.
pub struct Mounted<F: ReadOnlyFs> {
    fs: Option<FileSystem>,
    _tree: std::marker::PhantomData<F>,
}

impl<F: ReadOnlyFs> Drop for Mounted<F> {
    fn drop(&mut self) {
        if let Some(fs) = self.fs.take() {
            fs.stop();
        }
    }
}

/// Mounts `fs` read-only on `mountpoint` (a drive letter such as `X:` or a folder that does
/// not exist yet) and serves it from WinFsp's dispatcher threads.
pub fn mount<F: ReadOnlyFs>(
    fs: Arc<F>,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<Mounted<F>> {
    winfsp_wrs::init().map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "WinFsp is not installed (https://winfsp.dev); `backup-tool serve` needs no driver",
        )
    })?;
    let mut volume = VolumeParams::default();
    volume
        .set_read_only_volume(true)
        .set_case_sensitive_search(true)
        .set_case_preserved_names(true)
        .set_unicode_on_disk(true)
        .set_sector_size(4096)
        .set_sectors_per_allocation_unit(1)
        .set_max_component_length(NAME_MAX as u16)
        .set_file_info_timeout(1000);
    let name = U16CString::from_str("backup").map_err(io::Error::other)?;
    let _ = volume.set_file_system_name(&name);
    let params = Params {
        volume_params: volume,
        ..Params::default()
    };
    let point = U16CString::from_os_str(mountpoint.as_os_str()).map_err(io::Error::other)?;
    let label = U16String::from_str(&cfg.volume_label);
    let adapter = Adapter { fs, label };
    let host = FileSystem::start(params, Some(&point), adapter)
        .map_err(|st| io::Error::other(format!("cannot mount: NTSTATUS {st:#x}")))?;
    Ok(Mounted {
        fs: Some(host),
        _tree: std::marker::PhantomData,
    })
}
