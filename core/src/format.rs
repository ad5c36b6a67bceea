//! The repository format at `dist` (see `docs/format.md`): the mirror index `mirror.json` and
//! the increment metadata `backup_YYYYMMDD_HHMMSS/backup_YYYYMMDD_HHMMSS.json`.
//!
//! Readers accept what the original Python tool wrote: no `op`, category `track`/`tracked`,
//! float mtimes, a flat `mirror.json`. Entries that cannot be trusted (a path with `..`, a wrong
//! type) are skipped and reported as problems rather than failing the whole file, so one bad
//! entry never hides the rest of a backup.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::IncrementName;
use crate::relpath::RelPath;

/// Written into every metadata file we produce; the original tool wrote none or `"1.0"`.
pub const SCHEMA_VERSION: u32 = 2;

/// What an increment event did to a tracked path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    New,
    Changed,
    Deleted,
}

/// Where the event's file lives inside the increment: `track/` or `deleted/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    #[serde(alias = "track")]
    Tracked,
    Deleted,
}

impl Category {
    pub fn dir_name(self) -> &'static str {
        match self {
            Category::Tracked => "track",
            Category::Deleted => "deleted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    #[default]
    File,
    Symlink,
    /// A folder: only in the mirror index and an increment's `folders` (never in `track/`).
    Dir,
}

/// A blake3 content hash, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(data: &[u8]) -> Self {
        ContentHash(*blake3::hash(data).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        self.hex().to_string()
    }
    /// Lowercase hex on the stack (blake3's own encoding): serializing 100k index entries must
    /// not allocate per hash.
    fn hex(&self) -> impl std::ops::Deref<Target = str> {
        blake3::Hash::from_bytes(self.0).to_hex()
    }
    /// 64 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s).ok().map(ContentHash::from)
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        ContentHash(*h.as_bytes())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor sees the string in the parser's buffer: no allocation per hash.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ContentHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex digits (blake3)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ContentHash, E> {
                ContentHash::from_hex(s).ok_or_else(|| E::custom("bad blake3 hex"))
            }
        }
        d.deserialize_str(V)
    }
}

/// Modification time. JSON keeps the original tool's float seconds (`mtime`) and, when we wrote
/// it, the exact nanoseconds (`mtime_ns`), since a float cannot hold every nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MTime {
    pub ns: i64,
}

impl MTime {
    pub fn from_ns(ns: i64) -> Self {
        MTime { ns }
    }
    /// The exact modification time of a file (of the link itself for `symlink_metadata`).
    pub fn of(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            MTime::from_ns(m.mtime() * 1_000_000_000 + m.mtime_nsec())
        }
        #[cfg(not(unix))]
        {
            let ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            MTime::from_ns(ns)
        }
    }

    pub fn secs_f64(self) -> f64 {
        self.ns as f64 / 1e9
    }
    fn from_json(mtime: Option<f64>, mtime_ns: Option<i64>) -> Self {
        match (mtime_ns, mtime) {
            (Some(ns), _) => MTime { ns },
            // Split before scaling: f * 1e9 near 1.7e18 is only exact to 256 ns. A float of
            // seconds carries no more than microseconds, so round there.
            (None, Some(f)) if f.is_finite() => {
                let secs = f.floor();
                let micros = ((f - secs) * 1e6).round() as i64;
                MTime {
                    ns: (secs as i64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(micros * 1000),
                }
            }
            _ => MTime { ns: 0 },
        }
    }
    pub fn to_system_time(self) -> std::time::SystemTime {
        let d = std::time::Duration::from_nanos(self.ns.unsigned_abs());
        if self.ns >= 0 {
            std::time::UNIX_EPOCH + d
        } else {
            std::time::UNIX_EPOCH - d
        }
    }
}

/// Numeric owner and group of an entry, with their names where the system could resolve them
/// (as restic records them). Restores apply the numbers (names are for people and for
/// moving a backup between machines).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Arc<str>>,
}

/// One extended attribute (POSIX ACLs are the `system.posix_acl_*` attributes, raw bytes):
/// the platform's type, so what is read from a file is what is recorded and applied.
pub use backup_platform::meta::Xattr;

/// Metadata of a version beyond its bytes, size, mtime and mode: recorded in the index and the
/// catalogs because a `dist` on exFAT cannot hold it, and because an inode an increment shares
/// must never be changed in place.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attrs {
    pub owner: Option<Owner>,
    /// Sorted by name.
    pub xattrs: Vec<Xattr>,
    /// The file had holes (allocated less than its size): restores recreate holes even from a
    /// copy that has none (a `dist` on exFAT).
    pub sparse: bool,
    /// Another path of the same hard-link group (the first in path order), for every member
    /// but that first one: restores link it instead of copying.
    pub hardlink_of: Option<RelPath>,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        *self == Attrs::default()
    }
}

