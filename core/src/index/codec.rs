//! Rows of the index ↔ the format's types. Small integers stand for the enums so the tables
//! stay compact; `docs/format.md` lists them.

use rusqlite::Row;

use crate::format::{
    attrs_extra, attrs_from_extra, Attrs, CatalogEntry, Category, ContentHash, FileKind,
    FolderEntry, IndexEntry, MTime, Op,
};
use crate::identity::IncrementName;

pub(crate) fn kind_code(k: FileKind) -> i64 {
    match k {
        FileKind::File => 0,
        FileKind::Symlink => 1,
        FileKind::Dir => 2,
    }
}

pub(crate) fn kind_of(code: i64) -> FileKind {
    match code {
        1 => FileKind::Symlink,
        2 => FileKind::Dir,
        _ => FileKind::File,
    }
}

pub(crate) fn category_code(c: Category) -> i64 {
    match c {
        Category::Tracked => 0,
        Category::Deleted => 1,
    }
}

pub(crate) fn category_of(code: i64) -> Category {
    if code == 1 {
        Category::Deleted
    } else {
        Category::Tracked
    }
}

pub(crate) fn op_code(o: Option<Op>) -> Option<i64> {
    o.map(|o| match o {
        Op::New => 0,
        Op::Changed => 1,
        Op::Deleted => 2,
    })
}

pub(crate) fn op_of(code: Option<i64>) -> Option<Op> {
    code.map(|c| match c {
        0 => Op::New,
        2 => Op::Deleted,
        _ => Op::Changed,
    })
}

fn hash_of(b: Option<Vec<u8>>) -> Option<ContentHash> {
    b.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(ContentHash)
}

