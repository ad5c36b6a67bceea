//! WinFsp adapter (Windows): serves a [`ReadOnlyFs`] through `winfsp`.
//!
//! WinFsp speaks in paths, so each open resolves its path component by component through
//! `lookup`. The volume is created read-only (WinFsp then refuses every write itself) and the
//! write-type callbacks answer "write protected" as well. Symbolic links are left out of
//! listings: showing them needs reparse-point support, and following them on Windows could
//! leave the backup. Caches expire after one second instead of being invalidated.

use std::ffi::{c_void, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, FineGuard, VolumeParams};
use winfsp::{FspError, U16CStr};

use crate::rofs::{FsError, Ino, NodeAttr, NodeKind, ReadOnlyFs, ROOT_INO};

// NTSTATUS values (ntstatus.h).
const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
const STATUS_NOT_A_DIRECTORY: i32 = 0xC000_0103_u32 as i32;
const STATUS_FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32 as i32;
const STATUS_MEDIA_WRITE_PROTECTED: i32 = 0xC000_00A2_u32 as i32;
const STATUS_IO_DEVICE_ERROR: i32 = 0xC000_0185_u32 as i32;
const STATUS_NOT_A_REPARSE_POINT: i32 = 0xC000_0275_u32 as i32;
const STATUS_NO_EAS_ON_FILE: i32 = 0xC000_0052_u32 as i32;
const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;

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

fn nt(e: &FsError) -> FspError {
    FspError::NTSTATUS(match e {
        FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        FsError::NotDir => STATUS_NOT_A_DIRECTORY,
        FsError::IsDir => STATUS_FILE_IS_A_DIRECTORY,
        FsError::ReadOnly => STATUS_MEDIA_WRITE_PROTECTED,
        FsError::NotSymlink => STATUS_NOT_A_REPARSE_POINT,
        FsError::NoData => STATUS_NO_EAS_ON_FILE,
        FsError::Io(_) => STATUS_IO_DEVICE_ERROR,
    })
}

fn write_protected() -> FspError {
    FspError::NTSTATUS(STATUS_MEDIA_WRITE_PROTECTED)
}

fn filetime(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => FILETIME_UNIX_EPOCH + (d.as_nanos() / 100) as u64,
        Err(e) => FILETIME_UNIX_EPOCH.saturating_sub((e.duration().as_nanos() / 100) as u64),
    }
}

fn fill(info: &mut FileInfo, a: &NodeAttr) {
    let dir = a.kind == NodeKind::Dir;
    info.file_attributes = FILE_ATTRIBUTE_READONLY | if dir { FILE_ATTRIBUTE_DIRECTORY } else { 0 };
    info.reparse_tag = 0;
    info.file_size = if dir { 0 } else { a.size };
    info.allocation_size = info.file_size.div_ceil(4096) * 4096;
    let t = filetime(a.mtime);
    info.creation_time = t;
    info.last_access_time = t;
    info.last_write_time = t;
    info.change_time = t;
    info.index_number = a.ino;
    info.hard_links = 0;
    info.ea_size = 0;
}

/// One open file or directory.
pub struct Handle {
    ino: Ino,
    kind: NodeKind,
    file: Option<File>,
    dir: DirBuffer,
}

struct Adapter<F: ReadOnlyFs> {
    fs: Arc<F>,
}

impl<F: ReadOnlyFs> Adapter<F> {
    /// `\a\b\c` → the attributes of `c`, walking from the root.
    fn resolve(&self, name: &U16CStr) -> Result<NodeAttr, FsError> {
        let mut attr = self.fs.getattr(ROOT_INO)?;
        for comp in name.as_slice().split(|&c| c == u16::from(b'\\')) {
            if comp.is_empty() {
                continue;
            }
            let comp = OsString::from_wide(comp);
            attr = self.fs.lookup(attr.ino, &comp)?;
            if attr.kind == NodeKind::Symlink {
                return Err(FsError::NotFound);
            }
        }
        Ok(attr)
    }
}

