//! `check`: the mirror against the index, each increment against its catalog, the folders at
//! `dist` that look like increments but are not read as one (renamed by hand), metadata that
//! cannot be used, and the leftovers of interrupted runs. With `verify`, stored content is
//! re-hashed against the recorded blake3 hashes (each inode once: hard links share their
//! bytes).
//!
//! Memory stays bounded whatever the size of the backup: the mirror is merged with a walk of
//! `mirror/` in the order both share (the index's keys are walk order); an increment is
//! compared one folder at a time (its folder list and one folder's catalog). The disk is read
//! through directory handles that never follow a symlink, so a stored folder swapped for a
//! symlink is reported, never followed out of the backup.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::rc::Rc;

use backup_platform::dir::{EntryKind, EntryStat};
use backup_platform::sandbox::SafeDir;
use serde::Serialize;

use super::walk::MirrorWalk;
use super::{Backup, ExploreError};
use crate::format::{CatalogEntry, Category, ContentHash, FileKind, MTime};
use crate::index::{IncrementRecord, IncrementState};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository, JOURNAL_FILE, STAGING_DIR};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Recorded in metadata, absent on disk.
    Missing,
    /// On disk, not recorded.
    Extra,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    MtimeMismatch {
        expected_ns: i64,
        actual_ns: i64,
    },
    /// A symlink recorded as a file or the other way round.
    KindMismatch,
    HashMismatch {
        expected: String,
        actual: String,
    },
    Unreadable {
        error: String,
    },
    /// An increment folder without (readable) metadata: an interrupted run, or damage.
    NoMetadata {
        reason: String,
    },
    /// An entry of a metadata file that could not be used (skipped by every command).
    BadMetadata {
        /// The metadata file.
        file: String,
        message: String,
    },
    /// A folder (or file) at `dist` that looks like an increment but is not read as one: an
    /// increment renamed by hand vanishes from every view.
    LooksLikeIncrement {
        reason: String,
    },
    /// A staging folder or journal left by an interrupted run.
    Leftover,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// `mirror`, an increment name, or `dist`.
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(flatten)]
    pub kind: ProblemKind,
}

/// A writer (a `backup` run, or `recreate`/`delete`/`prune`) holding the lock while `check`
/// ran: its journal, staging files and the increment it is writing are work in progress, not
/// damage, and the mirror may be half updated, so those are not judged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Running {
    /// The increment that run is writing, if its journal names one.
    pub increment: Option<crate::repo::IncrementName>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Set when a writer held the lock: see [`Running`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
    pub increments: u64,
    pub files_checked: u64,
    /// Files whose content was re-hashed (with `verify`).
    pub files_verified: u64,
    /// Files recorded without a hash (original-tool metadata), which `verify` cannot prove.
    pub files_without_hash: u64,
    pub problems: Vec<Problem>,
}

pub fn check(backup: &Backup, verify: bool) -> Result<CheckReport, ExploreError> {
    check_with_progress(backup, verify, &|_| {})
}

/// What a stored file should be.
struct Expected {
    size: u64,
    mtime: MTime,
    kind: FileKind,
    hash: Option<ContentHash>,
}

impl From<&CatalogEntry> for Expected {
    fn from(e: &CatalogEntry) -> Self {
        Expected {
            size: e.size,
            mtime: e.mtime,
            kind: e.kind,
            hash: e.hash,
        }
    }
}

/// Hashes of inodes already read (hard links share their bytes). Bounded: beyond this many
/// the cache starts over, which costs re-reading, never memory.
const HASH_CACHE: usize = 100_000;

struct Checker<'a> {
    verify: bool,
    progress: crate::progress::WorkSink<'a>,
    hashes: HashMap<(u64, u64), Result<ContentHash, String>>,
    report: CheckReport,
}

