//! Point-in-time folding: which version of each tracked file existed right after increment K.
//!
//! `docs/format.md`, "Point in time": a tracked path is present at K when its latest event up to K is a
//! `track/` event (that version) and absent when it is a `deleted/` event. Every version has a
//! *start* — the name of the increment that stored it — and one or more *holders*: the
//! `track/` link of that increment, the `deleted/` link of the increment that recorded its
//! deletion, or the mirror while the file is unchanged. When the storing increment has been
//! deleted, the version survives through its other holders at its original start, so deleting
//! the first increment does not empty every later view.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::format::{
    CatalogEntry, Category, ContentHash, FileKind, FormatProblem, IncrementMeta, IndexEntry, MTime,
    MirrorIndex,
};
use crate::identity::IncrementTime;
use crate::relpath::RelPath;
use crate::repo::{IncrementName, RepoError, Repository};

/// Where the bytes of a version can be read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// `dist/<increment>/<track|deleted>/<rel>`
    Increment {
        name: IncrementName,
        category: Category,
    },
    /// `dist/mirror/<rel>`
    Mirror,
}

/// One stored version of one tracked file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub path: RelPath,
    /// The increment that stored this version; `None` when unknown (original-tool backups
    /// whose storing increment is gone), which sorts before every increment.
    pub start: Option<IncrementName>,
    pub holder: Holder,
    pub size: u64,
    pub mtime: MTime,
    pub mode: Option<u32>,
    pub kind: FileKind,
    pub hash: Option<ContentHash>,
    pub attrs: crate::format::Attrs,
}

