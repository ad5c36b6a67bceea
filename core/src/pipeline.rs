//! The `backup` run as named stages (`docs/format.md`, "How a run writes"): lock → recover → select (scan) → plan → apply →
//! commit — as a stream, so memory follows the work, not the size of the backup.
//!
//! One concurrency style: plain threads joined by bounded channels (`std::sync::mpsc`), each
//! stage on its own thread(s), inside one `std::thread::scope`:
//!
//! ```text
//! scan ──items──▶ plan (merges with the index's mirror rows, in walk order)
//!                  │  deletions and folders: done here, in order
//!                  └──copies──▶ copy workers (max_workers) ──┐
//!                  └──────────── records ───────────────────▶ recorder (the index's writer)
//! ```
//!
//! The scan and the index both go in walk order, so the plan is one merge; the copies (the
//! slow part) run in parallel; the recorder owns the index's write transaction and writes
//! rows as results come. Deletions stay on the plan's thread because order matters there: a
//! path that turned from a file into a folder (or back) must be free before it is written.
//! The other names of a hard-link group wait until the copies of their first names are done.
//! Channels are bounded, so nothing accumulates: a slow disk slows the scan down instead of
//! filling memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use backup_platform::fs as pfs;

use crate::apply::{self, CopyResult, Stage, StagedCopy};
use crate::commit::{CommitError, Record, Recorder};
use crate::config::Config;
use crate::durable::{self, Strategy, SyncSet};
use crate::index::{Index, IndexError};
use crate::journal::{self, Journal, RecoveryError};
use crate::plan::{CompareMode, CopyItem, Plan, Planner, Step};
use crate::progress::{Event, EventSink, FileError, RunNote};
use crate::repo::{IncrementName, RepoError, Repository};
use crate::scan::{self, ScanItem, ScanOutcome};

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Also compare content (blake3) of files whose size and mtime match, and repair mirror
    /// copies that no longer hold what was recorded.
    pub checksum: bool,
}

/// Why a run was refused or stopped before it could finish (exit status 2, or 1 for a full
/// disk that stopped the commit).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "another backup is running on {dist} (lock {lock} is held); try again when it has finished"
    )]
    Locked { dist: String, lock: String },
    #[error("cannot use dist {path}: {source}")]
    Dist {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0}")]
    Commit(#[from] CommitError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Disk full while recording the run: nothing stored earlier is lost, the next run
    /// (with space freed) recovers this one.
    pub fn is_disk_full(&self) -> bool {
        match self {
            EngineError::Commit(c) => c.is_disk_full(),
            EngineError::Recovery(r) => r.is_disk_full(),
            EngineError::Dist { source, .. } => pfs::is_disk_full(source),
            EngineError::Index(e) => e.is_disk_full(),
            _ => false,
        }
    }
    /// True for refusals before anything was changed.
    pub fn is_refusal(&self) -> bool {
        matches!(self, EngineError::Locked { .. } | EngineError::Dist { .. })
            && !self.is_disk_full()
    }
}

/// The result of a run, for people (summary line) and machines (`--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    /// The increment written by this run (`None`: no tracked change).
    pub increment: Option<IncrementName>,
    /// Tracked events stored in the increment.
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Files copied into the mirror (tracked and untracked) and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files removed from the mirror (deleted or no longer selected).
    pub removed: u64,
    pub unchanged: u64,
    /// `--checksum`: mirror copies found damaged and copied again from the source.
    pub repaired: u64,
    /// Selected files (and symlinks) in the source.
    pub selected: u64,
    pub errors: Vec<FileError>,
    pub notes: Vec<String>,
    pub link_fallback: bool,
    pub disk_full: bool,
    /// An interrupted earlier run that this run recovered.
    pub recovered: bool,
}

/// What `--dry-run` shows: the plan, computed without writing anything (not even `dist`).
#[derive(Debug)]
pub struct Preview {
    /// Notes and errors of the scan (its entries went to the plan).
    pub scan: ScanOutcome,
    pub plan: Plan,
    pub increment: Option<IncrementName>,
}

