//! Paths relative to the source root, as stored in `mirror.json` and increment catalogs.
//!
//! A `RelPath` is validated once, when it is built, so no code that joins it under a root can
//! be steered outside that root: it is never empty, never absolute, has no `.`/`..` or empty
//! components and no NUL byte. Names are kept as raw bytes (`OsStr::as_encoded_bytes`), so
//! non-UTF-8 names round-trip exactly.
//!
//! JSON encoding: a path whose bytes are valid UTF-8 is written as itself (what the original
//! Python tool writes). Any other path is written as `"\u0000hex:<hex bytes>"`; a real file name
//! can never contain NUL, so that form cannot collide with a genuine path.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const RAW_PREFIX: &str = "\u{0}hex:";

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelPath {
    /// Encoded bytes with `/` as the only separator.
    bytes: Vec<u8>,
}

/// Paths sort component by component (`a` < `a/b` < `a.b`): the order of a depth-first walk
/// that visits each folder's entries by name. Plain byte order would put `a.b` before `a/b`
/// (`.` < `/`), so a scan and the index would disagree on which comes first; comparing with `/`
/// as the smallest byte (no name contains NUL) makes them agree. The index stores the same
/// order as its key ([`RelPath::sort_key`]).
impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let map = |b: u8| if b == b'/' { 0 } else { b };
        self.bytes
            .iter()
            .map(|&b| map(b))
            .cmp(other.bytes.iter().map(|&b| map(b)))
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelPathError {
    #[error("empty path")]
    Empty,
    #[error("absolute path {0:?}")]
    Absolute(String),
    #[error("path {0:?} has a '.', '..' or empty component")]
    BadComponent(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} has a malformed raw-byte encoding")]
    BadEncoding(String),
}

/// A component that could name something other than a child: empty, `.`, `..`, or (on
/// Windows) one holding a `\`. The one rule of `from_bytes`, `join` and `is_component`.
fn bad_component(comp: &[u8]) -> bool {
    comp.is_empty() || comp == b"." || comp == b".." || (cfg!(windows) && comp.contains(&b'\\'))
}

impl RelPath {
    /// True when `name` can be one component of a path: what a folder listing read from
    /// stored data (which a hostile or damaged backup may hold) may show.
    pub fn is_component(name: &[u8]) -> bool {
        !(bad_component(name) || name.contains(&b'/') || name.contains(&0))
    }

    /// Builds from `/`-separated encoded bytes, refusing anything that could escape a root.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RelPathError> {
        let show = || String::from_utf8_lossy(bytes).into_owned();
        if bytes.is_empty() {
            return Err(RelPathError::Empty);
        }
        if bytes.contains(&0) {
            return Err(RelPathError::Nul(show()));
        }
        if bytes[0] == b'/' || (cfg!(windows) && looks_windows_absolute(bytes)) {
            return Err(RelPathError::Absolute(show()));
        }
        if bytes.split(|&b| b == b'/').any(bad_component) {
            return Err(RelPathError::BadComponent(show()));
        }
        Ok(RelPath {
            bytes: bytes.to_vec(),
        })
    }

    /// Parses the JSON/string form (plain UTF-8 or the `\0hex:` form).
    pub fn parse(s: &str) -> Result<Self, RelPathError> {
        if let Some(hex) = s.strip_prefix(RAW_PREFIX) {
            let bytes = decode_hex(hex).ok_or_else(|| RelPathError::BadEncoding(s.to_owned()))?;
            return Self::from_bytes(&bytes);
        }
        // Paths written on Windows by the original tool may use backslashes.
        if cfg!(windows) {
            return Self::from_bytes(s.replace('\\', "/").as_bytes());
        }
        Self::from_bytes(s.as_bytes())
    }

    /// Builds from a path relative to a root (as produced by a directory walk).
    pub fn from_path(p: &Path) -> Result<Self, RelPathError> {
        // Fast path (a scan calls this per file): a clean `a/b/c` is already the encoding.
        #[cfg(unix)]
        if let Ok(r) = Self::from_bytes(p.as_os_str().as_encoded_bytes()) {
            return Ok(r);
        }
        let mut out: Vec<u8> = Vec::new();
        for comp in p.components() {
            match comp {
                std::path::Component::Normal(c) => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c.as_encoded_bytes());
                }
                std::path::Component::CurDir => {}
                _ => return Err(RelPathError::BadComponent(p.to_string_lossy().into_owned())),
            }
        }
        Self::from_bytes(&out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes with `/` replaced by NUL: plain byte order of these keys is the order of
    /// [`RelPath`] (a depth-first walk), which is what the index sorts by.
    pub fn sort_key(&self) -> Vec<u8> {
        self.bytes
            .iter()
            .map(|&b| if b == b'/' { 0 } else { b })
            .collect()
    }

    /// The inverse of [`RelPath::sort_key`].
    pub fn from_sort_key(key: &[u8]) -> Result<Self, RelPathError> {
        let bytes: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
        Self::from_bytes(&bytes)
    }

    /// The string form used in JSON.
    pub fn encode(&self) -> String {
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                let mut s = String::with_capacity(RAW_PREFIX.len() + self.bytes.len() * 2);
                s.push_str(RAW_PREFIX);
                for b in &self.bytes {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
        }
    }

    /// A lossy, human-readable form for messages.
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(os_from_bytes(&self.bytes))
    }

    /// `root/self`, safe because a `RelPath` cannot climb out of `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for comp in self.components() {
            p.push(os_from_bytes(comp));
        }
        p
    }

    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.split(|&b| b == b'/')
    }

    /// Last component.
    pub fn file_name(&self) -> &[u8] {
        self.components().last().unwrap_or(&self.bytes)
    }

    pub fn file_name_os(&self) -> OsString {
        os_from_bytes(self.file_name())
    }

    pub fn parent(&self) -> Option<RelPath> {
        let idx = self.bytes.iter().rposition(|&b| b == b'/')?;
        Some(RelPath {
            bytes: self.bytes[..idx].to_vec(),
        })
    }

    pub fn join(&self, name: &[u8]) -> Result<RelPath, RelPathError> {
        let mut b = Vec::with_capacity(self.bytes.len() + 1 + name.len());
        b.extend_from_slice(&self.bytes);
        b.push(b'/');
        b.extend_from_slice(name);
        // `self` is valid already: only what `name` adds needs checking (a mount joins every
        // entry of every folder it lists, so no second copy and no second pass).
        let bad = name.contains(&0);
        let bad_comp = name.split(|&c| c == b'/').any(bad_component);
        match (bad, bad_comp) {
            (true, _) => Err(RelPathError::Nul(String::from_utf8_lossy(&b).into_owned())),
            (_, true) => Err(RelPathError::BadComponent(
                String::from_utf8_lossy(&b).into_owned(),
            )),
            _ => Ok(RelPath { bytes: b }),
        }
    }

    /// True when `self` is `dir` or lies below it.
    pub fn starts_with(&self, dir: &RelPath) -> bool {
        self.bytes == dir.bytes
            || (self.bytes.len() > dir.bytes.len()
                && self.bytes.starts_with(&dir.bytes)
                && self.bytes[dir.bytes.len()] == b'/')
    }

    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

