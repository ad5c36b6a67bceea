//! `restore`: a plan (which version of which file, read from where, with which metadata) and
//! its application under a target folder.
//!
//! Nothing is ever written outside the target, whatever lies on disk or is swapped in while
//! the restore runs: the target is opened once, and every folder, file and symlink under it is
//! reached through directory handles that never follow a symlink
//! ([`backup_platform::sandbox::SafeDir`]). A folder swapped for a symlink mid-run makes the
//! files below it fail with a message naming the path and the operation; a handle already open
//! stays on the real folder. Files are written to a temporary name and renamed into place (an
//! existing symlink is replaced, never written through). Sources are read the same way, so a
//! symlink inside the backup is never followed.
//!
//! Metadata is applied by handle in the kernel's order (owner, mode, xattrs/ACLs, mtime);
//! owners only when running as root. Folders get their metadata after their contents, deepest
//! first, so a folder of mode 000 still receives its children and writing them does not
//! disturb its mtime.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use backup_platform::dir::{EntryKind, EntryStat};
use backup_platform::meta::{self, Apply};
use backup_platform::sandbox::{FsError, SafeDir, DIR_MODE, PRIVATE_DIR_MODE};
use backup_platform::sparse::{copy_sparse, Holes};
use serde::Serialize;

use super::mask::Selection;
use super::point::Point;
use super::walk::{MirrorWalk, SnapItem, SnapshotWalk};
use super::{holder_root, Backup, ExploreError};
use crate::durable::Strategy;
use crate::format::{ContentHash, FileKind};
use crate::history::Holder;
use crate::relpath::{os_from_bytes, RelPath};

pub use backup_platform::meta::Xattr;

/// What to do with a destination file that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    Always,
    /// Replace unless size and mtime already equal the version's.
    IfChanged,
    /// Replace only when the version's mtime is newer than the existing file's.
    IfNewer,
    #[default]
    Never,
}

/// How a restore runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub overwrite: Overwrite,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Remove what the snapshot does not have from the folders restored (selected paths only).
    pub delete: bool,
}

pub use crate::format::Owner;

/// One file or symlink to restore.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub path: RelPath,
    /// Folder of the backup the bytes are read from (`mirror` or `<increment>/<category>`).
    #[serde(skip)]
    pub root: Rc<Path>,
    /// Shared by every item of the same holder (a restore of a million files holds one copy).
    #[serde(serialize_with = "rc_str")]
    pub from: Rc<str>,
    pub size: u64,
    pub mtime_ns: i64,
    /// `st_mode & 0o7777`; `None`: the stored file's.
    pub mode: Option<u32>,
    pub kind: FileKind,
    #[serde(skip)]
    pub hash: Option<ContentHash>,
    /// `None`: not recorded (the restoring user keeps the file).
    pub owner: Option<Owner>,
    /// Applied when [`Plan::xattrs_recorded`].
    #[serde(skip)]
    pub xattrs: Vec<Xattr>,
    /// The file had holes: make holes from zero blocks even if the stored copy has none.
    pub sparse: bool,
    /// Another restored path of the same hard-link group, restored before this one.
    pub hardlink_of: Option<RelPath>,
}

/// A folder's recorded metadata.
#[derive(Clone, Debug, Serialize)]
pub struct DirItem {
    pub path: RelPath,
    pub mode: Option<u32>,
    pub owner: Option<Owner>,
    pub mtime_ns: Option<i64>,
    #[serde(skip)]
    pub xattrs: Vec<Xattr>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub at: String,
    pub items: Vec<Item>,
    /// Folders with recorded metadata (created even when empty).
    pub dirs: Vec<DirItem>,
    /// Whether the catalog records xattrs: then each entry's set is restored exactly (an empty
    /// set removes inherited ones); otherwise xattrs are left alone.
    pub xattrs_recorded: bool,
    /// The backup's root: a target inside it is refused, so a restore never alters the backup.
    #[serde(skip)]
    pub dist: PathBuf,
    /// What was asked for: `--delete` removes only extras it selects.
    #[serde(skip)]
    pub selection: Selection,
}

fn rc_str<S: serde::Serializer>(v: &Rc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// Where a version's bytes are read from: its holder's folder and its label, shared by every
/// item that holder keeps.
type Source = (Rc<Path>, Rc<str>);

fn source_of(repo: &crate::repo::Repository, holder: &Holder) -> Source {
    let from = match holder {
        Holder::Mirror => "mirror".to_owned(),
        Holder::Increment { name, category } => format!("{name}/{}", category.dir_name()),
    };
    (holder_root(repo, holder).into(), from.into())
}

fn item_of(path: RelPath, (root, from): &Source, v: Stored) -> Item {
    Item {
        path,
        root: root.clone(),
        from: from.clone(),
        size: v.size,
        mtime_ns: v.mtime.ns,
        mode: v.mode,
        kind: v.kind,
        hash: v.hash,
        owner: v.attrs.owner,
        xattrs: v.attrs.xattrs,
        sparse: v.attrs.sparse,
        hardlink_of: v.attrs.hardlink_of,
    }
}

/// What the index records of a stored version.
struct Stored {
    size: u64,
    mtime: crate::format::MTime,
    mode: Option<u32>,
    kind: FileKind,
    hash: Option<ContentHash>,
    attrs: crate::format::Attrs,
}

fn dir_item(path: RelPath, f: &crate::format::FolderEntry) -> DirItem {
    DirItem {
        path,
        mode: f.mode,
        owner: f.attrs.owner.clone(),
        mtime_ns: Some(f.mtime.ns),
        xattrs: f.attrs.xattrs.clone(),
    }
}

/// The files and folders of `point` selected by `selection`, sorted by path, with the metadata
/// the index records for them (mode, mtime, owner, xattrs, holes, hard-link groups; folders
/// from the increments' folder records, else the mirror's). Holds them all: for a large
/// restore, [`stream`] hands them out one at a time.
pub fn plan(backup: &Backup, point: &Point, selection: &Selection) -> Result<Plan, ExploreError> {
    let s = stream(backup, point, selection)?;
    let mut items = Vec::new();
    let mut dirs = Vec::new();
    let (at, dist, xattrs_recorded) = (s.at, s.dist, s.xattrs_recorded);
    for e in s.entries {
        match e? {
            Entry::File(i) => items.push(i),
            Entry::Dir(d) => dirs.push(d),
        }
    }
    Ok(Plan {
        at,
        items,
        dirs,
        xattrs_recorded,
        dist,
        selection: selection.clone(),
    })
}

/// [`plan`], one entry at a time in path order: only the selected paths are walked when the
/// selection names paths; a snapshot walk holds one folder listing per level.
pub fn stream<'a>(
    backup: &'a Backup,
    point: &Point,
    selection: &Selection,
) -> Result<Stream<'a>, ExploreError> {
    let index = backup.index();
    let roots: VecDeque<Option<RelPath>> = match selection.roots() {
        Some(r) => r.into_iter().map(Some).collect(),
        None => [None].into(),
    };
    let xattrs_recorded = index.records_attributes(*point == Point::Mirror)?;
    Ok(Stream {
        at: point.label(),
        dist: backup.repo.root().to_path_buf(),
        xattrs_recorded,
        entries: Box::new(Entries {
            backup,
            point: point.clone(),
            selection: selection.clone(),
            roots,
            walk: Walk::None,
            sources: HashMap::new(),
        }),
        totals: None,
    })
}

