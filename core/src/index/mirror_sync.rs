//! Keeping the `mirror` table true to `mirror/`: importing an old `mirror.json`, and
//! reconciling the table with the folder after a crash or when the index was lost — without
//! storing anything again: a file whose size and mtime match the newest version a catalog
//! records is that version (tracked, with its hash and attributes).

use std::ffi::OsStr;
use std::path::Path;

use backup_platform::dir::{DirHandle, EntryKind, EntryStat};

use super::{Index, IndexError, Result, Touched};
use crate::format::{Attrs, FileKind, FormatProblem, IndexEntry, MTime, Owner};
use crate::relpath::RelPath;
use crate::repo::Repository;

/// What [`Index::reconcile_mirror`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// Entries that matched their row.
    pub kept: u64,
    /// Entries described anew (changed on disk, or unknown to the table).
    pub described: u64,
    /// Of those, recognised as a cataloged version (tracked, hash known).
    pub recognised: u64,
    /// Rows whose file is gone.
    pub dropped: u64,
}

/// One entry of a tree walk, in walk order.
pub(crate) struct Walked {
    pub rel: RelPath,
    pub stat: EntryStat,
    pub link_len: Option<u64>,
}

/// Walks `root` depth first, each folder's entries by name: the order of [`RelPath`] and of
/// the index's keys. Symlinks are entries, never followed; other special files are skipped.
/// Unreadable folders are skipped with their error passed to `error`.
pub(crate) fn walk_tree(
    root: &Path,
    f: &mut dyn FnMut(Walked) -> Result<()>,
    error: &mut dyn FnMut(Option<RelPath>, std::io::Error),
) -> Result<()> {
    let handle = match DirHandle::open(root) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            error(None, e);
            return Ok(());
        }
    };
    walk_dir(handle, None, f, error)
}

