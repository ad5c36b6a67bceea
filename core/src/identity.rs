//! Increment identity: the name of an increment folder and the time of an increment.
//!
//! The *order* of increments is the order of their names, and the naming rule keeps that order
//! the order in which runs happened, whatever the wall clock does: a new name always sorts after
//! every existing one (same second, DST fall-back, a clock stepped back by a day, a time-zone
//! change between cron and a shell). The *time* of an increment is the `timestamp` its metadata
//! records, with its UTC offset; the name is only a fallback for metadata that has none. Two
//! increments may therefore have times out of order (the clock went back between them); they
//! never have names out of order.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, Offset, TimeZone, Timelike};

pub const INCREMENT_PREFIX: &str = "backup_";

/// A validated increment name: `backup_YYYYMMDD_HHMMSS`, optionally followed by `_NN` suffixes
/// (`backup_20240105_100000_01`). The stamp is the local time the run started; a suffix is
/// added when that stamp would not sort after the newest existing increment.
///
/// Names compare by stamp, then by their suffix numbers *as numbers* (`_100` after `_99`), with
/// no suffix first — for two-digit suffixes this is also their string order, which is what
/// `ls` and the original tool show. Older versions of this tool could write a nested suffix
/// (`backup_X_01_01`) after a clock step; such names are accepted and sort between `backup_X_01`
/// and `backup_X_02`, so no existing increment is ever hidden.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IncrementName {
    // Shared: a snapshot's listing names its increment in every entry it returns.
    text: std::sync::Arc<str>,
    stamp: NaiveDateTime,
    suffix: Vec<u32>,
}

const STAMP_FORMAT: &str = "%Y%m%d_%H%M%S";

impl IncrementName {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(INCREMENT_PREFIX)?;
        let b = rest.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() < 15 || !digits(0..8) || b[8] != b'_' || !digits(9..15) {
            return None;
        }
        let stamp = NaiveDateTime::parse_from_str(&rest[..15], STAMP_FORMAT).ok()?;
        let mut suffix = Vec::new();
        let mut tail = &rest[15..];
        while let Some(after) = tail.strip_prefix('_') {
            let end = after.find('_').unwrap_or(after.len());
            let n = &after[..end];
            // Two digits at least (what we write); no sign, no empty part.
            if n.len() < 2 || n.len() > 9 || !n.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            suffix.push(n.parse().ok()?);
            tail = &after[end..];
        }
        if !tail.is_empty() {
            return None;
        }
        Some(IncrementName {
            text: s.into(),
            stamp,
            suffix,
        })
    }

    fn from_parts(stamp: NaiveDateTime, suffix: Vec<u32>) -> Self {
        // Whole seconds, as the name shows them: a stamp carrying the clock's fraction would
        // compare after a same-second name with a suffix (`10:00:00.4` > `10:00:00_04`) and
        // hand out a name that sorts before increments already there.
        let stamp = stamp.with_nanosecond(0).unwrap_or(stamp);
        let mut text = format!("{INCREMENT_PREFIX}{}", stamp.format(STAMP_FORMAT));
        for n in &suffix {
            text.push_str(&format!("_{n:02}"));
        }
        IncrementName {
            text: text.into(),
            stamp,
            suffix,
        }
    }

    /// The one rule that names a new increment: the local start time of the run, unless that
    /// does not sort after `newest` (same second, clock stepped back, time zone moved west);
    /// then `newest`'s stamp with the next suffix. The result sorts after `newest` and differs
    /// from every name that sorts at or before it.
    pub fn next(started: DateTime<Local>, newest: Option<&IncrementName>) -> Self {
        let candidate = Self::from_parts(started.naive_local(), Vec::new());
        match newest {
            Some(last) if candidate <= *last => {
                // One more than the newest at its last level: `_01` → `_02`, a legacy nested
                // `_01_01` → `_01_02`, no suffix → `_01`.
                let mut suffix = last.suffix.clone();
                match suffix.last_mut() {
                    Some(n) if *n < 999_999_999 => *n += 1,
                    _ => suffix.push(1),
                }
                Self::from_parts(last.stamp, suffix)
            }
            _ => candidate,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The local wall-clock time the name encodes (no time zone: the zone of the machine that
    /// ran the backup is unknown). Use [`IncrementTime`] for the time of an increment.
    pub fn stamp(&self) -> NaiveDateTime {
        self.stamp
    }

    /// A byte string whose order is the order of names (for keys in the index).
    pub fn sort_key(&self) -> Vec<u8> {
        // The name's own stamp digits (validated, and written by `from_parts` with the same
        // format): no formatting on a path every mount lookup takes.
        let stamp = &self.text.as_bytes()[INCREMENT_PREFIX.len()..INCREMENT_PREFIX.len() + 15];
        let mut k = Vec::with_capacity(15 + 5 * self.suffix.len());
        k.extend_from_slice(stamp);
        for n in &self.suffix {
            k.push(b'_');
            k.extend_from_slice(&n.to_be_bytes());
        }
        k
    }
}

impl Ord for IncrementName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.stamp
            .cmp(&other.stamp)
            .then_with(|| self.suffix.cmp(&other.suffix))
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for IncrementName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for IncrementName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for IncrementName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IncrementName({})", self.text)
    }
}

