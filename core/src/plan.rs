//! Plan: what a run must do, from the selection (the scan, in walk order) against the state
//! of the mirror (the index's `mirror` table, in the same order). One merge of two sorted
//! streams: memory is bounded by the depth of the tree and the hard-link groups, never by
//! the number of files.
//!
//! A file is unchanged when kind, size, mtime (exact ns), permission bits, owner, hard-link
//! group, the tracked flag and its extended attributes all match the index entry (xattrs are
//! read only where the inode's ctime moved: chmod, chown and setxattr all move it); with
//! `--checksum` its content must also hash to the recorded blake3 — and so must the mirror's
//! copy, or the mirror is repaired from the source. Everything else selected is copied (a
//! change of metadata alone is a new version too: an inode an increment shares is never
//! changed in place); everything indexed but no longer selected is deleted — except below a
//! folder the scan could not read (a read error must never look like a deletion).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::format::{FileKind, IndexEntry, Op, Xattr};
use crate::index::{self, MirrorEntries};
use crate::relpath::RelPath;
use crate::scan::{ScanItem, SourceEntry, SourceFolder};

/// A selected file or symlink to copy into the mirror.
#[derive(Clone, Debug)]
pub struct CopyItem {
    pub entry: SourceEntry,
    /// What the mirror holds now under that path, if anything.
    pub previous: Option<IndexEntry>,
    /// Another name of the same inode that comes first in walk order: this one is linked to
    /// it rather than copied.
    pub hardlink_of: Option<RelPath>,
    /// True for a `--checksum` repair of a damaged mirror copy: no increment event.
    pub repair: bool,
}

impl CopyItem {
    /// The increment event this copy records (`None` for untracked files and repairs). A file
    /// that was in the mirror but untracked has no stored version yet, so for history it is
    /// new.
    pub fn increment_op(&self) -> Option<Op> {
        if !self.entry.tracked || self.repair {
            return None;
        }
        match &self.previous {
            Some(p) if p.tracked && p.kind != FileKind::Dir => Some(Op::Changed),
            _ => Some(Op::New),
        }
    }
}

/// An indexed file, symlink or folder that left the selection.
#[derive(Clone, Debug)]
pub struct DeleteItem {
    pub rel: RelPath,
    pub previous: IndexEntry,
}

impl DeleteItem {
    /// Tracked files keep their last version in the increment's `deleted/`.
    pub fn is_tracked(&self) -> bool {
        self.previous.tracked && self.previous.kind != FileKind::Dir
    }
}

/// A folder of the selection that is new to the mirror or whose metadata changed.
#[derive(Clone, Debug)]
pub struct FolderItem {
    pub folder: SourceFolder,
    pub previous: Option<IndexEntry>,
    /// Read where the ctime moved (or for a new folder); `None`: unchanged.
    pub xattrs: Option<Vec<Xattr>>,
}

/// One step of a run, in walk order.
#[derive(Clone, Debug)]
pub enum Step {
    Copy(CopyItem),
    Delete(DeleteItem),
    Folder(FolderItem),
    /// An unchanged entry whose ctime moved: only the index's remembered ctime changes
    /// (`entry` is its row with the new ctime, so recording it reads nothing again).
    Touch {
        rel: RelPath,
        entry: IndexEntry,
    },
    /// The increment records this folder's metadata: it changed and holds tracked content.
    /// Comes after everything below the folder.
    FolderRecord(RelPath),
}

/// A whole plan, collected (what `--dry-run` shows; a run streams its steps instead).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// In walk order.
    pub copies: Vec<CopyItem>,
    /// In walk order.
    pub deletes: Vec<DeleteItem>,
    /// Selected files identical to their mirror entry.
    pub unchanged: usize,
    /// Indexed paths left alone because the folder holding them could not be read.
    pub kept_unreadable: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.deletes.is_empty()
    }
    pub fn copy_bytes(&self) -> u64 {
        self.copies
            .iter()
            .fold(0u64, |s, c| s.saturating_add(c.entry.size))
    }
    pub fn count(&self, op: Op) -> usize {
        match op {
            Op::Deleted => self.deletes.iter().filter(|d| d.is_tracked()).count(),
            _ => self
                .copies
                .iter()
                .filter(|c| c.increment_op() == Some(op))
                .count(),
        }
    }
}

