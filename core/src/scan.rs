//! Scan: walk `src` by the selection rules and hand out what is selected, in walk order, with
//! the metadata the plan compares against the index.
//!
//! The walk works on open directory handles ([`backup_platform::dir`]): each directory is
//! listed once, its children are `lstat`ed by name relative to it and entered with `openat`
//! without following symlinks (figures in `docs/scan.md`). It is one depth-first walk that
//! visits each folder's entries by name, so what it hands out is already in the order of
//! [`RelPath`] and of the index's keys: the plan merges the two streams in one pass and
//! nothing holds every entry at once. Folders are handed out just before the first selected
//! entry below them (a folder the mirror will hold), or on their own when preserved.
//!
//! The walk only descends where the rules can still select something ([`Selection::descend`]),
//! takes the type of each entry from the listing, and `lstat`s only entries that are selected.
//! Symlinks are entries (never followed, never descended); FIFOs, sockets and devices are
//! skipped with a note; `dist` inside `src` is left out with a note. A folder that cannot be
//! read is handed out as [`ScanItem::Unreadable`] at its place, so the plan never takes its
//! silence for deletions.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::PathBuf;

use backup_platform::dir::{DirHandle, EntryKind, EntryStat};

use crate::config::Config;
use crate::format::{FileKind, MTime};
use crate::relpath::RelPath;
use crate::selection::{bytes_path, DirState, Hits, Selection};

/// One selected entry of the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    pub rel: RelPath,
    pub kind: FileKind,
    pub tracked: bool,
    pub size: u64,
    pub mtime: MTime,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// For symlinks: the link target as stored (never followed).
    pub symlink_target: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    /// Inode change time: unchanged means no chmod, chown or xattr change since (the plan
    /// reads xattrs only where it moved).
    pub ctime_ns: i64,
    /// Hard links to the inode, and its identity: names of one inode form a link group.
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    /// Bytes allocated: less than `size` by a block or more for a file with holes.
    pub allocated: u64,
}

/// A folder that the mirror holds (it has selected entries below it, or is preserved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFolder {
    pub rel: RelPath,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: MTime,
    pub ctime_ns: i64,
    /// Selected and named in `preserved_dirs`: kept in the mirror even when empty.
    pub preserved: bool,
    /// Under a tracked folder rule (its metadata goes into increments' `folders`).
    pub tracked: bool,
}

/// What the scan hands out, in walk order.
#[derive(Debug)]
pub enum ScanItem {
    Folder(SourceFolder),
    Entry(SourceEntry),
    /// This folder could not be read (`None`: `src` itself): nothing below it may be taken
    /// for deleted.
    Unreadable(Option<RelPath>),
}

