//! File access that cannot be steered by what lies on disk: reads inside the backup never
//! follow a symlink (a crafted increment tree could link `track/a` to `/etc`), and writes
//! under a restore target never pass through a symlink, whether it was there before or the
//! restore itself created it.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::relpath::RelPath;

fn refuse(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Resolves `root/rel` for reading, checking with `lstat` that no folder on the way (from
/// `root` down) is a symlink. Folders already checked are remembered.
#[derive(Default)]
pub(crate) struct SafeReader {
    checked: HashSet<PathBuf>,
}

impl SafeReader {
    /// `root` is a folder of the backup (`dist/mirror`, `dist/backup_X/track`); it and every
    /// folder below it down to `rel`'s parent must be real folders.
    pub(crate) fn resolve(&mut self, root: &Path, rel: &RelPath) -> io::Result<PathBuf> {
        self.check_dir(root)?;
        let mut p = root.to_path_buf();
        let comps: Vec<&[u8]> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            p.push(crate::relpath::os_from_bytes(c));
            if i + 1 < comps.len() {
                self.check_dir(&p)?;
            }
        }
        Ok(p)
    }

    fn check_dir(&mut self, dir: &Path) -> io::Result<()> {
        if self.checked.contains(dir) {
            return Ok(());
        }
        let md = std::fs::symlink_metadata(dir)?;
        if md.file_type().is_symlink() {
            return Err(refuse(format!(
                "{} is a symlink inside the backup; not following it",
                dir.display()
            )));
        }
        if !md.is_dir() {
            return Err(refuse(format!("{} is not a folder", dir.display())));
        }
        self.checked.insert(dir.to_path_buf());
        Ok(())
    }
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

/// Creates folders under a restore target, refusing any existing component that is not a
/// real folder. `dry_run` only checks.
pub(crate) struct SafeWriter {
    root: PathBuf,
    checked: HashSet<PathBuf>,
    dry_run: bool,
    /// Folders a dry run would create (so their children count as absent).
    planned: HashSet<PathBuf>,
}

impl SafeWriter {
    pub(crate) fn new(root: PathBuf, dry_run: bool) -> Self {
        SafeWriter {
            root,
            checked: HashSet::new(),
            dry_run,
            planned: HashSet::new(),
        }
    }

    /// Ensures every folder of `rel`'s parent exists under the root as a real folder and
    /// returns the destination path.
    pub(crate) fn prepare(&mut self, rel: &RelPath) -> io::Result<PathBuf> {
        let mut p = self.root.clone();
        let comps: Vec<&[u8]> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            p.push(crate::relpath::os_from_bytes(c));
            if i + 1 == comps.len() {
                break;
            }
            if self.checked.contains(&p) || self.planned.contains(&p) {
                continue;
            }
            let parent_planned = p.parent().is_some_and(|q| self.planned.contains(q));
            let md = if parent_planned {
                Err(io::Error::from(io::ErrorKind::NotFound))
            } else {
                std::fs::symlink_metadata(&p)
            };
            match md {
                Ok(md) if md.is_dir() && !md.file_type().is_symlink() => {
                    self.checked.insert(p.clone());
                }
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(refuse(format!(
                        "{} is a symlink; not writing through it",
                        p.display()
                    )))
                }
                Ok(_) => return Err(refuse(format!("{} is not a folder", p.display()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.dry_run {
                        self.planned.insert(p.clone());
                    } else {
                        // create_dir (not _all): the parent was checked just before.
                        std::fs::create_dir(&p)?;
                        self.checked.insert(p.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(p)
    }

    /// Whether the destination's parent is only planned (dry run): then it does not exist.
    pub(crate) fn is_planned_parent(&self, dest: &Path) -> bool {
        dest.parent().is_some_and(|q| self.planned.contains(q))
    }
}

/// Sets a symlink's own times (never its target's).
pub(crate) fn set_symlink_mtime(path: &Path, ns: i64) -> io::Result<()> {
    backup_platform::fs::set_times_nofollow(path, ns)
}