/// One file in `mirror.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub size: u64,
    pub mtime: MTime,
    pub tracked: bool,
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`), when known.
    pub mode: Option<u32>,
    pub hash: Option<ContentHash>,
    /// The increment whose `track/` stored this same version (tracked files only). It lets the
    /// point-in-time fold keep showing the version after that increment is deleted.
    pub version_of: Option<IncrementName>,
    pub attrs: Attrs,
    /// The source's inode change time when this entry was recorded: while it stays the same,
    /// no chmod, chown or xattr change happened (so a run need not read xattrs again). Not
    /// part of the version; kept in the index only.
    pub ctime_ns: Option<i64>,
}

/// One event in an increment's `file_catalog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub size: u64,
    pub mtime: MTime,
    pub category: Category,
    /// `None` for metadata written by the original tool; see [`CatalogEntry::op`].
    pub op: Option<Op>,
    pub kind: FileKind,
    pub mode: Option<u32>,
    pub hash: Option<ContentHash>,
    /// For `deleted` events: the increment that stored the version kept in `deleted/`.
    pub version_of: Option<IncrementName>,
    pub attrs: Attrs,
}

impl CatalogEntry {
    /// The op, inferring one for the original tool's metadata (which did not say new/changed).
    pub fn op(&self) -> Op {
        match (self.op, self.category) {
            (Some(op), _) => op,
            (None, Category::Deleted) => Op::Deleted,
            (None, Category::Tracked) => Op::Changed,
        }
    }
}

/// One entry of `file_catalog`, `mirror.json` or `folders` as JSON. Only an object is an entry:
/// serde would otherwise read `[1, 2]` as size 1, mtime 2 (see [`EntryJson`]'s Deserialize).
#[derive(Serialize, Deserialize, Default, Clone)]
struct EntryFields {
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mtime: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracked: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<Op>,
    #[serde(default, skip_serializing_if = "is_file_kind")]
    kind: FileKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Attribute name (the path encoding: UTF-8, else `\u0000hex:`) → base64 of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xattrs: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sparse: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hardlink_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<ContentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_of: Option<String>,
}

#[derive(Default)]
struct EntryJson(EntryFields);

impl Serialize for EntryJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EntryJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntryJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entry object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<EntryJson, A::Error> {
                EntryFields::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(EntryJson)
            }
        }
        d.deserialize_map(V)
    }
}

fn encode_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.starts_with('\0') => s.to_owned(),
        _ => {
            let mut out = String::from("\u{0}hex:");
            for b in name {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

fn decode_name(s: &str) -> Option<Vec<u8>> {
    match s.strip_prefix("\u{0}hex:") {
        Some(hex) if hex.len() % 2 == 0 => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect(),
        Some(_) => None,
        None => Some(s.as_bytes().to_vec()),
    }
}

impl EntryFields {
    /// The [`Attrs`] this entry records; parts that cannot be decoded are left out and named.
    fn attrs(&self) -> (Attrs, Vec<String>) {
        use base64::Engine;
        let mut bad = Vec::new();
        let owner = match (self.uid, self.gid) {
            (Some(uid), Some(gid)) => Some(Owner {
                uid,
                gid,
                user: self.user.as_deref().map(Arc::from),
                group: self.group.as_deref().map(Arc::from),
            }),
            _ => None,
        };
        let mut xattrs = Vec::new();
        for (k, v) in self.xattrs.iter().flatten() {
            match (
                decode_name(k),
                base64::engine::general_purpose::STANDARD.decode(v),
            ) {
                (Some(name), Ok(value)) => xattrs.push(Xattr { name, value }),
                _ => bad.push(format!(
                    "extended attribute {k:?} is not decodable; left out"
                )),
            }
        }
        xattrs.sort();
        let hardlink_of = match self.hardlink_of.as_deref().map(RelPath::parse) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                bad.push(format!("hardlink_of left out: {e}"));
                None
            }
            None => None,
        };
        (
            Attrs {
                owner,
                xattrs,
                sparse: self.sparse,
                hardlink_of,
            },
            bad,
        )
    }

    fn set_attrs(&mut self, a: &Attrs) {
        use base64::Engine;
        if let Some(o) = &a.owner {
            self.uid = Some(o.uid);
            self.gid = Some(o.gid);
            self.user = o.user.as_deref().map(str::to_owned);
            self.group = o.group.as_deref().map(str::to_owned);
        }
        if !a.xattrs.is_empty() {
            self.xattrs = Some(
                a.xattrs
                    .iter()
                    .map(|x| {
                        (
                            encode_name(&x.name),
                            base64::engine::general_purpose::STANDARD.encode(&x.value),
                        )
                    })
                    .collect(),
            );
        }
        self.sparse = a.sparse;
        self.hardlink_of = a.hardlink_of.as_ref().map(RelPath::encode);
    }
}