impl Version {
    /// The backing file on disk.
    pub fn backing_path(&self, repo: &Repository) -> PathBuf {
        match &self.holder {
            Holder::Increment { name, category } => {
                repo.increment_file(name, *category, &self.path)
            }
            Holder::Mirror => repo.mirror_file(&self.path),
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Present(Box<Version>),
    Absent,
}

/// An increment as seen by the fold.
#[derive(Clone, Debug)]
pub struct IncrementInfo {
    pub name: IncrementName,
    /// From the metadata's `timestamp` ([`IncrementTime::of`]), the name only as a fallback.
    pub time: IncrementTime,
    pub meta: IncrementMeta,
}

impl IncrementInfo {
    pub fn new(name: IncrementName, meta: IncrementMeta) -> Self {
        let time = IncrementTime::of(Some(&meta.timestamp), &name);
        IncrementInfo { name, time, meta }
    }
}

/// When an event happened in the order of increments: `None` (unknown, before everything) or
/// the increment that recorded it.
pub type EventAt = Option<IncrementName>;

/// The history of a backup: every event of every tracked path, ordered by time.
#[derive(Clone, Debug, Default)]
pub struct History {
    increments: Vec<IncrementInfo>,
    /// For each path, events sorted by increment order; ties keep insertion order.
    timelines: BTreeMap<RelPath, Vec<(EventAt, Event)>>,
}

fn version_from(
    path: &RelPath,
    start: Option<&IncrementName>,
    holder: Holder,
    e: &CatalogEntry,
) -> Version {
    Version {
        path: path.clone(),
        start: start.cloned(),
        holder,
        size: e.size,
        mtime: e.mtime,
        mode: e.mode,
        kind: e.kind,
        hash: e.hash,
        attrs: e.attrs.clone(),
    }
}

fn version_from_index(path: &RelPath, start: EventAt, e: &IndexEntry) -> Version {
    Version {
        path: path.clone(),
        start,
        holder: Holder::Mirror,
        size: e.size,
        mtime: e.mtime,
        mode: e.mode,
        kind: e.kind,
        hash: e.hash,
        attrs: e.attrs.clone(),
    }
}

/// One step of a path's folded timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded {
    /// Where it sorts among increments (`None`: before all).
    pub at: EventAt,
    /// The version made present, or `None` for a deletion.
    pub version: Option<Version>,
    /// True for a version the catalogs no longer show at its start (its storing increment or
    /// entry is gone) but another holder keeps: a `deleted/` link or the mirror.
    pub kept: bool,
}

/// The fold of one path: its catalog events (in increment order), plus the versions other
/// holders keep. The one implementation of the point-in-time rules (`docs/format.md`, "Point in time"), used
/// by [`History`] in memory and by the index, which stores its result.
pub fn fold_path(
    path: &RelPath,
    events: &[(&IncrementName, &CatalogEntry)],
    mirror: Option<&IndexEntry>,
) -> Vec<Folded> {
    let mut tl: Vec<Folded> = Vec::with_capacity(events.len() + 1);
    for (name, e) in events {
        let name = *name;
        match e.category {
            Category::Tracked => {
                let holder = Holder::Increment {
                    name: name.clone(),
                    category: Category::Tracked,
                };
                tl.push(Folded {
                    at: Some(name.clone()),
                    version: Some(version_from(path, Some(name), holder, e)),
                    kept: false,
                });
            }
            Category::Deleted => {
                // The deleted/ link still holds the last version; when the increment that
                // stored it is gone (or its entry was deleted from it), this link is what keeps
                // it visible. Events come oldest first, so the storing increment's event, if
                // any, is already in the timeline. A deletion that does not say who stored the
                // version (the original tool's, or an unusable `version_of`) keeps it from an
                // unknown start when nothing earlier shows it.
                let holder = Holder::Increment {
                    name: name.clone(),
                    category: Category::Deleted,
                };
                match &e.version_of {
                    Some(start) => {
                        let stored = tl
                            .iter()
                            .any(|f| f.at.as_ref() == Some(start) && f.version.is_some());
                        if !stored && start < name {
                            tl.push(Folded {
                                at: Some(start.clone()),
                                version: Some(version_from(path, Some(start), holder, e)),
                                kept: true,
                            });
                        }
                    }
                    None => {
                        if !tl.iter().any(|f| f.version.is_some()) {
                            tl.push(Folded {
                                at: None,
                                version: Some(version_from(path, None, holder, e)),
                                kept: true,
                            });
                        }
                    }
                }
                tl.push(Folded {
                    at: Some(name.clone()),
                    version: None,
                    kept: false,
                });
            }
        }
    }
    if let Some(e) = mirror.filter(|e| e.tracked) {
        match &e.version_of {
            Some(start) => {
                // The mirror holds the version when its storing increment (or just that
                // increment's entry) is gone: only then is there no event at `start`. And only
                // if no later event supersedes it (a consistent index has none).
                if !tl.iter().any(|f| f.at.as_ref() >= Some(start)) {
                    tl.push(Folded {
                        at: Some(start.clone()),
                        version: Some(version_from_index(path, Some(start.clone()), e)),
                        kept: true,
                    });
                }
            }
            None => {
                if tl.is_empty() {
                    tl.push(Folded {
                        at: None,
                        version: Some(version_from_index(path, None, e)),
                        kept: true,
                    });
                }
            }
        }
    }
    // Stable: ties keep their order (a kept version before the deletion at the same point
    // cannot happen, since a kept start sorts strictly before its deletion).
    tl.sort_by(|a, b| a.at.cmp(&b.at));
    tl
}

impl History {
    /// Builds the history from increments (any order) and the mirror index.
    pub fn build(mut increments: Vec<IncrementInfo>, mirror: &MirrorIndex) -> History {
        increments.sort_by(|a, b| a.name.cmp(&b.name));
        let mut events: BTreeMap<&RelPath, Vec<(&IncrementName, &CatalogEntry)>> = BTreeMap::new();
        for inc in &increments {
            for (path, e) in &inc.meta.file_catalog {
                events.entry(path).or_default().push((&inc.name, e));
            }
        }
        let mut timelines: BTreeMap<RelPath, Vec<(EventAt, Event)>> = BTreeMap::new();
        let mut add = |path: &RelPath, evs: &[(&IncrementName, &CatalogEntry)]| {
            let folded = fold_path(path, evs, mirror.files.get(path));
            if !folded.is_empty() {
                timelines.insert(
                    path.clone(),
                    folded
                        .into_iter()
                        .map(|f| {
                            let ev = match f.version {
                                Some(v) => Event::Present(Box::new(v)),
                                None => Event::Absent,
                            };
                            (f.at, ev)
                        })
                        .collect(),
                );
            }
        };
        for (path, evs) in &events {
            add(path, evs);
        }
        for (path, e) in &mirror.files {
            if e.tracked && !events.contains_key(path) {
                add(path, &[]);
            }
        }
        History {
            increments,
            timelines,
        }
    }

