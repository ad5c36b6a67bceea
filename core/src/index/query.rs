//! Reading the catalog: snapshots one folder at a time, the versions of one path, folder
//! metadata at a point. Every query is bounded by what it answers (one folder's children,
//! one path's history), never by the size of the backup.

use rusqlite::{params, OptionalExtension};

use super::codec;
use super::{Index, IndexError, Result, ROOT_DIR};
use crate::format::{Category, FileKind, FolderEntry};
use crate::history::{Folded, Holder, Version};
use crate::identity::IncrementName;
use crate::relpath::RelPath;

/// The points of increment order (sort keys) at which a folder holds something: half-open
/// ranges `[from, to)`, `to = None` for "still". `from` may be empty: "since before every
/// increment" (a version whose storing increment is unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spans(pub Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Spans {
    pub fn contains(&self, at: &[u8]) -> bool {
        self.0
            .iter()
            .any(|(from, to)| from.as_slice() <= at && to.as_deref().is_none_or(|t| at < t))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts and merges overlapping or touching ranges.
    pub fn normalize(&mut self) {
        self.0.sort();
        let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(self.0.len());
        for (from, to) in self.0.drain(..) {
            if let Some(last) = out.last_mut() {
                let reaches = match &last.1 {
                    None => true,
                    Some(end) => from <= *end,
                };
                if reaches {
                    last.1 = match (&last.1, to) {
                        (None, _) | (_, None) => None,
                        (Some(a), Some(b)) => Some(if *a >= b { a.clone() } else { b }),
                    };
                    continue;
                }
            }
            out.push((from, to));
        }
        self.0 = out;
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (from, to) in &self.0 {
            out.extend_from_slice(&(from.len() as u16).to_be_bytes());
            out.extend_from_slice(from);
            match to {
                Some(t) => {
                    out.extend_from_slice(&(t.len() as u16).to_be_bytes());
                    out.extend_from_slice(t);
                }
                None => out.extend_from_slice(&u16::MAX.to_be_bytes()),
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<Spans> {
        let mut out = Vec::new();
        let mut i = 0;
        let take = |i: &mut usize| -> Option<Option<Vec<u8>>> {
            let len = u16::from_be_bytes(b.get(*i..*i + 2)?.try_into().ok()?);
            *i += 2;
            if len == u16::MAX {
                return Some(None);
            }
            let v = b.get(*i..*i + len as usize)?.to_vec();
            *i += len as usize;
            Some(Some(v))
        };
        while i < b.len() {
            let from = take(&mut i)??;
            let to = take(&mut i)?;
            out.push((from, to));
        }
        Some(Spans(out))
    }

    /// When a path is present, from its folded timeline (sort keys of its events in order,
    /// and whether each makes it present).
    pub(crate) fn of_timeline(events: &[(Vec<u8>, bool)]) -> Spans {
        let mut out = Vec::new();
        for (i, (at, present)) in events.iter().enumerate() {
            if *present {
                out.push((at.clone(), events.get(i + 1).map(|(n, _)| n.clone())));
            }
        }
        let mut s = Spans(out);
        s.normalize();
        s
    }
}

/// An entry of a `history/` folder: a name, and whether it is a folder (else a file with
/// versions; a name can be both).
pub type HistoryChild = (Vec<u8>, bool);

/// What a name in a snapshot folder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapNode {
    File(Box<Version>),
    Dir,
}

/// One entry of a snapshot folder listed by name ([`Index::snapshot_names`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapName {
    pub name: Vec<u8>,
    pub kind: FileKind,
    /// Recorded as a member of a hard-link group (its version names the group's first path):
    /// shown with the group's inode, which only its full version tells.
    pub link_member: bool,
}

/// One entry of a snapshot folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapChild {
    pub name: Vec<u8>,
    pub node: SnapNode,
}

/// Columns read for an event, after which [`Index::version_of_row`] decodes it.
const EVENT_SELECT: &str = "ord, inc, origin, category, op, kind, size, mtime_ns, mode, uid, gid, \
                            hash, version_of, extra";

struct EventRow {
    /// `ord` is x'': recorded at an unknown time, before every increment.
    unknown_time: bool,
    inc: i64,
    origin: i64,
    entry: crate::format::CatalogEntry,
}

fn event_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        unknown_time: r.get_ref(at)?.as_blob().is_ok_and(<[u8]>::is_empty),
        inc: r.get(at + 1)?,
        origin: r.get(at + 2)?,
        entry: codec::event_row_at(r, at + 3)?,
    })
}