/// The index a dry run compares with: the backup's own, read only — or, where there is none
/// yet, one built in a temporary file from what the backup holds (an old `mirror.json`, the
/// mirror folder), so a dry run writes nothing at `dist`.
fn preview_index(repo: &Repository) -> Result<(Index, Option<tempfile::TempDir>), EngineError> {
    if let Some(i) = Index::open_read_only(repo)? {
        return Ok((i, None));
    }
    let dir = tempfile::tempdir().map_err(|source| EngineError::Dist {
        path: std::env::temp_dir().display().to_string(),
        source,
    })?;
    let index = Index::open_at(&dir.path().join("index.sqlite"), false)?;
    if repo.root().is_dir() {
        index.sync_catalog(repo, None)?;
        index.fill_mirror_from(repo)?;
    }
    Ok((index, Some(dir)))
}

pub async fn preview(config: &Config, opts: RunOptions) -> Result<Preview, EngineError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || preview_blocking(&config, opts))
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
}

fn preview_blocking(config: &Config, opts: RunOptions) -> Result<Preview, EngineError> {
    let repo = Repository::at(&config.dist);
    let (index, _temp) = preview_index(&repo)?;
    let mut plan = Plan::default();
    let mut outcome = ScanOutcome::default();
    let (tx, rx) = sync_channel::<Vec<ScanItem>>(16);
    let mode = compare_mode(config, &repo, opts);
    let counts = std::thread::scope(|s| -> Result<_, EngineError> {
        let scan = s.spawn(move || scan_batched(config, tx));
        let result = index.read(|idx| {
            let mut planner = Planner::new(idx, config.src.clone(), mode);
            let mut keep = |step: Step| match step {
                Step::Copy(c) => plan.copies.push(c),
                Step::Delete(d) => plan.deletes.push(d),
                _ => {}
            };
            for item in rx.iter().flatten() {
                planner.feed(item, &mut keep)?;
            }
            planner.finish(&mut keep)?;
            Ok(planner.counts)
        });
        let summary = scan
            .join()
            .map_err(|_| EngineError::Internal("the scan panicked".into()))?;
        outcome.notes = summary.notes;
        outcome.errors = summary.errors;
        Ok(result?)
    })?;
    plan.unchanged = counts.unchanged as usize;
    plan.kept_unreadable = counts.kept_unreadable as usize;
    let increment = if counts.tracked_copies > 0 || counts.tracked_deletes > 0 {
        let names = repo.increment_names().unwrap_or_default();
        Some(IncrementName::next(chrono::Local::now(), names.last()))
    } else {
        None
    };
    Ok(Preview {
        scan: outcome,
        plan,
        increment,
    })
}

/// Items handed from one of the run's threads to another in batches: a thread wakes once per
/// batch, not once per file (per-file hand-offs cost more in futex calls and context switches
/// than the copy of a small file).
struct Batch<T> {
    tx: SyncSender<Vec<T>>,
    buf: Vec<T>,
    max: usize,
}

impl<T> Batch<T> {
    fn new(tx: SyncSender<Vec<T>>, max: usize) -> Self {
        Batch {
            tx,
            buf: Vec::with_capacity(max),
            max,
        }
    }

    /// Queues `item`; sends the batch once full. `Err` when the receiver is gone.
    fn push(&mut self, item: T) -> Result<(), ()> {
        self.buf.push(item);
        if self.buf.len() >= self.max {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(self.max));
        self.tx.send(batch).map_err(|_| ())
    }
}

/// Scanned entries per batch.
const SCAN_BATCH: usize = 256;

/// Runs the scan, sending what it finds in batches.
fn scan_batched(config: &Config, tx: SyncSender<Vec<ScanItem>>) -> scan::ScanSummary {
    let mut batch = Batch::new(tx, SCAN_BATCH);
    let outcome = scan::scan_stream(config, &mut |_| {}, &mut |item| match batch.push(item) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        // The plan stopped (an error): so does the scan.
        Err(()) => std::ops::ControlFlow::Break(()),
    });
    let _ = batch.flush();
    outcome
}

