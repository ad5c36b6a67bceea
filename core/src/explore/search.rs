//! `search`: files matching masks and filters across every increment and the mirror, from the
//! index alone (no file is opened or stat-ed), streamed hit by hit: memory is one folder of
//! one catalog, whatever the number of hits.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::mask::Masks;
use super::point::parse_time;
use super::walk::{CatalogWalk, MirrorWalk};
use super::{Backup, ExploreError};
use crate::format::{Category, FileKind, MTime, Op};
use crate::index::IncrementState;
use crate::relpath::RelPath;
use crate::repo::IncrementName;

/// An inclusive byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub min: u64,
    pub max: u64,
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v.round() as u64)
}

impl SizeRange {
    /// `>100M`, `<1G`, `10K-2M`, or an exact size (`4K`). Units are powers of 1024.
    pub fn parse(s: &str) -> Result<SizeRange, ExploreError> {
        let bad = || ExploreError::bad("size", s, "expected >SIZE, <SIZE or MIN-MAX (K, M, G, T)");
        let t = s.trim();
        let r = if let Some(rest) = t.strip_prefix(">=") {
            SizeRange {
                min: parse_bytes(rest).ok_or_else(bad)?,
                max: u64::MAX,
            }
        } else if let Some(rest) = t.strip_prefix('>') {
            SizeRange {
                min: parse_bytes(rest).ok_or_else(bad)?.saturating_add(1),
                max: u64::MAX,
            }
        } else if let Some(rest) = t.strip_prefix("<=") {
            SizeRange {
                min: 0,
                max: parse_bytes(rest).ok_or_else(bad)?,
            }
        } else if let Some(rest) = t.strip_prefix('<') {
            let v = parse_bytes(rest).ok_or_else(bad)?;
            if v == 0 {
                return Err(bad());
            }
            SizeRange { min: 0, max: v - 1 }
        } else if let Some((a, b)) = t.split_once('-') {
            SizeRange {
                min: parse_bytes(a).ok_or_else(bad)?,
                max: parse_bytes(b).ok_or_else(bad)?,
            }
        } else {
            let v = parse_bytes(t).ok_or_else(bad)?;
            SizeRange { min: v, max: v }
        };
        if r.min > r.max {
            return Err(bad());
        }
        Ok(r)
    }

    pub fn contains(&self, size: u64) -> bool {
        (self.min..=self.max).contains(&size)
    }
}

/// A half-open range of modification times, `[from, to)` in ns since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

fn ns(t: chrono::DateTime<chrono::Local>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl TimeRange {
    /// `2024-01-05` (that day), `<D` (before D), `>D` (after D), `D..D` (both days included).
    /// Times are local; a date may carry a time (`2024-01-05 10:00`).
    pub fn parse(s: &str) -> Result<TimeRange, ExploreError> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('<') {
            let d = parse_time(rest)?;
            return Ok(TimeRange {
                from: None,
                to: Some(ns(d.start)),
            });
        }
        if let Some(rest) = t.strip_prefix('>') {
            let d = parse_time(rest)?;
            // A bare date: after that whole day; an instant: strictly after it.
            let from = if d.start == d.end {
                ns(d.end) + 1
            } else {
                ns(d.end)
            };
            return Ok(TimeRange {
                from: Some(from),
                to: None,
            });
        }
        if let Some((a, b)) = t.split_once("..") {
            let (a, b) = (parse_time(a)?, parse_time(b)?);
            let to = if b.start == b.end {
                ns(b.end) + 1
            } else {
                ns(b.end)
            };
            return Ok(TimeRange {
                from: Some(ns(a.start)),
                to: Some(to),
            });
        }
        let d = parse_time(t)?;
        let to = if d.start == d.end {
            ns(d.end) + 1
        } else {
            ns(d.end)
        };
        Ok(TimeRange {
            from: Some(ns(d.start)),
            to: Some(to),
        })
    }

    pub fn contains(&self, t: MTime) -> bool {
        self.from.is_none_or(|f| t.ns >= f) && self.to.is_none_or(|e| t.ns < e)
    }
}

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub masks: Masks,
    pub size: Option<SizeRange>,
    /// Filters on the file's modification time.
    pub time: Option<TimeRange>,
    /// Only below this folder (or this exact file).
    pub path: Option<RelPath>,
    /// Only the N newest increments (the mirror is always searched unless `skip_mirror`).
    pub last_backups: Option<usize>,
    pub skip_mirror: bool,
}

/// Where a hit lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Location {
    Increment { name: String, category: Category },
    Mirror,
}

/// One matching file.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub location: Location,
    pub path: RelPath,
    pub size: u64,
    pub mtime_ns: i64,
    pub kind: FileKind,
    /// `tracked`, `deleted` (in an increment) or `mirror`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// For mirror hits: whether the file is tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked: Option<bool>,
}