impl std::str::FromStr for IncrementName {
    type Err = String;
    /// For command-line arguments: the error says what a name looks like.
    fn from_str(s: &str) -> Result<Self, String> {
        IncrementName::parse(s).ok_or_else(|| {
            format!("{s:?} is not an increment name (backup_YYYYMMDD_HHMMSS, optionally _NN)")
        })
    }
}

impl serde::Serialize for IncrementName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Where an increment's time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSource {
    /// The metadata `timestamp`, with its UTC offset (what we write).
    Recorded,
    /// A `timestamp` without offset (the original tool's `datetime.now().isoformat()`), read as
    /// local time of the machine reading it.
    RecordedLocal,
    /// No usable `timestamp`: the name's stamp, read as local time.
    Name,
}

/// The time of an increment: an instant with the UTC offset it was recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementTime {
    pub at: DateTime<FixedOffset>,
    pub source: TimeSource,
}

fn local_guess(naive: NaiveDateTime) -> DateTime<FixedOffset> {
    let t = Local
        .from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| Local.from_utc_datetime(&naive));
    t.with_timezone(&t.offset().fix())
}

impl IncrementTime {
    /// The one function that turns metadata into a time: the recorded `timestamp` (RFC 3339
    /// with offset; an offset-less ISO time as local; a number as seconds since the epoch),
    /// else the name's stamp as local time.
    pub fn of(timestamp: Option<&str>, name: &IncrementName) -> IncrementTime {
        if let Some(ts) = timestamp.map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
                return IncrementTime {
                    at: t,
                    source: TimeSource::Recorded,
                };
            }
            for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(n) = NaiveDateTime::parse_from_str(ts, fmt) {
                    return IncrementTime {
                        at: local_guess(n),
                        source: TimeSource::RecordedLocal,
                    };
                }
            }
            if let Ok(secs) = ts.parse::<f64>() {
                if secs.is_finite() && secs.abs() < 1e12 {
                    let ns = (secs * 1e9) as i64;
                    let utc = DateTime::from_timestamp_nanos(ns);
                    let local = utc.with_timezone(&Local);
                    return IncrementTime {
                        at: local.with_timezone(&local.offset().fix()),
                        source: TimeSource::Recorded,
                    };
                }
            }
        }
        IncrementTime {
            at: local_guess(name.stamp()),
            source: TimeSource::Name,
        }
    }

    /// The same instant in the local time zone of this process (for display and calendar
    /// buckets).
    pub fn local(&self) -> DateTime<Local> {
        self.at.with_timezone(&Local)
    }

    pub fn unix_ns(&self) -> i64 {
        self.at.timestamp_nanos_opt().unwrap_or(i64::MAX)
    }
}

