//! The `backup` run as named stages (SPEC §3): lock → recover → select (scan) → plan → apply →
//! commit. Each stage is a function from a value to a value; the I/O-heavy ones run on tokio's
//! blocking pool. Progress goes out through an [`EventSink`]; the result is a [`RunSummary`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use backup_platform::fs as pfs;

use crate::apply::{self, Stage};
use crate::commit::{self, CommitError};
use crate::config::Config;
use crate::durable::{self, DirRole, SyncSet};
use crate::format::{FormatError, MirrorIndex};
use crate::journal::{self, Journal, RecoveryError};
use crate::plan::{self, CompareMode, Plan};
use crate::progress::{Event, EventSink, FileError, RunNote};
use crate::repo::{IncrementName, RepoError, Repository};
use crate::scan::{self, ScanOutcome};

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Also compare content (blake3) of files whose size and mtime match.
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
    Index(#[from] FormatError),
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
    /// Selected files (and symlinks) in the source.
    pub selected: u64,
    pub errors: Vec<FileError>,
    pub notes: Vec<String>,
    pub link_fallback: bool,
    pub disk_full: bool,
    /// An interrupted earlier run that this run recovered.
    pub recovered: bool,
}

/// Stage 1: select — walk the source by the rules.
pub async fn select(config: &Config) -> Result<ScanOutcome, EngineError> {
    let c = config.clone();
    tokio::task::spawn_blocking(move || scan::scan(&c))
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))
}

/// Stage 2: plan — compare the selection (its entries are moved out of `scan`) with the
/// mirror index.
pub async fn plan_stage(
    scan: &mut ScanOutcome,
    index: Arc<MirrorIndex>,
    src: PathBuf,
    opts: RunOptions,
) -> Result<Plan, EngineError> {
    let entries = std::mem::take(&mut scan.entries);
    let unreadable = plan::unreadable(scan);
    tokio::task::spawn_blocking(move || {
        let mode = CompareMode {
            checksum_src: opts.checksum.then_some(src.as_path()),
        };
        plan::plan(entries, &unreadable, &index, mode)
    })
    .await
    .map_err(|e| EngineError::Internal(e.to_string()))
}

/// What `--dry-run` shows: the plan, computed without writing anything (not even `dist`).
#[derive(Debug)]
pub struct Preview {
    pub scan: ScanOutcome,
    pub plan: Plan,
    pub increment: Option<IncrementName>,
}