enum Walk<'a> {
    None,
    Mirror(MirrorWalk<'a>),
    Snapshot(SnapshotWalk<'a>),
}

/// The entries of a restore, pulled from walks of the index, root after root.
struct Entries<'a> {
    backup: &'a Backup,
    point: Point,
    selection: Selection,
    roots: VecDeque<Option<RelPath>>,
    walk: Walk<'a>,
    sources: HashMap<Holder, Source>,
}

impl Entries<'_> {
    fn source(&mut self, holder: &Holder) -> Source {
        self.sources
            .entry(holder.clone())
            .or_insert_with(|| source_of(&self.backup.repo, holder))
            .clone()
    }

    fn step(&mut self) -> Result<Option<Entry>, ExploreError> {
        loop {
            match &mut self.walk {
                Walk::None => {
                    let Some(root) = self.roots.pop_front() else {
                        return Ok(None);
                    };
                    let index = self.backup.index();
                    self.walk = match &self.point {
                        Point::Mirror => Walk::Mirror(MirrorWalk::new(index, root.as_ref())),
                        Point::Increment(at) => {
                            Walk::Snapshot(SnapshotWalk::new(index, at, root.as_ref()))
                        }
                    };
                }
                Walk::Mirror(w) => {
                    let Some(row) = w.next() else {
                        self.walk = Walk::None;
                        continue;
                    };
                    let (path, e) = row?;
                    if !self.selection.is_match(&path) {
                        continue;
                    }
                    if e.kind == FileKind::Dir {
                        return Ok(Some(Entry::Dir(DirItem {
                            path,
                            mode: e.mode,
                            owner: e.attrs.owner.clone(),
                            mtime_ns: Some(e.mtime.ns),
                            xattrs: e.attrs.xattrs.clone(),
                        })));
                    }
                    let source = self.source(&Holder::Mirror);
                    let stored = Stored {
                        size: e.size,
                        mtime: e.mtime,
                        mode: e.mode,
                        kind: e.kind,
                        hash: e.hash,
                        attrs: e.attrs,
                    };
                    return Ok(Some(Entry::File(item_of(path, &source, stored))));
                }
                Walk::Snapshot(w) => {
                    let Some(step) = w.next() else {
                        self.walk = Walk::None;
                        continue;
                    };
                    match step? {
                        SnapItem::Dir(path) => {
                            let Point::Increment(at) = &self.point else {
                                continue;
                            };
                            if !self.selection.is_match(&path) {
                                continue;
                            }
                            if let Some(f) = self.backup.index().folder_at(&path, at)? {
                                return Ok(Some(Entry::Dir(dir_item(path, &f))));
                            }
                        }
                        SnapItem::File(v) => {
                            let v = *v;
                            if !self.selection.is_match(&v.path) {
                                continue;
                            }
                            let source = self.source(&v.holder);
                            let stored = Stored {
                                size: v.size,
                                mtime: v.mtime,
                                mode: v.mode,
                                kind: v.kind,
                                hash: v.hash,
                                attrs: v.attrs,
                            };
                            return Ok(Some(Entry::File(item_of(v.path, &source, stored))));
                        }
                    }
                }
            }
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, ExploreError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.roots.clear();
                self.walk = Walk::None;
                Some(Err(e))
            }
        }
    }
}

/// A catalog entry that was left out because it could not be used (an unsafe path such as
/// `../x`, a malformed entry).
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub increment: crate::repo::IncrementName,
    /// The entry's key as the metadata wrote it.
    pub key: String,
    pub reason: String,
}

/// What a restore at `point` should say besides its results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Warnings {
    /// Entries of the catalogs up to `point` that were skipped.
    pub skipped: Vec<Skipped>,
    /// Increments up to `point` whose metadata cannot be read: the files they changed may
    /// show an older version (or be missing) at `point` until they are repaired.
    pub unreadable_before: Vec<crate::repo::IncrementName>,
}

pub fn warnings(backup: &Backup, point: &Point) -> Result<Warnings, ExploreError> {
    let mut w = Warnings::default();
    let Point::Increment(at) = point else {
        return Ok(w);
    };
    for rec in backup.increments()? {
        if rec.name > *at {
            break;
        }
        if rec.state != crate::index::IncrementState::Ok {
            w.unreadable_before.push(rec.name);
            continue;
        }
        for (key, reason) in backup.index().increment_problems(rec.id)? {
            if let Some(key) = key {
                w.skipped.push(Skipped {
                    increment: rec.name.clone(),
                    key,
                    reason,
                });
            }
        }
    }
    Ok(w)
}

/// What happened (or, in a dry run, would happen) to one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Outcome {
    /// Written where nothing was.
    Create,
    /// Written over an existing file or symlink.
    Replace,
    /// An existing file was kept (`--overwrite never`, or not newer with `if-newer`).
    SkipExists,
    /// The existing file already has the version's size and mtime.
    SkipUnchanged,
    /// Removed by `--delete`.
    Delete,
    /// A folder created on the way.
    Mkdir,
    Failed {
        error: String,
    },
}

impl Outcome {
    /// Whether the file was (or would be) written.
    pub fn is_written(&self) -> bool {
        matches!(self, Outcome::Create | Outcome::Replace)
    }
}

/// What a result is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultKind {
    File,
    Symlink,
    Folder,
}