/// The timestamp we write into an increment's metadata: when its run started (the state it
/// records is the source as scanned from then on), RFC 3339 with the local UTC offset and ns.
pub fn timestamp_of(started: DateTime<Local>) -> String {
    started.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IncrementName {
        IncrementName::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn sort_keys_are_the_stamp_then_the_suffix_numbers_and_sort_as_names() {
        let names = [
            "backup_20240105_100000",
            "backup_20240105_100000_01",
            "backup_20240105_100000_01_01",
            "backup_20240105_100000_02",
            "backup_20240105_100000_100",
            "backup_20240105_100001",
        ];
        for w in names.windows(2) {
            assert!(n(w[0]).sort_key() < n(w[1]).sort_key(), "{w:?}");
        }
        let made = IncrementName::next(
            chrono::Local
                .with_ymd_and_hms(2024, 1, 5, 10, 0, 0)
                .unwrap(),
            Some(&n("backup_20240105_100000")),
        );
        let mut want = made.stamp().format(STAMP_FORMAT).to_string().into_bytes();
        want.extend_from_slice(b"_");
        want.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(made.sort_key(), want);
    }

    #[test]
    fn parses_what_we_and_older_versions_wrote() {
        assert!(IncrementName::parse("backup_20240105_100000").is_some());
        assert!(IncrementName::parse("backup_20240105_100000_01").is_some());
        assert!(IncrementName::parse("backup_20240105_100000_01_01").is_some());
        assert!(IncrementName::parse("backup_20240105_100000_100").is_some());
        for bad in [
            "backup_20240105_1000",
            "backup_20241305_100000",
            "backup_20240105_100000_",
            "backup_20240105_100000_1",
            "backup_20240105_100000_old",
            "backup_20240105_100000__01",
            "backup_20240105_100000_+1",
            "foo",
        ] {
            assert!(IncrementName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn order_is_numeric_per_suffix() {
        let names = [
            "backup_20240105_100000",
            "backup_20240105_100000_01",
            "backup_20240105_100000_01_01",
            "backup_20240105_100000_01_02",
            "backup_20240105_100000_02",
            "backup_20240105_100000_99",
            "backup_20240105_100000_100",
            "backup_20240105_100001",
        ];
        for w in names.windows(2) {
            assert!(n(w[0]) < n(w[1]), "{} < {}", w[0], w[1]);
            assert!(n(w[0]).sort_key() < n(w[1]).sort_key(), "{} key", w[0]);
        }
    }

    #[test]
    fn next_always_sorts_after_the_newest() {
        let t = Local.with_ymd_and_hms(2024, 1, 5, 10, 0, 0).unwrap();
        let a = IncrementName::next(t, None);
        assert_eq!(a.as_str(), "backup_20240105_100000");
        let b = IncrementName::next(t, Some(&a));
        assert_eq!(b.as_str(), "backup_20240105_100000_01");
        let c = IncrementName::next(t - chrono::Duration::days(1), Some(&b));
        assert_eq!(c.as_str(), "backup_20240105_100000_02");
        let legacy = n("backup_20240105_100000_01_01");
        assert_eq!(
            IncrementName::next(t, Some(&legacy)).as_str(),
            "backup_20240105_100000_01_02"
        );
        let later = IncrementName::next(t + chrono::Duration::seconds(1), Some(&c));
        assert_eq!(later.as_str(), "backup_20240105_100001");
        // 150 runs in one second stay unique and ordered.
        let mut last = a.clone();
        for _ in 0..150 {
            let next = IncrementName::next(t, Some(&last));
            assert!(next > last && IncrementName::parse(next.as_str()).as_ref() == Some(&next));
            last = next;
        }
        assert_eq!(last.as_str(), "backup_20240105_100000_150");
    }

    #[test]
    fn a_clock_fraction_never_sorts_a_new_name_before_a_same_second_suffix() {
        // What a real clock reads: 10:00:00.4, after the older increments of that second were
        // pruned and only `_03` and `_04` are left.
        let t = Local.with_ymd_and_hms(2024, 1, 5, 10, 0, 0).unwrap()
            + chrono::Duration::milliseconds(400);
        let newest = n("backup_20240105_100000_04");
        let made = IncrementName::next(t, Some(&newest));
        assert_eq!(made.as_str(), "backup_20240105_100000_05");
        assert!(made > newest);
        // Equal names compare equal whatever clock reading made them.
        assert_eq!(IncrementName::next(t, None), n("backup_20240105_100000"));
        assert_eq!(IncrementName::next(t, None).stamp().nanosecond(), 0);
    }

    #[test]
    fn time_comes_from_the_recorded_timestamp_with_its_offset() {
        let name = n("backup_20240105_100000");
        let t = IncrementTime::of(Some("2024-01-05T10:00:00+09:00"), &name);
        assert_eq!(t.source, TimeSource::Recorded);
        assert_eq!(t.at.timestamp(), 1704416400);
        assert_eq!(t.at.offset().local_minus_utc(), 9 * 3600);
        let seed = IncrementTime::of(Some("2024-01-05T10:00:00.123456"), &name);
        assert_eq!(seed.source, TimeSource::RecordedLocal);
        let none = IncrementTime::of(None, &name);
        assert_eq!(none.source, TimeSource::Name);
        assert_eq!(none.at.naive_local(), name.stamp());
        let garbage = IncrementTime::of(Some("yesterday"), &name);
        assert_eq!(garbage.source, TimeSource::Name);
    }
}