impl Index {
    /// The increment with id `id`, by name (cached: a snapshot asks this per entry).
    pub(crate) fn increment_name(&self, id: i64) -> Result<Option<IncrementName>> {
        self.cached_increment_name(id, || {
            self.conn()
                .prepare_cached("SELECT name FROM increments WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get::<_, String>(0)).optional())
                .map(|n| n.as_deref().and_then(IncrementName::parse))
                .map_err(self.err("read increment"))
        })
    }

    /// Turns an event row of `path` into what it makes present (`None` for a deletion).
    fn version_of_row(&self, path: RelPath, row: EventRow) -> Result<Option<Version>> {
        let e = row.entry;
        if e.category == Category::Deleted {
            return Ok(None);
        }
        let (start, holder) = match row.origin {
            0 => {
                let name = self
                    .increment_name(row.inc)?
                    .ok_or_else(|| IndexError::Corrupt {
                        path: self.path().display().to_string(),
                        message: format!("event of {} names no increment", path.display()),
                    })?;
                (
                    Some(name.clone()),
                    Holder::Increment {
                        name,
                        category: Category::Tracked,
                    },
                )
            }
            1 => {
                let name = self
                    .increment_name(row.inc)?
                    .ok_or_else(|| IndexError::Corrupt {
                        path: self.path().display().to_string(),
                        message: format!("kept version of {} names no increment", path.display()),
                    })?;
                (
                    e.version_of.clone(),
                    Holder::Increment {
                        name,
                        category: Category::Deleted,
                    },
                )
            }
            _ => (e.version_of.clone(), Holder::Mirror),
        };
        Ok(Some(Version {
            path,
            start,
            holder,
            size: e.size,
            mtime: e.mtime,
            mode: e.mode,
            kind: e.kind,
            hash: e.hash,
            attrs: e.attrs,
        }))
    }

    /// The folded timeline of one path, in increment order.
    pub fn timeline(&self, path: &RelPath) -> Result<Vec<Folded>> {
        let Some(dir) = self.dir_id(path.parent().as_ref())? else {
            return Ok(Vec::new());
        };
        let rows: Vec<EventRow> = self
            .conn()
            .prepare_cached(&format!(
                "SELECT {EVENT_SELECT} FROM events WHERE dir = ?1 AND name = ?2 ORDER BY ord"
            ))
            .and_then(|mut s| {
                s.query_map(params![dir, path.file_name()], |r| event_row(r, 0))?
                    .collect()
            })
            .map_err(self.err("read a path's history"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let at = if row.unknown_time {
                None
            } else {
                match row.origin {
                    0 => self.increment_name(row.inc)?,
                    _ => row.entry.version_of.clone(),
                }
            };
            let kept = row.origin != 0;
            out.push(Folded {
                at,
                version: self.version_of_row(path.clone(), row)?,
                kept,
            });
        }
        Ok(out)
    }

    /// Every stored version of `path`, oldest first.
    pub fn versions(&self, path: &RelPath) -> Result<Vec<Version>> {
        Ok(self
            .timeline(path)?
            .into_iter()
            .filter_map(|f| f.version)
            .collect())
    }

    /// The version of `path` right after increment `at`, if it existed then.
    pub fn version_at(&self, path: &RelPath, at: &IncrementName) -> Result<Option<Version>> {
        let Some(dir) = self.dir_id(path.parent().as_ref())? else {
            return Ok(None);
        };
        let row = self
            .conn()
            .prepare_cached(&format!(
                "SELECT {EVENT_SELECT} FROM events WHERE dir = ?1 AND name = ?2 AND ord <= ?3
                 ORDER BY ord DESC LIMIT 1"
            ))
            .and_then(|mut s| {
                s.query_row(params![dir, path.file_name(), at.sort_key()], |r| {
                    event_row(r, 0)
                })
                .optional()
            })
            .map_err(self.err("read a version"))?;
        match row {
            Some(r) => self.version_of_row(path.clone(), r),
            None => Ok(None),
        }
    }

    /// The folder's presence over increments.
    pub(crate) fn dir_spans(&self, id: i64) -> Result<Spans> {
        let b: Option<Vec<u8>> = self
            .conn()
            .prepare_cached("SELECT spans FROM dirs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(self.err("read folder"))?
            .flatten();
        Ok(b.and_then(|b| Spans::decode(&b)).unwrap_or_default())
    }

    /// Whether `dir` is a folder of the snapshot at `at` (`None` = its root, always).
    pub fn snapshot_has_dir(&self, at: &IncrementName, dir: Option<&RelPath>) -> Result<bool> {
        Ok(self.snapshot_folder(at, dir)?.is_some())
    }

    /// The entries of folder `dir` in the snapshot at `at`, sorted by name (`None` when the
    /// folder does not exist there). Two queries: the files' last events up to `at`, and the
    /// subfolders present at `at`. A name that is both (messy metadata) is the folder.
    pub fn snapshot_dir(
        &self,
        at: &IncrementName,
        dir: Option<&RelPath>,
    ) -> Result<Option<Vec<SnapChild>>> {
        let Some((id, at_key)) = self.snapshot_folder(at, dir)? else {
            return Ok(None);
        };
        let mut files: Vec<(Vec<u8>, SnapNode)> = Vec::new();
        // The latest event per name: SQLite takes the bare columns from the row with max(ord).
        let rows: Vec<(Vec<u8>, EventRow)> = self
            .conn()
            .prepare_cached(
                "SELECT name, max(ord), inc, origin, category, op, kind, size, mtime_ns, mode, uid,
                        gid, hash, version_of, extra
                 FROM events WHERE dir = ?1 AND ord <= ?2 GROUP BY name ORDER BY name",
            )
            .and_then(|mut s| {
                s.query_map(params![id, at_key], |r| Ok((r.get(0)?, event_row(r, 1)?)))?
                    .collect()
            })
            .map_err(self.err("list a snapshot folder"))?;
        for (name, row) in rows {
            if row.entry.category == Category::Deleted || row.entry.kind == FileKind::Dir {
                continue;
            }
            // A name no file can have (a damaged or crafted index) is not shown; the rest of
            // the folder still is.
            let path = match dir {
                Some(d) => d.join(&name),
                None => RelPath::from_bytes(&name),
            };
            let Ok(path) = path else { continue };
            if let Some(v) = self.version_of_row(path, row)? {
                files.push((name, SnapNode::File(Box::new(v))));
            }
        }
        let dirs = self.subdirs_at(id, &at_key)?;
        Ok(Some(
            merge_children(files, dirs, || SnapNode::Dir)
                .into_iter()
                .map(|(name, node)| SnapChild { name, node })
                .collect(),
        ))
    }

    /// The names in folder `dir` of the snapshot at `at`, sorted, each with its kind: what
    /// [`Index::snapshot_dir`] lists, without reading the versions, for a walk that only wants
    /// names (`find`): a third of the columns, no version built per entry. `None` when the
    /// folder does not exist there.
    pub fn snapshot_names(
        &self,
        at: &IncrementName,
        dir: Option<&RelPath>,
    ) -> Result<Option<Vec<SnapName>>> {
        let Some((id, at_key)) = self.snapshot_folder(at, dir)? else {
            return Ok(None);
        };
        let mut files: Vec<(Vec<u8>, (FileKind, bool))> = Vec::new();
        self.conn()
            .prepare_cached(
                r#"SELECT name, max(ord), category, kind, instr(extra, '"hardlink_of"') > 0
                   FROM events WHERE dir = ?1 AND ord <= ?2 GROUP BY name ORDER BY name"#,
            )
            .and_then(|mut s| {
                let mut rows = s.query(params![id, at_key])?;
                while let Some(r) = rows.next()? {
                    let kind = codec::kind_of(r.get(3)?);
                    if codec::category_of(r.get(2)?) == Category::Deleted || kind == FileKind::Dir {
                        continue;
                    }
                    let name: Vec<u8> = r.get(0)?;
                    // As in `snapshot_dir`: a name no file can have is not shown.
                    if RelPath::is_component(&name) {
                        let link_member = r.get::<_, Option<bool>>(4)?.unwrap_or(false);
                        files.push((name, (kind, link_member)));
                    }
                }
                Ok(())
            })
            .map_err(self.err("list a snapshot folder"))?;
        let dirs = self.subdirs_at(id, &at_key)?;
        Ok(Some(
            merge_children(files, dirs, || (FileKind::Dir, false))
                .into_iter()
                .map(|(name, (kind, link_member))| SnapName {
                    name,
                    kind,
                    link_member,
                })
                .collect(),
        ))
    }

    /// The id of folder `dir` and the order key of `at`, when the folder is in the snapshot at
    /// `at`.
    fn snapshot_folder(
        &self,
        at: &IncrementName,
        dir: Option<&RelPath>,
    ) -> Result<Option<(i64, Vec<u8>)>> {
        let Some(id) = self.dir_id(dir)? else {
            return Ok(None);
        };
        let at_key = at.sort_key();
        if id != ROOT_DIR && !self.dir_spans(id)?.contains(&at_key) {
            return Ok(None);
        }
        Ok(Some((id, at_key)))
    }

    /// The names of the subfolders of folder `id` present at `at_key`, sorted.
    fn subdirs_at(&self, id: i64, at_key: &[u8]) -> Result<Vec<Vec<u8>>> {
        let subdirs: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .conn()
            .prepare_cached("SELECT name, spans FROM dirs WHERE parent = ?1 ORDER BY name")
            .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(self.err("list a snapshot folder"))?;
        Ok(subdirs
            .into_iter()
            .filter(|(name, spans)| {
                RelPath::is_component(name)
                    && spans
                        .as_deref()
                        .and_then(Spans::decode)
                        .is_some_and(|s| s.contains(at_key))
            })
            .map(|(name, _)| name)
            .collect())
    }

    /// What `path` is in the snapshot at `at`.
    pub fn snapshot_lookup(&self, at: &IncrementName, path: &RelPath) -> Result<Option<SnapNode>> {
        if self.snapshot_has_dir(at, Some(path))? {
            return Ok(Some(SnapNode::Dir));
        }
        Ok(self
            .version_at(path, at)?
            .map(|v| SnapNode::File(Box::new(v))))
    }

    /// Every file of the snapshot at `at` under `dir` (`None`: all), depth first in path
    /// order. Memory: one folder's listing per level.
    pub fn snapshot_walk(
        &self,
        at: &IncrementName,
        dir: Option<&RelPath>,
        f: &mut dyn FnMut(Version) -> Result<()>,
    ) -> Result<()> {
        let Some(children) = self.snapshot_dir(at, dir)? else {
            return Ok(());
        };
        for c in children {
            match c.node {
                SnapNode::File(v) => f(*v)?,
                SnapNode::Dir => {
                    let sub = match dir {
                        Some(d) => d.join(&c.name),
                        None => RelPath::from_bytes(&c.name),
                    }
                    .map_err(|e| IndexError::Corrupt {
                        path: self.path().display().to_string(),
                        message: e.to_string(),
                    })?;
                    self.snapshot_walk(at, Some(&sub), f)?;
                }
            }
        }
        Ok(())
    }

    /// The metadata of folder `dir` as recorded at or before `at`; failing that, the oldest
    /// record after it (better than none once the increment that recorded it is pruned); then
    /// the mirror's.
    pub fn folder_at(&self, dir: &RelPath, at: &IncrementName) -> Result<Option<FolderEntry>> {
        if let Some(id) = self.dir_id(Some(dir))? {
            let sel = |sql: &str| -> Result<Option<FolderEntry>> {
                self.conn()
                    .prepare_cached(sql)
                    .and_then(|mut s| {
                        s.query_row(params![id, at.sort_key()], |r| codec::folder_row_at(r, 0))
                            .optional()
                    })
                    .map_err(self.err("read folder metadata"))
            };
            let cols = codec::FOLDER_COLUMNS;
            if let Some(f) = sel(&format!(
                "SELECT {cols} FROM folders WHERE dir = ?1 AND ord <= ?2 ORDER BY ord DESC LIMIT 1"
            ))? {
                return Ok(Some(f));
            }
            if let Some(f) = sel(&format!(
                "SELECT {cols} FROM folders WHERE dir = ?1 AND ord > ?2 ORDER BY ord LIMIT 1"
            ))? {
                return Ok(Some(f));
            }
        }
        Ok(self
            .mirror_get(dir)?
            .filter(|e| e.kind == FileKind::Dir)
            .map(|e| codec::folder_of_index(&e)))
    }

    /// The entries of `history/<dir>`: names of files that ever had a version there, and of
    /// folders with such files below, sorted (a name can be both).
    pub fn history_dir(&self, dir: Option<&RelPath>) -> Result<Option<Vec<HistoryChild>>> {
        let Some(id) = self.dir_id(dir)? else {
            return Ok(None);
        };
        let mut out: Vec<(Vec<u8>, bool)> = self
            .conn()
            .prepare_cached(
                "SELECT DISTINCT name FROM events WHERE dir = ?1 AND category = 0 AND kind != 2",
            )
            .and_then(|mut s| {
                s.query_map([id], |r| Ok((r.get::<_, Vec<u8>>(0)?, false)))?
                    .collect()
            })
            .map_err(self.err("list history"))?;
        let subdirs: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .conn()
            .prepare_cached("SELECT name, spans FROM dirs WHERE parent = ?1")
            .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(self.err("list history"))?;
        for (name, spans) in subdirs {
            if spans
                .and_then(|b| Spans::decode(&b))
                .is_some_and(|s| !s.is_empty())
            {
                out.push((name, true));
            }
        }
        out.retain(|(name, _)| RelPath::is_component(name));
        out.sort();
        Ok(Some(out))
    }

    /// Whether `history/<dir>` is a folder: something below it was ever stored.
    pub fn history_has_dir(&self, dir: &RelPath) -> Result<bool> {
        match self.dir_id(Some(dir))? {
            Some(id) => Ok(!self.dir_spans(id)?.is_empty()),
            None => Ok(false),
        }
    }

    /// Every (member, first path) of the hard-link groups any version or the mirror records
    /// (`attrs.hardlink_of`), each pair once. One pass over the events and the mirror; memory
    /// is the number of group members, not of paths.
    pub fn hardlink_pairs(&self) -> Result<Vec<(RelPath, RelPath)>> {
        type Row = (i64, Vec<u8>, Option<i64>, Option<i64>, Option<String>);
        let rows: Vec<Row> = self
            .conn()
            .prepare_cached(
                // `_` matches any one byte here: the JSON parse below decides.
                r#"SELECT DISTINCT dir, name, uid, gid, extra FROM events
                   WHERE extra LIKE '%"hardlink_of"%'"#,
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(self.err("list hard-link groups"))?;
        let mut out = std::collections::BTreeSet::new();
        for (dir, name, uid, gid, extra) in rows {
            let attrs = crate::format::attrs_from_extra(
                uid.and_then(|u| u32::try_from(u).ok()),
                gid.and_then(|g| u32::try_from(g).ok()),
                extra.as_deref(),
            );
            if let (Some(first), Some(path)) = (attrs.hardlink_of, self.path_of_row(dir, &name)?) {
                out.insert((path, first));
            }
        }
        // The mirror's groups too (untracked files have no events).
        type MirrorRow = (Vec<u8>, Option<i64>, Option<i64>, Option<String>);
        let rows: Vec<MirrorRow> = self
            .conn()
            .prepare_cached(
                r#"SELECT key, uid, gid, extra FROM mirror WHERE extra LIKE '%"hardlink_of"%'"#,
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(self.err("list hard-link groups"))?;
        for (key, uid, gid, extra) in rows {
            let attrs = crate::format::attrs_from_extra(
                uid.and_then(|u| u32::try_from(u).ok()),
                gid.and_then(|g| u32::try_from(g).ok()),
                extra.as_deref(),
            );
            if let (Some(first), Ok(path)) = (attrs.hardlink_of, RelPath::from_sort_key(&key)) {
                out.insert((path, first));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Whether anything in the catalog or the mirror records extended attributes (a mount of
    /// a backup that records none can tell the kernel so once, instead of per file).
    pub fn records_xattrs(&self) -> Result<bool> {
        self.conn()
            .query_row(
                r#"SELECT EXISTS (SELECT 1 FROM events WHERE extra LIKE '%"xattrs"%')
                       OR EXISTS (SELECT 1 FROM folders WHERE extra LIKE '%"xattrs"%')
                       OR EXISTS (SELECT 1 FROM mirror WHERE extra LIKE '%"xattrs"%')"#,
                [],
                |r| r.get(0),
            )
            .map_err(self.err("look for extended attributes"))
    }

    /// The next 1,024 paths with events after `after` (folder id, name), in that order: the one
    /// way to walk every cataloged path a page at a time.
    pub(crate) fn event_paths_after(&self, after: &(i64, Vec<u8>)) -> Result<Vec<(i64, Vec<u8>)>> {
        self.conn()
            .prepare_cached(
                "SELECT DISTINCT dir, name FROM events WHERE (dir, name) > (?1, ?2)
                 ORDER BY dir, name LIMIT 1024",
            )
            .and_then(|mut s| {
                s.query_map(params![after.0, after.1], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(self.err("list paths"))
    }
}

/// Merges a folder's files and subfolders, each sorted by name, into one sorted list (both
/// queries give names in key order, so nothing is sorted again). A name that is both (messy
/// metadata) is the folder.
fn merge_children<T>(
    files: Vec<(Vec<u8>, T)>,
    dirs: Vec<Vec<u8>>,
    dir: impl Fn() -> T,
) -> Vec<(Vec<u8>, T)> {
    let mut out = Vec::with_capacity(files.len() + dirs.len());
    let mut files = files.into_iter().peekable();
    for name in dirs {
        while let Some((f, _)) = files.peek() {
            match f.cmp(&name) {
                std::cmp::Ordering::Less => out.push(files.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    files.next();
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        out.push((name, dir()));
    }
    out.extend(files);
    out
}