#[derive(Clone, Debug, Serialize)]
pub struct ItemResult {
    pub path: RelPath,
    pub kind: ResultKind,
    /// Where the bytes come from (empty for folders and deletions).
    #[serde(serialize_with = "rc_str")]
    pub from: Rc<str>,
    pub size: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub at: String,
    pub to: String,
    pub dry_run: bool,
    /// Owners were recorded but this restore ran as a user, so files kept that user's ids.
    pub owners_kept: bool,
    pub results: Vec<ItemResult>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }
}

/// Applies `plan` under `to` (created if missing). Per-file failures are reported, not fatal.
pub fn apply(plan: &Plan, to: &Path, opts: &Options) -> Result<Report, ExploreError> {
    apply_with_progress(plan, to, opts, &|_| {})
}

/// The target opened (or, in a dry run, only resolved) and the backup's folders to read from.
struct Prepared {
    root: Option<SafeDir>,
    shown: PathBuf,
    sources: Sources,
}

fn prepare(dist: &Path, to: &Path, opts: &Options) -> Result<Prepared, ExploreError> {
    let dist_real = dist
        .canonicalize()
        .map_err(|e| ExploreError::io("resolve", dist, e))?;
    if resolve_existing_prefix(to).starts_with(&dist_real) {
        return Err(ExploreError::Refused(format!(
            "{} lies inside the backup {}; restore somewhere else",
            to.display(),
            dist_real.display()
        )));
    }
    let root = if opts.dry_run && !to.exists() {
        None
    } else {
        if !opts.dry_run {
            // Each folder made for `to` is recorded in its parent durably.
            crate::durable::create_dir_all_durable(to)
                .map_err(|e| ExploreError::io("create", to, e))?;
        }
        Some(SafeDir::open_root(to).map_err(|e| ExploreError::io("open", to, e.source))?)
    };
    let shown = root
        .as_ref()
        .map(|r| r.path().to_path_buf())
        .unwrap_or_else(|| std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf()));
    Ok(Prepared {
        root,
        shown,
        sources: Sources::new(dist)?,
    })
}

/// [`apply`], telling `progress` about each file.
pub fn apply_with_progress(
    plan: &Plan,
    to: &Path,
    opts: &Options,
    progress: crate::progress::WorkSink,
) -> Result<Report, ExploreError> {
    let p = prepare(&plan.dist, to, opts)?;
    progress(crate::progress::Work::Start {
        items: plan.items.len() as u64,
        bytes: plan
            .items
            .iter()
            .fold(0u64, |sum, i| sum.saturating_add(i.size)),
    });
    let mut results = Vec::with_capacity(plan.items.len());
    let mut sink = |r: ItemResult| -> Result<(), ExploreError> {
        results.push(r);
        Ok(())
    };
    let shown = p.shown.clone();
    let mut run = Run::new(p, opts, plan.xattrs_recorded, progress, &mut sink);
    run.dirs = plan.dirs.clone();
    run.target.private = plan.dirs.iter().map(|d| d.path.clone()).collect();
    if opts.delete {
        run.delete_extras(plan);
    }
    let mut entries: Vec<(&RelPath, Step<'_>)> = plan
        .items
        .iter()
        .map(|i| (&i.path, Step::Item(i)))
        .chain(plan.dirs.iter().map(|d| (&d.path, Step::Dir(d))))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (_, e) in entries {
        run.step(e, false);
    }
    run.finish()?;
    drop(run);
    Ok(Report {
        at: plan.at.clone(),
        to: shown.display().to_string(),
        dry_run: opts.dry_run,
        owners_kept: plan_owners_recorded(plan) && !meta::is_root(),
        results,
    })
}

fn plan_owners_recorded(plan: &Plan) -> bool {
    plan.items.iter().any(|i| i.owner.is_some()) || plan.dirs.iter().any(|d| d.owner.is_some())
}

/// One step of a streamed restore, in path order (a folder before what it holds).
#[derive(Clone, Debug)]
pub enum Entry {
    File(Item),
    Dir(DirItem),
}

enum Step<'p> {
    Item(&'p Item),
    Dir(&'p DirItem),
}

/// A restore whose entries come one at a time (from a walk of the index): memory is the
/// entry at hand and the folders with recorded metadata, never the whole plan.
pub struct Stream<'a> {
    pub at: String,
    /// The backup's root (see [`Plan::dist`]).
    pub dist: PathBuf,
    /// See [`Plan::xattrs_recorded`]: known before the first entry.
    pub xattrs_recorded: bool,
    pub entries: Box<dyn Iterator<Item = Result<Entry, ExploreError>> + 'a>,
    /// Files and bytes ahead, when counted beforehand (for progress).
    pub totals: Option<(u64, u64)>,
}

/// What a streamed restore did, besides each result handed to its sink.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub at: String,
    pub to: String,
    pub dry_run: bool,
    /// Owners were recorded but this restore ran as a user, so files kept that user's ids.
    pub owners_kept: bool,
    /// Files and symlinks written (or that would be).
    #[serde(skip)]
    pub written: u64,
    /// Existing files kept.
    #[serde(skip)]
    pub kept: u64,
    #[serde(skip)]
    pub failed: u64,
    /// Entries restored (or that would be): 0 says nothing matched.
    #[serde(skip)]
    pub entries: u64,
}

/// The start of a streamed restore, handed to the sink before any result.
#[derive(Clone, Debug, Serialize)]
pub struct Begin {
    pub at: String,
    pub to: String,
    pub dry_run: bool,
}

/// What a streamed restore hands to its sink.
pub enum Event<'r> {
    Begin(&'r Begin),
    Result(ItemResult),
}