fn compare_mode(config: &Config, repo: &Repository, opts: RunOptions) -> CompareMode {
    CompareMode {
        checksum: opts
            .checksum
            .then(|| (config.src.clone(), repo.mirror_dir())),
    }
}

/// A whole run.
pub async fn run(
    config: &Config,
    opts: RunOptions,
    events: EventSink,
) -> Result<RunSummary, EngineError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || run_blocking(&config, opts, events))
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
}

/// What the steps of a run send to the recorder.
// Nearly every message is a `Record`: boxing it would add an allocation per file to save
// channel slots that are bounded anyway.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Record),
    Failed(FileError),
    Vanished,
    Skipped,
}

/// The run's changes begin lazily, at the first step that changes anything: the journal is
/// written then (a run with nothing to do writes nothing), and the increment is named and
/// created at the first step that stores a version.
struct Changes<'a> {
    repo: &'a Repository,
    stage: &'a Stage,
    started: chrono::DateTime<chrono::Local>,
    journal: Option<Journal>,
    increment: Option<IncrementName>,
    prepared: bool,
}

impl Changes<'_> {
    fn begin(&mut self) -> Result<(), EngineError> {
        if self.prepared {
            return Ok(());
        }
        self.journal =
            Some(Journal::open(self.repo, None, self.started).map_err(|e| self.journal_err(e))?);
        apply::prepare(self.stage).map_err(|(e, full)| {
            if full {
                EngineError::Commit(CommitError::Write {
                    path: e.path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::StorageFull, e.message),
                })
            } else {
                EngineError::Dist {
                    path: e.path.clone(),
                    source: std::io::Error::other(e.message),
                }
            }
        })?;
        self.prepared = true;
        Ok(())
    }

    fn journal_err(&self, source: std::io::Error) -> EngineError {
        let path = self.repo.journal_path().display().to_string();
        if pfs::is_disk_full(&source) {
            EngineError::Commit(CommitError::Write { path, source })
        } else {
            EngineError::Dist { path, source }
        }
    }

    /// Names the run's increment, writes the journal that names it, then creates its folder.
    /// The folder is created exclusively: a run only ever removes or fills a folder it created
    /// itself, and a name that is somehow taken (a file of that name at `dist`) just moves on
    /// to the next name. Returns the name when this call made it.
    fn increment(&mut self) -> Result<Option<IncrementName>, EngineError> {
        if self.increment.is_some() {
            return Ok(None);
        }
        self.begin()?;
        let names = self
            .repo
            .increment_names()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut name = IncrementName::next(self.started, names.last());
        for _ in 0..1000 {
            self.journal = Some(
                Journal::open(self.repo, Some(&name), self.started)
                    .map_err(|e| self.journal_err(e))?,
            );
            let dir = self.repo.increment_dir(&name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    self.stage
                        .sync()
                        .entry_changed(crate::durable::DirRole::Dist, &dir);
                    self.stage.set_increment(name.clone());
                    self.increment = Some(name.clone());
                    return Ok(Some(name));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    name = IncrementName::next(self.started, Some(&name));
                }
                Err(source) => {
                    let path = dir.display().to_string();
                    return Err(if pfs::is_disk_full(&source) {
                        EngineError::Commit(CommitError::Write { path, source })
                    } else {
                        EngineError::Dist { path, source }
                    });
                }
            }
        }
        Err(EngineError::Internal(format!(
            "no free increment name after {name} in {}",
            self.repo.root().display()
        )))
    }
}