/// Something the user should hear about once, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanNote {
    /// A FIFO, socket or device under a selected directory, not backed up.
    SkippedSpecial { rel: RelPath, what: &'static str },
    /// `dist` lies inside `src`; the scan left it out.
    SkippedDist { rel: RelPath },
    /// A rule that matched nothing today (people misspell folders).
    UnmatchedRule { key: &'static str, pattern: String },
}

/// A path the scan could not read.
#[derive(Debug)]
pub struct ScanError {
    /// `None` for `src` itself (or a failure not tied to a path).
    pub rel: Option<RelPath>,
    pub error: std::io::Error,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rel {
            Some(rel) => write!(f, "{rel}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// Everything a scan found, collected (for tests and small tools; the engine streams).
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Selected files and symlinks, in walk order.
    pub entries: Vec<SourceEntry>,
    /// Selected folders the mirror holds, in walk order.
    pub folders: Vec<SourceFolder>,
    /// Selected directories whose name is in `preserved_dirs`: kept in the mirror even empty.
    pub preserved_dirs: Vec<RelPath>,
    pub notes: Vec<ScanNote>,
    pub errors: Vec<ScanError>,
}

/// Running totals, reported now and then while scanning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanProgress {
    /// Selected entries so far.
    pub entries: u64,
    /// Their bytes so far.
    pub bytes: u64,
    /// Directories looked into so far.
    pub dirs: u64,
    /// True on the last report.
    pub done: bool,
}

/// How many entries between two progress reports.
const PROGRESS_EVERY: u64 = 4096;

/// What a streaming scan says at the end (its items went to the sink).
#[derive(Debug, Default)]
pub struct ScanSummary {
    pub notes: Vec<ScanNote>,
    pub errors: Vec<ScanError>,
    pub progress: ScanProgress,
    /// The sink asked to stop.
    pub stopped: bool,
}

/// Walks `config.src` (blocking) and collects everything.
pub fn scan(config: &Config) -> ScanOutcome {
    scan_with_progress(config, &mut |_| {})
}

/// [`scan`], reporting [`ScanProgress`] every few thousand entries and once at the end.
pub fn scan_with_progress(config: &Config, progress: &mut dyn FnMut(ScanProgress)) -> ScanOutcome {
    let mut out = ScanOutcome::default();
    let summary = scan_stream(config, progress, &mut |item| {
        match item {
            ScanItem::Entry(e) => out.entries.push(e),
            ScanItem::Folder(f) => {
                if f.preserved {
                    out.preserved_dirs.push(f.rel.clone());
                }
                out.folders.push(f);
            }
            ScanItem::Unreadable(_) => {}
        }
        ControlFlow::Continue(())
    });
    out.notes = summary.notes;
    out.errors = summary.errors;
    out
}

/// Walks `config.src` (blocking: run it on its own thread), handing each item to `sink` in
/// walk order; `sink` may stop the walk. Notes and errors come back at the end (errors are
/// also handed out in place as [`ScanItem::Unreadable`] where they hide a folder).
pub fn scan_stream(
    config: &Config,
    progress: &mut dyn FnMut(ScanProgress),
    sink: &mut dyn FnMut(ScanItem) -> ControlFlow<()>,
) -> ScanSummary {
    let mut summary = ScanSummary::default();
    let selection = config.selection();
    let mut hits = selection.new_hits();
    let root_state = selection.root_state(&mut hits);
    let mut walk = Walk {
        selection,
        dist_rel: config
            .dist_inside_src()
            .and_then(|p| RelPath::from_path(p).ok()),
        // Device and inode identify a directory only on Unix.
        dist_id: DirHandle::open(&config.dist)
            .and_then(|d| d.stat())
            .ok()
            .filter(|_| cfg!(unix))
            .map(|st| (st.dev, st.ino)),
        preserved: config
            .rules
            .preserved_dirs
            .iter()
            .map(|s| s.as_bytes())
            .collect(),
        hits,
        summary: &mut summary,
        pending: Vec::new(),
        sink,
        progress,
        last_report: 0,
    };
    if selection.descend(root_state, &[]) {
        match DirHandle::open(&config.src) {
            Ok(root) => {
                let _ = walk.walk_dir(root, Vec::new(), root_state);
            }
            Err(error) => walk.unreadable(None, error),
        }
    }
    let hits = std::mem::replace(&mut walk.hits, selection.new_hits());
    drop(walk);
    for (key, pattern) in selection.unmatched(&hits) {
        summary.notes.push(ScanNote::UnmatchedRule { key, pattern });
    }
    summary.progress.done = true;
    progress(summary.progress);
    summary
}

/// A folder on the way down, not handed out yet (it is, just before its first selected entry).
struct Pending {
    folder: SourceFolder,
    sent: bool,
}

struct Walk<'a, 's> {
    selection: &'a Selection,
    dist_rel: Option<RelPath>,
    dist_id: Option<(u64, u64)>,
    preserved: Vec<&'a [u8]>,
    hits: Hits,
    summary: &'s mut ScanSummary,
    pending: Vec<Pending>,
    sink: &'s mut dyn FnMut(ScanItem) -> ControlFlow<()>,
    progress: &'s mut dyn FnMut(ScanProgress),
    last_report: u64,
}

impl Walk<'_, '_> {
    fn send(&mut self, item: ScanItem) -> ControlFlow<()> {
        if matches!(item, ScanItem::Entry(_)) {
            // Its folders first, outermost first: they exist in the mirror before it.
            for i in 0..self.pending.len() {
                if !self.pending[i].sent {
                    self.pending[i].sent = true;
                    let f = self.pending[i].folder.clone();
                    (self.sink)(ScanItem::Folder(f))?;
                }
            }
        }
        let r = (self.sink)(item);
        if r.is_break() {
            self.summary.stopped = true;
        }
        r
    }

    fn unreadable(&mut self, rel: Option<RelPath>, error: std::io::Error) {
        let _ = (self.sink)(ScanItem::Unreadable(rel.clone()));
        self.summary.errors.push(ScanError { rel, error });
    }

    fn walk_dir(&mut self, mut dir: DirHandle, rel: Vec<u8>, state: DirState) -> ControlFlow<()> {
        let rel_path = || RelPath::from_bytes(&rel).ok();
        // `dist` under another spelling (a bind mount, a symlinked parent in the config): the
        // same device and inode. One `fstat` per directory, only while `dist` exists.
        if let Some(id) = self.dist_id {
            if dir.stat().is_ok_and(|st| (st.dev, st.ino) == id) {
                if let Some(rel) = rel_path() {
                    self.summary.notes.push(ScanNote::SkippedDist { rel });
                }
                return ControlFlow::Continue(());
            }
        }
        let mut listed = match dir.list() {
            Ok(l) => l,
            Err(error) => {
                self.unreadable(rel_path(), error);
                return ControlFlow::Continue(());
            }
        };
        self.summary.progress.dirs += 1;
        // By name bytes: the walk order of the whole tree (and of the index).
        listed.sort_unstable_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
        let mut buf = rel.clone();
        if !buf.is_empty() {
            buf.push(b'/');
        }
        let base = buf.len();
        for entry in listed {
            buf.truncate(base);
            buf.extend_from_slice(entry.name.as_encoded_bytes());
            let mut stat = None;
            let mut kind = entry.kind;
            if kind == EntryKind::Unknown {
                match dir.lstat(&entry.name) {
                    Ok(st) => {
                        kind = st.kind;
                        stat = Some(st);
                    }
                    Err(error) => {
                        self.summary.errors.push(ScanError {
                            rel: RelPath::from_bytes(&buf).ok(),
                            error,
                        });
                        continue;
                    }
                }
            }
            if kind == EntryKind::Dir {
                self.enter(&dir, &entry.name, &buf, state)?;
            } else {
                self.file(&dir, &entry.name, &buf, kind, stat, state)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// A subdirectory: skipped (dist, pruned) or walked.
    fn enter(
        &mut self,
        dir: &DirHandle,
        name: &OsString,
        rel: &[u8],
        parent: DirState,
    ) -> ControlFlow<()> {
        let state = self
            .selection
            .enter_dir(parent, bytes_path(rel), &mut self.hits);
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        if !self.selection.descend(state, &comps) {
            return ControlFlow::Continue(());
        }
        // Said only when the rules would have walked into it.
        if self.dist_rel.as_ref().map(|d| d.as_bytes()) == Some(rel) {
            if let Ok(r) = RelPath::from_bytes(rel) {
                self.summary.notes.push(ScanNote::SkippedDist { rel: r });
            }
            return ControlFlow::Continue(());
        }
        let Ok(rel_path) = RelPath::from_bytes(rel) else {
            return ControlFlow::Continue(());
        };
        let child = match dir.open_child(name) {
            Ok(c) => c,
            Err(error) => {
                self.unreadable(Some(rel_path), error);
                return ControlFlow::Continue(());
            }
        };
        let st = match child.stat() {
            Ok(st) => st,
            Err(error) => {
                self.unreadable(Some(rel_path), error);
                return ControlFlow::Continue(());
            }
        };
        let preserved = state.selected() && self.preserved.contains(&name.as_encoded_bytes());
        self.pending.push(Pending {
            folder: SourceFolder {
                rel: rel_path,
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
                mtime: MTime::from_ns(st.mtime_ns),
                ctime_ns: st.ctime_ns,
                preserved,
                tracked: state.track,
            },
            sent: false,
        });
        let r = self.walk_dir(child, rel.to_vec(), state);
        let done = self.pending.pop();
        r?;
        // A preserved folder with nothing selected inside is still kept (in walk order: nothing
        // below it was handed out).
        if let Some(p) = done {
            if !p.sent && p.folder.preserved {
                for i in 0..self.pending.len() {
                    if !self.pending[i].sent {
                        self.pending[i].sent = true;
                        let f = self.pending[i].folder.clone();
                        (self.sink)(ScanItem::Folder(f))?;
                    }
                }
                (self.sink)(ScanItem::Folder(p.folder))?;
            }
        }
        ControlFlow::Continue(())
    }

    fn file(
        &mut self,
        dir: &DirHandle,
        name: &std::ffi::OsStr,
        rel: &[u8],
        listed: EntryKind,
        stat: Option<EntryStat>,
        parent: DirState,
    ) -> ControlFlow<()> {
        let Some(tracked) = self
            .selection
            .classify_file(parent, bytes_path(rel), &mut self.hits)
        else {
            return ControlFlow::Continue(());
        };
        let rel = match RelPath::from_bytes(rel) {
            Ok(r) => r,
            Err(e) => {
                self.summary.errors.push(ScanError {
                    rel: None,
                    error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                });
                return ControlFlow::Continue(());
            }
        };
        if !matches!(listed, EntryKind::File | EntryKind::Symlink) {
            self.summary.notes.push(ScanNote::SkippedSpecial {
                rel,
                what: listed.describe(),
            });
            return ControlFlow::Continue(());
        }
        let st = match stat.map_or_else(|| dir.lstat(name), Ok) {
            Ok(st) => st,
            Err(error) => {
                self.summary.errors.push(ScanError {
                    rel: Some(rel),
                    error,
                });
                return ControlFlow::Continue(());
            }
        };
        let (kind, symlink_target) = match st.kind {
            EntryKind::File => (FileKind::File, None),
            EntryKind::Symlink => match dir.read_link(name) {
                Ok(t) => (FileKind::Symlink, Some(t)),
                Err(error) => {
                    self.summary.errors.push(ScanError {
                        rel: Some(rel),
                        error,
                    });
                    return ControlFlow::Continue(());
                }
            },
            EntryKind::Dir => {
                // Replaced by a directory since the listing; the next run will see it.
                self.summary.errors.push(ScanError {
                    rel: Some(rel),
                    error: std::io::Error::other("changed into a directory while scanning"),
                });
                return ControlFlow::Continue(());
            }
            other => {
                self.summary.notes.push(ScanNote::SkippedSpecial {
                    rel,
                    what: other.describe(),
                });
                return ControlFlow::Continue(());
            }
        };
        let p = &mut self.summary.progress;
        p.entries += 1;
        p.bytes += st.size;
        if p.entries - self.last_report >= PROGRESS_EVERY {
            self.last_report = p.entries;
            let now = *p;
            (self.progress)(now);
        }
        self.send(ScanItem::Entry(SourceEntry {
            rel,
            kind,
            tracked,
            size: st.size,
            mtime: MTime::from_ns(st.mtime_ns),
            mode: st.mode,
            symlink_target,
            uid: st.uid,
            gid: st.gid,
            ctime_ns: st.ctime_ns,
            nlink: st.nlink,
            dev: st.dev,
            ino: st.ino,
            allocated: st.allocated,
        }))
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
