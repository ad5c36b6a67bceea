//! Plan: what a run must do, from the selection (the scan) against the state of the mirror
//! (`mirror.json`). Pure apart from the optional `--checksum` reads of the source.
//!
//! A file is unchanged when kind, size, mtime (exact ns), permission bits and the tracked flag
//! all match the index entry (and, with `--checksum`, the blake3 hash of the source too).
//! Everything else selected is copied; everything indexed but no longer selected is deleted.

use std::path::Path;

use crate::format::{ContentHash, FileKind, IndexEntry, MirrorIndex, Op};
use crate::relpath::RelPath;
use crate::scan::{ScanOutcome, SourceEntry};

/// A selected file to copy into the mirror.
#[derive(Clone, Debug)]
pub struct CopyItem {
    pub entry: SourceEntry,
    /// What the mirror holds now under that path, if anything.
    pub previous: Option<IndexEntry>,
}

impl CopyItem {
    /// The increment event this copy records (`None` for untracked files). A file that was in
    /// the mirror but untracked has no stored version yet, so for history it is new.
    pub fn increment_op(&self) -> Option<Op> {
        if !self.entry.tracked {
            return None;
        }
        match &self.previous {
            Some(p) if p.tracked => Some(Op::Changed),
            _ => Some(Op::New),
        }
    }
}

/// An indexed file that left the selection (deleted from the source or no longer selected).
#[derive(Clone, Debug)]
pub struct DeleteItem {
    pub rel: RelPath,
    pub previous: IndexEntry,
}

impl DeleteItem {
    /// Tracked files keep their last version in the increment's `deleted/`.
    pub fn is_tracked(&self) -> bool {
        self.previous.tracked
    }
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Sorted by path.
    pub copies: Vec<CopyItem>,
    /// Sorted by path.
    pub deletes: Vec<DeleteItem>,
    /// Selected files identical to their mirror entry.
    pub unchanged: usize,
    /// Indexed paths left alone because the directory holding them could not be scanned (a
    /// read error must never look like a deletion).
    pub kept_unreadable: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.deletes.is_empty()
    }
    /// True when the run stores something in a new increment.
    pub fn needs_increment(&self) -> bool {
        self.copies.iter().any(|c| c.entry.tracked) || self.deletes.iter().any(|d| d.is_tracked())
    }
    pub fn copy_bytes(&self) -> u64 {
        self.copies.iter().map(|c| c.entry.size).sum()
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

/// How to compare a selected file with its index entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareMode<'a> {
    /// `Some(src)`: also hash the source file under `src` when the metadata matches.
    pub checksum_src: Option<&'a Path>,
}

fn metadata_matches(e: &SourceEntry, i: &IndexEntry) -> bool {
    e.kind == i.kind
        && e.size == i.size
        && e.mtime == i.mtime
        && e.tracked == i.tracked
        && match e.kind {
            FileKind::File | FileKind::Dir => i.mode == Some(e.mode),
            FileKind::Symlink => true,
        }
}

fn source_hash(src: &Path, e: &SourceEntry) -> Option<ContentHash> {
    let path = e.rel.under(src);
    match e.kind {
        FileKind::Dir => None,
        FileKind::File => {
            let mut h = blake3::Hasher::new();
            let f = std::fs::File::open(&path).ok()?;
            h.update_reader(f).ok()?;
            Some(h.finalize().into())
        }
        FileKind::Symlink => {
            let t = std::fs::read_link(&path).ok()?;
            Some(ContentHash::of(t.as_os_str().as_encoded_bytes()))
        }
    }
}

/// The paths a scan could not read (`None`: the root itself), below which nothing may be
/// deleted: a read error must never look like a deletion.
pub fn unreadable(scan: &ScanOutcome) -> Vec<Option<RelPath>> {
    scan.errors.iter().map(|e| e.rel.clone()).collect()
}

