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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    pub version_of: Option<String>,
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
    pub version_of: Option<String>,
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

#[derive(Serialize, Deserialize, Default)]
struct EntryJson {
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
    hash: Option<ContentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_of: Option<String>,
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

/// Keys already validated as paths, or problems for those that are not.
fn check_keys(
    file: &str,
    entries: Vec<(String, EntryJson)>,
    problems: &mut Vec<FormatProblem>,
) -> Vec<(RelPath, EntryJson)> {
    let mut out = Vec::with_capacity(entries.len());
    for (key, e) in entries {
        match RelPath::parse(&key) {
            Ok(p) => out.push((p, e)),
            Err(err) => problems.push(FormatProblem {
                file: file.to_owned(),
                key: Some(key),
                message: format!("unsafe or invalid path skipped: {err}"),
            }),
        }
    }
    out
}

/// The top level of a metadata file read in one typed pass: the entries under `catalog_key`
/// straight into [`EntryJson`], every other key as a [`Value`]. Building a `Value` tree for a
/// thousand catalogs first is what made listing a large backup slow; when anything does not
/// fit the typed shape (a malformed entry), callers fall back to the tolerant `Value` path, so
/// the result is the same either way.
struct FastTop {
    catalog: Option<Vec<(String, EntryJson)>>,
    rest: Map<String, Value>,
}

/// A JSON object read as a list of pairs in file order: sorting happens once, when the final
/// map is built in bulk.
struct EntryList(Vec<(String, EntryJson)>);

impl<'de> Deserialize<'de> for EntryList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntryList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<EntryList, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(pair) = m.next_entry::<String, EntryJson>()? {
                    v.push(pair);
                }
                Ok(EntryList(v))
            }
        }
        d.deserialize_map(V)
    }
}

struct FastTopSeed(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for FastTopSeed {
    type Value = FastTop;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<FastTop, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FastTopSeed {
    type Value = FastTop;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<FastTop, A::Error> {
        let mut out = FastTop {
            catalog: None,
            rest: Map::new(),
        };
        while let Some(k) = m.next_key::<String>()? {
            if k == self.0 {
                if out.catalog.is_some() {
                    return Err(serde::de::Error::custom("duplicate catalog"));
                }
                out.catalog = Some(m.next_value::<EntryList>()?.0);
            } else {
                let v: Value = m.next_value()?;
                out.rest.insert(k, v);
            }
        }
        Ok(out)
    }
}

fn parse_fast(text: &[u8], catalog_key: &'static str) -> Option<FastTop> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(text);
    let top = FastTopSeed(catalog_key).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(top)
}

fn parse_entries(
    file: &str,
    map: Map<String, Value>,
    problems: &mut Vec<FormatProblem>,
) -> Vec<(RelPath, EntryJson)> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let path = match RelPath::parse(&key) {
            Ok(p) => p,
            Err(e) => {
                problems.push(FormatProblem {
                    file: file.to_owned(),
                    key: Some(key),
                    message: format!("unsafe or invalid path skipped: {e}"),
                });
                continue;
            }
        };
        match serde_json::from_value::<EntryJson>(value) {
            Ok(e) => out.push((path, e)),
            Err(e) => problems.push(FormatProblem {
                file: file.to_owned(),
                key: Some(key),
                message: format!("malformed entry skipped: {e}"),
            }),
        }
    }
    out
}

/// Our `mirror.json` shape, for the one-pass typed parse straight into the final map.
#[derive(Deserialize)]
struct FastIndex {
    #[allow(dead_code)]
    schema_version: u32,
    #[serde(default)]
    updated: Option<String>,
    files: TypedEntries,
}

impl FastIndex {
    fn finish(self, file: &str) -> (MirrorIndex, Vec<FormatProblem>) {
        let problems = self
            .files
            .1
            .into_iter()
            .map(|(key, message)| FormatProblem {
                file: file.to_owned(),
                key: Some(key),
                message,
            })
            .collect();
        (
            MirrorIndex {
                files: self.files.0,
                updated: self.updated,
            },
            problems,
        )
    }
}