/// [`check`], telling `progress` about each recorded file compared (and re-hashed).
pub fn check_with_progress(
    backup: &Backup,
    verify: bool,
    progress: crate::progress::WorkSink,
) -> Result<CheckReport, ExploreError> {
    let repo = &backup.repo;
    let index = backup.index();
    let incs = backup.increments()?;
    let totals = index.mirror_totals()?;
    // Sizes come from metadata, which may be hostile: saturate, never overflow.
    progress(crate::progress::Work::Start {
        items: incs
            .iter()
            .fold(totals.files, |n, i| n.saturating_add(i.files)),
        bytes: if verify {
            incs.iter()
                .fold(totals.bytes, |n, i| n.saturating_add(i.bytes))
        } else {
            0
        },
    });
    let mut c = Checker {
        verify,
        progress,
        hashes: HashMap::new(),
        report: CheckReport::default(),
    };
    if repo.writer_running() {
        c.report.running = Some(Running {
            increment: crate::journal::read(repo).and_then(|j| j.increment),
        });
    }
    let running = c.report.running.is_some();
    let in_progress = c.report.running.as_ref().and_then(|r| r.increment.clone());

    for inc in &incs {
        if in_progress.as_ref() == Some(&inc.name) {
            continue;
        }
        if inc.state != IncrementState::Ok {
            c.problem(
                inc.name.as_str(),
                None,
                ProblemKind::NoMetadata {
                    reason: super::damage_reason(inc),
                },
            );
            continue;
        }
        let file = repo.increment_meta_path(&inc.name).display().to_string();
        for (key, message) in index.increment_problems(inc.id)? {
            c.problem(
                inc.name.as_str(),
                key,
                ProblemKind::BadMetadata {
                    file: file.clone(),
                    message,
                },
            );
        }
    }
    dist_entries(repo, running, &mut c);

    // A running backup renames versions into the mirror before it records them.
    if !running {
        c.check_mirror(backup)?;
    }
    for inc in &incs {
        if inc.state != IncrementState::Ok || in_progress.as_ref() == Some(&inc.name) {
            continue;
        }
        c.report.increments += 1;
        c.check_increment(backup, inc)?;
    }
    Ok(c.report)
}

/// Names at `dist` that are ours and not increments.
fn is_known_name(n: &str) -> bool {
    n == crate::repo::MIRROR_DIR
        || n == crate::repo::MIRROR_INDEX
        || n == crate::repo::LOCK_FILE
        || n.starts_with(crate::repo::INDEX_FILE)
}

/// Leftovers of interrupted runs, and folders that look like increments but are not read as
/// one (renamed by hand: `backup_X_old`, `foo/` holding a `backup_*.json`, `track/` or
/// `deleted/`; or an increment name that is a file or a symlink).
fn dist_entries(repo: &Repository, running: bool, c: &mut Checker<'_>) {
    for leftover in [STAGING_DIR, JOURNAL_FILE] {
        if !running && std::fs::symlink_metadata(repo.root().join(leftover)).is_ok() {
            c.problem("dist", Some(leftover.into()), ProblemKind::Leftover);
        }
    }
    let Ok(rd) = std::fs::read_dir(repo.root()) else {
        return;
    };
    let mut names: Vec<OsString> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let n = name.to_string_lossy().into_owned();
        // Other hidden leftovers of ours (temporary files of an interrupted write or prune).
        if n.starts_with(".backup-prune-") || n.contains(".tmp-") {
            if !running {
                c.problem("dist", Some(n), ProblemKind::Leftover);
            }
            continue;
        }
        if is_known_name(&n) || n == STAGING_DIR || n == JOURNAL_FILE {
            continue;
        }
        let path = repo.root().join(&name);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let valid = name.to_str().and_then(IncrementName::parse).is_some();
        let reason = if md.file_type().is_symlink() {
            (valid || n.starts_with(crate::identity::INCREMENT_PREFIX)).then(|| {
                "named like an increment, but a symlink: not followed, not read".to_owned()
            })
        } else if !md.is_dir() {
            valid.then(|| "named like an increment, but not a folder: not read".to_owned())
        } else if valid {
            None
        } else {
            renamed_increment(&path, &n)
        };
        if let Some(reason) = reason {
            c.problem("dist", Some(n), ProblemKind::LooksLikeIncrement { reason });
        }
    }
}

