//! The catalog: every increment's events, kept in step with the increments' metadata files.
//!
//! The metadata JSON of each increment is the truth (self-contained increments, readable
//! without us); the tables here are derived from it. [`Index::sync_catalog`] compares the
//! increment folders at `dist` (names, and the size and mtime of each metadata file) with what
//! the tables were built from, and reads again only what changed: an increment added, copied in
//! or renamed by hand, one removed, or metadata rewritten (`recreate`, `delete`). Each change
//! then re-folds only the paths it touched (`history::fold_path`) and recomputes the presence
//! spans of their folders.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::codec::{self, EventValues};
use super::query::Spans;
use super::{Index, IndexError, Result, ROOT_DIR};
use crate::format::{CatalogEntry, CatalogSink, Category, FileKind, FolderEntry, FormatProblem};
use crate::history::{fold_path, Holder};
use crate::identity::{IncrementName, IncrementTime, TimeSource};
use crate::relpath::RelPath;
use crate::repo::{Repository, WriteLock};

/// Whether an increment's metadata could be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncrementState {
    Ok,
    /// The folder has no metadata file (an interrupted run, or damage: see `recreate`).
    NoMetadata,
    /// The metadata file exists but cannot be read as metadata.
    Unreadable,
}

impl IncrementState {
    fn code(self) -> &'static str {
        match self {
            IncrementState::Ok => "ok",
            IncrementState::NoMetadata => "no-metadata",
            IncrementState::Unreadable => "unreadable",
        }
    }
    fn of(s: &str) -> IncrementState {
        match s {
            "ok" => IncrementState::Ok,
            "no-metadata" => IncrementState::NoMetadata,
            _ => IncrementState::Unreadable,
        }
    }
}

/// One increment as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementRecord {
    pub id: i64,
    pub name: IncrementName,
    pub time: IncrementTime,
    /// As its metadata wrote it.
    pub timestamp: Option<String>,
    pub state: IncrementState,
    /// Why the metadata could not be used.
    pub problem: Option<String>,
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    pub bytes: u64,
    pub folders: u64,
}

/// What [`Index::sync_catalog`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Increments read for the first time (new, copied in, renamed to a valid name).
    pub added: Vec<IncrementName>,
    /// Increments whose folder is gone (pruned, deleted or renamed by hand).
    pub removed: Vec<IncrementName>,
    /// Increments whose metadata changed and was read again.
    pub reread: Vec<IncrementName>,
}

impl SyncReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.reread.is_empty()
    }
}

/// The work of one [`Index::sync_catalog`]: what to report, which increments to (re)read
/// (with their metadata's stat and the row they replace), which rows to drop.
#[derive(Default)]
struct CatalogDiff {
    report: SyncReport,
    load: Vec<(IncrementName, MetaStat, Option<i64>)>,
    drop: Vec<i64>,
}

/// The metadata file of an increment as last seen: its size and mtime.
type MetaStat = Option<(i64, i64)>;

fn meta_stat(path: &std::path::Path) -> MetaStat {
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    Some((m.len() as i64, crate::format::MTime::of(&m).ns))
}

/// Paths and folders whose folded history must be recomputed before a write commits
/// ([`Index::settle`]).
#[derive(Debug, Default)]
pub struct Touched {
    paths: BTreeSet<(i64, Vec<u8>)>,
    dirs: HashSet<i64>,
    /// Too many to list: recompute everything.
    all: bool,
}

impl Touched {
    /// Beyond this many paths a full pass costs less than one query per path, and memory
    /// stays bounded.
    const MAX_PATHS: usize = 100_000;

    pub(crate) fn path(&mut self, dir: i64, name: &[u8]) {
        if self.all {
            return;
        }
        self.paths.insert((dir, name.to_vec()));
        self.dirs.insert(dir);
        if self.paths.len() > Self::MAX_PATHS {
            self.everything();
        }
    }

    pub(crate) fn dir(&mut self, dir: i64) {
        if !self.all {
            self.dirs.insert(dir);
        }
    }

    pub(crate) fn everything(&mut self) {
        self.all = true;
        self.paths.clear();
        self.dirs.clear();
    }
}