/// Applies `stream` under `to`, handing each result to `sink` as it happens (the caller prints
/// it): nothing grows with the number of files but the folders with recorded metadata (and a
/// 64-bit fingerprint per file written, for hard-link groups). `--delete` needs the whole
/// plan ([`apply_with_progress`]).
pub fn apply_stream(
    stream: Stream<'_>,
    to: &Path,
    opts: &Options,
    progress: crate::progress::WorkSink,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), ExploreError>,
) -> Result<Summary, ExploreError> {
    if opts.delete {
        return Err(ExploreError::Refused(
            "--delete needs the whole plan: restore with apply".into(),
        ));
    }
    let p = prepare(&stream.dist, to, opts)?;
    let begin = Begin {
        at: stream.at.clone(),
        to: p.shown.display().to_string(),
        dry_run: opts.dry_run,
    };
    sink(Event::Begin(&begin))?;
    let (items, bytes) = stream.totals.unwrap_or((0, 0));
    progress(crate::progress::Work::Start { items, bytes });
    let mut results = |r: ItemResult| sink(Event::Result(r));
    let mut run = Run::new(p, opts, stream.xattrs_recorded, progress, &mut results);
    let mut entries = 0u64;
    for e in stream.entries {
        let e = e?;
        entries += 1;
        match &e {
            Entry::File(i) => run.step(Step::Item(i), true),
            Entry::Dir(d) => run.step(Step::Dir(d), true),
        }
        if run.sink_error.is_some() {
            break;
        }
    }
    run.finish()?;
    Ok(Summary {
        at: begin.at,
        to: begin.to,
        dry_run: opts.dry_run,
        owners_kept: run.owners_recorded && !run.may_chown,
        written: run.tally.written,
        kept: run.tally.kept,
        failed: run.tally.failed,
        entries,
    })
}

/// `p` with its longest existing prefix resolved (symlinks followed), the rest appended: where
/// a folder that does not exist yet would be created.
pub fn resolve_existing_prefix(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = base.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return abs,
        }
    }
}

/// The folders of the backup that hold versions, opened once each, and the folder of the last
/// source read (restores read in path order, so most reads reuse it).
struct Sources {
    dist: SafeDir,
    dist_path: PathBuf,
    roots: HashMap<PathBuf, Rc<SafeDir>>,
    last: Option<(PathBuf, Option<RelPath>, Rc<SafeDir>)>,
}

impl Sources {
    fn new(dist: &Path) -> Result<Sources, ExploreError> {
        Ok(Sources {
            dist: SafeDir::open_root(dist).map_err(|e| ExploreError::io("open", dist, e.source))?,
            dist_path: dist.to_path_buf(),
            roots: HashMap::new(),
            last: None,
        })
    }

    /// The folder holding `item`'s stored version; no symlink inside the backup is followed.
    fn parent_of(&mut self, item: &Item) -> Result<Rc<SafeDir>, FsError> {
        let parent = item.path.parent();
        if let Some((root, p, d)) = &self.last {
            if root.as_path() == &*item.root && *p == parent {
                return Ok(d.clone());
            }
        }
        let root = match self.roots.get(&*item.root) {
            Some(r) => r.clone(),
            None => {
                let rel = item.root.strip_prefix(&self.dist_path).map_err(|_| {
                    FsError::new(
                        "open folder",
                        item.root.to_path_buf(),
                        std::io::Error::other("not inside the backup"),
                    )
                })?;
                let d = Rc::new(self.dist.open_dir_beneath(rel)?);
                self.roots.insert(item.root.to_path_buf(), d.clone());
                d
            }
        };
        let d = match &parent {
            None => root,
            Some(p) => Rc::new(root.open_dir_beneath(&p.to_path_buf())?),
        };
        self.last = Some((item.root.to_path_buf(), parent, d.clone()));
        Ok(d)
    }
}

/// The open chain of target folders down to the current parent. `None` handles are folders
/// a dry run would create.
struct Target {
    root: Option<Rc<SafeDir>>,
    shown: PathBuf,
    chain: Vec<(Vec<u8>, Option<Rc<SafeDir>>)>,
    dry_run: bool,
    /// Folders with recorded metadata start private (0700) until it is applied.
    private: HashSet<RelPath>,
    /// What `--delete` removed (or, in a dry run, would remove): absent from then on.
    deleted: HashSet<RelPath>,
}

impl Target {
    fn new(root: Option<SafeDir>, shown: PathBuf, dry_run: bool) -> Target {
        Target {
            root: root.map(Rc::new),
            shown,
            chain: Vec::new(),
            dry_run,
            private: HashSet::new(),
            deleted: HashSet::new(),
        }
    }

    fn display(&self, rel: &RelPath) -> PathBuf {
        rel.under(&self.shown)
    }

    /// The folder `dir` (every component of it), created where missing; folders created are
    /// pushed to `made`. `None`: it does not exist and a dry run would create it.
    fn folder(
        &mut self,
        dir: &[&[u8]],
        made: &mut Vec<RelPath>,
    ) -> Result<Option<Rc<SafeDir>>, FsError> {
        let keep = self
            .chain
            .iter()
            .zip(dir)
            .take_while(|((n, _), c)| n.as_slice() == **c)
            .count();
        self.chain.truncate(keep);
        for (i, c) in dir.iter().enumerate().skip(keep) {
            let parent = match i {
                0 => self.root.clone(),
                _ => self.chain[i - 1].1.clone(),
            };
            let rel = RelPath::from_bytes(&dir[..=i].join(&b'/'))
                .map_err(|e| FsError::new("open folder", &self.shown, std::io::Error::other(e)))?;
            let name = os_from_bytes(c);
            let handle = match parent {
                None => {
                    made.push(rel);
                    None
                }
                Some(_) if self.dry_run && self.deleted.contains(&rel) => {
                    made.push(rel);
                    None
                }
                Some(p) if self.dry_run => match p.open_dir(&name) {
                    Ok(d) => Some(Rc::new(d)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        made.push(rel);
                        None
                    }
                    Err(e) => return Err(e),
                },
                Some(p) => {
                    let mode = if self.private.contains(&rel) {
                        PRIVATE_DIR_MODE
                    } else {
                        DIR_MODE
                    };
                    let (d, created) = p.open_or_create_dir(&name, mode)?;
                    if created {
                        made.push(rel);
                    }
                    Some(Rc::new(d))
                }
            };
            self.chain.push((c.to_vec(), handle));
        }
        Ok(match dir.len() {
            0 => self.root.clone(),
            n => self.chain[n - 1].1.clone(),
        })
    }

    /// The folder holding `rel`.
    fn parent(
        &mut self,
        rel: &RelPath,
        made: &mut Vec<RelPath>,
    ) -> Result<Option<Rc<SafeDir>>, FsError> {
        let comps: Vec<&[u8]> = rel.components().collect();
        self.folder(&comps[..comps.len() - 1], made)
    }