/// Compares the selection (consumed, so a 100k-file run holds it once) with the mirror index.
pub fn plan(
    mut entries: Vec<SourceEntry>,
    unreadable: &[Option<RelPath>],
    index: &MirrorIndex,
    mode: CompareMode<'_>,
) -> Plan {
    let mut out = Plan::default();
    if !entries.windows(2).all(|w| w[0].rel <= w[1].rel) {
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    }
    let is_unreadable = |rel: &RelPath| {
        unreadable.iter().any(|u| match u {
            None => true,
            Some(dir) => rel.starts_with(dir),
        })
    };

    // Merge join of two sorted sequences.
    let mut idx = index.files.iter().peekable();
    let handle_gone = |rel: &RelPath, prev: &IndexEntry, out: &mut Plan| {
        if is_unreadable(rel) {
            out.kept_unreadable += 1;
        } else {
            out.deletes.push(DeleteItem {
                rel: rel.clone(),
                previous: prev.clone(),
            });
        }
    };
    for e in entries {
        while let Some((rel, prev)) = idx.peek() {
            if *rel < &e.rel {
                handle_gone(rel, prev, &mut out);
                idx.next();
            } else {
                break;
            }
        }
        let previous = match idx.peek() {
            Some((rel, prev)) if *rel == &e.rel => {
                let p = (*prev).clone();
                idx.next();
                Some(p)
            }
            _ => None,
        };
        let same = match &previous {
            Some(p) if metadata_matches(&e, p) => match mode.checksum_src {
                None => true,
                Some(src) => p.hash.is_some() && source_hash(src, &e) == p.hash,
            },
            _ => false,
        };
        if same {
            out.unchanged += 1;
        } else {
            out.copies.push(CopyItem { entry: e, previous });
        }
    }
    for (rel, prev) in idx {
        handle_gone(rel, prev, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MTime;
    use crate::scan::ScanError;

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
            attrs: Default::default(),
            ctime_ns: Default::default(),
        }
    }

    #[test]
    fn classifies_new_changed_unchanged_deleted() {
        let same = entry("a/same", 1, 10, true);
        let changed = entry("a/changed", 2, 20, true);
        let chmod = entry("b/chmod", 3, 30, false);
        let retracked = entry("c/retracked", 4, 40, true);
        let mut index = MirrorIndex::default();
        index.files.insert(same.rel.clone(), indexed(&same));
        let mut old = indexed(&changed);
        old.mtime = MTime::from_ns(19);
        index.files.insert(changed.rel.clone(), old);
        let mut old = indexed(&chmod);
        old.mode = Some(0o600);
        index.files.insert(chmod.rel.clone(), old);
        let mut old = indexed(&retracked);
        old.tracked = false;
        index.files.insert(retracked.rel.clone(), old);
        let gone_t = entry("z/gone_tracked", 5, 50, true);
        let gone_u = entry("0/gone_untracked", 5, 50, false);
        index.files.insert(gone_t.rel.clone(), indexed(&gone_t));
        index.files.insert(gone_u.rel.clone(), indexed(&gone_u));
        let new = entry("n/new", 6, 60, true);
        let scan = ScanOutcome {
            entries: vec![
                same.clone(),
                changed.clone(),
                chmod.clone(),
                retracked.clone(),
                new.clone(),
            ],
            ..Default::default()
        };
        let p = plan(scan.entries, &[], &index, CompareMode::default());
        assert_eq!(p.unchanged, 1);
        let ops: Vec<(String, Option<Op>)> = p
            .copies
            .iter()
            .map(|c| (c.entry.rel.display().into_owned(), c.increment_op()))
            .collect();
        assert!(ops.contains(&("a/changed".into(), Some(Op::Changed))));
        assert!(ops.contains(&("b/chmod".into(), None)));
        assert!(ops.contains(&("c/retracked".into(), Some(Op::New))));
        assert!(ops.contains(&("n/new".into(), Some(Op::New))));
        assert_eq!(p.copies.len(), 4);
        let dels: Vec<(String, bool)> = p
            .deletes
            .iter()
            .map(|d| (d.rel.display().into_owned(), d.is_tracked()))
            .collect();
        assert_eq!(
            dels,
            vec![
                ("0/gone_untracked".into(), false),
                ("z/gone_tracked".into(), true)
            ]
        );
        assert!(p.needs_increment());
        assert_eq!(p.count(Op::Deleted), 1);
    }

    #[test]
    fn unreadable_directory_is_not_a_deletion() {
        let a = entry("locked/a", 1, 1, true);
        let b = entry("open/b", 1, 1, true);
        let mut index = MirrorIndex::default();
        index.files.insert(a.rel.clone(), indexed(&a));
        index.files.insert(b.rel.clone(), indexed(&b));
        let scan = ScanOutcome {
            errors: vec![ScanError {
                rel: Some(RelPath::parse("locked").unwrap()),
                error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }],
            ..Default::default()
        };
        let p = plan(
            Vec::new(),
            &unreadable(&scan),
            &index,
            CompareMode::default(),
        );
        assert_eq!(p.kept_unreadable, 1);
        assert_eq!(p.deletes.len(), 1);
        assert_eq!(p.deletes[0].rel.display(), "open/b");
    }

    #[test]
    fn checksum_mode_catches_same_metadata_different_bytes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"new bytes").unwrap();
        let e = entry("f", 9, 1, false);
        let mut index = MirrorIndex::default();
        let mut i = indexed(&e);
        i.hash = Some(ContentHash::of(b"old bytes"));
        index.files.insert(e.rel.clone(), i);
        let entries = vec![e.clone()];
        assert_eq!(
            plan(entries.clone(), &[], &index, CompareMode::default()).unchanged,
            1
        );
        let p = plan(
            entries.clone(),
            &[],
            &index,
            CompareMode {
                checksum_src: Some(d.path()),
            },
        );
        assert_eq!(p.copies.len(), 1);
        index.files.get_mut(&e.rel).unwrap().hash = Some(ContentHash::of(b"new bytes"));
        let p = plan(
            entries,
            &[],
            &index,
            CompareMode {
                checksum_src: Some(d.path()),
            },
        );
        assert_eq!(p.unchanged, 1);
    }
}