/// Counts of what the plan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub unchanged: u64,
    pub copies: u64,
    pub copy_bytes: u64,
    pub deletes: u64,
    /// Of the deletions, tracked files (their last version goes to `deleted/`).
    pub tracked_deletes: u64,
    /// Copies that make an increment event.
    pub tracked_copies: u64,
    /// `--checksum`: mirror copies found damaged, copied again from the source.
    pub repairs: u64,
    /// Indexed paths left alone because the folder holding them could not be read.
    pub kept_unreadable: u64,
}

/// How to compare a selected file with its index entry.
#[derive(Clone, Debug, Default)]
pub struct CompareMode {
    /// `Some((src, mirror))`: also hash the source under `src` (and the mirror's copy) when
    /// the metadata matches.
    pub checksum: Option<(PathBuf, PathBuf)>,
}

/// A folder on the path of the merge, until everything below it was seen.
struct OpenFolder {
    rel: RelPath,
    /// Its metadata changed in this run (or it is new).
    changed: bool,
    /// A tracked entry lies below it.
    tracked_below: bool,
}

/// The merge of the scan with the index (see the module doc).
pub struct Planner<'i> {
    rows: std::iter::Peekable<MirrorEntries<'i>>,
    src: PathBuf,
    mode: CompareMode,
    unreadable: Vec<Option<RelPath>>,
    /// First name of each hard-link group seen (only inodes with more than one link).
    links: HashMap<(u64, u64), RelPath>,
    open: Vec<OpenFolder>,
    pub counts: PlanCounts,
}

fn same_owner(e: &SourceEntry, i: &IndexEntry) -> bool {
    match &i.attrs.owner {
        Some(o) => o.uid == e.uid && o.gid == e.gid,
        // Recorded by an older version without owners: not a change by itself.
        None => true,
    }
}

fn metadata_matches(e: &SourceEntry, i: &IndexEntry, hardlink_of: &Option<RelPath>) -> bool {
    e.kind == i.kind
        && e.size == i.size
        && e.mtime == i.mtime
        && e.tracked == i.tracked
        && match e.kind {
            FileKind::File | FileKind::Dir => i.mode == Some(e.mode),
            FileKind::Symlink => true,
        }
        && same_owner(e, i)
        && *hardlink_of == i.attrs.hardlink_of
}

fn folder_matches(f: &SourceFolder, i: &IndexEntry) -> bool {
    i.kind == FileKind::Dir
        && i.mode == Some(f.mode)
        && i.mtime == f.mtime
        && i.attrs
            .owner
            .as_ref()
            .is_none_or(|o| o.uid == f.uid && o.gid == f.gid)
}

/// The extended attributes of a source entry, read now (empty where there are none or the file
/// system has none; unreadable counts as empty: the copy reads them again from the open file).
fn xattrs_now(path: &Path) -> Vec<Xattr> {
    backup_platform::meta::xattrs_of_path(path).unwrap_or_default()
}