/// Entries, and (key, message) of the ones skipped for an unsafe path.
struct TypedEntries(BTreeMap<RelPath, IndexEntry>, Vec<(String, String)>);

impl<'de> Deserialize<'de> for TypedEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TypedEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut files = BTreeMap::new();
                let mut bad = Vec::new();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match RelPath::parse(&k) {
                        Ok(p) => {
                            files.insert(p, index_entry(m.next_value::<EntryJson>()?));
                        }
                        Err(e) => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                            bad.push((
                                k.into_owned(),
                                format!("unsafe or invalid path skipped: {e}"),
                            ));
                        }
                    }
                }
                Ok(TypedEntries(files, bad))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object read as its (key, raw value) pairs in order, without building values.
struct MapAsVec<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for MapAsVec<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MapAsVec<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    let raw: &'de serde_json::value::RawValue = m.next_value()?;
                    v.push((k, raw));
                }
                Ok(MapAsVec(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// One catalog or index entry from its raw JSON; bad ones become problems.
fn parse_entry(
    file: &str,
    key: &str,
    raw: &str,
    problems: &mut Vec<FormatProblem>,
) -> Option<(RelPath, EntryJson)> {
    let path = match RelPath::parse(key) {
        Ok(p) => p,
        Err(e) => {
            problems.push(FormatProblem {
                file: file.to_owned(),
                key: Some(key.to_owned()),
                message: format!("unsafe or invalid path skipped: {e}"),
            });
            return None;
        }
    };
    match serde_json::from_str::<EntryJson>(raw) {
        Ok(e) => Some((path, e)),
        Err(e) => {
            problems.push(FormatProblem {
                file: file.to_owned(),
                key: Some(key.to_owned()),
                message: format!("malformed entry skipped: {e}"),
            });
            None
        }
    }
}

fn index_entry(e: EntryJson) -> IndexEntry {
    IndexEntry {
        size: e.size,
        mtime: MTime::from_json(e.mtime, e.mtime_ns),
        tracked: e.tracked.unwrap_or(false),
        kind: e.kind,
        mode: e.mode,
        hash: e.hash,
        version_of: e.version_of,
    }
}

/// `mirror.json`: the state of `mirror/` after the last successful run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorIndex {
    pub files: BTreeMap<RelPath, IndexEntry>,
    /// When the index was written (RFC 3339), if known.
    pub updated: Option<String>,
}

impl MirrorIndex {
    /// Parses `mirror.json` without building a JSON tree: at 100k files a `Value` tree costs
    /// ~1 KiB per entry, the entries themselves ~200 bytes.
    pub fn from_json(
        file: &str,
        text: &[u8],
    ) -> Result<(MirrorIndex, Vec<FormatProblem>), FormatError> {
        use serde_json::value::RawValue;
        let json_err = |source| FormatError::Json {
            path: file.to_owned(),
            source,
        };
        let text = std::str::from_utf8(text).map_err(|e| FormatError::Shape {
            path: file.to_owned(),
            message: format!("not UTF-8: {e}"),
        })?;
        let top: BTreeMap<std::borrow::Cow<'_, str>, &RawValue> = match serde_json::from_str(text) {
            Ok(t) => t,
            Err(e) if e.is_data() => {
                return Err(FormatError::Shape {
                    path: file.to_owned(),
                    message: "top level is not an object".into(),
                })
            }
            Err(e) => return Err(json_err(e)),
        };
        // Fast path: our own well-formed index, typed in one pass.
        if let Ok(fast) = serde_json::from_str::<FastIndex>(text) {
            return Ok(fast.finish(file));
        }
        let mut problems = Vec::new();
        let mut index = MirrorIndex::default();
        let mut add = |key: &str, raw: &RawValue, problems: &mut Vec<FormatProblem>| {
            if let Some((path, e)) = parse_entry(file, key, raw.get(), problems) {
                index.files.insert(path, index_entry(e));
            }
        };
        // Ours: {"schema_version": N, "files": {...}}; the original tool's: a flat map.
        let ours = top.get("schema_version").is_some_and(|v| {
            v.get()
                .trim_start()
                .starts_with(|c: char| c.is_ascii_digit())
        });
        if ours {
            index.updated = top
                .get("updated")
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
            let files = top.get("files").ok_or_else(|| FormatError::Shape {
                path: file.to_owned(),
                message: "\"files\" is not an object".into(),
            })?;
            let entries: Vec<(std::borrow::Cow<'_, str>, &RawValue)> =
                match serde_json::from_str::<MapAsVec<'_>>(files.get()) {
                    Ok(m) => m.0,
                    Err(_) => {
                        return Err(FormatError::Shape {
                            path: file.to_owned(),
                            message: "\"files\" is not an object".into(),
                        })
                    }
                };
            for (k, raw) in entries {
                add(&k, raw, &mut problems);
            }
        } else {
            for (k, raw) in &top {
                add(k, raw, &mut problems);
            }
        }
        Ok((index, problems))
    }

    /// Serializes without building a JSON tree (see [`MirrorIndex::from_json`]).
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        struct Files<'a>(&'a BTreeMap<RelPath, IndexEntry>);
        impl Serialize for Files<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(p, e)| {
                    (
                        p.encode(),
                        EntryJson {
                            size: e.size,
                            mtime: Some(e.mtime.secs_f64()),
                            mtime_ns: Some(e.mtime.ns),
                            tracked: Some(e.tracked),
                            kind: e.kind,
                            mode: e.mode,
                            hash: e.hash,
                            version_of: e.version_of.clone(),
                            ..Default::default()
                        },
                    )
                }))
            }
        }
        #[derive(Serialize)]
        struct Top<'a> {
            schema_version: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            updated: Option<&'a str>,
            files: Files<'a>,
        }
        serde_json::to_writer(
            w,
            &Top {
                schema_version: SCHEMA_VERSION,
                updated: self.updated.as_deref(),
                files: Files(&self.files),
            },
        )
        .map_err(std::io::Error::from)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.files.len() * 200 + 64);
        self.write_json(&mut out).expect("index serializes");
        out
    }

    pub fn load(path: &Path) -> Result<(MirrorIndex, Vec<FormatProblem>), FormatError> {
        let io = |source| FormatError::Io {
            path: path.display().to_string(),
            source,
        };
        // Parsed from memory: serde_json's reader-based parser is ~3x slower per byte, and a
        // no-change run is mostly this parse and the scan. The typed pass builds the final map
        // directly; anything unusual (the original tool's flat map, a bad entry) takes the
        // tolerant path.
        let text = std::fs::read(path).map_err(io)?;
        if let Ok(fast) = serde_json::from_slice::<FastIndex>(&text) {
            drop(text);
            return Ok(fast.finish(&path.display().to_string()));
        }
        Self::from_json(&path.display().to_string(), &text)
    }
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