impl Query {
    fn matches(&self, path: &RelPath, size: u64, mtime: MTime) -> bool {
        self.path.as_ref().is_none_or(|p| path.starts_with(p))
            && self.size.is_none_or(|r| r.contains(size))
            && self.time.is_none_or(|r| r.contains(mtime))
            && self.masks.is_match(path)
    }
}

/// What a search went through besides its hits.
#[derive(Clone, Debug, Default)]
pub struct SearchStats {
    pub hits: u64,
    /// Increments in the searched range whose metadata cannot be read: their files are not
    /// searched (say so; never pass the silence off as "no match there").
    pub unreadable: Vec<IncrementName>,
}

/// Hands every hit to `f`, grouped by location: increments oldest first, then the mirror;
/// within an increment folder by folder in path order, the mirror in walk order.
pub fn search<E: From<ExploreError>>(
    backup: &Backup,
    q: &Query,
    f: &mut dyn FnMut(Hit) -> Result<(), E>,
) -> Result<SearchStats, E> {
    let index = backup.index();
    let incs = backup.increments()?;
    let skip = q
        .last_backups
        .map(|n| incs.len().saturating_sub(n))
        .unwrap_or(0);
    let mut stats = SearchStats::default();
    for inc in &incs[skip..] {
        if inc.state != IncrementState::Ok {
            stats.unreadable.push(inc.name.clone());
            continue;
        }
        for item in
            CatalogWalk::of(index, inc, None, q.path.as_ref()).map_err(ExploreError::from)?
        {
            let (path, e) = item.map_err(ExploreError::from)?;
            if q.matches(&path, e.size, e.mtime) {
                stats.hits += 1;
                f(Hit {
                    location: Location::Increment {
                        name: inc.name.to_string(),
                        category: e.category,
                    },
                    size: e.size,
                    mtime_ns: e.mtime.ns,
                    kind: e.kind,
                    status: match e.category {
                        Category::Tracked => "tracked",
                        Category::Deleted => "deleted",
                    },
                    op: Some(e.op()),
                    tracked: None,
                    path,
                })?;
            }
        }
    }
    if !q.skip_mirror {
        for item in MirrorWalk::new(index, q.path.as_ref()) {
            let (path, e) = item.map_err(ExploreError::from)?;
            if e.kind == FileKind::Dir {
                continue;
            }
            if q.matches(&path, e.size, e.mtime) {
                stats.hits += 1;
                f(Hit {
                    location: Location::Mirror,
                    size: e.size,
                    mtime_ns: e.mtime.ns,
                    kind: e.kind,
                    status: "mirror",
                    op: None,
                    tracked: Some(e.tracked),
                    path,
                })?;
            }
        }
    }
    Ok(stats)
}

/// Where a hit's bytes are on disk, under the backup's folder `root`.
pub fn hit_path(root: &Path, hit: &Hit) -> PathBuf {
    match &hit.location {
        Location::Mirror => hit.path.under(&root.join(crate::repo::MIRROR_DIR)),
        Location::Increment { name, category } => {
            hit.path.under(&root.join(name).join(category.dir_name()))
        }
    }
}

/// A path as JSON writes file paths ([`RelPath::encode`]): itself when its bytes are UTF-8,
/// else `"\u0000hex:"` and the hex of its bytes, so nothing is lost.
pub fn encode_path(p: &Path) -> String {
    let b = p.as_os_str().as_encoded_bytes();
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut s = String::from("\u{0}hex:");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(SizeRange::parse(">100M").unwrap().min, 100 * (1 << 20) + 1);
        assert_eq!(SizeRange::parse("<1G").unwrap().max, (1 << 30) - 1);
        let r = SizeRange::parse("10K-2M").unwrap();
        assert_eq!((r.min, r.max), (10 << 10, 2 << 20));
        assert!(SizeRange::parse("2M-1K").is_err());
        assert!(SizeRange::parse("lots").is_err());
        assert!(SizeRange::parse("1.5K").unwrap().contains(1536));
    }

    #[test]
    fn times_parse() {
        let day = TimeRange::parse("2024-01-05").unwrap();
        let d = parse_time("2024-01-05 12:00").unwrap().start;
        assert!(day.contains(MTime::from_ns(ns(d))));
        let before = TimeRange::parse("<2024-01-05").unwrap();
        assert!(!before.contains(MTime::from_ns(ns(d))));
        let after = TimeRange::parse(">2024-01-04").unwrap();
        assert!(after.contains(MTime::from_ns(ns(d))));
        let span = TimeRange::parse("2024-01-01..2024-01-05").unwrap();
        assert!(span.contains(MTime::from_ns(ns(d))));
        assert!(TimeRange::parse("yesterday").is_err());
    }
}