impl Index {
    fn record_of(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<IncrementRecord>> {
        let name: String = r.get(1)?;
        let Some(name) = IncrementName::parse(&name) else {
            return Ok(None);
        };
        let source = match r.get::<_, String>(5)?.as_str() {
            "recorded" => TimeSource::Recorded,
            "recorded-local" => TimeSource::RecordedLocal,
            _ => TimeSource::Name,
        };
        let ns: i64 = r.get(3)?;
        let offset: i32 = r.get(4)?;
        let tz = chrono::FixedOffset::east_opt(offset)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("UTC"));
        let at = chrono::DateTime::from_timestamp_nanos(ns).with_timezone(&tz);
        Ok(Some(IncrementRecord {
            id: r.get(0)?,
            name,
            time: IncrementTime { at, source },
            timestamp: r.get(6)?,
            state: IncrementState::of(&r.get::<_, String>(7)?),
            problem: r.get(8)?,
            files: r.get::<_, i64>(9)? as u64,
            new: r.get::<_, i64>(10)? as u64,
            changed: r.get::<_, i64>(11)? as u64,
            deleted: r.get::<_, i64>(12)? as u64,
            bytes: r.get::<_, i64>(13)? as u64,
            folders: r.get::<_, i64>(14)? as u64,
        }))
    }

    const RECORD_SELECT: &'static str = "SELECT id, name, ord, time_ns, utc_offset, time_source, \
        timestamp, state, problem, files, new, changed, deleted, bytes, folders FROM increments";