impl<F: ReadOnlyFs> FileSystemContext for Adapter<F> {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        _security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let a = self.resolve(file_name).map_err(|e| nt(&e))?;
        let mut info = FileInfo::default();
        fill(&mut info, &a);
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: 0,
            attributes: info.file_attributes,
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        if granted_access & WRITE_ACCESS != 0 {
            return Err(write_protected());
        }
        let a = self.resolve(file_name).map_err(|e| nt(&e))?;
        let file = match a.kind {
            NodeKind::File => Some(self.fs.open(a.ino).map_err(|e| nt(&e))?),
            _ => None,
        };
        fill(file_info.as_mut(), &a);
        Ok(Handle {
            ino: a.ino,
            kind: a.kind,
            file,
            dir: DirBuffer::new(),
        })
    }

    fn close(&self, _context: Handle) {}

    fn get_file_info(&self, context: &Handle, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let a = self.fs.getattr(context.ino).map_err(|e| nt(&e))?;
        fill(file_info, &a);
        Ok(())
    }

    fn read(&self, context: &Handle, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
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
            return Err(FspError::NTSTATUS(STATUS_END_OF_FILE));
        }
        Ok(filled as u32)
    }

    fn read_directory(
        &self,
        context: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        if context.kind != NodeKind::Dir {
            return Err(nt(&FsError::NotDir));
        }
        if marker.is_none() {
            // First call on this handle: fill the buffer once; WinFsp pages through it.
            let entries = self.fs.readdir(context.ino).map_err(|e| nt(&e))?;
            let lock = context.dir.acquire(true, Some(entries.len() as u32 + 2))?;
            if context.ino != ROOT_INO {
                for (name, ino) in [(".", context.ino), ("..", self.fs.parent(context.ino))] {
                    if let Ok(a) = self.fs.getattr(ino) {
                        let mut di: DirInfo = DirInfo::new();
                        fill(di.file_info_mut(), &a);
                        if di.set_name(OsStr::new(name)).is_ok() {
                            lock.write(&mut di)?;
                        }
                    }
                }
            }
            for e in entries {
                if e.kind == NodeKind::Symlink {
                    continue;
                }
                let Ok(a) = self.fs.lookup(context.ino, &e.name) else {
                    continue;
                };
                let mut di: DirInfo = DirInfo::new();
                fill(di.file_info_mut(), &a);
                // Names longer than a DirInfo holds are left out rather than cut.
                if di.set_name(&e.name).is_ok() {
                    lock.write(&mut di)?;
                }
            }
        }
        Ok(context.dir.read(marker, buffer))
    }

    fn get_volume_info(&self, out: &mut VolumeInfo) -> winfsp::Result<()> {
        let s = self.fs.statfs().map_err(|e| nt(&e))?;
        out.total_size = s.blocks.saturating_mul(u64::from(s.block_size));
        out.free_size = s.blocks_avail.saturating_mul(u64::from(s.block_size));
        out.set_volume_label("backup");
        Ok(())
    }

    // Write-type requests: the volume is read-only.

    fn create(
        &self,
        _file_name: &U16CStr,
        _create_options: u32,
        _granted_access: u32,
        _file_attributes: u32,
        _security_descriptor: Option<&[c_void]>,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        _file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        Err(write_protected())
    }

    fn overwrite(
        &self,
        _context: &Handle,
        _file_attributes: u32,
        _replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        Err(write_protected())
    }

    fn write(
        &self,
        _context: &Handle,
        _buffer: &[u8],
        _offset: u64,
        _write_to_eof: bool,
        _constrained_io: bool,
        _file_info: &mut FileInfo,
    ) -> winfsp::Result<u32> {
        Err(write_protected())
    }

    fn rename(
        &self,
        _context: &Handle,
        _file_name: &U16CStr,
        _new_file_name: &U16CStr,
        _replace_if_exists: bool,
    ) -> winfsp::Result<()> {
        Err(write_protected())
    }

    fn set_basic_info(
        &self,
        _context: &Handle,
        _file_attributes: u32,
        _creation_time: u64,
        _last_access_time: u64,
        _last_write_time: u64,
        _last_change_time: u64,
        _file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        Err(write_protected())
    }

    fn set_delete(
        &self,
        _context: &Handle,
        _file_name: &U16CStr,
        _delete_file: bool,
    ) -> winfsp::Result<()> {
        Err(write_protected())
    }

    fn set_file_size(
        &self,
        _context: &Handle,
        _new_size: u64,
        _set_allocation_size: bool,
        _file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        Err(write_protected())
    }
}

/// What the caller asks of a mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub volume_label: String,
}

/// A mounted tree; unmounts when dropped.
pub struct Mounted<F: ReadOnlyFs> {
    host: FileSystemHost<Adapter<F>>,
}

impl<F: ReadOnlyFs> Drop for Mounted<F> {
    fn drop(&mut self) {
        self.host.stop();
        self.host.unmount();
    }
}

/// Mounts `fs` read-only on `mountpoint` (a drive letter such as `X:` or a folder that does
/// not exist yet) and serves it from WinFsp's dispatcher threads.
pub fn mount<F: ReadOnlyFs>(
    fs: Arc<F>,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<Mounted<F>> {
    let _ = cfg;
    winfsp::winfsp_init().map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "WinFsp is not installed (https://winfsp.dev)",
        )
    })?;
    let mut params = VolumeParams::new();
    params
        .filesystem_name("backup")
        .read_only_volume(true)
        .case_sensitive_search(true)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .sector_size(4096)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        .file_info_timeout(1000);
    let adapter = Adapter { fs };
    let mut host = FileSystemHost::<Adapter<F>, FineGuard>::new(params, adapter)
        .map_err(|e| io::Error::other(format!("cannot create the file system: {e:?}")))?;
    host.mount(mountpoint.as_os_str())
        .map_err(|e| io::Error::other(format!("cannot mount: {e:?}")))?;
    host.start()
        .map_err(|e| io::Error::other(format!("cannot start: {e:?}")))?;
    Ok(Mounted { host })
}
