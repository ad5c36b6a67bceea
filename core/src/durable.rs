//! Durability: what a run makes durable before its metadata may say so, with calls that reach
//! every file system, FUSE included.
//!
//! A file's bytes and attributes are durable after `fsync` of the file; a name (created,
//! renamed, linked, removed) after `fsync` of its directory. Nothing else is promised by POSIX,
//! and a FUSE mount (ntfs-3g, exfat-fuse, sshfs, rclone) gets nothing else: the kernel does
//! not forward `syncfs(2)` to a FUSE daemon, so it returns success having flushed nothing.
//! So `syncfs` is never what a run relies on, on any file system.
//!
//! A [`SyncSet`] collects, while a run works, the directories that gained or lost entries; each
//! new file is fsynced before anything links to it, by the pipeline's installers (many at
//! once: a journaling file system commits concurrent fsyncs together). [`SyncSet::flush`] then
//! fsyncs the directories in an order that keeps a cut between two of them harmless:
//! increment folders first (the destinations of links and of deletions' renames), then the
//! mirror's, then `dist`. Only after that may metadata be written.
//!
//! `BACKUP_SYNC=syncfs` replaces all of it by one `syncfs` (for benchmarks and the recovery
//! tests only: it does nothing on FUSE).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use backup_platform::fs as pfs;

/// How a run makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `fsync` of every new file and of every changed directory: correct everywhere.
    EachFile,
    /// One `syncfs` of the file system (`BACKUP_SYNC=syncfs` only: not a guarantee on FUSE).
    SyncFs,
}

impl Strategy {
    /// [`Strategy::EachFile`], on every file system, unless `BACKUP_SYNC=syncfs` asks
    /// otherwise.
    pub fn chosen() -> Strategy {
        match std::env::var("BACKUP_SYNC").as_deref() {
            Ok("syncfs") => Strategy::SyncFs,
            _ => Strategy::EachFile,
        }
    }
}

/// Which directories a [`SyncSet::flush`] syncs first: the destinations of a run's links and
/// renames before their sources, so a cut between two fsyncs never leaves a file in neither
/// place (a version renamed out of the mirror into `deleted/`) or a mirror version that its
/// increment does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DirRole {
    /// Folders of an increment (`track/`, `deleted/` and below, the increment folder).
    Increment = 0,
    /// Folders of the mirror.
    Mirror = 1,
    /// `dist` itself (new increment and mirror folders, removed folders, the journal).
    Dist = 2,
}