pub async fn preview(config: &Config, opts: RunOptions) -> Result<Preview, EngineError> {
    let repo = Repository::at(&config.dist);
    let index = if repo.mirror_index_path().exists() {
        repo.load_mirror_index()?.0
    } else {
        MirrorIndex::default()
    };
    let mut scan = select(config).await?;
    let plan = plan_stage(&mut scan, Arc::new(index), config.src.clone(), opts).await?;
    let increment = if plan.needs_increment() {
        let names = repo.increment_names().unwrap_or_default();
        Some(IncrementName::next(chrono::Local::now(), names.last()))
    } else {
        None
    };
    Ok(Preview {
        scan,
        plan,
        increment,
    })
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Result<T, EngineError>> {
    let h = tokio::task::spawn_blocking(f);
    async move { h.await.map_err(|e| EngineError::Internal(e.to_string())) }
}

/// Names the run's increment (when it stores something), writes the journal that names it,
/// then creates its folder. The folder is created exclusively: a run only ever removes or
/// fills a folder it created itself, and a name that is somehow taken (a file of that name at
/// `dist`) just moves on to the next name.
fn begin_changes(
    repo: &Repository,
    needs_increment: bool,
    started: chrono::DateTime<chrono::Local>,
) -> Result<(Option<IncrementName>, Journal), EngineError> {
    let journal_err = |source: std::io::Error| {
        let path = repo.journal_path().display().to_string();
        if pfs::is_disk_full(&source) {
            EngineError::Commit(CommitError::Write { path, source })
        } else {
            EngineError::Dist { path, source }
        }
    };
    if !needs_increment {
        return Ok((
            None,
            Journal::open(repo, None, started).map_err(journal_err)?,
        ));
    }
    let names = repo
        .increment_names()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    let mut name = IncrementName::next(started, names.last());
    for _ in 0..1000 {
        let journal = Journal::open(repo, Some(&name), started).map_err(journal_err)?;
        let dir = repo.increment_dir(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((Some(name), journal)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                name = IncrementName::next(started, Some(&name));
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
        repo.root().display()
    )))
}

/// A whole run.
pub async fn run(
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
    durable::create_dir_all_durable(repo.root()).map_err(|source| EngineError::Dist {
        path: repo.root().display().to_string(),
        source,
    })?;
    let _lock = repo.lock_for_writing().map_err(|e| match e {
        RepoError::Locked { dist, lock } => EngineError::Locked { dist, lock },
        RepoError::Lock { path, source } => EngineError::Dist { path, source },
        other => EngineError::Internal(other.to_string()),
    })?;

    let r = repo.clone();
    if let Some(rec) = blocking(move || journal::recover(&r)).await?? {
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
                increment,
                kept_files: rec.kept_files,
                restored: rec.restored,
            },
        );
    }

    // The mirror index and the source scan are independent: load one while walking the other.
    let t = std::time::Instant::now();
    let index_exists = repo.mirror_index_path().exists();
    let r = repo.clone();
    let index_task = blocking(move || {
        let t = std::time::Instant::now();
        let res = r.load_mirror_index();
        (res, t.elapsed())
    });
    let scan_task = select(config);
    let (index_res, scan_res) = tokio::join!(index_task, scan_task);
    let (index_res, index_time) = index_res?;
    let mut scan = scan_res?;
    let index = match index_res {
        Ok((index, _problems)) => index,
        Err(FormatError::Json { .. }) | Err(FormatError::Shape { .. }) => {
            // A damaged mirror.json: rebuild it from the mirror itself, as after a crash.
            let r = repo.clone();
            blocking(move || -> Result<MirrorIndex, EngineError> {
                Journal::open(&r, None, chrono::Local::now()).map_err(|source| {
                    EngineError::Dist {
                        path: r.journal_path().display().to_string(),
                        source,
                    }
                })?;
                journal::recover(&r)?;
                Ok(r.load_mirror_index()?.0)
            })
            .await??
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        files = index.files.len(),
        index_ms = index_time.as_millis() as u64,
        selected = scan.entries.len(),
        ms = t.elapsed().as_millis() as u64,
        "mirror.json loaded and source scanned"
    );
    events(Event::Scanned {
        files: scan.entries.len(),
    });
    summary.selected = scan.entries.len() as u64;
    for n in &scan.notes {
        note(&mut summary, RunNote::Scan(n.clone()));
    }
    for e in &scan.errors {
        let fe = FileError::new(e.rel.as_ref(), "scan", e.error.to_string());
        events(Event::Error(fe.clone()));
        summary.errors.push(fe);
    }

    // plan
    let index = Arc::new(index);
    let t = std::time::Instant::now();
    let plan = plan_stage(&mut scan, index.clone(), config.src.clone(), opts).await?;
    tracing::info!(
        copies = plan.copies.len(),
        deletes = plan.deletes.len(),
        ms = t.elapsed().as_millis() as u64,
        "planned"
    );
    summary.unchanged = plan.unchanged as u64;
    if plan.kept_unreadable > 0 {
        note(
            &mut summary,
            RunNote::KeptUnreadable {
                count: plan.kept_unreadable,
            },
        );
    }
    events(Event::Planned {
        copies: plan.copies.len(),
        bytes: plan.copy_bytes(),
        deletes: plan.deletes.len(),
    });
    let preserved = scan.preserved_dirs.clone();
    drop(scan);

    let sync = Arc::new(SyncSet::new(repo.root()));
    tracing::info!(strategy = ?sync.strategy(), "durability");
    if plan.is_empty() && index_exists {
        // A no-change run: the mirror already equals the selection; only make sure the
        // preserved (possibly empty) directories exist, durably.
        let mirror = repo.mirror_dir();
        let s = sync.clone();
        blocking(move || {
            for p in &preserved {
                let _ = s.create_dir_all(DirRole::Mirror, &p.under(&mirror));
            }
            s.flush()
        })
        .await?
        .map_err(CommitError::from)?;
        events(Event::Committed);
        return Ok(summary);
    }

    let (increment, journal) = {
        let r = repo.clone();
        let needs = plan.needs_increment();
        blocking(move || begin_changes(&r, needs, started)).await??
    };

    // apply
    let stage = Arc::new(Stage::new(
        repo.clone(),
        config.src.clone(),
        increment.clone(),
        &preserved,
        sync.clone(),
        events.clone(),
    ));
    let t = std::time::Instant::now();
    let applied = apply::apply(plan, stage, config.max_workers, preserved.clone()).await;
    tracing::info!(
        copied = applied.copied.len(),
        ms = t.elapsed().as_millis() as u64,
        "applied"
    );
    let t = std::time::Instant::now();
    for n in &applied.notes {
        summary.notes.push(n.to_string());
    }
    summary.copied = applied.copied.len() as u64;
    summary.copied_bytes = applied.copied_bytes;
    summary.removed = applied.deleted.len() as u64;
    summary.link_fallback = applied.link_fallback;
    summary.disk_full = applied.disk_full;
    if applied.link_fallback {
        summary.notes.push(format!(
            "{} cannot hard-link: increments store copies instead of links",
            repo.root().display()
        ));
    }
    summary.errors.extend(applied.errors.iter().cloned());

    // commit
    let mut index = Arc::try_unwrap(index).unwrap_or_else(|a| (*a).clone());
    let r = repo.clone();
    let committed = match blocking(move || {
        let meta = commit::fold(&mut index, applied, increment.as_ref(), started);
        commit::commit(
            &r,
            increment.as_ref(),
            meta.as_ref(),
            &mut index,
            Some(journal),
            &sync,
        )
    })
    .await?
    {
        Ok(c) => c,
        Err(e) => {
            // The journal is still there: rebuild the metadata and the index from what is on
            // disk right away, so the backup is consistent now when the disk allows it (a
            // full disk leaves it to the next run's recovery).
            let r = repo.clone();
            if let Ok(Ok(Some(_))) = blocking(move || journal::recover(&r)).await {
                summary.recovered = true;
            }
            return Err(e.into());
        }
    };
    tracing::info!(ms = t.elapsed().as_millis() as u64, "committed");
    summary.increment = committed.increment;
    summary.new = committed.new;
    summary.changed = committed.changed;
    summary.deleted = committed.deleted;
    events(Event::Committed);
    Ok(summary)
}