fn run_blocking(
    config: &Config,
    opts: RunOptions,
    events: EventSink,
) -> Result<RunSummary, EngineError> {
    // One instant names the increment and is recorded as its time.
    let started = chrono::Local::now();
    let repo = Repository::at(&config.dist);
    let mut summary = RunSummary::default();
    let note = |summary: &mut RunSummary, n: RunNote| {
        summary.notes.push(n.to_string());
        events(Event::Note(n));
    };

    // A new `dist` is made durable in its parent at once: everything under it hangs on that.
    // Its `mirror/` too, so that even a first run with nothing selected leaves a backup that
    // every command opens (an empty source is a backup of nothing, not "not a backup").
    durable::create_dir_all_durable(&repo.mirror_dir()).map_err(|source| EngineError::Dist {
        path: repo.root().display().to_string(),
        source,
    })?;
    let lock = repo.lock_for_writing().map_err(|e| match e {
        RepoError::Locked { dist, lock } => EngineError::Locked { dist, lock },
        RepoError::Lock { path, source } => EngineError::Dist { path, source },
        other => EngineError::Internal(other.to_string()),
    })?;

    if let Some(rec) = journal::recover(&repo, &lock, Some(&config.src))? {
        summary.recovered = true;
        let increment = rec.increment.map(|n| n.as_str().to_owned());
        for rel in &rec.lost {
            // Metadata had promised it (a drive that did not keep what it was told to): never
            // dropped silently.
            let e = FileError::new(
                Some(rel),
                "recover",
                format!(
                    "the version recorded in {} is not on the disk (lost before it was durable); removed from its catalog",
                    increment.as_deref().unwrap_or("the interrupted increment")
                ),
            );
            events(Event::Error(e.clone()));
            summary.errors.push(e);
        }
        note(
            &mut summary,
            RunNote::Recovered {
                increment: increment.clone(),
                kept_files: rec.kept_files,
                restored: rec.restored,
            },
        );
        if rec.unwritten > 0 {
            note(
                &mut summary,
                RunNote::UnwrittenCopies {
                    increment: increment.unwrap_or_else(|| "its increment".into()),
                    count: rec.unwritten,
                },
            );
        }
    }

    let opened = Index::open_for(&repo, Some(&lock))?;
    for n in &opened.notes {
        note(&mut summary, RunNote::Index(n.to_string()));
    }
    let index_path = opened.index.path().to_path_buf();
    let sync = Arc::new(SyncSet::new(repo.root()));
    tracing::info!(strategy = ?sync.strategy(), "durability");
    let stage = Stage::new(
        repo.clone(),
        config.src.clone(),
        sync.clone(),
        events.clone(),
    );
    let mut recorder = Recorder::new(opened.index, repo.clone(), started)?;
    let mode = compare_mode(config, &repo, opts);
    let reader = Index::open_at(&index_path, true)?;

    // Bounded everywhere: at most a few thousand entries in flight, whatever the file count.
    let (scan_tx, scan_rx) = sync_channel::<Vec<ScanItem>>(16);
    // `dist` exists by now (made above): its file system decides how many copies run at once.
    let on_fuse = pfs::on_fuse(repo.root());
    let workers = config.copiers(on_fuse).max(1);
    let (work_tx, work_rx) = sync_channel::<Vec<CopyItem>>(workers * 2);
    let work_rx = Mutex::new(work_rx);
    let (rec_tx, rec_rx) = sync_channel::<Vec<Msg>>(64);
    let t = std::time::Instant::now();

    let mut changes = Changes {
        repo: &repo,
        stage: &stage,
        started,
        journal: None,
        increment: None,
        prepared: false,
    };
    // Where each new file is fsynced, that wait is the installers' (many at once, so the file
    // system commits them together); the copiers go on reading and writing.
    // On FUSE more concurrency only queues at the daemon: the copiers install themselves there.
    // A `max_workers` set in the profile bounds the fsyncs waiting at once too.
    let installer_count = match config.max_workers_set {
        true => config.max_workers,
        false => INSTALLERS,
    };
    let (mut install_tx, install_rx) = match sync.strategy() {
        Strategy::EachFile if !on_fuse => {
            let (tx, rx) = sync_channel::<Box<StagedCopy>>(installer_count * 2);
            (Some(tx), Some(Mutex::new(rx)))
        }
        _ => (None, None),
    };
    let outcome = std::thread::scope(|s| {
        // The sender moves into the scan's thread: the plan's loop ends when the scan does.
        let scan = s.spawn(move || scan_batched(config, scan_tx));
        let mut installers = Vec::new();
        if let Some(install_rx) = &install_rx {
            for _ in 0..installer_count {
                let rec_tx = rec_tx.clone();
                let stage = &stage;
                let spawned = std::thread::Builder::new()
                    .name("install".into())
                    .stack_size(INSTALLER_STACK)
                    .spawn_scoped(s, move || install_worker(stage, install_rx, &rec_tx));
                match spawned {
                    Ok(h) => installers.push(h),
                    // Fewer threads (a tight limit) only means fewer fsyncs at once.
                    Err(e) => tracing::warn!("cannot start an installer thread: {e}"),
                }
            }
        }
        if installers.is_empty() {
            // None at all: the copiers install what they copy themselves.
            install_tx = None;
        }
        let mut copiers = Vec::new();
        for _ in 0..workers {
            let rec_tx = rec_tx.clone();
            let install_tx = install_tx.clone();
            let (stage, work_rx) = (&stage, &work_rx);
            copiers.push(s.spawn(move || copy_worker(stage, work_rx, install_tx, &rec_tx)));
        }
        drop(install_tx);
        let recording = s.spawn(|| record_all(&mut recorder, rec_rx));
        // The plan runs here; everything it hands out goes to the copiers or the recorder.
        let planned = plan_all(
            &reader,
            config,
            mode,
            scan_rx,
            &stage,
            &mut changes,
            work_tx,
            &rec_tx,
        );
        drop(rec_tx);
        let scanned = scan.join();
        for c in copiers {
            let _ = c.join();
        }
        for i in installers {
            let _ = i.join();
        }
        let recorded = recording.join();
        (planned, scanned, recorded)
    });
    let (planned, scanned, recorded) = outcome;
    let scanned = scanned.map_err(|_| EngineError::Internal("the scan panicked".into()))?;
    let recorded = recorded.map_err(|_| EngineError::Internal("the recorder panicked".into()))?;
    for n in &scanned.notes {
        note(&mut summary, RunNote::Scan(n.clone()));
    }
    for e in &scanned.errors {
        let fe = FileError::new(e.rel.as_ref(), "scan", e.error.to_string());
        events(Event::Error(fe.clone()));
        summary.errors.push(fe);
    }
    summary.selected = scanned.progress.entries;
    let (counts, links) = match planned {
        Ok(p) => p,
        Err(e) => {
            recorder.abandon();
            return Err(e);
        }
    };
    let tally = match recorded {
        Ok(t) => t,
        Err(e) => {
            recorder.abandon();
            return Err(e.into());
        }
    };
    tracing::info!(
        copies = counts.copies,
        deletes = counts.deletes,
        ms = t.elapsed().as_millis() as u64,
        "planned and applied"
    );
    summary.unchanged = counts.unchanged;
    summary.repaired = counts.repairs;
    if counts.kept_unreadable > 0 {
        note(
            &mut summary,
            RunNote::KeptUnreadable {
                count: counts.kept_unreadable as usize,
            },
        );
    }
    summary.copied = tally.copied;
    summary.copied_bytes = tally.copied_bytes;
    summary.removed = tally.removed;
    summary.errors.extend(tally.errors);

    // The other names of hard-link groups, now that their first names are in the mirror.
    for (_, item) in links.items {
        let Some(first) = item.hardlink_of.clone() else {
            continue;
        };
        let first_entry = match recorder.mirror_entry(&first) {
            Ok(Some(e)) => e,
            Ok(None) => {
                // Its first name could not be copied: this name gets a copy of its own.
                match apply::copy_one(
                    &stage,
                    CopyItem {
                        hardlink_of: None,
                        ..item
                    },
                ) {
                    CopyResult::Done(c) => {
                        summary.copied += 1;
                        summary.copied_bytes += c.entry.size;
                        recorder.record(Record::Copied(c))?;
                    }
                    CopyResult::Failed(e) => summary.errors.push(e),
                    _ => {}
                }
                continue;
            }
            Err(e) => {
                recorder.abandon();
                return Err(e.into());
            }
        };
        match apply::link_one(&stage, item, &first, &first_entry) {
            CopyResult::Done(c) => {
                summary.copied += 1;
                recorder.record(Record::Copied(c))?;
            }
            CopyResult::Failed(e) => summary.errors.push(e),
            _ => {}
        }
    }

    summary.link_fallback = stage.link_fallback();
    summary.disk_full = stage.disk_full();
    if summary.link_fallback {
        summary.notes.push(format!(
            "{} cannot hard-link: increments store copies instead of links",
            repo.root().display()
        ));
    }
    let journal = changes.journal.take();
    if journal.is_none() && !recorder.changed() {
        // A no-change run: nothing at all was written.
        recorder.abandon();
        events(Event::Committed);
        return Ok(summary);
    }
    let committed = match recorder.finish(&stage, journal, &mut summary.errors) {
        Ok(c) => c,
        Err(e) => {
            // The journal is still there: recover right away, so the backup is consistent now
            // when the disk allows it (a full disk leaves it to the next run's recovery).
            if let Ok(Some(_)) = journal::recover(&repo, &lock, Some(&config.src)) {
                summary.recovered = true;
            }
            return Err(e.into());
        }
    };
    summary.increment = committed.increment;
    summary.new = committed.new;
    summary.changed = committed.changed;
    summary.deleted = committed.deleted;
    events(Event::Committed);
    Ok(summary)
}

