//! Scan: walk `src` by the selection rules and return what is selected, with the metadata the
//! plan compares against `mirror.json`.
//!
//! The walk works on open directory handles ([`backup_platform::dir`]): each directory is
//! listed once, its children are `lstat`ed by name relative to it and entered with `openat`
//! without following symlinks. Measured on a 100k-file tree this costs about half of a
//! `walkdir` walk with full-path `lstat`s, and far less than an async walker that pays a
//! thread-pool round trip per `stat` (figures in `docs/scan.md`). It is blocking: call it from
//! `spawn_blocking`. Directories are handed out to a few threads (work-sharing stack); results
//! are sorted at the end, so the outcome does not depend on thread timing.
//!
//! The walk only descends where the rules can still select something ([`Selection::descend`]),
//! takes the type of each entry from the listing, and `lstat`s only entries that are selected.
//! Symlinks are entries (never followed, never descended); FIFOs, sockets and devices are
//! skipped with a note; `dist` inside `src` is left out with a note.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Selected files and symlinks, sorted by `rel`.
    pub entries: Vec<SourceEntry>,
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

/// Walker threads at most. Listing and `lstat` are cheap syscalls; beyond a few threads they
/// contend on the same directory locks in the kernel.
const MAX_SCAN_THREADS: usize = 4;

/// Walks `config.src` (blocking: call it from `spawn_blocking`).
pub fn scan(config: &Config) -> ScanOutcome {
    scan_with_progress(config, &mut |_| {})
}

/// [`scan`], reporting [`ScanProgress`] every few thousand entries and once at the end.
pub fn scan_with_progress(config: &Config, progress: &mut dyn FnMut(ScanProgress)) -> ScanOutcome {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(config.max_workers.max(1))
        .min(MAX_SCAN_THREADS);
    scan_with(config, threads, progress)
}

/// [`scan_with_progress`] on exactly `threads` walker threads (the calling one included).
pub fn scan_with(
    config: &Config,
    threads: usize,
    progress: &mut dyn FnMut(ScanProgress),
) -> ScanOutcome {
    let mut out = ScanOutcome::default();
    let selection = match config.selection() {
        Ok(s) => s,
        Err(msg) => {
            out.errors.push(ScanError {
                rel: None,
                error: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
            });
            return out;
        }
    };
    let mut hits = selection.new_hits();
    let root_state = selection.root_state(&mut hits);
    let walk = Walk {
        selection: &selection,
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
        queue: Mutex::new(Queue {
            jobs: Vec::new(),
            busy: 0,
        }),
        wake: Condvar::new(),
        entries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
    };
    if selection.descend(root_state, &[]) {
        walk.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .push(Job {
                parent: None,
                name: config.src.clone().into_os_string(),
                rel: Vec::new(),
                state: root_state,
            });
    }
    let totals = |w: &Walk| ScanProgress {
        entries: w.entries.load(Ordering::Relaxed),
        bytes: w.bytes.load(Ordering::Relaxed),
        dirs: w.dirs.load(Ordering::Relaxed),
        done: false,
    };

    let parts: Vec<Partial> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.max(1))
            .map(|_| scope.spawn(|| walk.work(&mut |_| {})))
            .collect();
        // The calling thread walks too, and is the one that reports progress.
        let mut last = 0u64;
        let mine = walk.work(&mut |w| {
            let now = w.entries.load(Ordering::Relaxed);
            if now - last >= PROGRESS_EVERY {
                last = now;
                progress(totals(w));
            }
        });
        let mut parts = vec![mine];
        for h in helpers {
            match h.join() {
                Ok(p) => parts.push(p),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });

    // The biggest share becomes the result as it is: no second copy of 100k entries.
    let mut parts = parts;
    parts.sort_by_key(|p| std::cmp::Reverse(p.entries.len()));
    let total: usize = parts.iter().map(|p| p.entries.len()).sum();
    for p in parts {
        hits.merge(&p.hits);
        if out.entries.is_empty() {
            out.entries = p.entries;
            out.entries.reserve_exact(total - out.entries.len());
        } else {
            out.entries.extend(p.entries);
        }
        out.preserved_dirs.extend(p.preserved_dirs);
        out.notes.extend(p.notes);
        out.errors.extend(p.errors);
    }
    out.entries.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    out.preserved_dirs.sort_unstable();
    out.notes.sort_by(note_order);
    out.errors.sort_by(|a, b| a.rel.cmp(&b.rel));
    for (key, pattern) in selection.unmatched(&hits) {
        out.notes.push(ScanNote::UnmatchedRule { key, pattern });
    }
    let mut last = totals(&walk);
    last.done = true;
    progress(last);
    out
}