fn u32_of(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// The value columns of `mirror`, in the order [`MirrorValues`] binds them.
pub(crate) const MIRROR_COLUMNS: &str =
    "kind, size, mtime_ns, mode, uid, gid, tracked, hash, version_of, extra, ctime_ns";

pub(crate) struct MirrorValues {
    pub kind: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub mode: Option<i64>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub tracked: bool,
    pub hash: Option<Vec<u8>>,
    pub version_of: Option<String>,
    pub extra: Option<String>,
    pub ctime_ns: Option<i64>,
}

impl MirrorValues {
    pub fn of(e: &IndexEntry) -> Self {
        MirrorValues {
            kind: kind_code(e.kind),
            // Sizes above i64::MAX cannot exist on disk; clamp rather than wrap.
            size: i64::try_from(e.size).unwrap_or(i64::MAX),
            mtime_ns: e.mtime.ns,
            mode: e.mode.map(i64::from),
            uid: e.attrs.owner.as_ref().map(|o| i64::from(o.uid)),
            gid: e.attrs.owner.as_ref().map(|o| i64::from(o.gid)),
            tracked: e.tracked,
            hash: e.hash.map(|h| h.0.to_vec()),
            version_of: e.version_of.as_ref().map(|n| n.to_string()),
            extra: attrs_extra(&e.attrs),
            ctime_ns: e.ctime_ns,
        }
    }
}

/// A mirror row whose value columns start at `at`.
pub(crate) fn mirror_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<IndexEntry> {
    let uid: Option<i64> = r.get(at + 4)?;
    let gid: Option<i64> = r.get(at + 5)?;
    let extra = text_ref(r.get_ref(at + 9)?);
    Ok(IndexEntry {
        kind: kind_of(r.get(at)?),
        size: r.get::<_, i64>(at + 1)?.max(0) as u64,
        mtime: MTime::from_ns(r.get(at + 2)?),
        mode: u32_of(r.get(at + 3)?),
        tracked: r.get(at + 6)?,
        hash: hash_of(r.get(at + 7)?),
        version_of: name_of(r.get_ref(at + 8)?),
        attrs: attrs_from_extra(u32_of(uid), u32_of(gid), extra),
        ctime_ns: r.get(at + 10)?,
    })
}

pub(crate) fn mirror_row(r: &Row<'_>) -> rusqlite::Result<IndexEntry> {
    mirror_row_at(r, 0)
}

/// The value columns of `events` after (dir, name, ord, inc, origin).
pub(crate) const EVENT_COLUMNS: &str =
    "category, op, kind, size, mtime_ns, mode, uid, gid, hash, version_of, extra";

pub(crate) struct EventValues {
    pub category: i64,
    pub op: Option<i64>,
    pub kind: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub mode: Option<i64>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub hash: Option<Vec<u8>>,
    pub version_of: Option<String>,
    pub extra: Option<String>,
}

impl EventValues {
    pub fn of(e: &CatalogEntry) -> Self {
        EventValues {
            category: category_code(e.category),
            op: op_code(e.op),
            kind: kind_code(e.kind),
            size: i64::try_from(e.size).unwrap_or(i64::MAX),
            mtime_ns: e.mtime.ns,
            mode: e.mode.map(i64::from),
            uid: e.attrs.owner.as_ref().map(|o| i64::from(o.uid)),
            gid: e.attrs.owner.as_ref().map(|o| i64::from(o.gid)),
            hash: e.hash.map(|h| h.0.to_vec()),
            version_of: e.version_of.as_ref().map(|n| n.to_string()),
            extra: attrs_extra(&e.attrs),
        }
    }
}

/// An event row whose value columns start at `at`.
pub(crate) fn event_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<CatalogEntry> {
    let uid: Option<i64> = r.get(at + 6)?;
    let gid: Option<i64> = r.get(at + 7)?;
    let extra = text_ref(r.get_ref(at + 10)?);
    Ok(CatalogEntry {
        category: category_of(r.get(at)?),
        op: op_of(r.get(at + 1)?),
        kind: kind_of(r.get(at + 2)?),
        size: r.get::<_, i64>(at + 3)?.max(0) as u64,
        mtime: MTime::from_ns(r.get(at + 4)?),
        mode: u32_of(r.get(at + 5)?),
        hash: hash_of(r.get(at + 8)?),
        version_of: name_of(r.get_ref(at + 9)?),
        attrs: attrs_from_extra(u32_of(uid), u32_of(gid), extra),
    })
}

/// The value columns of `folders` after (dir, ord, inc).
pub(crate) const FOLDER_COLUMNS: &str = "mtime_ns, mode, uid, gid, extra";

pub(crate) fn folder_values(
    f: &FolderEntry,
) -> (i64, Option<i64>, Option<i64>, Option<i64>, Option<String>) {
    (
        f.mtime.ns,
        f.mode.map(i64::from),
        f.attrs.owner.as_ref().map(|o| i64::from(o.uid)),
        f.attrs.owner.as_ref().map(|o| i64::from(o.gid)),
        attrs_extra(&f.attrs),
    )
}

pub(crate) fn folder_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<FolderEntry> {
    let uid: Option<i64> = r.get(at + 2)?;
    let gid: Option<i64> = r.get(at + 3)?;
    let extra = text_ref(r.get_ref(at + 4)?);
    Ok(FolderEntry {
        mtime: MTime::from_ns(r.get(at)?),
        mode: u32_of(r.get(at + 1)?),
        attrs: attrs_from_extra(u32_of(uid), u32_of(gid), extra),
    })
}

/// A folder's metadata from a mirror row of kind Dir.
pub(crate) fn folder_of_index(e: &IndexEntry) -> FolderEntry {
    FolderEntry {
        mtime: e.mtime,
        mode: e.mode,
        attrs: Attrs {
            owner: e.attrs.owner.clone(),
            xattrs: e.attrs.xattrs.clone(),
            ..Default::default()
        },
    }
}

/// A text column borrowed from the row: no String per row (a mount lists a million of them).
fn text_ref(v: rusqlite::types::ValueRef<'_>) -> Option<&str> {
    match v {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// An increment name column, read borrowed. Neighbouring rows mostly name the same increment
/// (the one that stored a folder's files): each distinct text is parsed once per thread
/// (parsing the stamp costs more than the rest of the row).
fn name_of(v: rusqlite::types::ValueRef<'_>) -> Option<IncrementName> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<IncrementName>> =
            const { std::cell::RefCell::new(None) };
    }
    let rusqlite::types::ValueRef::Text(t) = v else {
        return None;
    };
    let t = std::str::from_utf8(t).ok()?;
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(n) if n.as_str() == t => Some(n.clone()),
            _ => {
                let n = IncrementName::parse(t)?;
                *last = Some(n.clone());
                Some(n)
            }
        }
    })
}