    /// An existing folder, opened afresh from the root (never following a symlink).
    fn existing(&self, rel: Option<&RelPath>) -> Result<Option<SafeDir>, FsError> {
        let Some(root) = &self.root else {
            return Ok(None);
        };
        match rel {
            None => root.try_clone().map(Some),
            Some(r) => match root.open_dir_beneath(&r.to_path_buf()) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// Counts of outcomes.
#[derive(Default)]
struct Tally {
    written: u64,
    kept: u64,
    failed: u64,
}

struct Run<'a> {
    progress: crate::progress::WorkSink<'a>,
    opts: Options,
    may_chown: bool,
    target: Target,
    sources: Sources,
    xattrs_recorded: bool,
    /// Folders with recorded metadata, applied at the end, deepest first.
    dirs: Vec<DirItem>,
    /// Fingerprints of the files this run wrote: the other members of a hard-link group link
    /// to the first one when it was written here. (A 64-bit keyed hash per file instead of its
    /// path: a restore of a million files must not hold a million paths.)
    written: HashSet<u64>,
    fingerprint: std::collections::hash_map::RandomState,
    sink: &'a mut dyn FnMut(ItemResult) -> Result<(), ExploreError>,
    /// The first error of the sink (output closed): the run stops there.
    sink_error: Option<ExploreError>,
    /// The empty source of folder and deletion results, shared.
    no_source: Rc<str>,
    owners_recorded: bool,
    tally: Tally,
    /// How the restore is made durable before it reports (none in a dry run): what it wrote,
    /// replaced or deleted survives a power cut, on FUSE drives too.
    durability: Option<Strategy>,
    /// Folders whose entries changed (`None`: the target itself), fsynced at the end under
    /// [`Strategy::EachFile`].
    changed_dirs: BTreeSet<Option<RelPath>>,
    /// Folders whose recorded metadata could not be applied (reported once).
    dirs_failed: HashSet<RelPath>,
    /// Bytes of the current file already told to `progress` while it was copied.
    bytes_told: u64,
}

fn kind_of(k: FileKind) -> ResultKind {
    match k {
        FileKind::File => ResultKind::File,
        FileKind::Symlink => ResultKind::Symlink,
        FileKind::Dir => ResultKind::Folder,
    }
}

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed {
        error: e.to_string(),
    }
}

fn owner_ids(o: &Option<Owner>) -> Option<(u32, u32)> {
    o.as_ref().map(|o| (o.uid, o.gid))
}

impl<'a> Run<'a> {
    fn new(
        p: Prepared,
        opts: &Options,
        xattrs_recorded: bool,
        progress: crate::progress::WorkSink<'a>,
        sink: &'a mut dyn FnMut(ItemResult) -> Result<(), ExploreError>,
    ) -> Run<'a> {
        let p_root_path = p.root.as_ref().map(|r| r.path().to_path_buf());
        Run {
            progress,
            opts: *opts,
            may_chown: meta::is_root(),
            target: Target::new(p.root, p.shown, opts.dry_run),
            sources: p.sources,
            xattrs_recorded,
            dirs: Vec::new(),
            written: HashSet::new(),
            fingerprint: Default::default(),
            sink,
            sink_error: None,
            no_source: Rc::from(""),
            owners_recorded: false,
            tally: Tally::default(),
            durability: match (&p_root_path, opts.dry_run) {
                (Some(_), false) => Some(Strategy::chosen()),
                _ => None,
            },
            changed_dirs: BTreeSet::new(),
            dirs_failed: HashSet::new(),
            bytes_told: 0,
        }
    }

    fn each_file(&self) -> bool {
        self.durability == Some(Strategy::EachFile)
    }

    /// Notes that the folder holding `rel` gained, lost or replaced an entry.
    fn entry_changed(&mut self, rel: &RelPath) {
        if self.each_file() {
            self.changed_dirs.insert(rel.parent());
        }
    }

    fn push(
        &mut self,
        path: RelPath,
        kind: ResultKind,
        from: Rc<str>,
        size: u64,
        outcome: Outcome,
    ) {
        if self.sink_error.is_some() {
            return;
        }
        match &outcome {
            o if o.is_written() => self.tally.written += 1,
            Outcome::SkipExists | Outcome::SkipUnchanged => self.tally.kept += 1,
            Outcome::Failed { .. } => self.tally.failed += 1,
            _ => {}
        }
        let r = ItemResult {
            path,
            kind,
            from,
            size,
            outcome,
        };
        if let Err(e) = (self.sink)(r) {
            self.sink_error = Some(e);
        }
    }

    /// A result about a folder or a deletion (no source).
    fn push_other(&mut self, path: RelPath, kind: ResultKind, size: u64, outcome: Outcome) {
        let none = self.no_source.clone();
        self.push(path, kind, none, size, outcome);
    }

    fn push_made(&mut self, made: Vec<RelPath>) {
        for m in made {
            self.entry_changed(&m);
            self.push_other(m, ResultKind::Folder, 0, Outcome::Mkdir);
        }
    }

    /// One file, symlink or recorded folder; steps come in path order (a folder before its
    /// contents). `streamed`: a folder's metadata is first seen here (else the plan gave it).
    fn step(&mut self, e: Step<'_>, streamed: bool) {
        match e {
            Step::Item(item) => {
                self.owners_recorded |= item.owner.is_some();
                let mut made = Vec::new();
                let outcome = self.restore_one(item, &mut made).unwrap_or_else(failed);
                self.push_made(made);
                if outcome.is_written() {
                    self.entry_changed(&item.path);
                }
                if outcome.is_written() && item.kind == FileKind::File {
                    let f = self.fingerprint.hash_one(&item.path);
                    self.written.insert(f);
                }
                let rest = item
                    .size
                    .saturating_sub(std::mem::take(&mut self.bytes_told));
                (self.progress)(crate::progress::Work::Item { bytes: rest });
                self.push(
                    item.path.clone(),
                    kind_of(item.kind),
                    item.from.clone(),
                    item.size,
                    outcome,
                );
            }
            Step::Dir(d) => {
                self.owners_recorded |= d.owner.is_some();
                if streamed {
                    self.target.private.insert(d.path.clone());
                    self.dirs.push(d.clone());
                }
                let mut made = Vec::new();
                let comps: Vec<&[u8]> = d.path.components().collect();
                let r = self.target.folder(&comps, &mut made);
                self.push_made(made);
                if let Err(e) = r {
                    self.push_other(d.path.clone(), ResultKind::Folder, 0, failed(e));
                }
            }
        }
    }