/// The attributes other than the numeric owner, as the compact JSON the index keeps in its
/// `extra` column (`None` when there are none): names, xattrs, sparse, hardlink_of.
pub(crate) fn attrs_extra(a: &Attrs) -> Option<String> {
    let mut f = EntryFields::default();
    f.set_attrs(a);
    f.uid = None;
    f.gid = None;
    #[derive(Serialize)]
    struct Extra<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        user: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        xattrs: &'a Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        sparse: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        hardlink_of: &'a Option<String>,
    }
    let e = Extra {
        user: &f.user,
        group: &f.group,
        xattrs: &f.xattrs,
        sparse: f.sparse,
        hardlink_of: &f.hardlink_of,
    };
    let empty = e.user.is_none()
        && e.group.is_none()
        && e.xattrs.is_none()
        && !e.sparse
        && e.hardlink_of.is_none();
    (!empty).then(|| serde_json::to_string(&e).unwrap_or_default())
}

/// The inverse of [`attrs_extra`], with the owner's numbers from their own columns.
pub(crate) fn attrs_from_extra(uid: Option<u32>, gid: Option<u32>, extra: Option<&str>) -> Attrs {
    // Most rows of an index share one `extra` (the same owner names, nothing else): decode
    // each text once per thread — xattrs from base64, the link group's path — not once per row
    // (a run reads every row of the mirror, a mount every row of a listing).
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, Attrs)>> =
            const { std::cell::RefCell::new(None) };
    }
    let mut a = match extra {
        None => Attrs::default(),
        Some(t) => LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((text, a)) if text == t => a.clone(),
                _ => {
                    let mut f: EntryFields = serde_json::from_str(t).unwrap_or_default();
                    // Any ids, so the owner's names come through; the row's ids replace them.
                    f.uid = Some(0);
                    f.gid = Some(0);
                    let a = f.attrs().0;
                    *last = Some((t.to_owned(), a.clone()));
                    a
                }
            }
        }),
    };
    a.owner = match (uid, gid) {
        (Some(uid), Some(gid)) => {
            let names = a.owner.take();
            Some(Owner {
                uid,
                gid,
                user: names.as_ref().and_then(|o| o.user.clone()),
                group: names.and_then(|o| o.group),
            })
        }
        _ => None,
    };
    a
}

fn is_file_kind(k: &FileKind) -> bool {
    *k == FileKind::File
}

/// A problem found while reading metadata: the file is still usable, minus what is named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FormatProblem {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid metadata JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
}

fn index_entry(e: &EntryFields) -> (IndexEntry, Vec<String>) {
    let (attrs, bad) = e.attrs();
    (
        IndexEntry {
            size: e.size,
            mtime: MTime::from_json(e.mtime, e.mtime_ns),
            tracked: e.tracked.unwrap_or(false),
            kind: e.kind,
            mode: e.mode,
            hash: e.hash,
            version_of: e.version_of.as_deref().and_then(IncrementName::parse),
            attrs,
            ctime_ns: Default::default(),
        },
        bad,
    )
}

fn index_fields(e: &IndexEntry) -> EntryFields {
    let mut f = EntryFields {
        size: e.size,
        mtime: Some(e.mtime.secs_f64()),
        mtime_ns: Some(e.mtime.ns),
        tracked: Some(e.tracked),
        kind: e.kind,
        mode: e.mode,
        hash: e.hash,
        version_of: e.version_of.as_ref().map(|n| n.to_string()),
        ..Default::default()
    };
    f.set_attrs(&e.attrs);
    f
}

fn catalog_entry(e: &EntryFields) -> (CatalogEntry, Vec<String>) {
    let (attrs, bad) = e.attrs();
    let category = match (e.category, e.op) {
        (Some(c), _) => c,
        (None, Some(Op::Deleted)) => Category::Deleted,
        (None, _) => Category::Tracked,
    };
    (
        CatalogEntry {
            size: e.size,
            mtime: MTime::from_json(e.mtime, e.mtime_ns),
            category,
            op: e.op,
            kind: e.kind,
            mode: e.mode,
            hash: e.hash,
            version_of: e.version_of.as_deref().and_then(IncrementName::parse),
            attrs,
        },
        bad,
    )
}

fn catalog_fields(e: &CatalogEntry) -> EntryFields {
    let mut f = EntryFields {
        size: e.size,
        mtime: Some(e.mtime.secs_f64()),
        mtime_ns: Some(e.mtime.ns),
        category: Some(e.category),
        op: Some(e.op()),
        kind: e.kind,
        mode: e.mode,
        hash: e.hash,
        version_of: e.version_of.as_ref().map(|n| n.to_string()),
        ..Default::default()
    };
    f.set_attrs(&e.attrs);
    f
}

/// The metadata of a folder as an increment records it (in `folders`): what a snapshot shows
/// and a restore applies for that folder from this increment on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FolderEntry {
    pub mtime: MTime,
    pub mode: Option<u32>,
    pub attrs: Attrs,
}

fn folder_entry(e: &EntryFields) -> (FolderEntry, Vec<String>) {
    let (attrs, bad) = e.attrs();
    (
        FolderEntry {
            mtime: MTime::from_json(e.mtime, e.mtime_ns),
            mode: e.mode,
            attrs,
        },
        bad,
    )
}