    /// Loads every increment that has readable metadata, plus the mirror index. Increments
    /// whose metadata is missing or unreadable are left out and reported as problems.
    pub fn load(repo: &Repository) -> Result<(History, Vec<FormatProblem>), RepoError> {
        let mut problems = Vec::new();
        let mut increments = Vec::new();
        for name in repo.increment_names()? {
            match repo.load_increment(&name) {
                Ok((meta, p)) => {
                    problems.extend(p);
                    increments.push(IncrementInfo::new(name, meta));
                }
                Err(e) => problems.push(FormatProblem {
                    file: repo.increment_meta_path(&name).display().to_string(),
                    key: None,
                    message: e.to_string(),
                }),
            }
        }
        let mirror = repo.load_mirror_index_or_report(&mut problems);
        Ok((History::build(increments, &mirror), problems))
    }

    /// Increments with metadata, oldest first.
    pub fn increments(&self) -> &[IncrementInfo] {
        &self.increments
    }

    pub fn increment(&self, name: &IncrementName) -> Option<&IncrementInfo> {
        self.increments.iter().find(|i| &i.name == name)
    }

    /// The tracked files as they were right after increment `at` (any name: the fold takes
    /// every event that sorts at or before it).
    pub fn snapshot(&self, at: &IncrementName) -> BTreeMap<RelPath, Version> {
        let mut out = BTreeMap::new();
        for (path, tl) in &self.timelines {
            if let Some(v) = Self::state_at(tl, at) {
                out.insert(path.clone(), v.clone());
            }
        }
        out
    }

    /// The version of one path right after `at`, if it existed then.
    pub fn version_at(&self, path: &RelPath, at: &IncrementName) -> Option<&Version> {
        Self::state_at(self.timelines.get(path)?, at)
    }