impl<'i> Planner<'i> {
    pub fn new(index: &'i index::Index, src: PathBuf, mode: CompareMode) -> Planner<'i> {
        Planner {
            rows: index.mirror_entries().peekable(),
            src,
            mode,
            unreadable: Vec::new(),
            links: HashMap::new(),
            open: Vec::new(),
            counts: PlanCounts::default(),
        }
    }

    fn is_unreadable(&self, rel: &RelPath) -> bool {
        self.unreadable.iter().any(|u| match u {
            None => true,
            Some(dir) => rel.starts_with(dir) && rel != dir,
        })
    }

    /// An index row whose path is not in the selection any more.
    fn gone(&mut self, rel: RelPath, previous: IndexEntry, emit: &mut dyn FnMut(Step)) {
        if self.is_unreadable(&rel) {
            self.counts.kept_unreadable += 1;
            return;
        }
        let d = DeleteItem { rel, previous };
        self.counts.deletes += 1;
        if d.is_tracked() {
            self.counts.tracked_deletes += 1;
        }
        emit(Step::Delete(d));
    }

    /// Hands out the rows before `rel` as gone, and returns the row of `rel` itself, if any.
    fn rows_until(
        &mut self,
        rel: &RelPath,
        emit: &mut dyn FnMut(Step),
    ) -> index::Result<Option<IndexEntry>> {
        loop {
            let ord = match self.rows.peek() {
                None => return Ok(None),
                Some(Err(_)) => {
                    return match self.rows.next() {
                        Some(Err(e)) => Err(e),
                        _ => Ok(None),
                    }
                }
                Some(Ok((r, _))) => r.cmp(rel),
            };
            match ord {
                std::cmp::Ordering::Less => {
                    if let Some(Ok((r, e))) = self.rows.next() {
                        self.gone(r, e, emit);
                    }
                }
                std::cmp::Ordering::Equal => {
                    return Ok(self.rows.next().and_then(|r| r.ok()).map(|(_, e)| e));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    /// Hands out every row below folder `rel` as gone (it became a file).
    fn rows_below(&mut self, rel: &RelPath, emit: &mut dyn FnMut(Step)) -> index::Result<()> {
        loop {
            let below = match self.rows.peek() {
                Some(Ok((r, _))) => r.starts_with(rel) && r != rel,
                Some(Err(_)) => true,
                None => false,
            };
            if !below {
                return Ok(());
            }
            match self.rows.next() {
                Some(Ok((r, e))) => self.gone(r, e, emit),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }

    /// Closes the folders that `rel` is not below, deepest first.
    fn close_folders(&mut self, rel: Option<&RelPath>, emit: &mut dyn FnMut(Step)) {
        while let Some(top) = self.open.last() {
            if rel.is_some_and(|r| r.starts_with(&top.rel) && *r != top.rel) {
                break;
            }
            let f = self.open.pop().expect("checked above");
            if f.changed && f.tracked_below {
                emit(Step::FolderRecord(f.rel.clone()));
            }
            if f.tracked_below {
                if let Some(parent) = self.open.last_mut() {
                    parent.tracked_below = true;
                }
            }
        }
    }

    /// Takes one item of the scan.
    pub fn feed(&mut self, item: ScanItem, emit: &mut dyn FnMut(Step)) -> index::Result<()> {
        match item {
            ScanItem::Unreadable(rel) => {
                self.unreadable.push(rel);
                Ok(())
            }
            ScanItem::Folder(f) => self.folder(f, emit),
            ScanItem::Entry(e) => self.entry(e, emit),
        }
    }

    fn folder(&mut self, f: SourceFolder, emit: &mut dyn FnMut(Step)) -> index::Result<()> {
        self.close_folders(Some(&f.rel), emit);
        let mut previous = self.rows_until(&f.rel, emit)?;
        if let Some(p) = previous.take() {
            if p.kind == FileKind::Dir {
                previous = Some(p);
            } else {
                // A file became a folder: its last version leaves first.
                self.gone(f.rel.clone(), p, emit);
            }
        }
        let ctime_moved = previous
            .as_ref()
            .is_none_or(|p| p.ctime_ns != Some(f.ctime_ns));
        let xattrs = ctime_moved.then(|| xattrs_now(&f.rel.under(&self.src)));
        let changed = match &previous {
            None => true,
            Some(p) => {
                !folder_matches(&f, p) || xattrs.as_ref().is_some_and(|x| *x != p.attrs.xattrs)
            }
        };
        let rel = f.rel.clone();
        if changed || ctime_moved {
            if !changed {
                // Not changed means a row was there.
                if let Some(mut entry) = previous {
                    entry.ctime_ns = Some(f.ctime_ns);
                    emit(Step::Touch {
                        rel: rel.clone(),
                        entry,
                    });
                }
            } else {
                emit(Step::Folder(FolderItem {
                    folder: f,
                    previous,
                    xattrs,
                }));
            }
        }
        self.open.push(OpenFolder {
            rel,
            changed,
            tracked_below: false,
        });
        Ok(())
    }

    fn entry(&mut self, e: SourceEntry, emit: &mut dyn FnMut(Step)) -> index::Result<()> {
        self.close_folders(Some(&e.rel), emit);
        let mut previous = self.rows_until(&e.rel, emit)?;
        if previous.as_ref().is_some_and(|p| p.kind == FileKind::Dir) {
            // A folder became a file: everything below it leaves first, then the folder.
            self.rows_below(&e.rel, emit)?;
            if let Some(p) = previous.take() {
                self.gone(e.rel.clone(), p, emit);
            }
        }
        if e.tracked {
            // The innermost open folder; closing passes it up to the others.
            if let Some(f) = self.open.last_mut() {
                f.tracked_below = true;
            }
        }
        let hardlink_of = if e.kind == FileKind::File && e.nlink > 1 {
            match self.links.get(&(e.dev, e.ino)) {
                Some(first) => Some(first.clone()),
                None => {
                    self.links.insert((e.dev, e.ino), e.rel.clone());
                    None
                }
            }
        } else {
            None
        };
        let mut repair = false;
        let same = match &previous {
            Some(p) if metadata_matches(&e, p, &hardlink_of) => {
                let xattrs_same = p.ctime_ns == Some(e.ctime_ns)
                    || xattrs_now(&e.rel.under(&self.src)) == p.attrs.xattrs;
                xattrs_same
                    && match &self.mode.checksum {
                        None => true,
                        Some((src, mirror)) => {
                            let recorded = p.hash;
                            let source = crate::journal::hash_of(&e.rel.under(src), e.kind).ok();
                            if recorded.is_none() || source != recorded {
                                false
                            } else {
                                // The source is unchanged; is the mirror's copy still true?
                                let theirs =
                                    crate::journal::hash_of(&e.rel.under(mirror), e.kind).ok();
                                repair = theirs != recorded;
                                !repair
                            }
                        }
                    }
            }
            _ => false,
        };
        if same {
            self.counts.unchanged += 1;
            if let Some(mut entry) = previous.filter(|p| p.ctime_ns != Some(e.ctime_ns)) {
                entry.ctime_ns = Some(e.ctime_ns);
                emit(Step::Touch {
                    rel: e.rel.clone(),
                    entry,
                });
            }
            return Ok(());
        }
        let item = CopyItem {
            entry: e,
            previous,
            hardlink_of,
            repair,
        };
        self.counts.copies += 1;
        self.counts.copy_bytes = self.counts.copy_bytes.saturating_add(item.entry.size);
        if repair {
            self.counts.repairs += 1;
        }
        if item.increment_op().is_some() {
            self.counts.tracked_copies += 1;
        }
        emit(Step::Copy(item));
        Ok(())
    }

    /// The rows after the last item of the scan are gone; every open folder closes.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Step)) -> index::Result<()> {
        self.close_folders(None, emit);
        while let Some(row) = self.rows.next() {
            let (r, e) = row?;
            self.gone(r, e, emit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Attrs, MTime};
    use crate::repo::Repository;

    fn entry(rel: &str, size: u64, ns: i64, tracked: bool) -> SourceEntry {
        SourceEntry {
            rel: RelPath::parse(rel).unwrap(),
            kind: FileKind::File,
            tracked,
            size,
            mtime: MTime::from_ns(ns),
            mode: 0o644,
            symlink_target: None,
            uid: 0,
            gid: 0,
            ctime_ns: ns,
            nlink: 1,
            dev: 0,
            ino: 0,
            allocated: size,
        }
    }

    fn indexed(e: &SourceEntry) -> IndexEntry {
        IndexEntry {
            size: e.size,
            mtime: e.mtime,
            tracked: e.tracked,
            kind: e.kind,
            mode: Some(e.mode),
            hash: None,
            version_of: None,
            attrs: Attrs::default(),
            ctime_ns: Some(e.ctime_ns),
        }
    }

    fn run(rows: &[(&SourceEntry, IndexEntry)], scan: Vec<ScanItem>) -> (Vec<Step>, PlanCounts) {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::at(d.path());
        let index = index::Index::open(&repo).unwrap();
        index.begin().unwrap();
        for (e, i) in rows {
            index.mirror_put(&e.rel, i).unwrap();
        }
        index.commit().unwrap();
        let mut p = Planner::new(&index, d.path().join("src"), CompareMode::default());
        let mut steps = Vec::new();
        for item in scan {
            p.feed(item, &mut |s| steps.push(s)).unwrap();
        }
        p.finish(&mut |s| steps.push(s)).unwrap();
        (steps, p.counts)
    }

    fn describe(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Copy(c) => format!("copy {} {:?}", c.entry.rel.display(), c.increment_op()),
                Step::Delete(d) => format!("delete {} {}", d.rel.display(), d.is_tracked()),
                Step::Folder(f) => format!("folder {}", f.folder.rel.display()),
                Step::Touch { rel, .. } => format!("touch {}", rel.display()),
                Step::FolderRecord(r) => format!("record {}", r.display()),
            })
            .collect()
    }

    #[test]
    fn classifies_new_changed_unchanged_deleted_in_walk_order() {
        let same = entry("a/same", 1, 10, true);
        let changed = entry("a/changed", 2, 20, true);
        let chmod = entry("b/chmod", 3, 30, false);
        let retracked = entry("c/retracked", 4, 40, true);
        let gone_t = entry("z/gone_tracked", 5, 50, true);
        let gone_u = entry("0/gone_untracked", 5, 50, false);
        let new = entry("n/new", 6, 60, true);
        let mut old_changed = indexed(&changed);
        old_changed.mtime = MTime::from_ns(19);
        let mut old_chmod = indexed(&chmod);
        old_chmod.mode = Some(0o600);
        let mut old_retracked = indexed(&retracked);
        old_retracked.tracked = false;
        let rows = [
            (&same, indexed(&same)),
            (&changed, old_changed),
            (&chmod, old_chmod),
            (&retracked, old_retracked),
            (&gone_t, indexed(&gone_t)),
            (&gone_u, indexed(&gone_u)),
        ];
        let mut scan: Vec<SourceEntry> = vec![
            same.clone(),
            changed.clone(),
            chmod.clone(),
            retracked.clone(),
            new.clone(),
        ];
        scan.sort_by(|a, b| a.rel.cmp(&b.rel));
        let (steps, counts) = run(&rows, scan.into_iter().map(ScanItem::Entry).collect());
        assert_eq!(
            describe(&steps),
            [
                "delete 0/gone_untracked false",
                "copy a/changed Some(Changed)",
                "copy b/chmod None",
                "copy c/retracked Some(New)",
                "copy n/new Some(New)",
                "delete z/gone_tracked true",
            ]
        );
        assert_eq!(counts.unchanged, 1);
        assert_eq!(counts.tracked_deletes, 1);
    }

    #[test]
    fn an_unreadable_folder_is_not_a_deletion() {
        let a = entry("locked/a", 1, 1, true);
        let b = entry("open/b", 1, 1, true);
        let (steps, counts) = run(
            &[(&a, indexed(&a)), (&b, indexed(&b))],
            vec![ScanItem::Unreadable(Some(
                RelPath::parse("locked").unwrap(),
            ))],
        );
        assert_eq!(counts.kept_unreadable, 1);
        assert_eq!(describe(&steps), ["delete open/b true"]);
    }

    #[test]
    fn a_folder_that_became_a_file_leaves_before_the_file_comes() {
        let inner = entry("x/inner", 1, 1, true);
        let mut folder = indexed(&entry("x", 0, 5, true));
        folder.kind = FileKind::Dir;
        folder.tracked = false;
        let file = entry("x", 3, 9, true);
        let (steps, _) = run(
            &[(&entry("x", 0, 5, true), folder), (&inner, indexed(&inner))],
            vec![ScanItem::Entry(file)],
        );
        assert_eq!(
            describe(&steps),
            ["delete x/inner true", "delete x false", "copy x Some(New)"]
        );
    }

    #[test]
    fn hard_link_groups_are_found_and_changed_folders_recorded() {
        let mut h1 = entry("d/h1", 3, 1, true);
        let mut h2 = entry("d/h2", 3, 1, true);
        for h in [&mut h1, &mut h2] {
            h.nlink = 2;
            h.dev = 7;
            h.ino = 42;
        }
        let folder = SourceFolder {
            rel: RelPath::parse("d").unwrap(),
            mode: 0o700,
            uid: 0,
            gid: 0,
            mtime: MTime::from_ns(3),
            ctime_ns: 3,
            preserved: false,
            tracked: true,
        };
        let (steps, _) = run(
            &[],
            vec![
                ScanItem::Folder(folder),
                ScanItem::Entry(h1),
                ScanItem::Entry(h2),
            ],
        );
        let s = describe(&steps);
        assert_eq!(
            s,
            [
                "folder d",
                "copy d/h1 Some(New)",
                "copy d/h2 Some(New)",
                "record d"
            ]
        );
        let Step::Copy(c) = &steps[2] else { panic!() };
        assert_eq!(c.hardlink_of, Some(RelPath::parse("d/h1").unwrap()));
    }
}