fn folder_fields(e: &FolderEntry) -> EntryFields {
    let mut f = EntryFields {
        mtime: Some(e.mtime.secs_f64()),
        mtime_ns: Some(e.mtime.ns),
        mode: e.mode,
        ..Default::default()
    };
    f.set_attrs(&e.attrs);
    f
}

/// Reads one JSON object key by key, handing each `(key, raw value)` of the objects named in
/// `maps` to `entry`, and collecting every other top-level key. Streams: a catalog of a million
/// entries is never held whole, and one malformed entry only loses itself.
fn read_top_streaming(
    file: &str,
    reader: impl std::io::Read,
    maps: &[&'static str],
    // `Some((tag, keep))`: every other top-level key except those in `keep` is an entry too,
    // handed to `entry` under `tag` (the original tool's flat `mirror.json`).
    rest_as: Option<(&'static str, &[&str])>,
    entry: &mut dyn FnMut(&'static str, String, &serde_json::value::RawValue),
) -> Result<(Map<String, Value>, Vec<&'static str>), FormatError> {
    use serde::de::{DeserializeSeed, MapAccess, Visitor};
    use serde_json::value::RawValue;

    struct Inner<'a> {
        which: &'static str,
        entry: &'a mut dyn FnMut(&'static str, String, &RawValue),
    }
    impl<'de> Visitor<'de> for Inner<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object for {:?}", self.which)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                let raw: Box<RawValue> = m.next_value()?;
                (self.entry)(self.which, k, &raw);
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Inner<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    struct Top<'a> {
        maps: &'a [&'static str],
        rest_as: Option<(&'static str, &'a [&'a str])>,
        entry: &'a mut dyn FnMut(&'static str, String, &RawValue),
    }
    impl<'de> Visitor<'de> for Top<'_> {
        type Value = (Map<String, Value>, Vec<&'static str>);
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a metadata object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut rest = Map::new();
            let mut seen = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                match self.maps.iter().find(|w| **w == k) {
                    Some(which) => {
                        m.next_value_seed(Inner {
                            which,
                            entry: &mut *self.entry,
                        })?;
                        seen.push(*which);
                    }
                    None => match self.rest_as {
                        Some((tag, keep)) if !keep.contains(&k.as_str()) => {
                            let raw: Box<RawValue> = m.next_value()?;
                            (self.entry)(tag, k, &raw);
                        }
                        _ => {
                            let v: Value = m.next_value()?;
                            rest.insert(k, v);
                        }
                    },
                }
            }
            Ok((rest, seen))
        }
    }
    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = (Map<String, Value>, Vec<&'static str>);
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let reader = std::io::BufReader::with_capacity(256 * 1024, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let top = Top {
        maps,
        rest_as,
        entry,
    }
    .deserialize(&mut de)
    .and_then(|t| de.end().map(|_| t))
    .map_err(|source| {
        if source.is_io() {
            FormatError::Io {
                path: file.to_owned(),
                source: source.into(),
            }
        } else if source.is_data() {
            FormatError::Shape {
                path: file.to_owned(),
                message: source.to_string(),
            }
        } else {
            FormatError::Json {
                path: file.to_owned(),
                source,
            }
        }
    })?;
    Ok(top)
}

/// Parses one entry's raw JSON, or says why it was skipped (naming the file and the key).
fn parse_raw_entry(
    file: &str,
    key: &str,
    raw: &serde_json::value::RawValue,
    problems: &mut dyn FnMut(FormatProblem),
) -> Option<(RelPath, EntryFields)> {
    let problem = |message: String| FormatProblem {
        file: file.to_owned(),
        key: Some(key.to_owned()),
        message,
    };
    let path = match RelPath::parse(key) {
        Ok(p) => p,
        Err(e) => {
            problems(problem(format!("unsafe or invalid path skipped: {e}")));
            return None;
        }
    };
    match serde_json::from_str::<EntryJson>(raw.get()) {
        Ok(e) => Some((path, e.0)),
        Err(e) => {
            problems(problem(format!("malformed entry skipped: {e}")));
            None
        }
    }
}

/// `mirror.json`: the state of `mirror/` as the original tool and earlier versions of this one
/// kept it. Today's backups keep that state in the index; this is read to import it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorIndex {
    pub files: BTreeMap<RelPath, IndexEntry>,
    /// When the index was written (RFC 3339), if known.
    pub updated: Option<String>,
}

