//! Points in time typed by users: an increment name, `mirror`, `latest`, or a local date/time
//! (the latest increment at or before it).

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

use super::ExploreError;
use crate::history::IncrementInfo;
use crate::repo::IncrementName;

/// A state of the backup that can be viewed, restored or compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Point {
    /// The current mirror (tracked and untracked files).
    Mirror,
    /// The tracked files right after this increment (the point-in-time fold).
    Increment(IncrementName),
}

impl Point {
    pub fn label(&self) -> String {
        match self {
            Point::Mirror => "mirror".to_owned(),
            Point::Increment(n) => n.to_string(),
        }
    }
}

fn local(naive: NaiveDateTime) -> DateTime<Local> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| Local.from_utc_datetime(&naive))
}

/// A user-typed instant. A bare date means the whole day: `start` is its first second, `end`
/// the first second of the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSpec {
    pub start: DateTime<Local>,
    pub end: DateTime<Local>,
}

pub fn parse_time(s: &str) -> Result<TimeSpec, ExploreError> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let start = local(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
        let next = d
            .succ_opt()
            .unwrap_or(d)
            .and_hms_opt(0, 0, 0)
            .expect("midnight");
        return Ok(TimeSpec {
            start,
            end: local(next),
        });
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&Local);
        return Ok(TimeSpec { start: t, end: t });
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            let t = local(n);
            return Ok(TimeSpec { start: t, end: t });
        }
    }
    Err(ExploreError::bad(
        "time",
        s,
        "expected YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or RFC 3339",
    ))
}

/// Resolves `mirror`, `latest`, an increment name, or a time (the newest increment whose time
/// is at or before it; a bare date includes that whole day).
pub fn resolve(s: &str, increments: &[IncrementInfo]) -> Result<Point, ExploreError> {
    if s == "mirror" {
        return Ok(Point::Mirror);
    }
    let incs = increments;
    if s == "latest" {
        return incs
            .last()
            .map(|i| Point::Increment(i.name.clone()))
            .ok_or_else(|| ExploreError::Refused("the backup has no increments".into()));
    }
    if IncrementName::parse(s).is_some() {
        return incs
            .iter()
            .find(|i| i.name.as_str() == s)
            .map(|i| Point::Increment(i.name.clone()))
            .ok_or_else(|| ExploreError::NoSuchIncrement(s.to_owned()));
    }
    let t = parse_time(s)?;
    let at = if t.start == t.end {
        |n: &IncrementName, t: &TimeSpec| n.time() <= t.start
    } else {
        |n: &IncrementName, t: &TimeSpec| n.time() < t.end
    };
    incs.iter()
        .rev()
        .find(|i| at(&i.name, &t))
        .map(|i| Point::Increment(i.name.clone()))
        .ok_or_else(|| ExploreError::Refused(format!("no increment at or before {s}")))
}