    /// Every increment folder the catalog knows, in increment order.
    pub fn increments(&self) -> Result<Vec<IncrementRecord>> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("{} ORDER BY ord", Self::RECORD_SELECT))
            .map_err(self.err("list increments"))?;
        let rows = stmt
            .query_map([], |r| {
                // ord is column 2; the record skips it.
                self.record_of(r)
            })
            .map_err(self.err("list increments"))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(rec) = r.map_err(self.err("list increments"))? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    pub fn increment(&self, name: &IncrementName) -> Result<Option<IncrementRecord>> {
        self.conn()
            .prepare_cached(&format!("{} WHERE name = ?1", Self::RECORD_SELECT))
            .and_then(|mut s| {
                s.query_row([name.as_str()], |r| self.record_of(r))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.err("read increment"))
    }

    /// Entries of the increment's metadata that could not be used.
    pub fn increment_problems(&self, id: i64) -> Result<Vec<(Option<String>, String)>> {
        self.conn()
            .prepare_cached("SELECT key, message FROM problems WHERE inc = ?1 ORDER BY rowid")
            .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(self.err("read problems"))
    }

    /// The catalog entries of one increment (its own events, not kept versions), in
    /// (folder, name) order, with their paths.
    pub fn increment_events(
        &self,
        id: i64,
        f: &mut dyn FnMut(RelPath, CatalogEntry) -> Result<()>,
    ) -> Result<()> {
        let mut after: (i64, Vec<u8>) = (0, Vec::new());
        loop {
            let page: Vec<(i64, Vec<u8>, CatalogEntry)> = self
                .conn()
                .prepare_cached(&format!(
                    "SELECT dir, name, {} FROM events INDEXED BY events_by_inc
                     WHERE inc = ?1 AND origin = 0 AND (dir, name) > (?2, ?3)
                     ORDER BY dir, name LIMIT 2048",
                    codec::EVENT_COLUMNS
                ))
                .and_then(|mut s| {
                    s.query_map(params![id, after.0, after.1], |r| {
                        Ok((r.get(0)?, r.get(1)?, codec::event_row_at(r, 2)?))
                    })?
                    .collect()
                })
                .map_err(self.err("read an increment's events"))?;
            let Some((d, n, _)) = page.last() else {
                return Ok(());
            };
            after = (*d, n.clone());
            for (dir, name, e) in page {
                if let Some(path) = self.path_of_row(dir, &name)? {
                    f(path, e)?;
                }
            }
        }
    }

    /// The folder records of one increment.
    pub fn increment_folders(
        &self,
        id: i64,
        f: &mut dyn FnMut(RelPath, FolderEntry) -> Result<()>,
    ) -> Result<()> {
        let rows: Vec<(i64, FolderEntry)> = self
            .conn()
            .prepare_cached(&format!(
                "SELECT dir, {} FROM folders WHERE inc = ?1",
                codec::FOLDER_COLUMNS
            ))
            .and_then(|mut s| {
                s.query_map([id], |r| Ok((r.get(0)?, codec::folder_row_at(r, 1)?)))?
                    .collect()
            })
            .map_err(self.err("read an increment's folders"))?;
        let mut rows: Vec<(RelPath, FolderEntry)> = rows
            .into_iter()
            .filter_map(|(d, e)| self.dir_path(d).ok().flatten().map(|p| (p, e)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, e) in rows {
            f(p, e)?;
        }
        Ok(())
    }

    /// `join_path` for readers walking many rows: a row whose folder or name no path can
    /// have (a damaged or crafted index) is `None`, so one bad row hides only itself.
    pub(crate) fn path_of_row(&self, dir: i64, name: &[u8]) -> Result<Option<RelPath>> {
        match self.join_path(dir, name) {
            Ok(p) => Ok(Some(p)),
            Err(IndexError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn join_path(&self, dir: i64, name: &[u8]) -> Result<RelPath> {
        match self.dir_path(dir)? {
            Some(d) => d.join(name),
            None => RelPath::from_bytes(name),
        }
        .map_err(|e| IndexError::Corrupt {
            path: self.path().display().to_string(),
            message: format!("a name in folder {dir}: {e}"),
        })
    }

    /// Brings the catalog in step with the increment folders at `dist`: reads the metadata of
    /// increments that are new or whose metadata changed, drops those whose folder is gone,
    /// and re-folds what they touched. Writes nothing when everything is current (read-only
    /// commands call this). Runs in its own transaction.
    ///
    /// `lock` is the caller's write lock, if it holds it. A caller without it (a mount, a
    /// read-only command) leaves a folder without metadata to the writer running beside it,
    /// which records that increment itself when it commits: waiting for it would hold the
    /// caller for the whole run.
    pub fn sync_catalog(&self, repo: &Repository, lock: Option<&WriteLock>) -> Result<SyncReport> {
        let leave_unfinished = lock.is_none() && repo.writer_running();
        let mut diff = self.catalog_diff(repo, leave_unfinished)?;
        if diff.report.is_empty() {
            return Ok(diff.report);
        }
        let own_txn = !self.in_transaction();
        if own_txn {
            self.begin()?;
            // Read again under the write lock: a writer that committed while this one waited
            // (a run that recorded its increment, a prune) has changed what is to be done.
            diff = match self.catalog_diff(repo, leave_unfinished) {
                Ok(d) if d.report.is_empty() => {
                    self.rollback()?;
                    return Ok(d.report);
                }
                Ok(d) => d,
                Err(e) => {
                    let _ = self.rollback();
                    return Err(e);
                }
            };
        }
        let CatalogDiff { report, load, drop } = diff;
        let result = (|| -> Result<()> {
            let mut touched = Touched::default();
            // A large first read (a new index over an existing backup) folds everything once
            // instead of path by path.
            if load.len() > 50 {
                touched.everything();
            }
            for id in drop {
                self.drop_increment(id, &mut touched)?;
            }
            for (name, stat, old) in load {
                if let Some(id) = old {
                    self.drop_increment(id, &mut touched)?;
                }
                self.load_increment(repo, &name, stat, &mut touched)?;
            }
            self.settle(&mut touched)
        })();
        match result {
            Ok(()) => {
                if own_txn {
                    self.commit()?;
                }
                Ok(report)
            }
            Err(e) => {
                if own_txn {
                    let _ = self.rollback();
                    self.forget_dirs();
                }
                Err(e)
            }
        }
    }

    /// What [`Index::sync_catalog`] has to do: the increment folders at `dist` against the
    /// rows of the index.
    fn catalog_diff(&self, repo: &Repository, leave_unfinished: bool) -> Result<CatalogDiff> {
        let names = repo.increment_names().map_err(|e| IndexError::Io {
            op: "list increments in",
            path: repo.root().display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let known: HashMap<String, (i64, Option<i64>, Option<i64>)> = self
            .conn()
            .prepare_cached("SELECT name, id, meta_len, meta_mtime_ns FROM increments")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
                    .collect()
            })
            .map_err(self.err("read increments"))?;
        let mut diff = CatalogDiff::default();
        let on_disk: HashSet<&str> = names.iter().map(IncrementName::as_str).collect();
        for name in &names {
            let stat = meta_stat(&repo.increment_meta_path(name));
            match known.get(name.as_str()) {
                // Being filled by the run beside us, which records it.
                None if stat.is_none() && leave_unfinished => {}
                None => {
                    diff.report.added.push(name.clone());
                    diff.load.push((name.clone(), stat, None));
                }
                Some((id, len, mtime)) => {
                    let recorded: MetaStat = len.zip(*mtime);
                    if recorded != stat {
                        diff.report.reread.push(name.clone());
                        diff.load.push((name.clone(), stat, Some(*id)));
                    }
                }
            }
        }
        for (name, (id, ..)) in &known {
            if !on_disk.contains(name.as_str()) {
                if let Some(n) = IncrementName::parse(name) {
                    diff.report.removed.push(n);
                }
                diff.drop.push(*id);
            }
        }
        diff.report.added.sort();
        diff.report.removed.sort();
        diff.report.reread.sort();
        Ok(diff)
    }

    /// Removes an increment and everything derived from it.
    pub(crate) fn drop_increment(&self, id: i64, touched: &mut Touched) -> Result<()> {
        if !touched.all {
            let paths: Vec<(i64, Vec<u8>)> = self
                .conn()
                .prepare_cached(
                    "SELECT dir, name FROM events INDEXED BY events_by_inc WHERE inc = ?1",
                )
                .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(self.err("read an increment's events"))?;
            for (d, n) in paths {
                touched.path(d, &n);
            }
            let dirs: Vec<i64> = self
                .conn()
                .prepare_cached("SELECT dir FROM folders WHERE inc = ?1")
                .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
                .map_err(self.err("read an increment's folders"))?;
            for d in dirs {
                touched.dir(d);
            }
        }
        for sql in [
            "DELETE FROM events WHERE inc = ?1",
            "DELETE FROM folders WHERE inc = ?1",
            "DELETE FROM problems WHERE inc = ?1",
            "DELETE FROM increments WHERE id = ?1",
        ] {
            self.conn()
                .prepare_cached(sql)
                .and_then(|mut s| s.execute([id]))
                .map_err(self.err("drop an increment"))?;
        }
        self.forget_increment_names();
        Ok(())
    }

    /// Whether increment `id` records any event of its own.
    pub fn increment_has_events(&self, id: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM events INDEXED BY events_by_inc
                                WHERE inc = ?1 AND origin = 0)",
            )
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(self.err("read an increment's events"))
    }

    /// Removes increment `id` and what was derived from it, re-folding what it touched.
    pub fn drop_increment_now(&self, id: i64) -> Result<()> {
        let mut touched = Touched::default();
        self.drop_increment(id, &mut touched)?;
        self.settle(&mut touched)
    }

    /// Adds an increment's row; its events follow. Returns its id.
    pub fn add_increment(
        &self,
        name: &IncrementName,
        time: &IncrementTime,
        timestamp: Option<&str>,
    ) -> Result<i64> {
        let source = match time.source {
            TimeSource::Recorded => "recorded",
            TimeSource::RecordedLocal => "recorded-local",
            TimeSource::Name => "name",
        };
        self.conn()
            .prepare_cached(
                "INSERT INTO increments(name, ord, time_ns, utc_offset, time_source, timestamp,
                                        state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'ok')",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name.as_str(),
                    name.sort_key(),
                    time.unix_ns(),
                    time.at.offset().local_minus_utc(),
                    source,
                    timestamp
                ])
            })
            .map_err(self.err("add an increment"))?;
        self.forget_increment_names();
        Ok(self.conn().last_insert_rowid())
    }

    /// Records one catalog event of increment `inc` (named `name`). `refold`: whether the
    /// path may have versions kept by other holders that this event changes (a changed or
    /// deleted path; never a path new to the backup).
    pub fn add_event(
        &self,
        inc: i64,
        name: &IncrementName,
        path: &RelPath,
        e: &CatalogEntry,
        refold: bool,
        touched: &mut Touched,
    ) -> Result<()> {
        let dir = self.dir_id_create(path.parent().as_ref())?;
        self.insert_event(dir, path.file_name(), &name.sort_key(), inc, 0, e)?;
        if refold {
            touched.path(dir, path.file_name());
        } else {
            touched.dir(dir);
        }
        Ok(())
    }

    fn insert_event(
        &self,
        dir: i64,
        file: &[u8],
        ord: &[u8],
        inc: i64,
        origin: i64,
        e: &CatalogEntry,
    ) -> Result<()> {
        let v = EventValues::of(e);
        self.conn()
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO events(dir, name, ord, inc, origin, {})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                codec::EVENT_COLUMNS
            ))
            .and_then(|mut s| {
                s.execute(params![
                    dir,
                    file,
                    ord,
                    inc,
                    origin,
                    v.category,
                    v.op,
                    v.kind,
                    v.size,
                    v.mtime_ns,
                    v.mode,
                    v.uid,
                    v.gid,
                    v.hash,
                    v.version_of,
                    v.extra
                ])
            })
            .map(|_| ())
            .map_err(self.err("record an event"))
    }

    /// Records the metadata of folder `path` as increment `inc` saw it.
    pub fn add_folder(
        &self,
        inc: i64,
        name: &IncrementName,
        path: &RelPath,
        f: &FolderEntry,
    ) -> Result<()> {
        let dir = self.dir_id_create(Some(path))?;
        let (mtime, mode, uid, gid, extra) = codec::folder_values(f);
        self.conn()
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO folders(dir, ord, inc, {})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                codec::FOLDER_COLUMNS
            ))
            .and_then(|mut s| {
                s.execute(params![
                    dir,
                    name.sort_key(),
                    inc,
                    mtime,
                    mode,
                    uid,
                    gid,
                    extra
                ])
            })
            .map(|_| ())
            .map_err(self.err("record folder metadata"))
    }

    /// Sets an increment's counts from its events and remembers which metadata file they
    /// came from (so the next sync does not read it again).
    pub fn finish_increment(&self, id: i64, meta: &std::path::Path) -> Result<()> {
        let stat = meta_stat(meta);
        self.conn()
            .prepare_cached(
                "UPDATE increments SET
                   files = (SELECT count(*) FROM events WHERE inc = ?1 AND origin = 0),
                   new = (SELECT count(*) FROM events WHERE inc = ?1 AND origin = 0 AND op = 0),
                   changed = (SELECT count(*) FROM events
                              WHERE inc = ?1 AND origin = 0 AND category = 0
                                AND (op IS NULL OR op = 1)),
                   deleted = (SELECT count(*) FROM events
                              WHERE inc = ?1 AND origin = 0 AND category = 1),
                   bytes = (SELECT CAST(min(total(size), 9.0e18) AS INTEGER) FROM events
                            WHERE inc = ?1 AND origin = 0),
                   folders = (SELECT count(*) FROM folders WHERE inc = ?1),
                   meta_len = ?2, meta_mtime_ns = ?3
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, stat.map(|s| s.0), stat.map(|s| s.1)]))
            .map(|_| ())
            .map_err(self.err("count an increment"))
    }

    /// Reads one increment's metadata file into the tables.
    fn load_increment(
        &self,
        repo: &Repository,
        name: &IncrementName,
        stat: MetaStat,
        touched: &mut Touched,
    ) -> Result<()> {
        let meta = repo.increment_meta_path(name);
        let shown = meta.display().to_string();
        let file = stat.map(|_| std::fs::File::open(&meta));
        let fallback = IncrementTime::of(None, name);
        let Some(file) = file else {
            let id = self.add_increment(name, &fallback, None)?;
            self.set_state(id, IncrementState::NoMetadata, None, stat)?;
            return Ok(());
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                let id = self.add_increment(name, &fallback, None)?;
                return self.set_state(
                    id,
                    IncrementState::Unreadable,
                    Some(format!("cannot read {shown}: {e}")),
                    stat,
                );
            }
        };
        // The increment's row first (its time comes from the header, which the streaming
        // parser returns at the end): events are added under a provisional time.
        let id = self.add_increment(name, &fallback, None)?;
        struct Sink<'a> {
            index: &'a Index,
            id: i64,
            name: &'a IncrementName,
            touched: &'a mut Touched,
            error: Option<IndexError>,
            problems: Vec<FormatProblem>,
        }
        impl CatalogSink for Sink<'_> {
            fn entry(&mut self, path: RelPath, entry: CatalogEntry) {
                if self.error.is_some() {
                    return;
                }
                if entry.kind == FileKind::Dir {
                    self.problems.push(FormatProblem {
                        file: String::new(),
                        key: Some(path.encode()),
                        message: "a folder in file_catalog skipped".into(),
                    });
                    return;
                }
                if let Err(e) =
                    self.index
                        .add_event(self.id, self.name, &path, &entry, true, self.touched)
                {
                    self.error = Some(e);
                }
            }
            fn folder(&mut self, path: RelPath, folder: FolderEntry) {
                if self.error.is_some() {
                    return;
                }
                match self.index.add_folder(self.id, self.name, &path, &folder) {
                    Ok(()) => {
                        if let Ok(Some(d)) = self.index.dir_id(Some(&path)) {
                            self.touched.dir(d);
                        }
                    }
                    Err(e) => self.error = Some(e),
                }
            }
            fn problem(&mut self, problem: FormatProblem) {
                self.problems.push(problem);
            }
        }
        let mut sink = Sink {
            index: self,
            id,
            name,
            touched,
            error: None,
            problems: Vec::new(),
        };
        let header = crate::format::read_increment(&shown, file, &mut sink);
        if let Some(e) = sink.error {
            return Err(e);
        }
        let problems = sink.problems;
        match header {
            Ok(h) => {
                let time = IncrementTime::of(Some(&h.timestamp), name);
                self.conn()
                    .prepare_cached(
                        "UPDATE increments SET time_ns = ?2, utc_offset = ?3, time_source = ?4,
                                timestamp = ?5 WHERE id = ?1",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            id,
                            time.unix_ns(),
                            time.at.offset().local_minus_utc(),
                            match time.source {
                                TimeSource::Recorded => "recorded",
                                TimeSource::RecordedLocal => "recorded-local",
                                TimeSource::Name => "name",
                            },
                            h.timestamp
                        ])
                    })
                    .map_err(self.err("record an increment's time"))?;
                for p in problems {
                    self.conn()
                        .prepare_cached(
                            "INSERT INTO problems(inc, key, message) VALUES (?1, ?2, ?3)",
                        )
                        .and_then(|mut s| s.execute(params![id, p.key, p.message]))
                        .map_err(self.err("record a problem"))?;
                }
                self.finish_increment(id, &meta)?;
                Ok(())
            }
            Err(e) => {
                // Unusable metadata: no events from it at all (a truncated file must never
                // answer for the increment with half its catalog).
                self.conn()
                    .prepare_cached("DELETE FROM events WHERE inc = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(self.err("drop a broken increment's events"))?;
                self.conn()
                    .prepare_cached("DELETE FROM folders WHERE inc = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(self.err("drop a broken increment's folders"))?;
                self.set_state(id, IncrementState::Unreadable, Some(e.to_string()), stat)
            }
        }
    }

    fn set_state(
        &self,
        id: i64,
        state: IncrementState,
        problem: Option<String>,
        stat: MetaStat,
    ) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE increments SET state = ?2, problem = ?3, meta_len = ?4, meta_mtime_ns = ?5
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    state.code(),
                    problem,
                    stat.map(|s| s.0),
                    stat.map(|s| s.1)
                ])
            })
            .map(|_| ())
            .map_err(self.err("record an increment's state"))
    }

    /// Re-folds the touched paths and recomputes the touched folders' spans.
    pub fn settle(&self, touched: &mut Touched) -> Result<()> {
        if touched.all {
            self.refold_all()?;
            self.spans_all()?;
        } else {
            let paths = std::mem::take(&mut touched.paths);
            for (dir, name) in &paths {
                self.refold(*dir, name)?;
            }
            let dirs = std::mem::take(&mut touched.dirs);
            self.spans_of(dirs)?;
        }
        *touched = Touched::default();
        Ok(())
    }

    /// Recomputes the versions other holders keep for one path (`history::fold_path`).
    pub(crate) fn refold(&self, dir: i64, name: &[u8]) -> Result<()> {
        let Some(path) = self.path_of_row(dir, name)? else {
            return Ok(());
        };
        let rows: Vec<(i64, CatalogEntry)> = self
            .conn()
            .prepare_cached(&format!(
                "SELECT inc, {} FROM events WHERE dir = ?1 AND name = ?2 AND origin = 0
                 ORDER BY ord",
                codec::EVENT_COLUMNS
            ))
            .and_then(|mut s| {
                s.query_map(params![dir, name], |r| {
                    Ok((r.get(0)?, codec::event_row_at(r, 1)?))
                })?
                .collect()
            })
            .map_err(self.err("read a path's events"))?;
        let mut names: Vec<(IncrementName, i64)> = Vec::with_capacity(rows.len());
        for (inc, _) in &rows {
            let n = self
                .increment_name(*inc)?
                .ok_or_else(|| IndexError::Corrupt {
                    path: self.path().display().to_string(),
                    message: format!("an event of {} names no increment", path.display()),
                })?;
            names.push((n, *inc));
        }
        let events: Vec<(&IncrementName, &CatalogEntry)> = names
            .iter()
            .zip(&rows)
            .map(|((n, _), (_, e))| (n, e))
            .collect();
        let mirror = self.mirror_get(&path)?;
        let folded = fold_path(&path, &events, mirror.as_ref());
        self.conn()
            .prepare_cached("DELETE FROM events WHERE dir = ?1 AND name = ?2 AND origin != 0")
            .and_then(|mut s| s.execute(params![dir, name]))
            .map_err(self.err("drop kept versions"))?;
        let ids: HashMap<&IncrementName, i64> = names.iter().map(|(n, id)| (n, *id)).collect();
        for f in folded.iter().filter(|f| f.kept) {
            let Some(v) = &f.version else { continue };
            let (inc, origin) = match &v.holder {
                Holder::Increment { name, .. } => match ids.get(name) {
                    Some(id) => (*id, 1),
                    None => continue,
                },
                Holder::Mirror => (0, 2),
            };
            let entry = CatalogEntry {
                size: v.size,
                mtime: v.mtime,
                category: Category::Tracked,
                op: None,
                kind: v.kind,
                mode: v.mode,
                hash: v.hash,
                // Where a kept version started, for its name in `history/` and for `log`.
                version_of: v.start.clone(),
                attrs: v.attrs.clone(),
            };
            let ord =
                f.at.as_ref()
                    .map(IncrementName::sort_key)
                    .unwrap_or_default();
            self.insert_event(dir, name, &ord, inc, origin, &entry)?;
        }
        Ok(())
    }

    /// Re-folds every path: after a large catalog change (a rebuild).
    fn refold_all(&self) -> Result<()> {
        self.conn()
            .execute("DELETE FROM events WHERE origin != 0", [])
            .map_err(self.err("drop kept versions"))?;
        // Paths with events, a page at a time.
        let mut after: (i64, Vec<u8>) = (0, Vec::new());
        loop {
            let page = self.event_paths_after(&after)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for (d, n) in &page {
                self.refold(*d, n)?;
            }
            after = last;
        }
        // Tracked files of the mirror that no remaining increment records: the mirror alone
        // keeps their version.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.mirror_page(after.as_deref(), 2048)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.sort_key());
            for (rel, e) in &page {
                if !e.tracked || e.kind == FileKind::Dir {
                    continue;
                }
                let dir = self.dir_id_create(rel.parent().as_ref())?;
                let has: bool = self
                    .conn()
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM events WHERE dir = ?1 AND name = ?2)",
                    )
                    .and_then(|mut s| s.query_row(params![dir, rel.file_name()], |r| r.get(0)))
                    .map_err(self.err("read a path's events"))?;
                if !has {
                    self.refold(dir, rel.file_name())?;
                }
            }
        }
        Ok(())
    }

    /// The spans of one folder, from its files' events and its subfolders' spans.
    fn compute_spans(&self, id: i64) -> Result<Spans> {
        let rows: Vec<(Vec<u8>, Vec<u8>, i64)> = self
            .conn()
            .prepare_cached(
                "SELECT name, ord, category FROM events WHERE dir = ?1 ORDER BY name, ord",
            )
            .and_then(|mut s| {
                s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(self.err("read a folder's events"))?;
        let mut spans = Spans::default();
        let mut i = 0;
        while i < rows.len() {
            let mut j = i;
            while j < rows.len() && rows[j].0 == rows[i].0 {
                j += 1;
            }
            let tl: Vec<(Vec<u8>, bool)> = rows[i..j]
                .iter()
                .map(|(_, ord, cat)| (ord.clone(), *cat == 0))
                .collect();
            spans.0.extend(Spans::of_timeline(&tl).0);
            i = j;
        }
        let subs: Vec<Option<Vec<u8>>> = self
            .conn()
            .prepare_cached("SELECT spans FROM dirs WHERE parent = ?1")
            .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
            .map_err(self.err("read subfolders"))?;
        for b in subs.into_iter().flatten() {
            if let Some(s) = Spans::decode(&b) {
                spans.0.extend(s.0);
            }
        }
        spans.normalize();
        Ok(spans)
    }

    fn store_spans(&self, id: i64, spans: &Spans) -> Result<bool> {
        let old = self.dir_spans(id)?;
        if &old == spans {
            return Ok(false);
        }
        self.conn()
            .prepare_cached("UPDATE dirs SET spans = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, spans.encode()]))
            .map_err(self.err("store folder spans"))?;
        Ok(true)
    }

    /// Recomputes the spans of `dirs` and, where they changed, of their ancestors.
    fn spans_of(&self, dirs: HashSet<i64>) -> Result<()> {
        // Deepest first, so a folder sees its subfolders' new spans.
        let mut by_depth: BTreeSet<(std::cmp::Reverse<i64>, i64)> = BTreeSet::new();
        for id in dirs {
            by_depth.insert((std::cmp::Reverse(self.dir_depth(id)?), id));
        }
        while let Some((_, id)) = by_depth.pop_first() {
            if id == ROOT_DIR {
                continue;
            }
            let spans = self.compute_spans(id)?;
            if self.store_spans(id, &spans)? {
                let (parent, depth) = self.dir_parent(id)?;
                if parent != ROOT_DIR {
                    by_depth.insert((std::cmp::Reverse(depth - 1), parent));
                }
            }
        }
        Ok(())
    }

    fn spans_all(&self) -> Result<()> {
        let max: i64 = self
            .conn()
            .query_row("SELECT coalesce(max(depth), 0) FROM dirs", [], |r| r.get(0))
            .map_err(self.err("read folders"))?;
        for depth in (1..=max).rev() {
            let mut after = 0i64;
            loop {
                let ids: Vec<i64> = self
                    .conn()
                    .prepare_cached(
                        "SELECT id FROM dirs WHERE depth = ?1 AND id > ?2 ORDER BY id LIMIT 1024",
                    )
                    .and_then(|mut s| s.query_map(params![depth, after], |r| r.get(0))?.collect())
                    .map_err(self.err("read folders"))?;
                let Some(&last) = ids.last() else { break };
                for id in ids {
                    let spans = self.compute_spans(id)?;
                    self.store_spans(id, &spans)?;
                }
                after = last;
            }
        }
        Ok(())
    }

    fn dir_depth(&self, id: i64) -> Result<i64> {
        self.dir_parent(id).map(|(_, d)| d)
    }

    fn dir_parent(&self, id: i64) -> Result<(i64, i64)> {
        self.conn()
            .prepare_cached("SELECT parent, depth FROM dirs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(self.err("read folder"))
    }
}