/// Why the folder `path` (named `n`, not an increment name) looks like a renamed increment.
fn renamed_increment(path: &std::path::Path, n: &str) -> Option<String> {
    let mut meta: Option<String> = None;
    let mut parts = Vec::new();
    if let Ok(rd) = std::fs::read_dir(path) {
        let mut inner: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        inner.sort();
        for i in inner {
            if i == crate::repo::TRACK_DIR || i == crate::repo::DELETED_DIR {
                parts.push(format!("{i}/"));
            } else if i.starts_with(crate::identity::INCREMENT_PREFIX) && i.ends_with(".json") {
                parts.push(i.clone());
                meta.get_or_insert(i);
            }
        }
    }
    if parts.is_empty() && !n.starts_with(crate::identity::INCREMENT_PREFIX) {
        return None;
    }
    let held = if parts.is_empty() {
        String::new()
    } else {
        format!(" holding {}", parts.join(", "))
    };
    let hint = match meta
        .as_deref()
        .and_then(|m| m.strip_suffix(".json"))
        .filter(|m| IncrementName::parse(m).is_some())
    {
        Some(orig) => format!("rename it back to {orig} to make it part of the backup again"),
        None => "rename it to backup_YYYYMMDD_HHMMSS to make it part of the backup again".into(),
    };
    Some(format!(
        "a folder{held}, not named like an increment: probably an increment renamed by hand; no view, search or restore sees its files; {hint}"
    ))
}

/// Whether a recorded mtime equals the file's, at the precision it was recorded with: our
/// metadata records nanoseconds (compared exactly); the original tool recorded float seconds,
/// read as whole microseconds, whose last digit the float may not hold (about 0.24 µs per unit
/// in the last place today), so those compare to the microsecond, one either way.
fn mtime_matches(expected: MTime, actual_ns: i64) -> bool {
    if expected.ns == actual_ns {
        return true;
    }
    if expected.ns % 1_000 != 0 {
        return false;
    }
    let micros = |ns: i64| ns.div_euclid(1_000) + i64::from(ns.rem_euclid(1_000) >= 500);
    (micros(actual_ns) - expected.ns / 1_000).abs() <= 1
}

/// A folder of the disk walked without following symlinks: its handle and its sorted names.
struct Level {
    dir: Option<RelPath>,
    handle: Rc<SafeDir>,
    names: VecDeque<OsString>,
}

fn sorted_names(handle: &mut SafeDir) -> Result<VecDeque<OsString>, String> {
    let mut names: Vec<OsString> = handle
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names.into())
}

fn rel_of(dir: &Option<RelPath>, name: &OsStr) -> Option<RelPath> {
    let b = name.as_encoded_bytes();
    match dir {
        Some(d) => d.join(b).ok(),
        None => RelPath::from_bytes(b).ok(),
    }
}

/// Every non-folder entry below a folder, in [`RelPath`] order (each folder's names sorted,
/// folders entered where they sort), with the handle of its folder.
struct DiskWalk {
    stack: Vec<Level>,
}

enum DiskItem {
    Entry {
        rel: RelPath,
        stat: EntryStat,
        parent: Rc<SafeDir>,
    },
    Unreadable {
        rel: Option<RelPath>,
        error: String,
    },
}

impl DiskWalk {
    fn new(mut root: SafeDir) -> (DiskWalk, Option<String>) {
        match sorted_names(&mut root) {
            Ok(names) => (
                DiskWalk {
                    stack: vec![Level {
                        dir: None,
                        handle: Rc::new(root),
                        names,
                    }],
                },
                None,
            ),
            Err(e) => (DiskWalk { stack: Vec::new() }, Some(e)),
        }
    }
}

impl Iterator for DiskWalk {
    type Item = DiskItem;
    fn next(&mut self) -> Option<DiskItem> {
        loop {
            let level = self.stack.last_mut()?;
            let Some(name) = level.names.pop_front() else {
                self.stack.pop();
                continue;
            };
            let Some(rel) = rel_of(&level.dir, &name) else {
                continue;
            };
            let handle = level.handle.clone();
            let stat = match handle.lstat(&name) {
                Ok(s) => s,
                Err(e) => {
                    return Some(DiskItem::Unreadable {
                        rel: Some(rel),
                        error: e.to_string(),
                    })
                }
            };
            if stat.kind != EntryKind::Dir {
                return Some(DiskItem::Entry {
                    rel,
                    stat,
                    parent: handle,
                });
            }
            match handle.open_dir(&name) {
                Ok(mut d) => match sorted_names(&mut d) {
                    Ok(names) => self.stack.push(Level {
                        dir: Some(rel),
                        handle: Rc::new(d),
                        names,
                    }),
                    Err(error) => {
                        return Some(DiskItem::Unreadable {
                            rel: Some(rel),
                            error,
                        })
                    }
                },
                Err(e) => {
                    return Some(DiskItem::Unreadable {
                        rel: Some(rel),
                        error: e.to_string(),
                    })
                }
            }
        }
    }
}