/// Streams the entries of a `mirror.json` (ours: `{"schema_version", "files": {...}}`; the
/// original tool's: a flat `{path: {size, mtime, tracked}}`) to `entry`. Returns the `updated`
/// time when recorded.
pub fn read_mirror_json(
    file: &str,
    reader: impl std::io::Read,
    entry: &mut dyn FnMut(RelPath, IndexEntry),
    problems: &mut dyn FnMut(FormatProblem),
) -> Result<Option<String>, FormatError> {
    // Ours keeps entries under "files" beside "schema_version" and "updated"; in the original
    // tool's flat form every top-level key is an entry. Both stream.
    let (rest, seen) = read_top_streaming(
        file,
        reader,
        &["files"],
        Some(("", &["schema_version", "updated"])),
        &mut |_, k, raw| {
            if let Some((p, f)) = parse_raw_entry(file, &k, raw, problems) {
                let (e, bad) = index_entry(&f);
                for b in bad {
                    problems(FormatProblem {
                        file: file.to_owned(),
                        key: Some(k.clone()),
                        message: b,
                    });
                }
                entry(p, e);
            }
        },
    )?;
    let ours = rest.get("schema_version").is_some_and(Value::is_number);
    if ours && !seen.contains(&"files") {
        return Err(FormatError::Shape {
            path: file.to_owned(),
            message: "\"files\" is not an object".into(),
        });
    }
    Ok(rest
        .get("updated")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

impl MirrorIndex {
    pub fn from_json(
        file: &str,
        text: &[u8],
    ) -> Result<(MirrorIndex, Vec<FormatProblem>), FormatError> {
        let mut index = MirrorIndex::default();
        let mut problems = Vec::new();
        index.updated = read_mirror_json(
            file,
            text,
            &mut |p, e| {
                index.files.insert(p, e);
            },
            &mut |p| problems.push(p),
        )?;
        Ok((index, problems))
    }

    pub fn load(path: &Path) -> Result<(MirrorIndex, Vec<FormatProblem>), FormatError> {
        let text = std::fs::read(path).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&path.display().to_string(), &text)
    }

    /// `mirror.json` in the format the original tool and earlier versions read.
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        write_mirror_json(
            w,
            self.updated.as_deref(),
            &mut self.files.iter().map(|(p, e)| Ok((p.clone(), e.clone()))),
        )
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.files.len() * 200 + 64);
        self.write_json(&mut out).expect("index serializes");
        out
    }
}

/// Streams a `mirror.json` (schema 2) from `entries` (in any order).
pub fn write_mirror_json(
    w: &mut dyn std::io::Write,
    updated: Option<&str>,
    entries: &mut dyn Iterator<Item = std::io::Result<(RelPath, IndexEntry)>>,
) -> std::io::Result<()> {
    write!(w, "{{\"schema_version\": {SCHEMA_VERSION}")?;
    if let Some(u) = updated {
        write!(w, ", \"updated\": {}", serde_json::to_string(u)?)?;
    }
    w.write_all(b", \"files\": {")?;
    let mut first = true;
    for item in entries {
        let (p, e) = item?;
        if e.kind == FileKind::Dir {
            continue;
        }
        if !first {
            w.write_all(b",")?;
        }
        first = false;
        serde_json::to_writer(&mut *w, &p.encode())?;
        w.write_all(b": ")?;
        serde_json::to_writer(&mut *w, &EntryJson(index_fields(&e)))?;
    }
    w.write_all(b"}}")
}

/// Counts written into an increment's `summary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementSummary {
    #[serde(default)]
    pub new: u64,
    #[serde(default)]
    pub changed: u64,
    #[serde(default)]
    pub deleted: u64,
    /// Bytes of the versions stored in `track/` and `deleted/`.
    #[serde(default)]
    pub bytes: u64,
}

impl IncrementSummary {
    /// Counts one event.
    pub fn add(&mut self, e: &CatalogEntry) {
        match e.op() {
            Op::New => self.new += 1,
            Op::Changed => self.changed += 1,
            Op::Deleted => self.deleted += 1,
        }
        // Sizes come from metadata a user (or damage) may have changed: never overflow.
        self.bytes = self.bytes.saturating_add(e.size);
    }
}

/// Everything of an increment's metadata but its catalog and folders.
#[derive(Clone, Debug, PartialEq)]
pub struct IncrementHeader {
    pub backup_name: String,
    /// RFC 3339 with offset when we wrote it; whatever the original tool wrote otherwise.
    pub timestamp: String,
    pub version: Value,
    /// What the file says; an original-tool summary of another shape is kept in `extra`.
    pub summary: Option<IncrementSummary>,
    /// Other top-level keys, kept so a rewrite (recreate, delete) does not drop them.
    pub extra: Map<String, Value>,
}

impl IncrementHeader {
    pub fn new(backup_name: &str, timestamp: String) -> Self {
        IncrementHeader {
            backup_name: backup_name.to_owned(),
            timestamp,
            version: Value::from(SCHEMA_VERSION),
            summary: None,
            extra: Map::new(),
        }
    }
}

/// Receives an increment's metadata as it is parsed.
pub trait CatalogSink {
    fn entry(&mut self, path: RelPath, entry: CatalogEntry);
    fn folder(&mut self, path: RelPath, folder: FolderEntry);
    fn problem(&mut self, problem: FormatProblem);
}