fn note_order(a: &ScanNote, b: &ScanNote) -> std::cmp::Ordering {
    let rel = |n: &ScanNote| match n {
        ScanNote::SkippedDist { rel } | ScanNote::SkippedSpecial { rel, .. } => Some(rel.clone()),
        ScanNote::UnmatchedRule { .. } => None,
    };
    rel(a).cmp(&rel(b))
}

/// A directory waiting to be walked. It holds its parent open (not itself), so the number of
/// open descriptors follows the depth of the walk, not the width of the tree.
struct Job {
    /// `None`: `name` is the path of `src`.
    parent: Option<Arc<DirHandle>>,
    name: OsString,
    /// Encoded bytes relative to `src`, `/`-separated; empty for `src`.
    rel: Vec<u8>,
    state: DirState,
}

struct Queue {
    jobs: Vec<Job>,
    /// Threads processing a job right now (they may push more).
    busy: usize,
}

/// What is shared by the walker threads.
struct Walk<'a> {
    selection: &'a Selection,
    dist_rel: Option<RelPath>,
    dist_id: Option<(u64, u64)>,
    preserved: Vec<&'a [u8]>,
    queue: Mutex<Queue>,
    wake: Condvar,
    entries: AtomicU64,
    bytes: AtomicU64,
    dirs: AtomicU64,
}

/// Marks a thread busy with a job; if the job unwinds, the mark is still cleared, so the other
/// threads finish instead of waiting forever (the panic then surfaces at `join`).
struct Busy<'w, 'a> {
    walk: &'w Walk<'a>,
    done: bool,
}

impl Drop for Busy<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.walk.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.busy -= 1;
            self.walk.wake.notify_all();
        }
    }
}

/// One thread's findings.
struct Partial {
    entries: Vec<SourceEntry>,
    preserved_dirs: Vec<RelPath>,
    notes: Vec<ScanNote>,
    errors: Vec<ScanError>,
    hits: Hits,
}

