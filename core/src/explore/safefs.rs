//! Opening a stored file for `check` and `recreate` without following a symlink in its last
//! component. (`restore` goes through `backup_platform::sandbox`, which refuses a symlink in
//! every component.)

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

fn refuse(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Opens a regular file without following a symlink in its last component.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<(File, Metadata)> {
    let open = |extra: i32| {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.custom_flags(libc::O_NOFOLLOW | extra);
        }
        #[cfg(not(unix))]
        let _ = extra;
        opts.open(path)
    };
    // Reading must not even move the access time of a stored file; O_NOATIME is refused for
    // files of other owners (EPERM), then a plain open will do.
    #[cfg(target_os = "linux")]
    let f = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0)?,
        r => r?,
    };
    #[cfg(not(target_os = "linux"))]
    let f = open(0)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    Ok((f, md))
}
