//! Points in time typed by users: an increment name, `mirror`, `latest`, or a local date/time
//! (the latest increment at or before it).

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

use super::ExploreError;
use crate::index::IncrementRecord;
use crate::repo::{IncrementName, Repository};

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

/// A user-typed time covers what it names at the precision typed: a date its whole day, a
/// minute its 60 seconds, a second that second (the increment recorded at 10:00:00.4 is "at
/// 10:00:00"); an RFC 3339 time with a fraction is an instant.
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
        let end = if t.timestamp_subsec_nanos() == 0 {
            t + chrono::Duration::seconds(1)
        } else {
            t
        };
        return Ok(TimeSpec { start: t, end });
    }
    for (fmt, span) in [
        ("%Y-%m-%dT%H:%M:%S", 1),
        ("%Y-%m-%d %H:%M:%S", 1),
        ("%Y-%m-%dT%H:%M", 60),
        ("%Y-%m-%d %H:%M", 60),
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            let t = local(n);
            return Ok(TimeSpec {
                start: t,
                end: t + chrono::Duration::seconds(span),
            });
        }
    }
    Err(ExploreError::bad(
        "time",
        s,
        "expected YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or RFC 3339",
    ))
}

/// Resolves `mirror`, `latest`, an increment name, or a time (the newest increment whose time
/// is at or before it; a bare date includes that whole day). `latest` is the newest increment
/// folder, readable or not. An increment whose metadata cannot be used is refused, naming it
/// and how to repair it: its state is never answered from another increment.
pub fn resolve(
    s: &str,
    increments: &[IncrementRecord],
    repo: &Repository,
) -> Result<Point, ExploreError> {
    if s == "mirror" {
        return Ok(Point::Mirror);
    }
    resolve_increment(s, increments, repo).map(|r| Point::Increment(r.name))
}

/// [`resolve`] for commands that need an increment (`show`): a name, `latest` or a time.
pub fn resolve_increment(
    s: &str,
    increments: &[IncrementRecord],
    repo: &Repository,
) -> Result<IncrementRecord, ExploreError> {
    let incs = increments;
    if s == "mirror" {
        return Err(ExploreError::Refused(
            "`mirror` is not an increment: name one, `latest`, or a time".into(),
        ));
    }
    let found = if s == "latest" {
        incs.last().ok_or_else(|| {
            ExploreError::Refused(
                "the backup has no increment yet (`latest` names the newest)".into(),
            )
        })?
    } else if let Some(name) = IncrementName::parse(s) {
        incs.iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ExploreError::NoSuchIncrement(s.to_owned()))?
    } else {
        let t = parse_time(s)?;
        // By recorded time, newest in increment order first: after a clock step two increments'
        // times are out of order, and the later one (which holds the other's events too) wins.
        let at = |i: &IncrementRecord| {
            let when = i.time.at;
            if t.start == t.end {
                when <= t.start
            } else {
                when < t.end
            }
        };
        incs.iter()
            .rev()
            .find(|i| at(i))
            .ok_or_else(|| ExploreError::Refused(format!("no increment at or before {s}")))?
    };
    super::readable(repo, found.clone())
}