/// What the recorder counted.
#[derive(Default)]
struct Tally {
    copied: u64,
    copied_bytes: u64,
    removed: u64,
    errors: Vec<FileError>,
}

fn record_all(recorder: &mut Recorder, rx: Receiver<Vec<Msg>>) -> Result<Tally, CommitError> {
    let mut tally = Tally::default();
    let mut failure = None;
    for msg in rx.into_iter().flatten() {
        // After a failure the channel is still drained, so no sender ever blocks.
        if failure.is_some() {
            continue;
        }
        let r = match msg {
            Msg::Record(r) => {
                match &r {
                    Record::Copied(c) => {
                        tally.copied += 1;
                        tally.copied_bytes += c.entry.size;
                    }
                    Record::Deleted(_) => tally.removed += 1,
                    _ => {}
                }
                recorder.record(r)
            }
            Msg::Failed(e) => {
                tally.errors.push(e);
                Ok(())
            }
            Msg::Vanished | Msg::Skipped => Ok(()),
        };
        if let Err(e) = r {
            failure = Some(e);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}

fn copy_worker(
    stage: &Stage,
    rx: &Mutex<Receiver<Vec<CopyItem>>>,
    install: Option<SyncSender<Box<StagedCopy>>>,
    tx: &SyncSender<Vec<Msg>>,
) {
    loop {
        let batch = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(batch) = batch else { return };
        let mut msgs = Vec::with_capacity(batch.len());
        for item in batch {
            let staged = match apply::stage_one(stage, item) {
                apply::Staging::Staged(s) => s,
                apply::Staging::Done(done) => {
                    msgs.push(msg_of(done));
                    continue;
                }
            };
            // Handed on when installers run (they make it durable and name it), else here.
            let staged = match &install {
                Some(i) => match i.send(staged) {
                    Ok(()) => continue,
                    Err(back) => back.0,
                },
                None => staged,
            };
            msgs.push(msg_of(apply::install_staged(stage, staged)));
        }
        if !msgs.is_empty() && tx.send(msgs).is_err() {
            return;
        }
    }
}

fn msg_of(result: CopyResult) -> Msg {
    match result {
        CopyResult::Done(c) => Msg::Record(Record::Copied(c)),
        CopyResult::Vanished(_) => Msg::Vanished,
        CopyResult::Failed(e) => Msg::Failed(e),
        CopyResult::Skipped => Msg::Skipped,
    }
}

/// How many installers wait on fsyncs at once on a local file system, unless `max_workers` is
/// set (then that many): enough for a journaling file system to commit many in one go, not so
/// many that they crowd each other.
/// Measured on ext4, 200,000 small files, 8 copiers: 8 installers 20.1 s, 32 13.2-13.7 s,
/// 128 21.0 s (one `syncfs` instead of any fsync: 5.4-5.6 s; docs/bench.md).
const INSTALLERS: usize = 32;
/// They only wait and rename (an exFAT copy into the increment uses the heap): small stacks.
const INSTALLER_STACK: usize = 256 * 1024;
/// Results sent to the recorder at once (it wakes per batch, not per file).
const INSTALL_BATCH: usize = 32;

/// Makes staged copies durable and gives them their names; the results go to the recorder in
/// batches, or as soon as no other copy is waiting.
fn install_worker(stage: &Stage, rx: &Mutex<Receiver<Box<StagedCopy>>>, tx: &SyncSender<Vec<Msg>>) {
    let mut msgs = Vec::new();
    loop {
        let next = match rx.lock() {
            Ok(r) if msgs.is_empty() => r.recv().ok(),
            Ok(r) => match r.try_recv() {
                Ok(s) => Some(s),
                Err(TryRecvError::Empty) => None,
                // Sent below, then the next `recv` ends the loop.
                Err(TryRecvError::Disconnected) => None,
            },
            Err(_) => return,
        };
        match next {
            Some(staged) => {
                msgs.push(msg_of(apply::install_staged(stage, staged)));
                if msgs.len() < INSTALL_BATCH {
                    continue;
                }
            }
            None if msgs.is_empty() => return,
            None => {}
        }
        if tx.send(std::mem::take(&mut msgs)).is_err() {
            return;
        }
    }
}

/// What the plan hands on, batched: copies to the workers, the rest to the recorder.
struct Outbox {
    work: Batch<CopyItem>,
    work_bytes: u64,
    rec: Batch<Msg>,
}

/// Copies per batch, and the bytes after which a batch goes anyway (big files spread over
/// the workers instead of queueing behind one).
const COPY_BATCH: usize = 32;
const COPY_BATCH_BYTES: u64 = 8 << 20;

impl Outbox {
    fn copy(&mut self, item: CopyItem) -> Result<(), EngineError> {
        self.work_bytes += item.entry.size;
        // Not `Batch::push`, which would send the copies ahead of the records queued before
        // them (the increment they go into).
        self.work.buf.push(item);
        if self.work.buf.len() >= self.work.max || self.work_bytes >= COPY_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn record(&mut self, msg: Msg) -> Result<(), EngineError> {
        self.rec
            .push(msg)
            .map_err(|_| EngineError::Internal("the recorder stopped".into()))
    }

    /// Sends everything queued: the recorder's first, so that it knows the increment before
    /// any copy into it reports back.
    fn flush(&mut self) -> Result<(), EngineError> {
        self.rec
            .flush()
            .map_err(|_| EngineError::Internal("the recorder stopped".into()))?;
        self.work_bytes = 0;
        self.work
            .flush()
            .map_err(|_| EngineError::Internal("the copy workers stopped".into()))
    }
}

/// The plan's thread: merges the scan with the index and hands every step on.
#[allow(clippy::too_many_arguments)]
fn plan_all(
    reader: &Index,
    config: &Config,
    mode: CompareMode,
    scan_rx: Receiver<Vec<ScanItem>>,
    stage: &Stage,
    changes: &mut Changes<'_>,
    work_tx: SyncSender<Vec<CopyItem>>,
    rec_tx: &SyncSender<Vec<Msg>>,
) -> Result<(crate::plan::PlanCounts, apply::LinkQueue), EngineError> {
    let mut links = apply::LinkQueue::default();
    let out = std::cell::RefCell::new(Outbox {
        work: Batch::new(work_tx, COPY_BATCH),
        work_bytes: 0,
        rec: Batch::new(rec_tx.clone(), SCAN_BATCH),
    });
    // The mirror's rows as they were when the run began (one snapshot of the index).
    let result = reader.read(|idx| {
        let mut planner = Planner::new(idx, config.src.clone(), mode);
        let failure: std::cell::RefCell<Option<EngineError>> = std::cell::RefCell::new(None);
        let mut handle = |step: Step| {
            if failure.borrow().is_some() {
                return;
            }
            if let Err(e) = step_one(step, stage, changes, &mut out.borrow_mut(), &mut links) {
                *failure.borrow_mut() = Some(e);
            }
        };
        for batch in scan_rx.iter() {
            for item in batch {
                planner.feed(item, &mut handle)?;
            }
            // What this batch planned goes now: a quiet stretch of the tree does not hold
            // back the copies found before it.
            if let Err(e) = out.borrow_mut().flush() {
                failure.borrow_mut().get_or_insert(e);
            }
            if failure.borrow().is_some() {
                break;
            }
        }
        if failure.borrow().is_none() {
            planner.finish(&mut handle)?;
            if let Err(e) = out.borrow_mut().flush() {
                failure.borrow_mut().get_or_insert(e);
            }
        }
        let failure = failure.into_inner();
        Ok((planner.counts, failure))
    });
    // The workers end when this last sender goes.
    drop(out);
    let (counts, failure) = result?;
    if let Some(e) = failure {
        return Err(e);
    }
    stage.events_planned(&counts);
    Ok((counts, links))
}

fn step_one(
    step: Step,
    stage: &Stage,
    changes: &mut Changes<'_>,
    out: &mut Outbox,
    links: &mut apply::LinkQueue,
) -> Result<(), EngineError> {
    match step {
        Step::Copy(item) => {
            changes.begin()?;
            if item.increment_op().is_some() {
                if let Some(name) = changes.increment()? {
                    out.record(Msg::Record(Record::IncrementCreated(name)))?;
                }
            }
            if item.hardlink_of.is_some() {
                links.items.insert(item.entry.rel.clone(), item);
            } else {
                out.copy(item)?;
            }
        }
        Step::Delete(d) => {
            changes.begin()?;
            if d.is_tracked() {
                if let Some(name) = changes.increment()? {
                    out.record(Msg::Record(Record::IncrementCreated(name)))?;
                }
            }
            match apply::delete_one(stage, &d) {
                Ok(del) => out.record(Msg::Record(Record::Deleted(del)))?,
                Err((e, full)) => {
                    if full {
                        stage.mark_disk_full();
                    }
                    stage.report_error(&e);
                    out.record(Msg::Failed(e))?
                }
            }
        }
        Step::Folder(f) => {
            changes.begin()?;
            match apply::apply_folder(stage, &f) {
                Ok(entry) => {
                    out.record(Msg::Record(Record::Folder(f.folder.rel.clone(), entry)))?
                }
                Err((e, full)) => {
                    if full {
                        stage.mark_disk_full();
                    }
                    stage.report_error(&e);
                    out.record(Msg::Failed(e))?
                }
            }
        }
        Step::Touch { rel, entry } => out.record(Msg::Record(Record::Touch(rel, entry)))?,
        Step::FolderRecord(rel) => out.record(Msg::Record(Record::FolderRecord(rel)))?,
    }
    Ok(())
}

impl Stage {
    fn events_planned(&self, counts: &crate::plan::PlanCounts) {
        self.emit(Event::Scanned {
            files: (counts.unchanged + counts.copies) as usize,
        });
        self.emit(Event::Planned {
            copies: counts.copies as usize,
            bytes: counts.copy_bytes,
            deletes: counts.deletes as usize,
        });
    }

    fn report_error(&self, e: &FileError) {
        self.emit(Event::Error(e.clone()));
    }
}