fn looks_windows_absolute(b: &[u8]) -> bool {
    b.first() == Some(&b'\\') || (b.len() >= 2 && b[1] == b':')
}

pub(crate) fn os_from_bytes(b: &[u8]) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b).to_os_string()
    }
    #[cfg(not(unix))]
    {
        // Encoded bytes we produced ourselves are valid WTF-8; untrusted ones go through lossy.
        match std::str::from_utf8(b) {
            Ok(s) => OsString::from(s),
            Err(_) => OsString::from(String::from_utf8_lossy(b).into_owned()),
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        RelPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_checks_what_from_bytes_checks() {
        let base = RelPath::parse("a/b").unwrap();
        for name in [
            &b"c"[..],
            b"c/d",
            b"",
            b".",
            b"..",
            b"c/..",
            b"c//d",
            b"/c",
            b"c/",
            b"c\0d",
            b"...",
            b"c\\d",
            b"x:",
        ] {
            let mut whole = b"a/b/".to_vec();
            whole.extend_from_slice(name);
            let joined = base.join(name);
            let built = RelPath::from_bytes(&whole);
            assert_eq!(
                joined.as_ref().map_err(std::mem::discriminant),
                built.as_ref().map_err(std::mem::discriminant),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn from_path_fast_and_slow_paths_agree() {
        for (p, want) in [
            ("a/b/c", "a/b/c"),
            ("./a/b", "a/b"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/b/", "a/b"),
        ] {
            let got = RelPath::from_path(Path::new(p)).unwrap();
            assert_eq!(got.as_bytes(), want.as_bytes(), "{p}");
        }
        assert!(RelPath::from_path(Path::new("../x")).is_err());
        assert!(RelPath::from_path(Path::new("/abs")).is_err());
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::parse("a/b c/-d\ne").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_round_trips() {
        let p = RelPath::from_bytes(b"dir/caf\xe9\xff.txt").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: RelPath = serde_json::from_str(&json).unwrap();
        assert_eq!(p, back);
        assert_eq!(back.as_bytes(), b"dir/caf\xe9\xff.txt");
        let utf = RelPath::parse("dir/été").unwrap();
        assert_eq!(serde_json::to_string(&utf).unwrap(), "\"dir/été\"");
    }

    #[test]
    fn prefix_and_parent() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert!(p.starts_with(&RelPath::parse("a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::parse("a/bc").unwrap()));
        assert_eq!(p.parent().unwrap(), RelPath::parse("a/b").unwrap());
        assert_eq!(p.file_name(), b"c");
    }

    #[test]
    fn order_is_the_walk_order_and_matches_the_sort_key() {
        let order = ["a", "a/b", "a/b/c", "a/b.c", "a.b", "a0", "b"];
        let paths: Vec<RelPath> = order.iter().map(|p| RelPath::parse(p).unwrap()).collect();
        for w in paths.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0].display(), w[1].display());
            assert!(w[0].sort_key() < w[1].sort_key());
        }
        for p in &paths {
            assert_eq!(&RelPath::from_sort_key(&p.sort_key()).unwrap(), p);
        }
    }
}