fn walk_dir(
    mut dir: DirHandle,
    at: Option<RelPath>,
    f: &mut dyn FnMut(Walked) -> Result<()>,
    error: &mut dyn FnMut(Option<RelPath>, std::io::Error),
) -> Result<()> {
    let mut entries = match dir.list() {
        Ok(e) => e,
        Err(e) => {
            error(at, e);
            return Ok(());
        }
    };
    entries.sort_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
    for e in entries {
        let name = e.name.as_encoded_bytes();
        let rel = match &at {
            Some(a) => a.join(name),
            None => RelPath::from_bytes(name),
        };
        let Ok(rel) = rel else { continue };
        let stat = match dir.lstat(&e.name) {
            Ok(s) => s,
            Err(err) => {
                error(Some(rel), err);
                continue;
            }
        };
        match stat.kind {
            EntryKind::File => f(Walked {
                rel,
                stat,
                link_len: None,
            })?,
            EntryKind::Symlink => {
                let len = dir
                    .read_link(&e.name)
                    .map(|t| t.as_os_str().len() as u64)
                    .ok();
                f(Walked {
                    rel,
                    stat,
                    link_len: len,
                })?
            }
            EntryKind::Dir => {
                f(Walked {
                    rel: rel.clone(),
                    stat,
                    link_len: None,
                })?;
                match dir.open_child(OsStr::from_bytes_compat(name)) {
                    Ok(child) => walk_dir(child, Some(rel), f, error)?,
                    Err(err) => error(Some(rel), err),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `OsStr` from raw name bytes (the walk only ever hands back what the listing gave).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &OsStr;
}

impl FromBytesCompat for OsStr {
    fn from_bytes_compat(b: &[u8]) -> &OsStr {
        // SAFETY: `b` came from `OsStr::as_encoded_bytes` of a name of this platform.
        unsafe { OsStr::from_encoded_bytes_unchecked(b) }
    }
}

fn kind_of(k: EntryKind) -> Option<FileKind> {
    match k {
        EntryKind::File => Some(FileKind::File),
        EntryKind::Symlink => Some(FileKind::Symlink),
        EntryKind::Dir => Some(FileKind::Dir),
        _ => None,
    }
}

/// The row a disk entry would have, knowing nothing else about it.
fn describe(w: &Walked, kind: FileKind) -> IndexEntry {
    IndexEntry {
        size: match kind {
            FileKind::Symlink => w.link_len.unwrap_or(w.stat.size),
            FileKind::Dir => 0,
            FileKind::File => w.stat.size,
        },
        mtime: MTime::from_ns(w.stat.mtime_ns),
        tracked: false,
        kind,
        mode: (kind != FileKind::Symlink).then_some(w.stat.mode),
        hash: None,
        version_of: None,
        attrs: Attrs {
            owner: Some(Owner {
                uid: w.stat.uid,
                gid: w.stat.gid,
                user: None,
                group: None,
            }),
            sparse: kind == FileKind::File && w.stat.allocated < w.stat.size,
            ..Default::default()
        },
        ctime_ns: Default::default(),
    }
}

/// Whether a row still describes the entry on disk (what a run compares, minus content).
fn same_on_disk(row: &IndexEntry, disk: &IndexEntry) -> bool {
    row.kind == disk.kind
        && row.size == disk.size
        && row.mtime == disk.mtime
        && (row.kind == FileKind::Symlink || row.mode == disk.mode)
}

impl Index {
    /// Streams an old `mirror.json` into the mirror table (which it replaces). Returns the
    /// number of entries imported; skipped entries go to `problems`.
    pub fn import_mirror_json(
        &self,
        path: &Path,
        problems: &mut Vec<FormatProblem>,
    ) -> Result<u64> {
        let file = std::fs::File::open(path).map_err(|source| IndexError::Io {
            op: "open",
            path: path.display().to_string(),
            source,
        })?;
        self.mirror_clear()?;
        let mut n = 0u64;
        let mut err = None;
        let updated = crate::format::read_mirror_json(
            &path.display().to_string(),
            file,
            &mut |rel, e| {
                if err.is_none() {
                    match self.mirror_put(&rel, &e) {
                        Ok(()) => n += 1,
                        Err(e) => err = Some(e),
                    }
                }
            },
            &mut |p| problems.push(p),
        )?;
        if let Some(e) = err {
            return Err(e);
        }
        // `list` shows when the mirror was last written; an old backup says it here.
        if let Some(u) = updated {
            self.set_setting(super::MIRROR_UPDATED, &u)?;
        }
        Ok(n)
    }

    /// Brings the mirror table in step with `mirror/` on disk: rows that still describe their
    /// file are kept; other files are described anew — as the newest cataloged version of the
    /// path when size, mtime and kind match it (tracked, with its hash: nothing is stored
    /// again), else as an untracked file of unknown hash (a `--checksum` run hashes it);
    /// rows whose file is gone are dropped. One merge of the walk with the table, in walk order.
    ///
    /// `hash_new`: a file described anew and not recognised gets the hash of what the mirror
    /// holds, read now. Recovery asks for it: those are the files the interrupted run renamed
    /// in (reading them back costs less than the run spent writing them), and without a hash
    /// `check --verify` could not vouch for them until they change again (the next run finds
    /// them equal to the source and copies nothing). A rebuild of a lost index does not: it
    /// would read the whole mirror.
    pub fn reconcile_mirror(
        &self,
        repo: &Repository,
        touched: &mut Touched,
        hash_new: bool,
    ) -> Result<Reconciled> {
        let mut report = Reconciled::default();
        let mut rows = self.mirror_entries().peekable();
        let mut pending_drop: Vec<RelPath> = Vec::new();
        // Folders of the mirror that could not be read: their rows stay as they were (the
        // next run's plan compares with them; nothing is dropped for a read error).
        let unreadable: std::cell::RefCell<Vec<Option<RelPath>>> = Default::default();
        let keep_row = |rel: &RelPath| {
            unreadable.borrow().iter().any(|u| match u {
                None => true,
                Some(u) => rel.starts_with(u) && rel != u,
            })
        };
        walk_tree(
            &repo.mirror_dir(),
            &mut |w| {
                let Some(kind) = kind_of(w.stat.kind) else {
                    return Ok(());
                };
                // Rows before this path are gone from disk.
                let mut old = None;
                while let Some(next) = rows.peek() {
                    match next {
                        Err(_) => {
                            if let Some(Err(e)) = rows.next() {
                                return Err(e);
                            }
                        }
                        Ok((rel, _)) if *rel < w.rel => {
                            if let Some(Ok((rel, _))) = rows.next() {
                                pending_drop.push(rel);
                            }
                        }
                        Ok((rel, _)) if *rel == w.rel => {
                            if let Some(Ok((_, e))) = rows.next() {
                                old = Some(e);
                            }
                            break;
                        }
                        Ok(_) => break,
                    }
                }
                for rel in pending_drop.drain(..) {
                    if !keep_row(&rel) {
                        self.drop_mirror_row(&rel, touched)?;
                        report.dropped += 1;
                    }
                }
                let disk = describe(&w, kind);
                if let Some(old) = &old {
                    if same_on_disk(old, &disk) {
                        report.kept += 1;
                        return Ok(());
                    }
                }
                let mut entry = self.recognise(&w.rel, disk)?;
                if hash_new && entry.hash.is_none() && entry.kind != FileKind::Dir {
                    // Unreadable now: left unknown, as before (a `--checksum` run hashes it).
                    entry.hash =
                        crate::journal::hash_of(&repo.mirror_file(&w.rel), entry.kind).ok();
                }
                report.described += 1;
                if entry.tracked {
                    report.recognised += 1;
                }
                self.mirror_put(&w.rel, &entry)?;
                if let Some(dir) = self.dir_id(w.rel.parent().as_ref())? {
                    touched.path(dir, w.rel.file_name());
                }
                Ok(())
            },
            &mut |rel, _| unreadable.borrow_mut().push(rel),
        )?;
        for row in rows {
            let (rel, _) = row?;
            if !keep_row(&rel) {
                self.drop_mirror_row(&rel, touched)?;
                report.dropped += 1;
            }
        }
        Ok(report)
    }

    fn drop_mirror_row(&self, rel: &RelPath, touched: &mut Touched) -> Result<()> {
        self.mirror_remove(rel)?;
        if let Some(dir) = self.dir_id(rel.parent().as_ref())? {
            touched.path(dir, rel.file_name());
        }
        Ok(())
    }

    /// `disk` as the newest cataloged version of `rel` when it matches it.
    fn recognise(&self, rel: &RelPath, disk: IndexEntry) -> Result<IndexEntry> {
        if disk.kind == FileKind::Dir {
            return Ok(disk);
        }
        // The state after the newest event: a version, or a deletion (then nothing matches).
        let newest = self.timeline(rel)?.into_iter().next_back();
        if let Some(v) = newest.and_then(|f| f.version) {
            if v.kind == disk.kind && v.size == disk.size && v.mtime == disk.mtime {
                return Ok(IndexEntry {
                    tracked: true,
                    hash: v.hash,
                    version_of: v.start,
                    attrs: if v.attrs.owner.is_some() {
                        v.attrs
                    } else {
                        disk.attrs
                    },
                    mode: v.mode.or(disk.mode),
                    ..disk
                });
            }
        }
        Ok(disk)
    }
}