    fn state_at<'a>(tl: &'a [(EventAt, Event)], at: &IncrementName) -> Option<&'a Version> {
        let idx = tl.partition_point(|(t, _)| t.as_ref().is_none_or(|t| t <= at));
        match tl[..idx].last() {
            Some((_, Event::Present(v))) => Some(v),
            _ => None,
        }
    }

    /// Every stored version of `path`, oldest first.
    pub fn versions(&self, path: &RelPath) -> Vec<&Version> {
        self.timelines
            .get(path)
            .map(|tl| {
                tl.iter()
                    .filter_map(|(_, e)| match e {
                        Event::Present(v) => Some(&**v),
                        Event::Absent => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every event of `path` in increment order: when (`None` when unknown) and the version it
    /// made present, or `None` for a deletion. Lets a caller compute when a path exists across
    /// all points at once instead of folding each point.
    pub fn timeline(&self, path: &RelPath) -> Vec<(Option<&IncrementName>, Option<&Version>)> {
        self.timelines
            .get(path)
            .map(|tl| {
                tl.iter()
                    .map(|(t, e)| match e {
                        Event::Present(v) => (t.as_ref(), Some(&**v)),
                        Event::Absent => (t.as_ref(), None),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every tracked path that has at least one event.
    pub fn paths(&self) -> impl Iterator<Item = &RelPath> {
        self.timelines.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Op;

    fn entry(cat: Category, op: Op, size: u64, version_of: Option<&str>) -> CatalogEntry {
        CatalogEntry {
            size,
            mtime: MTime::from_ns(size as i64),
            category: cat,
            op: Some(op),
            kind: FileKind::File,
            mode: Some(0o644),
            hash: None,
            version_of: version_of.and_then(IncrementName::parse),
            attrs: Default::default(),
        }
    }

    fn inc(name: &str, events: &[(&str, CatalogEntry)]) -> IncrementInfo {
        let mut meta = IncrementMeta::new(name, String::new());
        for (p, e) in events {
            meta.file_catalog
                .insert(RelPath::parse(p).unwrap(), e.clone());
        }
        IncrementInfo::new(IncrementName::parse(name).unwrap(), meta)
    }

    const A: &str = "backup_20240101_000000";
    const B: &str = "backup_20240102_000000";
    const C: &str = "backup_20240103_000000";

    fn sizes(h: &History, at: &str) -> Vec<(String, u64)> {
        h.snapshot(&IncrementName::parse(at).unwrap())
            .into_iter()
            .map(|(p, v)| (p.to_string(), v.size))
            .collect()
    }

    #[test]
    fn fold_follows_changes_and_deletions() {
        let incs = vec![
            inc(
                A,
                &[
                    ("x", entry(Category::Tracked, Op::New, 1, None)),
                    ("y", entry(Category::Tracked, Op::New, 2, None)),
                ],
            ),
            inc(B, &[("x", entry(Category::Tracked, Op::Changed, 3, None))]),
            inc(
                C,
                &[("y", entry(Category::Deleted, Op::Deleted, 2, Some(A)))],
            ),
        ];
        let h = History::build(incs, &MirrorIndex::default());
        assert_eq!(sizes(&h, A), vec![("x".into(), 1), ("y".into(), 2)]);
        assert_eq!(sizes(&h, B), vec![("x".into(), 3), ("y".into(), 2)]);
        assert_eq!(sizes(&h, C), vec![("x".into(), 3)]);
        assert_eq!(h.versions(&RelPath::parse("x").unwrap()).len(), 2);
    }

    #[test]
    fn deleting_first_increment_keeps_versions_held_elsewhere() {
        // x unchanged since A (held by the mirror), y deleted in C (held by C's deleted/).
        let incs = vec![
            inc(B, &[("z", entry(Category::Tracked, Op::New, 5, None))]),
            inc(
                C,
                &[("y", entry(Category::Deleted, Op::Deleted, 2, Some(A)))],
            ),
        ];
        let mut mirror = MirrorIndex::default();
        mirror.files.insert(
            RelPath::parse("x").unwrap(),
            IndexEntry {
                size: 1,
                mtime: MTime::from_ns(1),
                tracked: true,
                kind: FileKind::File,
                mode: None,
                hash: None,
                version_of: IncrementName::parse(A),
                attrs: Default::default(),
                ctime_ns: Default::default(),
            },
        );
        let h = History::build(incs, &mirror);
        assert_eq!(
            sizes(&h, B),
            vec![("x".into(), 1), ("y".into(), 2), ("z".into(), 5)]
        );
        assert_eq!(sizes(&h, C), vec![("x".into(), 1), ("z".into(), 5)]);
        let y = h
            .version_at(
                &RelPath::parse("y").unwrap(),
                &IncrementName::parse(B).unwrap(),
            )
            .unwrap();
        assert_eq!(
            y.holder,
            Holder::Increment {
                name: IncrementName::parse(C).unwrap(),
                category: Category::Deleted
            }
        );
        assert_eq!(
            h.version_at(
                &RelPath::parse("x").unwrap(),
                &IncrementName::parse(B).unwrap()
            )
            .unwrap()
            .holder,
            Holder::Mirror
        );
    }
}