/// The metadata file of one increment.
#[derive(Clone, Debug, PartialEq)]
pub struct IncrementMeta {
    pub backup_name: String,
    /// RFC 3339 when we wrote it; whatever the original tool wrote otherwise.
    pub timestamp: String,
    pub version: Value,
    pub file_catalog: BTreeMap<RelPath, CatalogEntry>,
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
            summary: IncrementSummary::default(),
            extra: Map::new(),
        }
    }

    pub fn from_json(
        file: &str,
        text: &[u8],
    ) -> Result<(IncrementMeta, Vec<FormatProblem>), FormatError> {
        let mut problems = Vec::new();
        let shape = |m: &str| FormatError::Shape {
            path: file.to_owned(),
            message: m.to_owned(),
        };
        let (entries, mut top) = match parse_fast(text, "file_catalog") {
            Some(FastTop {
                catalog: Some(c),
                rest,
            }) => (check_keys(file, c, &mut problems), rest),
            _ => {
                let value: Value =
                    serde_json::from_slice(text).map_err(|source| FormatError::Json {
                        path: file.to_owned(),
                        source,
                    })?;
                let Value::Object(mut top) = value else {
                    return Err(FormatError::Shape {
                        path: file.to_owned(),
                        message: "top level is not an object".into(),
                    });
                };
                let catalog = match top.remove("file_catalog") {
                    Some(Value::Object(m)) => m,
                    Some(_) => return Err(shape("\"file_catalog\" is not an object")),
                    None => return Err(shape("no \"file_catalog\"")),
                };
                (parse_entries(file, catalog, &mut problems), top)
            }
        };
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
                Ok(s) => s,
                Err(_) => {
                    // The original tool's summary had other fields; keep them verbatim.
                    top.insert("summary".into(), v);
                    IncrementSummary::default()
                }
            },
            None => IncrementSummary::default(),
        };
        let file_catalog = entries
            .into_iter()
            .map(|(path, e)| {
                let category = match (e.category, e.op) {
                    (Some(c), _) => c,
                    (None, Some(Op::Deleted)) => Category::Deleted,
                    (None, _) => Category::Tracked,
                };
                (
                    path,
                    CatalogEntry {
                        size: e.size,
                        mtime: MTime::from_json(e.mtime, e.mtime_ns),
                        category,
                        op: e.op,
                        kind: e.kind,
                        mode: e.mode,
                        hash: e.hash,
                        version_of: e.version_of,
                    },
                )
            })
            .collect();
        Ok((
            IncrementMeta {
                backup_name,
                timestamp,
                version,
                file_catalog,
                summary,
                extra: top,
            },
            problems,
        ))
    }

    /// Pretty JSON, written without building a JSON tree (an initial increment can list every
    /// tracked file).
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        struct Catalog<'a>(&'a BTreeMap<RelPath, CatalogEntry>);
        impl Serialize for Catalog<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(p, e)| {
                    (
                        p.encode(),
                        EntryJson {
                            size: e.size,
                            mtime: Some(e.mtime.secs_f64()),
                            mtime_ns: Some(e.mtime.ns),
                            category: Some(e.category),
                            op: Some(e.op()),
                            kind: e.kind,
                            mode: e.mode,
                            hash: e.hash,
                            version_of: e.version_of.clone(),
                            ..Default::default()
                        },
                    )
                }))
            }
        }
        #[derive(Serialize)]
        struct Top<'a> {
            #[serde(flatten)]
            extra: &'a Map<String, Value>,
            version: &'a Value,
            timestamp: &'a str,
            backup_name: &'a str,
            file_catalog: Catalog<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            summary: Option<&'a IncrementSummary>,
        }
        // An original-tool summary kept verbatim in `extra` wins over our empty default.
        let keep_theirs =
            self.extra.contains_key("summary") && self.summary == IncrementSummary::default();
        let mut extra = std::borrow::Cow::Borrowed(&self.extra);
        if !keep_theirs && extra.contains_key("summary") {
            extra.to_mut().remove("summary");
        }
        for k in ["version", "timestamp", "backup_name", "file_catalog"] {
            if extra.contains_key(k) {
                extra.to_mut().remove(k);
            }
        }
        let top = Top {
            extra: &extra,
            version: &self.version,
            timestamp: &self.timestamp,
            backup_name: &self.backup_name,
            file_catalog: Catalog(&self.file_catalog),
            summary: (!keep_theirs).then_some(&self.summary),
        };
        serde_json::to_writer_pretty(w, &top).map_err(std::io::Error::from)
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
                version_of: Some("backup_20240101_000000".into()),
            },
        );
        let (back, p) = MirrorIndex::from_json("m", &idx.to_json()).unwrap();
        assert!(p.is_empty());
        assert_eq!(back, idx);
        let flat = br#"{"x.txt": {"size": 1, "mtime": 2.5, "tracked": false}}"#;
        let (f, _) = MirrorIndex::from_json("m", flat).unwrap();
        assert_eq!(f.files.len(), 1);
    }
}