/// Streams an increment's metadata file to `sink` and returns its header. Entries that cannot
/// be used (an unsafe path, a non-object, a wrong type) are reported to the sink, naming the
/// file and the key, and skipped; the rest of the file is still read.
pub fn read_increment(
    file: &str,
    reader: impl std::io::Read,
    sink: &mut dyn CatalogSink,
) -> Result<IncrementHeader, FormatError> {
    let (mut top, seen) = {
        let sink = std::cell::RefCell::new(&mut *sink);
        read_top_streaming(
            file,
            reader,
            &["file_catalog", "folders"],
            None,
            &mut |which, k, raw| {
                let mut problems = Vec::new();
                let parsed = parse_raw_entry(file, &k, raw, &mut |p| problems.push(p));
                let mut s = sink.borrow_mut();
                if let Some((p, f)) = parsed {
                    let bad = if which == "file_catalog" {
                        let (e, bad) = catalog_entry(&f);
                        s.entry(p, e);
                        bad
                    } else {
                        let (e, bad) = folder_entry(&f);
                        s.folder(p, e);
                        bad
                    };
                    problems.extend(bad.into_iter().map(|message| FormatProblem {
                        file: file.to_owned(),
                        key: Some(k.clone()),
                        message,
                    }));
                }
                for p in problems {
                    s.problem(p);
                }
            },
        )?
    };
    if !seen.contains(&"file_catalog") {
        return Err(FormatError::Shape {
            path: file.to_owned(),
            message: "no \"file_catalog\" object".into(),
        });
    }
    let backup_name = match top.remove("backup_name") {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let timestamp = match top.remove("timestamp") {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let version = top.remove("version").unwrap_or(Value::Null);
    let summary = match top.remove("summary") {
        Some(v) => match serde_json::from_value::<IncrementSummary>(v.clone()) {
            Ok(s) => Some(s),
            Err(_) => {
                // The original tool's summary had other fields; keep them verbatim.
                top.insert("summary".into(), v);
                None
            }
        },
        None => None,
    };
    Ok(IncrementHeader {
        backup_name,
        timestamp,
        version,
        summary,
        extra: top,
    })
}

/// Streams an increment's metadata file: the header, then entries, then folders, then
/// `summary` (counted from the entries when the header has none). One entry per line, so the
/// file stays readable and diffable; entries come in whatever order they are given.
pub struct IncrementWriter<'w> {
    w: &'w mut dyn std::io::Write,
    header: &'w IncrementHeader,
    summary: IncrementSummary,
    first: bool,
    in_folders: bool,
}

impl<'w> IncrementWriter<'w> {
    pub fn begin(
        w: &'w mut dyn std::io::Write,
        header: &'w IncrementHeader,
    ) -> std::io::Result<Self> {
        w.write_all(b"{\n")?;
        for (k, v) in &header.extra {
            if matches!(
                k.as_str(),
                "version" | "timestamp" | "backup_name" | "file_catalog" | "folders"
            ) || (k == "summary" && header.summary.is_some())
            {
                continue;
            }
            write!(w, "  {}: ", serde_json::to_string(k)?)?;
            serde_json::to_writer(&mut *w, v)?;
            w.write_all(b",\n")?;
        }
        write!(
            w,
            "  \"version\": {},\n  \"timestamp\": {},\n  \"backup_name\": {},\n  \"file_catalog\": {{",
            serde_json::to_string(&header.version)?,
            serde_json::to_string(&header.timestamp)?,
            serde_json::to_string(&header.backup_name)?
        )?;
        Ok(IncrementWriter {
            w,
            header,
            summary: IncrementSummary::default(),
            first: true,
            in_folders: false,
        })
    }

    pub fn entry(&mut self, p: &RelPath, e: &CatalogEntry) -> std::io::Result<()> {
        debug_assert!(!self.in_folders, "entries come before folders");
        self.summary.add(e);
        self.item(p, &EntryJson(catalog_fields(e)))
    }

    pub fn folder(&mut self, p: &RelPath, f: &FolderEntry) -> std::io::Result<()> {
        if !self.in_folders {
            self.w.write_all(if self.first { b"}" } else { b"\n  }" })?;
            self.w.write_all(b",\n  \"folders\": {")?;
            self.in_folders = true;
            self.first = true;
        }
        self.item(p, &EntryJson(folder_fields(f)))
    }

    fn item(&mut self, p: &RelPath, v: &EntryJson) -> std::io::Result<()> {
        self.w
            .write_all(if self.first { b"\n    " } else { b",\n    " })?;
        self.first = false;
        serde_json::to_writer(&mut *self.w, &p.encode())?;
        self.w.write_all(b": ")?;
        serde_json::to_writer(&mut *self.w, v)?;
        Ok(())
    }

    /// Closes the file; returns the counts of the entries written.
    pub fn finish(self) -> std::io::Result<IncrementSummary> {
        let close = if self.first { &b"}"[..] } else { &b"\n  }"[..] };
        self.w.write_all(close)?;
        // An original-tool summary kept verbatim in `extra` (written above) stays as it was.
        let theirs = self.header.summary.is_none() && self.header.extra.contains_key("summary");
        if !theirs {
            let s = self.header.summary.as_ref().unwrap_or(&self.summary);
            write!(self.w, ",\n  \"summary\": {}", serde_json::to_string(s)?)?;
        }
        self.w.write_all(b"\n}\n")?;
        Ok(self.summary)
    }
}

/// [`IncrementWriter`] over two iterators.
pub fn write_increment(
    w: &mut dyn std::io::Write,
    header: &IncrementHeader,
    entries: &mut dyn Iterator<Item = std::io::Result<(RelPath, CatalogEntry)>>,
    folders: &mut dyn Iterator<Item = std::io::Result<(RelPath, FolderEntry)>>,
) -> std::io::Result<IncrementSummary> {
    let mut iw = IncrementWriter::begin(w, header)?;
    for item in entries {
        let (p, e) = item?;
        iw.entry(&p, &e)?;
    }
    for item in folders {
        let (p, f) = item?;
        iw.folder(&p, &f)?;
    }
    iw.finish()
}

/// The metadata file of one increment, whole in memory (small uses: `delete`, `recreate`,
/// tests). The index and the engine use [`read_increment`] / [`write_increment`] directly.
#[derive(Clone, Debug, PartialEq)]
pub struct IncrementMeta {
    pub backup_name: String,
    /// RFC 3339 when we wrote it; whatever the original tool wrote otherwise.
    pub timestamp: String,
    pub version: Value,
    pub file_catalog: BTreeMap<RelPath, CatalogEntry>,
    pub folders: BTreeMap<RelPath, FolderEntry>,
    pub summary: IncrementSummary,
    /// Other top-level keys, kept so a rewrite (recreate) does not drop them.
    pub extra: Map<String, Value>,
}

impl IncrementMeta {
    pub fn new(backup_name: &str, timestamp: String) -> Self {
        IncrementMeta {
            backup_name: backup_name.to_owned(),
            timestamp,
            version: Value::from(SCHEMA_VERSION),
            file_catalog: BTreeMap::new(),
            folders: BTreeMap::new(),
            summary: IncrementSummary::default(),
            extra: Map::new(),
        }
    }

    pub fn from_json(
        file: &str,
        text: &[u8],
    ) -> Result<(IncrementMeta, Vec<FormatProblem>), FormatError> {
        #[derive(Default)]
        struct Collect {
            entries: BTreeMap<RelPath, CatalogEntry>,
            folders: BTreeMap<RelPath, FolderEntry>,
            problems: Vec<FormatProblem>,
        }
        impl CatalogSink for Collect {
            fn entry(&mut self, path: RelPath, entry: CatalogEntry) {
                self.entries.insert(path, entry);
            }
            fn folder(&mut self, path: RelPath, folder: FolderEntry) {
                self.folders.insert(path, folder);
            }
            fn problem(&mut self, problem: FormatProblem) {
                self.problems.push(problem);
            }
        }
        let mut c = Collect::default();
        let h = read_increment(file, text, &mut c)?;
        Ok((
            IncrementMeta {
                backup_name: h.backup_name,
                timestamp: h.timestamp,
                version: h.version,
                file_catalog: c.entries,
                folders: c.folders,
                summary: h.summary.unwrap_or_default(),
                extra: h.extra,
            },
            c.problems,
        ))
    }

    /// The counts `summary` should hold for the catalog as it is.
    pub fn recount(&mut self) {
        let mut s = IncrementSummary::default();
        for e in self.file_catalog.values() {
            s.add(e);
        }
        self.summary = s;
        // A rewritten catalog gets our summary, even where the original tool's stood.
        self.extra.remove("summary");
    }

    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        // An original-tool summary kept verbatim in `extra` wins over our empty default.
        let theirs =
            self.extra.contains_key("summary") && self.summary == IncrementSummary::default();
        let header = IncrementHeader {
            backup_name: self.backup_name.clone(),
            timestamp: self.timestamp.clone(),
            version: self.version.clone(),
            summary: (!theirs).then(|| self.summary.clone()),
            extra: self.extra.clone(),
        };
        write_increment(
            w,
            &header,
            &mut self
                .file_catalog
                .iter()
                .map(|(p, e)| Ok((p.clone(), e.clone()))),
            &mut self.folders.iter().map(|(p, e)| Ok((p.clone(), e.clone()))),
        )
        .map(|_| ())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.file_catalog.len() * 300 + 256);
        self.write_json(&mut out).expect("metadata serializes");
        out
    }

    pub fn load(path: &Path) -> Result<(IncrementMeta, Vec<FormatProblem>), FormatError> {
        let text = std::fs::read(path).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&path.display().to_string(), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_hex_round_trips() {
        let h = ContentHash::of(b"some bytes");
        assert_eq!(h.to_hex(), blake3::hash(b"some bytes").to_hex().as_str());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), h);
        assert_eq!(ContentHash::from_hex(&h.to_hex().to_uppercase()), Some(h));
        assert!(serde_json::from_str::<ContentHash>("\"zz\"").is_err());
    }

    #[test]
    fn reads_original_python_metadata() {
        let text = br#"{
            "version": "1.0",
            "timestamp": "2024-01-05T10:00:00",
            "backup_name": "backup_20240105_100000",
            "file_catalog": {
                "projects/a.txt": {"size": 3, "mtime": 1704448800.123456, "category": "track"},
                "projects/b.txt": {"size": 5, "mtime": 1704448800.5, "category": "deleted"},
                "../evil": {"size": 1, "mtime": 1.0, "category": "track"},
                "projects/c.txt": {"size": "big", "category": "tracked"}
            },
            "summary": {"tracked_files": 1, "deleted_files": 1}
        }"#;
        let (m, problems) = IncrementMeta::from_json("t.json", text).unwrap();
        assert_eq!(m.file_catalog.len(), 2);
        assert_eq!(problems.len(), 2);
        let a = &m.file_catalog[&RelPath::parse("projects/a.txt").unwrap()];
        assert_eq!(a.category, Category::Tracked);
        assert_eq!(a.op(), Op::Changed);
        assert_eq!(a.mtime.ns, 1_704_448_800_123_456_000);
        let b = &m.file_catalog[&RelPath::parse("projects/b.txt").unwrap()];
        assert_eq!(b.op(), Op::Deleted);
        // Unknown summary shape is kept verbatim on rewrite.
        let again = IncrementMeta::from_json("t", &m.to_json()).unwrap().0;
        assert_eq!(again.extra.get("summary").unwrap()["tracked_files"], 1);
    }

    #[test]
    fn mirror_index_round_trips_and_reads_flat_maps() {
        let mut idx = MirrorIndex::default();
        idx.files.insert(
            RelPath::parse("a/b").unwrap(),
            IndexEntry {
                size: 10,
                mtime: MTime::from_ns(1_700_000_000_123_456_789),
                tracked: true,
                kind: FileKind::File,
                mode: Some(0o644),
                hash: Some(ContentHash::of(b"x")),
                version_of: IncrementName::parse("backup_20240101_000000"),
                attrs: Default::default(),
                ctime_ns: Default::default(),
            },
        );
        let (back, p) = MirrorIndex::from_json("m", &idx.to_json()).unwrap();
        assert!(p.is_empty());
        assert_eq!(back, idx);
        let flat = br#"{"x.txt": {"size": 1, "mtime": 2.5, "tracked": false}}"#;
        let (f, _) = MirrorIndex::from_json("m", flat).unwrap();
        assert_eq!(f.files.len(), 1);
    }

    #[test]
    fn a_non_object_entry_is_malformed_and_named() {
        let text = br#"{"file_catalog": {"a": [1, 2], "b": {"size": 3, "mtime": 1.5}},
                        "backup_name": "x", "timestamp": ""}"#;
        let (m, problems) = IncrementMeta::from_json("inc.json", text).unwrap();
        assert_eq!(m.file_catalog.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, "inc.json");
        assert_eq!(problems[0].key.as_deref(), Some("a"));
        assert!(
            problems[0].message.contains("malformed"),
            "{:?}",
            problems[0]
        );
    }

    #[test]
    fn attributes_and_folders_round_trip() {
        let mut m =
            IncrementMeta::new("backup_20240101_000000", "2024-01-01T00:00:00+09:00".into());
        let attrs = Attrs {
            owner: Some(Owner {
                uid: 1234,
                gid: 5678,
                user: Some("alice".into()),
                group: None,
            }),
            xattrs: vec![
                Xattr {
                    name: b"system.posix_acl_access".to_vec(),
                    value: vec![2, 0, 0, 0, 1, 0, 6, 0, 255, 255],
                },
                Xattr {
                    name: b"user.\xff".to_vec(),
                    value: b"\x00binary".to_vec(),
                },
            ],
            sparse: true,
            hardlink_of: Some(RelPath::parse("d/h1").unwrap()),
        };
        m.file_catalog.insert(
            RelPath::parse("d/h2").unwrap(),
            CatalogEntry {
                size: 1,
                mtime: MTime::from_ns(5),
                category: Category::Tracked,
                op: Some(Op::New),
                kind: FileKind::File,
                mode: Some(0o4755),
                hash: None,
                version_of: None,
                attrs: attrs.clone(),
            },
        );
        m.folders.insert(
            RelPath::parse("d").unwrap(),
            FolderEntry {
                mtime: MTime::from_ns(7),
                mode: Some(0o700),
                attrs: Attrs {
                    owner: attrs.owner.clone(),
                    ..Default::default()
                },
            },
        );
        m.recount();
        let (back, problems) = IncrementMeta::from_json("t", &m.to_json()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(back, m);
    }
}
