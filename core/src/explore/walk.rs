//! Streaming walks over the index, pulled one entry at a time: one increment's catalog, a
//! snapshot, the mirror. Memory is one folder's entries (the catalog adds the increment's
//! folder list, a snapshot one listing per level), never the backup.

use std::collections::VecDeque;

use crate::format::{CatalogEntry, Category, FileKind, IndexEntry};
use crate::history::Version;
use crate::index::{Index, IndexError, SnapNode};
use crate::relpath::RelPath;
use crate::repo::IncrementName;

type Result<T> = std::result::Result<T, IndexError>;

/// The catalog of one increment, folder by folder in path order, by name within a folder.
pub struct CatalogWalk<'a> {
    index: &'a Index,
    inc: i64,
    category: Option<Category>,
    under: Option<RelPath>,
    dirs: VecDeque<(i64, Option<RelPath>)>,
    current: VecDeque<(RelPath, CatalogEntry)>,
    started: bool,
}

/// Below this many events an increment's catalog is read in one pass and sorted in memory
/// (a few hundred KiB): a thousand small increments then cost a query each, not one per
/// folder.
const READ_WHOLE: u64 = 4096;

impl<'a> CatalogWalk<'a> {
    /// The events of increment `inc` (of `category` when given; with `under`, only that path
    /// and what lies below it).
    pub fn new(
        index: &'a Index,
        inc: i64,
        category: Option<Category>,
        under: Option<&RelPath>,
    ) -> Self {
        CatalogWalk {
            index,
            inc,
            category,
            under: under.cloned(),
            dirs: VecDeque::new(),
            current: VecDeque::new(),
            started: false,
        }
    }

    /// [`CatalogWalk::new`] for the increment `rec`, whose size says how to read it.
    pub fn of(
        index: &'a Index,
        rec: &crate::index::IncrementRecord,
        category: Option<Category>,
        under: Option<&RelPath>,
    ) -> Result<Self> {
        let mut w = Self::new(index, rec.id, category, under);
        if rec.files <= READ_WHOLE {
            w.started = true;
            let mut all: Vec<(Option<RelPath>, RelPath, CatalogEntry)> = Vec::new();
            index.increment_events(rec.id, &mut |path, e| {
                let wanted = category.is_none_or(|c| e.category == c)
                    && w.under.as_ref().is_none_or(|u| path.starts_with(u));
                if wanted {
                    all.push((path.parent(), path, e));
                }
                Ok(())
            })?;
            // Folder by folder in path order, by name within: the order of the folder walk.
            all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.file_name().cmp(b.1.file_name())));
            w.current = all.into_iter().map(|(_, p, e)| (p, e)).collect();
        }
        Ok(w)
    }

    fn relevant(&self, dir: &Option<RelPath>) -> bool {
        match (&self.under, dir) {
            (None, _) => true,
            // Files of the top folder: only `under` itself can be one of them.
            (Some(u), None) => u.parent().is_none(),
            (Some(u), Some(d)) => d.starts_with(u) || u.parent().as_ref() == Some(d),
        }
    }

    fn fill(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            self.dirs = self
                .index
                .increment_folders_sorted(self.inc, self.category)?
                .into();
        }
        while self.current.is_empty() {
            let Some((id, dir)) = self.dirs.pop_front() else {
                return Ok(());
            };
            if !self.relevant(&dir) {
                continue;
            }
            for (name, e) in self
                .index
                .increment_dir_events(self.inc, id, self.category)?
            {
                let Some(path) = self.index.path_of_row(id, &name)? else {
                    continue;
                };
                if self.under.as_ref().is_none_or(|u| path.starts_with(u)) {
                    self.current.push_back((path, e));
                }
            }
        }
        Ok(())
    }
}

impl Iterator for CatalogWalk<'_> {
    type Item = Result<(RelPath, CatalogEntry)>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            self.dirs.clear();
            return Some(Err(e));
        }
        self.current.pop_front().map(Ok)
    }
}

/// One step of a snapshot walk.
#[derive(Clone, Debug)]
pub enum SnapItem {
    /// A folder of the snapshot, before what it holds.
    Dir(RelPath),
    File(Box<Version>),
}

/// The files of the snapshot at an increment, depth first in path order ([`RelPath`]'s
/// order): one folder listing per level in memory.
pub struct SnapshotWalk<'a> {
    index: &'a Index,
    at: IncrementName,
    stack: Vec<(Option<RelPath>, VecDeque<crate::index::SnapChild>)>,
    pending: VecDeque<SnapItem>,
    start: Option<Option<RelPath>>,
}