/// Opens `dist/<sub...>` as a folder, never following a symlink: `Ok(None)` when it does not
/// exist.
pub(crate) fn open_below(repo: &Repository, sub: &[&str]) -> Result<Option<SafeDir>, String> {
    let mut dir = SafeDir::open_root(repo.root()).map_err(|e| e.to_string())?;
    for s in sub {
        dir = match dir.open_dir(OsStr::new(s)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
    }
    Ok(Some(dir))
}

impl Checker<'_> {
    fn problem(&mut self, location: &str, path: Option<String>, kind: ProblemKind) {
        self.report.problems.push(Problem {
            location: location.to_owned(),
            path,
            kind,
        });
    }

    /// The mirror's rows merged with a walk of `mirror/`, both in walk order.
    fn check_mirror(&mut self, backup: &Backup) -> Result<(), ExploreError> {
        let repo = &backup.repo;
        let mut rows = MirrorWalk::new(backup.index(), None).peekable();
        let disk = match open_below(repo, &[crate::repo::MIRROR_DIR]) {
            Ok(Some(root)) => {
                let (walk, err) = DiskWalk::new(root);
                if let Some(error) = err {
                    self.problem("mirror", None, ProblemKind::Unreadable { error });
                }
                Some(walk)
            }
            Ok(None) => None,
            Err(error) => {
                self.problem("mirror", None, ProblemKind::Unreadable { error });
                None
            }
        };
        let mut disk = disk.into_iter().flatten().peekable();
        loop {
            // The next expected file (folders of the index are not judged: the original tool
            // and older versions recorded none).
            while let Some(Ok((_, e))) = rows.peek() {
                if e.kind != FileKind::Dir {
                    break;
                }
                rows.next();
            }
            if let Some(Err(_)) = rows.peek() {
                if let Some(Err(e)) = rows.next() {
                    return Err(e.into());
                }
            }
            let row_path = match rows.peek() {
                Some(Ok((p, _))) => Some(p.clone()),
                _ => None,
            };
            let disk_item = disk.peek();
            let disk_path = match disk_item {
                Some(DiskItem::Entry { rel, .. }) => Some(rel.clone()),
                Some(DiskItem::Unreadable { .. }) => {
                    if let Some(DiskItem::Unreadable { rel, error }) = disk.next() {
                        self.problem(
                            "mirror",
                            rel.map(|r| r.encode()),
                            ProblemKind::Unreadable { error },
                        );
                    }
                    continue;
                }
                None => None,
            };
            match (row_path, disk_path) {
                (None, None) => return Ok(()),
                (Some(r), d) if d.as_ref().is_none_or(|d| r < *d) => {
                    if let Some(Ok((p, e))) = rows.next() {
                        self.item(e.size);
                        self.problem("mirror", Some(p.encode()), ProblemKind::Missing);
                    }
                }
                (r, Some(d)) if r.as_ref().is_none_or(|r| d < *r) => {
                    disk.next();
                    self.problem("mirror", Some(d.encode()), ProblemKind::Extra);
                }
                _ => {
                    let (Some(Ok((p, e))), Some(DiskItem::Entry { stat, parent, .. })) =
                        (rows.next(), disk.next())
                    else {
                        continue;
                    };
                    let exp = Expected {
                        size: e.size,
                        mtime: e.mtime,
                        kind: e.kind,
                        hash: e.hash,
                    };
                    self.compare("mirror", &p, &exp, &stat, &parent);
                }
            }
        }
    }

    fn item(&mut self, size: u64) {
        self.report.files_checked += 1;
        (self.progress)(crate::progress::Work::Item {
            bytes: if self.verify { size } else { 0 },
        });
    }

    /// One recorded file against what is on disk.
    fn compare(
        &mut self,
        location: &str,
        rel: &RelPath,
        exp: &Expected,
        st: &EntryStat,
        parent: &SafeDir,
    ) {
        // A file this check reads tells its bytes as it hashes them (a big file moves the bar).
        let reads = self.verify
            && exp.hash.is_some()
            && st.kind != EntryKind::Symlink
            && !self.hashes.contains_key(&(st.dev, st.ino));
        self.item(if reads { 0 } else { exp.size });
        let problem = |kind| Problem {
            location: location.to_owned(),
            path: Some(rel.encode()),
            kind,
        };
        let is_link = st.kind == EntryKind::Symlink;
        let kind_ok = match exp.kind {
            // Or the plain file holding its target, on a dist without symlinks (its content
            // hashes as the target does).
            FileKind::Symlink => is_link || (st.kind == EntryKind::File && st.size == exp.size),
            _ => st.kind == EntryKind::File,
        };
        if !kind_ok {
            self.report
                .problems
                .push(problem(ProblemKind::KindMismatch));
            return;
        }
        if !is_link && st.size != exp.size {
            self.report
                .problems
                .push(problem(ProblemKind::SizeMismatch {
                    expected: exp.size,
                    actual: st.size,
                }));
        }
        if !mtime_matches(exp.mtime, st.mtime_ns) {
            self.report
                .problems
                .push(problem(ProblemKind::MtimeMismatch {
                    expected_ns: exp.mtime.ns,
                    actual_ns: st.mtime_ns,
                }));
        }
        if !self.verify {
            return;
        }
        let Some(want) = exp.hash else {
            self.report.files_without_hash += 1;
            return;
        };
        let name = rel.file_name_os();
        let got = if is_link {
            parent
                .read_link(&name)
                .map(|t| ContentHash::of(t.as_os_str().as_encoded_bytes()))
                .map_err(|e| e.to_string())
        } else {
            let key = (st.dev, st.ino);
            match self.hashes.get(&key) {
                Some(h) => h.clone(),
                None => {
                    let h = parent
                        .open_file(&name)
                        .map_err(|e| e.to_string())
                        .and_then(|mut f| {
                            let progress = self.progress;
                            hash_reader_telling(&mut f, &mut |n| {
                                progress(crate::progress::Work::Bytes { bytes: n })
                            })
                            .map_err(|e| e.to_string())
                        });
                    if st.nlink > 1 {
                        if self.hashes.len() >= HASH_CACHE {
                            self.hashes.clear();
                        }
                        self.hashes.insert(key, h.clone());
                    }
                    h
                }
            }
        };
        self.report.files_verified += 1;
        match got {
            Ok(h) if h == want => {}
            Ok(h) => self
                .report
                .problems
                .push(problem(ProblemKind::HashMismatch {
                    expected: want.to_hex(),
                    actual: h.to_hex(),
                })),
            Err(error) => self
                .report
                .problems
                .push(problem(ProblemKind::Unreadable { error })),
        }
    }

    /// One increment: each of `track/` and `deleted/` against its catalog, folder by folder,
    /// and anything else in the increment folder.
    fn check_increment(
        &mut self,
        backup: &Backup,
        inc: &IncrementRecord,
    ) -> Result<(), ExploreError> {
        let repo = &backup.repo;
        let name = inc.name.to_string();
        let mut original: Option<OriginalTool> = None;
        for cat in [Category::Tracked, Category::Deleted] {
            let mut pending: HashMap<Option<RelPath>, i64> = backup
                .index()
                .increment_folders_sorted(inc.id, Some(cat))?
                .into_iter()
                .map(|(id, p)| (p, id))
                .collect();
            match open_below(repo, &[&name, cat.dir_name()]) {
                Ok(Some(root)) => {
                    self.check_folder(backup, inc, cat, root, None, &mut pending, &mut original)?
                }
                Ok(None) => {}
                Err(error) => self.problem(
                    &name,
                    Some(cat.dir_name().to_owned()),
                    ProblemKind::Unreadable { error },
                ),
            }
            // Folders of the catalog that are not on disk (or could not be entered).
            let mut rest: Vec<(Option<RelPath>, i64)> = pending.into_iter().collect();
            rest.sort();
            for (_, id) in rest {
                for (n, e) in backup.index().increment_dir_events(inc.id, id, Some(cat))? {
                    self.item(e.size);
                    match backup.index().join_path(id, &n) {
                        Ok(rel) => self.problem(&name, Some(rel.encode()), ProblemKind::Missing),
                        // Only a damaged or edited index holds such a row: say so (rebuilding
                        // the index from the backup clears it).
                        Err(e) => self.problem(
                            &name,
                            Some(String::from_utf8_lossy(&n).into_owned()),
                            ProblemKind::Unreadable {
                                error: e.to_string(),
                            },
                        ),
                    }
                }
            }
        }
        // Anything else in the increment folder besides track/, deleted/ and its metadata.
        if let Ok(rd) = std::fs::read_dir(repo.increment_dir(&inc.name)) {
            let meta_name = format!("{name}.json");
            let mut extra: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n != crate::repo::TRACK_DIR && n != crate::repo::DELETED_DIR && *n != meta_name
                })
                .collect();
            extra.sort();
            for n in extra {
                self.problem(&name, Some(n), ProblemKind::Extra);
            }
        }
        Ok(())
    }

    /// The folder `dir` of one category of an increment: its entries against the catalog's,
    /// by name, then its subfolders.
    #[allow(clippy::too_many_arguments)]
    fn check_folder(
        &mut self,
        backup: &Backup,
        inc: &IncrementRecord,
        cat: Category,
        mut handle: SafeDir,
        dir: Option<RelPath>,
        pending: &mut HashMap<Option<RelPath>, i64>,
        original: &mut Option<OriginalTool>,
    ) -> Result<(), ExploreError> {
        let location = inc.name.to_string();
        let expected: Vec<(Vec<u8>, CatalogEntry)> = match pending.remove(&dir) {
            Some(id) => backup.index().increment_dir_events(inc.id, id, Some(cat))?,
            None => Vec::new(),
        };
        let names = match sorted_names(&mut handle) {
            Ok(n) => n,
            Err(error) => {
                self.problem(
                    &location,
                    dir.as_ref().map(RelPath::encode),
                    ProblemKind::Unreadable { error },
                );
                // Its entries are reported missing with the folders not found.
                if let Some(id) = backup.index().dir_id(dir.as_ref())? {
                    pending.insert(dir, id);
                }
                return Ok(());
            }
        };
        let mut expected: VecDeque<(Vec<u8>, CatalogEntry)> = expected.into();
        let mut subdirs = Vec::new();
        for name in names {
            let bytes = name.as_encoded_bytes();
            // Recorded names before this one are missing.
            while expected.front().is_some_and(|(n, _)| n.as_slice() < bytes) {
                if let Some((n, e)) = expected.pop_front() {
                    self.missing(&location, &dir, &n, &e);
                }
            }
            let recorded = match expected.front() {
                Some((n, _)) if n.as_slice() == bytes => expected.pop_front().map(|(_, e)| e),
                _ => None,
            };
            let Some(rel) = rel_of(&dir, &name) else {
                continue;
            };
            let stat = match handle.lstat(&name) {
                Ok(s) => s,
                Err(e) => {
                    if let Some(e) = &recorded {
                        self.item(e.size);
                    }
                    self.problem(
                        &location,
                        Some(rel.encode()),
                        ProblemKind::Unreadable {
                            error: e.to_string(),
                        },
                    );
                    continue;
                }
            };
            match (recorded, stat.kind == EntryKind::Dir) {
                (Some(e), true) => {
                    // A folder where a file was recorded.
                    self.item(e.size);
                    self.problem(&location, Some(rel.encode()), ProblemKind::Missing);
                    subdirs.push((name, rel));
                }
                (None, true) => subdirs.push((name, rel)),
                (Some(e), false) => self.compare(&location, &rel, &(&e).into(), &stat, &handle),
                (None, false) => {
                    if cat == Category::Deleted
                        && original
                            .get_or_insert_with(|| OriginalTool::of(&backup.repo, &inc.name))
                            .accepts_uncatalogued_deletion()
                    {
                        continue;
                    }
                    self.problem(&location, Some(rel.encode()), ProblemKind::Extra);
                }
            }
        }
        while let Some((n, e)) = expected.pop_front() {
            self.missing(&location, &dir, &n, &e);
        }
        for (name, rel) in subdirs {
            match handle.open_dir(&name) {
                Ok(d) => self.check_folder(backup, inc, cat, d, Some(rel), pending, original)?,
                Err(e) => self.problem(
                    &location,
                    Some(rel.encode()),
                    ProblemKind::Unreadable {
                        error: e.to_string(),
                    },
                ),
            }
        }
        Ok(())
    }

    fn missing(&mut self, location: &str, dir: &Option<RelPath>, name: &[u8], e: &CatalogEntry) {
        self.item(e.size);
        let path = match dir {
            Some(d) => d.join(name).map(|p| p.encode()),
            None => RelPath::from_bytes(name).map(|p| p.encode()),
        }
        .unwrap_or_else(|_| String::from_utf8_lossy(name).into_owned());
        self.problem(location, Some(path), ProblemKind::Missing);
    }
}