    /// Folder metadata once everything is in place; the sink's error, if the output failed.
    fn finish(&mut self) -> Result<(), ExploreError> {
        if !self.opts.dry_run && self.sink_error.is_none() {
            self.apply_dir_metadata();
            self.make_durable()?;
        }
        match self.sink_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn restore_one(&mut self, item: &Item, made: &mut Vec<RelPath>) -> Result<Outcome, FsError> {
        let name = item.path.file_name_os();
        let dest = self.target.display(&item.path);
        let parent = self.target.parent(&item.path, made)?;
        let existing = match &parent {
            Some(_) if self.target.deleted.contains(&item.path) => None,
            Some(p) => p.stat_opt(&name)?,
            None => None,
        };
        let action = match existing {
            None => Outcome::Create,
            Some(st) => {
                if st.kind == EntryKind::Dir {
                    return Err(FsError::new(
                        "replace",
                        &dest,
                        std::io::Error::other("is a folder; not replacing it"),
                    ));
                }
                match self.opts.overwrite {
                    Overwrite::Never => return Ok(Outcome::SkipExists),
                    Overwrite::IfChanged if same_version(&st, item) => {
                        return Ok(Outcome::SkipUnchanged)
                    }
                    Overwrite::IfNewer if same_version(&st, item) => {
                        return Ok(Outcome::SkipUnchanged)
                    }
                    Overwrite::IfNewer if item.mtime_ns <= st.mtime_ns => {
                        return Ok(Outcome::SkipExists)
                    }
                    _ => Outcome::Replace,
                }
            }
        };
        let src_dir = self.sources.parent_of(item)?;
        let xattrs = self.xattrs_recorded.then_some(item.xattrs.as_slice());
        match item.kind {
            FileKind::Dir => {
                return Err(backup_platform::sandbox::FsError::new(
                    "restore",
                    item.path.to_path_buf(),
                    std::io::Error::other("a folder is restored as a folder item"),
                ))
            }
            FileKind::File => {
                let src = src_dir.open_file(&name)?;
                let Some(parent) = parent else {
                    return Ok(action);
                };
                if self.opts.dry_run {
                    return Ok(action);
                }
                if let Some(first) = item
                    .hardlink_of
                    .as_ref()
                    .filter(|f| self.written.contains(&self.fingerprint.hash_one(*f)))
                {
                    if self.link_to(first, &parent, &name)? {
                        return Ok(action);
                    }
                }

                let holes = if item.sparse {
                    Holes::DetectZeros
                } else {
                    Holes::Keep
                };
                // Hash while copying: a damaged stored version is restored (better than
                // nothing) but reported, never passed off as good.
                let mut hasher = blake3::Hasher::new();
                let want = Apply {
                    // The stored file's own mode only where old metadata records none.
                    mode: item.mode.or_else(|| {
                        src.metadata()
                            .ok()
                            .and_then(|m| backup_platform::meta::mode_bits(&m))
                    }),
                    owner: owner_ids(&item.owner),
                    mtime_ns: Some(item.mtime_ns),
                    xattrs,
                };
                let sync = self.each_file();
                let progress = self.progress;
                let mut told = 0u64;
                let mut pending = 0u64;
                let written = parent.write_file(&name, |f| {
                    copy_sparse(
                        &src,
                        f,
                        holes,
                        Some(&mut |b: &[u8]| {
                            hasher.update(b);
                            // A big file moves the bar as it is copied.
                            pending += b.len() as u64;
                            if pending >= crate::progress::WORK_BYTES_STEP {
                                progress(crate::progress::Work::Bytes { bytes: pending });
                                told += pending;
                                pending = 0;
                            }
                        }),
                    )
                    .map_err(|e| FsError::new("copy to", &dest, e))?;
                    meta::apply_file(f, &dest, &want, self.may_chown)?;
                    // Bytes before the name that leads to them (the rename follows).
                    if sync {
                        f.sync_all().map_err(|e| FsError::new("fsync", &dest, e))?;
                    }
                    Ok(())
                });
                self.bytes_told = told;
                written?;
                if item
                    .hash
                    .is_some_and(|want| ContentHash::from(hasher.finalize()) != want)
                {
                    return Ok(failed("restored, but its content differs from the recorded hash (damaged backup? run `check --verify`)"));
                }
            }
            FileKind::Symlink => {
                // A plain file stands in for a symlink on a dist without symlinks (exFAT).
                let st = src_dir.lstat(&name)?;
                if st.kind != EntryKind::Symlink && st.kind != EntryKind::File {
                    return Err(FsError::new(
                        "read symlink",
                        src_dir.child_path(&name),
                        std::io::Error::other("should be a symlink"),
                    ));
                }
                let link = src_dir.read_stored_link(&name)?;
                let Some(parent) = parent else {
                    return Ok(action);
                };
                if self.opts.dry_run {
                    return Ok(action);
                }
                let want = Apply {
                    mode: None,
                    owner: owner_ids(&item.owner),
                    mtime_ns: Some(item.mtime_ns),
                    xattrs,
                };
                // Metadata on the temporary name, before anyone can swap it: rename keeps it.
                parent.replace_symlink_with(&link, &name, |dir, tmp| {
                    meta::apply_symlink(dir, tmp, &want, self.may_chown)
                })?;
            }
        }
        Ok(action)
    }

    /// Makes `name` in `parent` a hard link of the already restored `first`. `false` when
    /// linking is not possible here (then the file is copied).
    fn link_to(
        &mut self,
        first: &RelPath,
        parent: &SafeDir,
        name: &OsStr,
    ) -> Result<bool, FsError> {
        let Some(first_dir) = self.target.existing(first.parent().as_ref())? else {
            return Ok(false);
        };
        match parent.replace_with_link(&first_dir, &first.file_name_os(), name) {
            Ok(()) => Ok(true),
            Err(e) if backup_platform::fs::is_link_unsupported(&e.source) => Ok(false),
            Err(e) if e.source.raw_os_error() == Some(libc::EMLINK) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Folder metadata, deepest first: after every child is in place (a 0500 folder still got
    /// its children, and adding them did not move its mtime afterwards).
    /// Before the restore reports, what it did reaches the disk: one `syncfs` where that is
    /// known to work, else (FUSE drives, where `syncfs` does nothing) an fsync of every
    /// folder whose entries changed, deepest first (each file was fsynced when written).
    fn make_durable(&mut self) -> Result<(), ExploreError> {
        let shown = self.target.shown.clone();
        match self.durability {
            None => Ok(()),
            Some(Strategy::SyncFs) => backup_platform::fs::sync_filesystem(&shown)
                .map_err(|e| ExploreError::io("make durable (syncfs)", &shown, e)),
            Some(Strategy::EachFile) => {
                let mut dirs: Vec<Option<RelPath>> =
                    std::mem::take(&mut self.changed_dirs).into_iter().collect();
                dirs.sort_by_key(|d| std::cmp::Reverse(d.as_ref().map_or(0, |r| r.depth())));
                for d in dirs {
                    match self.target.existing(d.as_ref()) {
                        Ok(Some(h)) => h.sync().map_err(|e| {
                            ExploreError::io("make durable (fsync)", &e.path, e.source)
                        })?,
                        // Gone since (a folder `--delete` removed): its parent is synced.
                        Ok(None) => {}
                        // Swapped for a symlink (or worse) since its files were written: never
                        // followed; that folder's entries are not known durable, so it failed.
                        Err(e) => match d {
                            // (Said once: its metadata failed the same way just before.)
                            Some(rel) if self.dirs_failed.contains(&rel) => {}
                            Some(rel) => {
                                self.push_other(rel, ResultKind::Folder, 0, failed(e));
                            }
                            None => return Err(ExploreError::io("open", &e.path, e.source)),
                        },
                    }
                }
                Ok(())
            }
        }
    }

    fn apply_dir_metadata(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| {
            b.path
                .depth()
                .cmp(&a.path.depth())
                .then(a.path.cmp(&b.path))
        });
        // Children are done: drop the handles so nothing below holds the chain open.
        self.target.chain.clear();
        let xattrs_recorded = self.xattrs_recorded;
        for d in dirs {
            let r = self.target.existing(Some(&d.path)).and_then(|h| match h {
                Some(h) => meta::apply_dir(
                    &h,
                    &Apply {
                        mode: d.mode,
                        owner: owner_ids(&d.owner),
                        mtime_ns: d.mtime_ns,
                        xattrs: xattrs_recorded.then_some(d.xattrs.as_slice()),
                    },
                    self.may_chown,
                ),
                None => Ok(()),
            });
            if let Err(e) = r {
                self.dirs_failed.insert(d.path.clone());
                self.push_other(d.path.clone(), ResultKind::Folder, 0, failed(e));
            }
        }
    }

    /// `--delete`: in every folder of the snapshot that exists in the target, removes the
    /// entries the snapshot does not have and the selection covers, and entries whose kind
    /// differs from the snapshot's (a folder where a file was, a symlink where a folder was).
    /// Only through handles: a symlink is removed itself, never followed.
    fn delete_extras(&mut self, plan: &Plan) {
        let mut files: HashSet<&RelPath> = HashSet::new();
        let mut folders: HashSet<RelPath> = HashSet::new();
        for i in &plan.items {
            files.insert(&i.path);
            let mut p = i.path.parent();
            while let Some(d) = p {
                p = d.parent();
                if !folders.insert(d) {
                    break;
                }
            }
        }
        for d in &plan.dirs {
            let mut p = Some(d.path.clone());
            while let Some(d) = p {
                p = d.parent();
                if !folders.insert(d) {
                    break;
                }
            }
        }
        let mut order: Vec<Option<&RelPath>> = vec![None];
        let mut sorted: Vec<&RelPath> = folders.iter().collect();
        sorted.sort_by(|a, b| a.depth().cmp(&b.depth()).then(a.cmp(b)));
        order.extend(sorted.into_iter().map(Some));
        for folder in order {
            let mut dir = match self.target.existing(folder) {
                Ok(Some(d)) => d,
                // Missing, or not a real folder (reported when its parent is cleaned, or when
                // a file below it is restored).
                Ok(None) | Err(_) => continue,
            };
            let listed = match dir.list() {
                Ok(l) => l,
                Err(e) => {
                    if let Some(f) = folder {
                        self.push_other(f.clone(), ResultKind::Folder, 0, failed(e));
                    }
                    continue;
                }
            };
            let mut names: Vec<_> = listed.into_iter().map(|e| e.name).collect();
            names.sort();
            for name in names {
                let bytes = name.as_encoded_bytes();
                let rel = match folder {
                    None => RelPath::from_bytes(bytes),
                    Some(f) => f.join(bytes),
                };
                let Ok(rel) = rel else { continue };
                let st = match dir.lstat(&name) {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let is_dir = st.kind == EntryKind::Dir;
                let remove = if files.contains(&rel) {
                    is_dir
                } else if folders.contains(&rel) {
                    !is_dir
                } else {
                    plan.selection.is_match(&rel)
                };
                if !remove {
                    continue;
                }
                let kind = match st.kind {
                    EntryKind::Dir => ResultKind::Folder,
                    EntryKind::Symlink => ResultKind::Symlink,
                    _ => ResultKind::File,
                };
                let outcome = if self.opts.dry_run {
                    Outcome::Delete
                } else {
                    match dir.remove_all(&name) {
                        Ok(_) => Outcome::Delete,
                        Err(e) => failed(e),
                    }
                };
                if outcome == Outcome::Delete {
                    self.target.deleted.insert(rel.clone());
                    if !self.opts.dry_run {
                        self.entry_changed(&rel);
                    }
                }
                self.push_other(rel, kind, if is_dir { 0 } else { st.size }, outcome);
            }
        }
    }
}

fn same_version(st: &EntryStat, item: &Item) -> bool {
    let kind_ok = match item.kind {
        FileKind::File => st.kind == EntryKind::File,
        FileKind::Symlink => st.kind == EntryKind::Symlink,
        FileKind::Dir => st.kind == EntryKind::Dir,
    };
    kind_ok
        && st.mtime_ns == item.mtime_ns
        && (item.kind == FileKind::Symlink || st.size == item.size)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    //! The plan fields the catalog does not carry yet (folders, owners, xattrs, hard links,
    //! sparse files), applied from hand-made plans over a real stored tree.
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    struct Fixture {
        _tmp: tempfile::TempDir,
        dist: PathBuf,
        to: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dist = tmp.path().join("dist");
        std::fs::create_dir_all(dist.join("mirror")).unwrap();
        let to = tmp.path().join("to");
        Fixture {
            dist,
            to,
            _tmp: tmp,
        }
    }

    fn rp(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    impl Fixture {
        fn store(&self, rel: &str, data: &[u8]) -> Item {
            let p = self.dist.join("mirror").join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            Item {
                path: rp(rel),
                root: self.dist.join("mirror").into(),
                from: "mirror".into(),
                size: data.len() as u64,
                mtime_ns: 1_700_000_000_000_000_001,
                mode: Some(0o644),
                kind: FileKind::File,
                hash: Some(ContentHash::of(data)),
                owner: None,
                xattrs: Vec::new(),
                sparse: false,
                hardlink_of: None,
            }
        }

        fn plan(&self, items: Vec<Item>, dirs: Vec<DirItem>) -> Plan {
            Plan {
                at: "mirror".into(),
                items,
                dirs,
                xattrs_recorded: true,
                dist: self.dist.clone(),
                selection: Selection::default(),
            }
        }

        fn md(&self, rel: &str) -> std::fs::Metadata {
            std::fs::symlink_metadata(self.to.join(rel)).unwrap()
        }
    }

    fn dir(path: &str, mode: u32, mtime_ns: i64) -> DirItem {
        DirItem {
            path: rp(path),
            mode: Some(mode),
            owner: None,
            mtime_ns: Some(mtime_ns),
            xattrs: Vec::new(),
        }
    }

    fn run(plan: &Plan, to: &Path) -> Report {
        let r = apply(plan, to, &Options::default()).unwrap();
        for x in &r.results {
            assert!(!matches!(x.outcome, Outcome::Failed { .. }), "{x:?}");
        }
        r
    }

    #[test]
    fn folders_get_their_mode_and_mtime_after_their_children() {
        let f = fixture();
        let items = vec![
            f.store("locked/a.txt", b"a"),
            f.store("locked/inner/b.txt", b"b"),
            f.store("ro/c.txt", b"c"),
        ];
        let dirs = vec![
            dir("locked", 0o000, 1_000_000_000_111),
            dir("locked/inner", 0o700, 2_000_000_000_222),
            dir("ro", 0o500, 3_000_000_000_333),
            dir("sticky", 0o1777, 4_000_000_000_444),
            dir("empty", 0o750, 5_000_000_000_555),
        ];
        let r = run(&f.plan(items, dirs), &f.to);
        assert_eq!(r.count(Outcome::is_written), 3);
        for (p, mode, ns) in [
            ("locked", 0o000, 1_000_000_000_111),
            ("locked/inner", 0o700, 2_000_000_000_222),
            ("ro", 0o500, 3_000_000_000_333),
            ("sticky", 0o1777, 4_000_000_000_444),
            ("empty", 0o750, 5_000_000_000_555),
        ] {
            let m = f.md(p);
            assert!(m.is_dir(), "{p}");
            assert_eq!(m.mode() & 0o7777, mode, "{p}");
            assert_eq!(m.mtime() * 1_000_000_000 + m.mtime_nsec(), ns, "{p}");
        }
        assert_eq!(
            std::fs::read(f.to.join("locked/inner/b.txt")).unwrap(),
            b"b"
        );
        // Let the temporary folder be removed.
        std::fs::set_permissions(f.to.join("locked"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }

    #[test]
    fn hard_link_groups_sparse_files_owners_and_xattrs() {
        let f = fixture();
        let mut first = f.store("a/first", b"shared bytes");
        first.mode = Some(0o4750);
        first.owner = Some(Owner {
            uid: 1234,
            gid: 2345,
            user: None,
            group: None,
        });
        let mut second = f.store("b/second", b"shared bytes");
        second.hardlink_of = Some(rp("a/first"));
        // Dense on disk (as on exFAT) but recorded sparse: holes come back.
        let mut content = vec![0u8; 8 << 20];
        content[100] = 1;
        let mut sparse = f.store("s/disk.img", &content);
        sparse.sparse = true;
        let mut tagged = f.store("x/tagged", b"t");
        tagged.xattrs = vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }];
        std::os::unix::fs::symlink("../a/first", f.dist.join("mirror/x/link")).unwrap();
        let mut link = f.store("x/unused", b"");
        link.path = rp("x/link");
        link.kind = FileKind::Symlink;
        link.owner = Some(Owner {
            uid: 1234,
            gid: 2345,
            user: None,
            group: None,
        });
        let r = run(
            &f.plan(vec![first, second, sparse, tagged, link], vec![]),
            &f.to,
        );
        assert_eq!(r.count(Outcome::is_written), 5);
        let l = f.md("x/link");
        assert!(l.file_type().is_symlink());
        assert_eq!(
            l.mtime() * 1_000_000_000 + l.mtime_nsec(),
            1_700_000_000_000_000_001
        );
        if meta::is_root() {
            assert_eq!((l.uid(), l.gid()), (1234, 2345));
        }
        let (a, b) = (f.md("a/first"), f.md("b/second"));
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(a.mode() & 0o7777, 0o4750);
        if meta::is_root() {
            assert_eq!((a.uid(), a.gid()), (1234, 2345));
            assert!(!r.owners_kept);
        } else {
            assert!(r.owners_kept);
        }
        let s = f.md("s/disk.img");
        assert_eq!(s.len(), 8 << 20);
        assert!(s.blocks() * 512 < 1 << 20, "{} blocks", s.blocks());
        assert_eq!(std::fs::read(f.to.join("s/disk.img")).unwrap(), content);
        let x = SafeDir::open_root(&f.to.join("x")).unwrap();
        let m = meta::read_at(&x, OsStr::new("tagged")).unwrap();
        let want = vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }];
        assert_eq!(m.xattrs, want);
    }

    #[test]
    fn a_hard_link_whose_first_member_was_not_written_is_a_copy() {
        let f = fixture();
        let first = f.store("a", b"x");
        let mut second = f.store("b", b"x");
        second.hardlink_of = Some(rp("a"));
        std::fs::create_dir_all(&f.to).unwrap();
        std::fs::write(f.to.join("a"), b"local").unwrap();
        let r = run(&f.plan(vec![first, second], vec![]), &f.to);
        assert_eq!(r.results[0].outcome, Outcome::SkipExists);
        assert_eq!(std::fs::read(f.to.join("b")).unwrap(), b"x");
        assert_eq!(f.md("b").nlink(), 1);
    }
}