impl Walk<'_> {
    fn work(&self, tick: &mut dyn FnMut(&Walk)) -> Partial {
        let mut part = Partial {
            entries: Vec::new(),
            preserved_dirs: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            hits: self.selection.new_hits(),
        };
        let mut found = Vec::new();
        while let Some(job) = self.next_job() {
            let mut busy = Busy {
                walk: self,
                done: false,
            };
            self.walk_dir(job, &mut part, &mut found);
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.busy -= 1;
            busy.done = true;
            // Deepest last, so the stack pops depth-first and few handles stay open.
            q.jobs.extend(found.drain(..).rev());
            if !q.jobs.is_empty() || q.busy == 0 {
                self.wake.notify_all();
            }
            drop(q);
            tick(self);
        }
        part
    }

    /// The next directory to walk, or `None` when every thread is idle and nothing is left.
    fn next_job(&self) -> Option<Job> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = q.jobs.pop() {
                q.busy += 1;
                return Some(job);
            }
            if q.busy == 0 {
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn walk_dir(&self, job: Job, part: &mut Partial, found: &mut Vec<Job>) {
        let rel_of_job = || RelPath::from_bytes(&job.rel).ok();
        let opened = match &job.parent {
            Some(parent) => parent.open_child(&job.name),
            None => DirHandle::open(std::path::Path::new(&job.name)),
        };
        let mut dir = match opened {
            Ok(d) => d,
            Err(error) => {
                part.errors.push(ScanError {
                    rel: rel_of_job(),
                    error,
                });
                return;
            }
        };
        // `dist` under another spelling (a bind mount, a symlinked parent in the config): the
        // same device and inode. One `fstat` per directory, only while `dist` exists.
        if let Some(id) = self.dist_id {
            if dir.stat().is_ok_and(|st| (st.dev, st.ino) == id) {
                if let Some(rel) = rel_of_job() {
                    part.notes.push(ScanNote::SkippedDist { rel });
                }
                return;
            }
        }
        let listed = match dir.list() {
            Ok(l) => l,
            Err(error) => {
                part.errors.push(ScanError {
                    rel: rel_of_job(),
                    error,
                });
                return;
            }
        };
        self.dirs.fetch_add(1, Ordering::Relaxed);
        let dir = Arc::new(dir);
        let mut buf = job.rel.clone();
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
                        part.errors.push(ScanError {
                            rel: RelPath::from_bytes(&buf).ok(),
                            error,
                        });
                        continue;
                    }
                }
            }
            if kind == EntryKind::Dir {
                if let Some(child) = self.enter(&dir, &entry, &buf, job.state, part) {
                    found.push(child);
                }
            } else {
                self.file(&dir, &entry.name, &buf, kind, stat, job.state, part);
            }
        }
    }

    /// A subdirectory: skipped (dist, pruned) or returned as a job.
    fn enter(
        &self,
        dir: &Arc<DirHandle>,
        entry: &backup_platform::dir::ListedEntry,
        rel: &[u8],
        parent: DirState,
        part: &mut Partial,
    ) -> Option<Job> {
        let state = self
            .selection
            .enter_dir(parent, bytes_path(rel), &mut part.hits);
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        if !self.selection.descend(state, &comps) {
            return None;
        }
        // Said only when the rules would have walked into it.
        if self.dist_rel.as_ref().map(|d| d.as_bytes()) == Some(rel) {
            if let Ok(r) = RelPath::from_bytes(rel) {
                part.notes.push(ScanNote::SkippedDist { rel: r });
            }
            return None;
        }
        if state.selected() && self.preserved.contains(&entry.name.as_encoded_bytes()) {
            if let Ok(r) = RelPath::from_bytes(rel) {
                part.preserved_dirs.push(r);
            }
        }
        Some(Job {
            parent: Some(Arc::clone(dir)),
            name: entry.name.clone(),
            rel: rel.to_vec(),
            state,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &self,
        dir: &DirHandle,
        name: &std::ffi::OsStr,
        rel: &[u8],
        listed: EntryKind,
        stat: Option<EntryStat>,
        parent: DirState,
        part: &mut Partial,
    ) {
        let Some(tracked) = self
            .selection
            .classify_file(parent, bytes_path(rel), &mut part.hits)
        else {
            return;
        };
        let rel = match RelPath::from_bytes(rel) {
            Ok(r) => r,
            Err(e) => {
                part.errors.push(ScanError {
                    rel: None,
                    error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                });
                return;
            }
        };
        if !matches!(listed, EntryKind::File | EntryKind::Symlink) {
            part.notes.push(ScanNote::SkippedSpecial {
                rel,
                what: listed.describe(),
            });
            return;
        }
        let st = match stat.map_or_else(|| dir.lstat(name), Ok) {
            Ok(st) => st,
            Err(error) => {
                part.errors.push(ScanError {
                    rel: Some(rel),
                    error,
                });
                return;
            }
        };
        let (kind, symlink_target) = match st.kind {
            EntryKind::File => (FileKind::File, None),
            EntryKind::Symlink => match dir.read_link(name) {
                Ok(t) => (FileKind::Symlink, Some(t)),
                Err(error) => {
                    part.errors.push(ScanError {
                        rel: Some(rel),
                        error,
                    });
                    return;
                }
            },
            EntryKind::Dir => {
                // Replaced by a directory since the listing; the next run will see it.
                part.errors.push(ScanError {
                    rel: Some(rel),
                    error: std::io::Error::other("changed into a directory while scanning"),
                });
                return;
            }
            other => {
                part.notes.push(ScanNote::SkippedSpecial {
                    rel,
                    what: other.describe(),
                });
                return;
            }
        };
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(st.size, Ordering::Relaxed);
        part.entries.push(SourceEntry {
            rel,
            kind,
            tracked,
            size: st.size,
            mtime: MTime::from_ns(st.mtime_ns),
            mode: st.mode,
            symlink_target,
        });
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