/// Whether an increment's metadata was written by the original Python tool, which kept the
/// last version of each deleted file in `deleted/` without cataloguing it (its summary counts
/// them as `deleted_files`). Read only when `deleted/` holds a file the catalog does not list.
struct OriginalTool {
    /// How many uncatalogued files of `deleted/` its summary accounts for (`None`: ours, so
    /// none).
    allowed: Option<u64>,
    seen: u64,
}

impl OriginalTool {
    fn of(repo: &Repository, name: &IncrementName) -> OriginalTool {
        struct Ignore;
        impl crate::format::CatalogSink for Ignore {
            fn entry(&mut self, _: RelPath, _: CatalogEntry) {}
            fn folder(&mut self, _: RelPath, _: crate::format::FolderEntry) {}
            fn problem(&mut self, _: crate::format::FormatProblem) {}
        }
        let path = repo.increment_meta_path(name);
        let header = std::fs::File::open(&path).ok().and_then(|f| {
            crate::format::read_increment(&path.display().to_string(), f, &mut Ignore).ok()
        });
        let allowed = header.and_then(|h| {
            // Ours writes `version` as a number (the schema); the original tool wrote "1.0" or
            // nothing.
            if h.version.as_u64().is_some_and(|v| v >= 2) {
                return None;
            }
            Some(
                h.extra
                    .get("summary")
                    .and_then(|s| s.get("deleted_files"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(u64::MAX),
            )
        });
        OriginalTool { allowed, seen: 0 }
    }

    fn accepts_uncatalogued_deletion(&mut self) -> bool {
        match self.allowed {
            Some(n) if self.seen < n => {
                self.seen += 1;
                true
            }
            _ => false,
        }
    }
}

/// blake3 of everything `r` reads.
pub fn hash_reader(r: &mut dyn Read) -> std::io::Result<ContentHash> {
    hash_reader_telling(r, &mut |_| {})
}

/// [`hash_reader`], telling `told` the bytes read, every [`WORK_BYTES_STEP`] and at the end.
///
/// [`WORK_BYTES_STEP`]: crate::progress::WORK_BYTES_STEP
pub fn hash_reader_telling(
    r: &mut dyn Read,
    told: &mut dyn FnMut(u64),
) -> std::io::Result<ContentHash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                pending += n as u64;
                if pending >= crate::progress::WORK_BYTES_STEP {
                    told(pending);
                    pending = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                told(pending);
                return Err(e);
            }
        }
    }
    told(pending);
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_mtimes_match_at_their_precision() {
        let ns = 1_704_448_800_987_654_321;
        // As the original tool recorded it: float seconds, read as whole microseconds.
        assert!(mtime_matches(MTime::from_ns(1_704_448_800_987_654_000), ns));
        assert!(mtime_matches(MTime::from_ns(1_704_448_800_987_655_000), ns));
        assert!(!mtime_matches(
            MTime::from_ns(1_704_448_800_987_657_000),
            ns
        ));
        // Ours: exact nanoseconds.
        assert!(mtime_matches(MTime::from_ns(ns), ns));
        assert!(!mtime_matches(MTime::from_ns(ns + 1), ns));
        // Before 1970.
        assert!(mtime_matches(
            MTime::from_ns(-1_500_000_000),
            -1_499_999_800
        ));
    }
}