impl<'a> SnapshotWalk<'a> {
    /// The whole snapshot (`under` = `None`), or `under` and what lies below it.
    pub fn new(index: &'a Index, at: &IncrementName, under: Option<&RelPath>) -> Self {
        SnapshotWalk {
            index,
            at: at.clone(),
            stack: Vec::new(),
            pending: VecDeque::new(),
            start: Some(under.cloned()),
        }
    }

    fn open(&mut self, dir: Option<RelPath>) -> Result<()> {
        if let Some(children) = self.index.snapshot_dir(&self.at, dir.as_ref())? {
            self.stack.push((dir, children.into()));
        }
        Ok(())
    }

    fn begin(&mut self, under: Option<RelPath>) -> Result<()> {
        match under {
            None => self.open(None),
            Some(p) => match self.index.snapshot_lookup(&self.at, &p)? {
                Some(SnapNode::Dir) => {
                    self.pending.push_back(SnapItem::Dir(p.clone()));
                    self.open(Some(p))
                }
                Some(SnapNode::File(v)) if v.kind != FileKind::Dir => {
                    self.pending.push_back(SnapItem::File(v));
                    Ok(())
                }
                _ => Ok(()),
            },
        }
    }

    fn step(&mut self) -> Result<Option<SnapItem>> {
        if let Some(under) = self.start.take() {
            self.begin(under)?;
        }
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            let Some((dir, children)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(child) = children.pop_front() else {
                self.stack.pop();
                continue;
            };
            let dir = dir.clone();
            let path = match &dir {
                Some(d) => d.join(&child.name),
                None => RelPath::from_bytes(&child.name),
            }
            .map_err(|e| IndexError::Corrupt {
                path: self.index.path().display().to_string(),
                message: e.to_string(),
            })?;
            match child.node {
                SnapNode::File(v) => return Ok(Some(SnapItem::File(v))),
                SnapNode::Dir => {
                    self.open(Some(path.clone()))?;
                    return Ok(Some(SnapItem::Dir(path)));
                }
            }
        }
    }
}

impl Iterator for SnapshotWalk<'_> {
    type Item = Result<SnapItem>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(i) => i.map(Ok),
            Err(e) => {
                self.stack.clear();
                self.pending.clear();
                Some(Err(e))
            }
        }
    }
}

/// The mirror's entries (folders included) in walk order: all of them, or `under` and what
/// lies below it. A page of rows in memory.
pub struct MirrorWalk<'a> {
    index: &'a Index,
    /// Keys below `under` start with this (`under` NUL); empty for the whole mirror.
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    page: VecDeque<(RelPath, IndexEntry)>,
    first: Option<RelPath>,
    done: bool,
}

impl<'a> MirrorWalk<'a> {
    pub fn new(index: &'a Index, under: Option<&RelPath>) -> Self {
        let (prefix, after) = match under {
            None => (Vec::new(), None),
            Some(u) => {
                let key = u.sort_key();
                let mut prefix = key.clone();
                prefix.push(0);
                (prefix, Some(key))
            }
        };
        MirrorWalk {
            index,
            prefix,
            after,
            page: VecDeque::new(),
            first: under.cloned(),
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<(RelPath, IndexEntry)>> {
        // `under` itself sorts right before what lies below it.
        if let Some(first) = self.first.take() {
            if let Some(e) = self.index.mirror_get(&first)? {
                return Ok(Some((first, e)));
            }
        }
        const PAGE: usize = 2048;
        if self.page.is_empty() && !self.done {
            let page = self.index.mirror_page(self.after.as_deref(), PAGE)?;
            self.done = page.len() < PAGE;
            if let Some((last, _)) = page.last() {
                self.after = Some(last.sort_key());
            }
            self.page = page.into();
        }
        match self.page.pop_front() {
            Some((rel, e))
                if self.prefix.is_empty() || rel.sort_key().starts_with(&self.prefix) =>
            {
                Ok(Some((rel, e)))
            }
            Some(_) => {
                // Past the folder: everything after sorts after it too.
                self.done = true;
                self.page.clear();
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

impl Iterator for MirrorWalk<'_> {
    type Item = Result<(RelPath, IndexEntry)>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(i) => i.map(Ok),
            Err(e) => {
                self.done = true;
                self.page.clear();
                Some(Err(e))
            }
        }
    }
}