/// A directory that could not be made durable.
#[derive(Debug, thiserror::Error)]
#[error("cannot make {path} durable (fsync): {source}")]
pub struct SyncError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl SyncError {
    fn new(path: &Path, source: io::Error) -> Self {
        SyncError {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The directories (and the strategy) a run must make durable before its metadata is written.
#[derive(Debug)]
pub struct SyncSet {
    root: PathBuf,
    strategy: Strategy,
    dirs: Mutex<[BTreeSet<PathBuf>; 3]>,
}

/// How many fsyncs of directories run at once (each is a round trip on FUSE).
const DIR_SYNC_THREADS: usize = 16;

impl SyncSet {
    /// For a run writing under `root` (`dist`).
    pub fn new(root: &Path) -> Self {
        Self::with_strategy(root, Strategy::chosen())
    }

    pub fn with_strategy(root: &Path, strategy: Strategy) -> Self {
        SyncSet {
            root: root.to_path_buf(),
            strategy,
            dirs: Mutex::default(),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Makes a new file's bytes and attributes durable (set mode and mtime first). Under
    /// `syncfs` nothing is done here: [`SyncSet::flush`] covers it.
    pub fn file(&self, path: &Path) -> io::Result<()> {
        match self.strategy {
            Strategy::EachFile => pfs::fsync_file(path),
            Strategy::SyncFs => Ok(()),
        }
    }

    /// Like [`SyncSet::file`], through a descriptor of the file (open for writing, so its mode
    /// does not matter).
    pub fn handle(&self, file: &std::fs::File) -> io::Result<()> {
        match self.strategy {
            Strategy::EachFile => file.sync_all(),
            Strategy::SyncFs => Ok(()),
        }
    }

    /// `dir` gained or lost an entry.
    pub fn dir_changed(&self, role: DirRole, dir: &Path) {
        if self.strategy == Strategy::SyncFs {
            return;
        }
        if let Ok(mut d) = self.dirs.lock() {
            if !d[role as usize].contains(dir) {
                d[role as usize].insert(dir.to_path_buf());
            }
        }
    }

    /// The parent of `path` gained or lost `path`.
    pub fn entry_changed(&self, role: DirRole, path: &Path) {
        if let Some(p) = path.parent() {
            self.dir_changed(role, p);
        }
    }

    /// Creates `dir` and its missing parents, each new one recorded in its parent.
    pub fn create_dir_all(&self, role: DirRole, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.is_dir() {
                break;
            }
            missing.push(d);
            cur = d.parent();
        }
        std::fs::create_dir_all(dir)?;
        for d in missing {
            self.entry_changed(role, d);
        }
        Ok(())
    }

    /// Records every directory under `dir` (itself included) and makes every file in it
    /// durable: for a tree written by someone else (an interrupted run) before metadata
    /// describes it. Files this process may not open were not written by it and are left.
    pub fn tree(&self, role: DirRole, dir: &Path) -> io::Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        let walker = walkdir::WalkDir::new(dir)
            .follow_root_links(false)
            .follow_links(false);
        for e in walker {
            let e = e.map_err(io::Error::other)?;
            let t = e.file_type();
            if t.is_dir() {
                self.dir_changed(role, e.path());
            } else if t.is_file() {
                match self.file(e.path()) {
                    Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {}
                    r => r?,
                }
            }
        }
        Ok(())
    }

    /// Makes everything recorded durable: the directories role by role (a directory removed
    /// since is skipped: its parent was recorded when it went), or one `syncfs`.
    pub fn flush(&self) -> Result<(), SyncError> {
        if self.strategy == Strategy::SyncFs {
            return pfs::sync_filesystem(&self.root).map_err(|e| SyncError::new(&self.root, e));
        }
        let sets = match self.dirs.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Ok(()),
        };
        for set in sets {
            let dirs: Vec<PathBuf> = set.into_iter().collect();
            sync_dirs(&dirs)?;
        }
        Ok(())
    }
}

fn sync_one(dir: &Path) -> Result<(), SyncError> {
    match pfs::fsync_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SyncError::new(dir, e)),
    }
}

/// fsyncs `dirs`, a few at once.
pub fn sync_dirs(dirs: &[PathBuf]) -> Result<(), SyncError> {
    if dirs.len() < 2 * DIR_SYNC_THREADS {
        return dirs.iter().try_for_each(|d| sync_one(d));
    }
    let chunk = dirs.len().div_ceil(DIR_SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().try_for_each(|d| sync_one(d))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SyncError::new(
                        Path::new("(fsync worker)"),
                        io::Error::other("panicked"),
                    ))
                })
            })
            .collect::<Result<Vec<()>, SyncError>>()
            .map(|_| ())
    })
}

/// Creates `dir` and its missing parents durably: each new directory's entry is fsynced in its
/// parent (`dist` on a fresh drive must survive a power cut with everything under it).
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let set = SyncSet::with_strategy(dir, Strategy::EachFile);
    set.create_dir_all(DirRole::Dist, dir)?;
    set.flush().map_err(|e| e.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_recorded_in_their_parents_and_gone_ones_skipped() {
        let d = tempfile::tempdir().unwrap();
        let set = SyncSet::with_strategy(d.path(), Strategy::EachFile);
        let deep = d.path().join("a/b/c");
        set.create_dir_all(DirRole::Mirror, &deep).unwrap();
        set.dir_changed(DirRole::Increment, &d.path().join("gone"));
        let recorded = set.dirs.lock().unwrap().clone();
        let mirror: Vec<&PathBuf> = recorded[DirRole::Mirror as usize].iter().collect();
        assert_eq!(
            mirror,
            [d.path(), &d.path().join("a"), &d.path().join("a/b")]
        );
        // A directory removed since it was recorded is no error.
        set.flush().unwrap();
        assert!(set.dirs.lock().unwrap().iter().all(|s| s.is_empty()));
    }

    #[test]
    fn syncfs_records_nothing() {
        let d = tempfile::tempdir().unwrap();
        let set = SyncSet::with_strategy(d.path(), Strategy::SyncFs);
        set.create_dir_all(DirRole::Mirror, &d.path().join("x/y"))
            .unwrap();
        assert!(set.dirs.lock().unwrap().iter().all(|s| s.is_empty()));
        set.flush().unwrap();
    }
}
