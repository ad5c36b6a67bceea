//! `prune`: remove whole increments by a retention policy over increment times, with the rules
//! of restic and borg: the newest increment of each of the last N hours/days/ISO weeks/months/
//! years that have one is kept, plus the last N increments, plus every increment within a
//! duration of the newest one. An increment is kept when any rule keeps it; each decision says
//! which rules did.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Datelike, Local, Timelike};
use serde::Serialize;

use super::{Backup, ExploreError};
use crate::identity::IncrementTime;
use crate::progress::{Work, WorkSink};
use crate::repo::{IncrementName, Repository, WriteLock};

/// `--keep-within`: a span of years, months, weeks, days and hours (`7d`, `2w`, `36h`,
/// `1y2m`), counted back from the newest increment (as restic does: a backup that stopped
/// running is not pruned away by the passing of time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Within {
    /// As written, for messages and `--check-config`.
    pub text: String,
    pub months: u32,
    pub hours: u64,
}

impl Within {
    /// Parses `1y2m3w4d5h` (each unit at most once, in any order; `m` is months).
    pub fn parse(s: &str) -> Result<Within, ExploreError> {
        let bad = |m: &str| ExploreError::bad("duration", s, m.to_owned());
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty; write e.g. 7d, 2w, 36h or 1y2m"));
        }
        let mut w = Within {
            text: t.to_owned(),
            ..Within::default()
        };
        let mut seen = String::new();
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u64 = num
                .parse()
                .map_err(|_| bad("a unit needs a number before it (7d, 2w, 36h, 1y2m)"))?;
            num.clear();
            if seen.contains(c) {
                return Err(bad(&format!("unit {c:?} appears twice")));
            }
            seen.push(c);
            let too_big = || bad("too long a span");
            match c {
                'y' => {
                    w.months = w
                        .months
                        .checked_add(u32::try_from(n * 12).map_err(|_| too_big())?)
                        .ok_or_else(too_big)?
                }
                'm' => {
                    w.months = w
                        .months
                        .checked_add(u32::try_from(n).map_err(|_| too_big())?)
                        .ok_or_else(too_big)?
                }
                'w' => w.hours = w.hours.checked_add(n * 7 * 24).ok_or_else(too_big)?,
                'd' => w.hours = w.hours.checked_add(n * 24).ok_or_else(too_big)?,
                'h' => w.hours = w.hours.checked_add(n).ok_or_else(too_big)?,
                other => {
                    return Err(bad(&format!(
                        "unknown unit {other:?}: use y (years), m (months), w (weeks), d (days), h (hours)"
                    )))
                }
            }
        }
        if !num.is_empty() {
            return Err(bad("a number needs a unit after it: y, m, w, d or h"));
        }
        if w.months == 0 && w.hours == 0 {
            return Err(bad("a zero span keeps nothing"));
        }
        Ok(w)
    }

    /// The oldest time still within the span before `newest`.
    fn cutoff(&self, newest: DateTime<Local>) -> DateTime<Local> {
        let t = newest
            .checked_sub_months(chrono::Months::new(self.months))
            .unwrap_or(DateTime::<Local>::MIN_UTC.into());
        t.checked_sub_signed(chrono::TimeDelta::hours(
            i64::try_from(self.hours).unwrap_or(i64::MAX / 3_600_000),
        ))
        .unwrap_or(DateTime::<Local>::MIN_UTC.into())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: usize,
    pub keep_hourly: usize,
    pub keep_daily: usize,
    pub keep_weekly: usize,
    pub keep_monthly: usize,
    pub keep_yearly: usize,
    pub keep_within: Option<Within>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// The rules as `--keep-...` flags, for messages (`keep-last 3, keep-within 7d`).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("keep-{k} {n}"))
        .collect();
        if let Some(w) = &self.keep_within {
            parts.push(format!("keep-within {}", w.text));
        }
        if parts.is_empty() {
            "no rule".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub name: IncrementName,
    /// The increment's time (RFC 3339, with its UTC offset).
    pub time: String,
    pub keep: bool,
    /// Which rules keep it (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`,
    /// `within`).
    pub reasons: Vec<&'static str>,
}

/// Decides for every increment folder, given oldest first in increment order with its time
/// ([`IncrementTime::of`]: the recorded one; the name's for a folder without metadata).
/// "Last" counts in increment order; the calendar rules bucket by time, in this machine's
/// time zone, keeping the newest (in increment order) of each bucket.
pub fn decide(names: &[(IncrementName, IncrementTime)], policy: &Policy) -> Vec<Decision> {
    let times: Vec<DateTime<Local>> = names.iter().map(|(_, t)| t.local()).collect();
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); names.len()];
    // Newest first: the order of increments, which no clock step can change.
    let order: Vec<usize> = (0..names.len()).rev().collect();
    for &i in order.iter().take(policy.keep_last) {
        reasons[i].push("last");
    }
    let mut bucketed = |n: usize, label: &'static str, key: &dyn Fn(&DateTime<Local>) -> i64| {
        let mut seen: HashSet<i64> = HashSet::new();
        for &i in &order {
            if seen.len() >= n {
                break;
            }
            if seen.insert(key(&times[i])) {
                reasons[i].push(label);
            }
        }
    };
    let day = |t: &DateTime<Local>| t.year() as i64 * 1000 + t.ordinal() as i64;
    bucketed(policy.keep_hourly, "hourly", &|t| {
        day(t) * 100 + t.hour() as i64
    });
    bucketed(policy.keep_daily, "daily", &day);
    bucketed(policy.keep_weekly, "weekly", &|t| {
        let w = t.iso_week();
        w.year() as i64 * 100 + w.week() as i64
    });
    bucketed(policy.keep_monthly, "monthly", &|t| {
        t.year() as i64 * 100 + t.month() as i64
    });
    bucketed(policy.keep_yearly, "yearly", &|t| t.year() as i64);
    if let (Some(w), Some(newest)) = (&policy.keep_within, times.iter().max()) {
        let cutoff = w.cutoff(*newest);
        for &i in &order {
            if times[i] >= cutoff {
                reasons[i].push("within");
            }
        }
    }
    names
        .iter()
        .zip(reasons)
        .zip(&times)
        .map(|(((n, it), r), _)| Decision {
            name: n.clone(),
            time: it.at.to_rfc3339(),
            keep: !r.is_empty(),
            reasons: r,
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// The policy applied, as flags (`keep-last 3, keep-daily 7`).
    pub policy: String,
    pub decisions: Vec<Decision>,
    /// Increments removed (or that would be).
    pub removed: Vec<IncrementName>,
    pub failed: Vec<(IncrementName, String)>,
}

/// Applies `policy`; `write` is `None` for a dry run, which changes nothing and needs no lock.
pub fn prune(
    backup: &Backup,
    policy: &Policy,
    write: Option<&WriteLock>,
) -> Result<PruneReport, ExploreError> {
    prune_with_progress(backup, policy, write, &|_| {})
}

/// [`prune`], telling `progress` about each increment removed.
pub fn prune_with_progress(
    backup: &Backup,
    policy: &Policy,
    write: Option<&WriteLock>,
    progress: WorkSink,
) -> Result<PruneReport, ExploreError> {
    let dry_run = write.is_none();
    if policy.is_empty() {
        return Err(ExploreError::Refused(
            "no retention rule given (--keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly/--keep-within, or \"retention\" in the profile); refusing to remove every increment".into(),
        ));
    }
    // Every increment folder with its time: the recorded one, the name's for a folder without
    // readable metadata (the index says which).
    let names: Vec<(IncrementName, IncrementTime)> = backup
        .increments()?
        .into_iter()
        .map(|r| (r.name, r.time))
        .collect();
    let decisions = decide(&names, policy);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let doomed: BTreeSet<&IncrementName> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| &d.name)
        .collect();
    if !dry_run {
        progress(Work::Start {
            items: doomed.len() as u64,
            bytes: 0,
        });
    }
    for (name, _) in names.iter().filter(|(n, _)| doomed.contains(n)) {
        if dry_run {
            removed.push(name.clone());
            continue;
        }
        match remove_increment(&backup.repo, name) {
            Ok(()) => removed.push(name.clone()),
            Err(e) => failed.push((name.clone(), e.to_string())),
        }
        progress(Work::Item { bytes: 0 });
    }
    // Removed (or renamed away and half removed): the index drops them before the command
    // exits.
    if let Some(lock) = write {
        backup.sync(lock)?;
    }
    Ok(PruneReport {
        dry_run,
        policy: policy.describe(),
        decisions,
        removed,
        failed,
    })
}

/// Removes one increment folder. It is first renamed to a hidden name, so an interrupted
/// removal never leaves a half-deleted folder that still looks like an increment (`check`
/// reports the hidden leftover).
pub fn remove_increment(repo: &Repository, name: &IncrementName) -> Result<(), ExploreError> {
    let dir = repo.increment_dir(name);
    let tmp = repo.root().join(format!(
        ".backup-prune-{}-{}",
        name.as_str(),
        std::process::id()
    ));
    std::fs::rename(&dir, &tmp).map_err(|e| ExploreError::io("rename", &dir, e))?;
    // The increment is gone for good before its contents go, and reported removed only once
    // that is durable.
    backup_platform::fs::fsync_dir(repo.root())
        .map_err(|e| ExploreError::io("sync", repo.root(), e))?;
    std::fs::remove_dir_all(&tmp).map_err(|e| ExploreError::io("remove", &tmp, e))?;
    backup_platform::fs::fsync_dir(repo.root())
        .map_err(|e| ExploreError::io("sync", repo.root(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<(IncrementName, IncrementTime)> {
        v.iter()
            .map(|s| {
                let n = IncrementName::parse(s).unwrap();
                let t = IncrementTime::of(None, &n);
                (n, t)
            })
            .collect()
    }

    fn kept(n: &[(IncrementName, IncrementTime)], p: Policy) -> Vec<bool> {
        decide(n, &p).iter().map(|d| d.keep).collect()
    }

    #[test]
    fn keeps_newest_per_bucket() {
        let n = names(&[
            "backup_20240101_100000",
            "backup_20240101_200000",
            "backup_20240102_100000",
            "backup_20240215_100000",
            "backup_20240216_100000",
        ]);
        let p = Policy {
            keep_daily: 2,
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, false, false, true, true]);
        let p = Policy {
            keep_monthly: 2,
            keep_last: 1,
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, false, true, false, true]);
        let p = Policy {
            keep_yearly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, false, false, false, true]);
    }

    #[test]
    fn hourly_and_within() {
        let n = names(&[
            "backup_20240101_100000",
            "backup_20240101_101500",
            "backup_20240101_110000",
            "backup_20240103_090000",
            "backup_20240108_100000",
        ]);
        let p = Policy {
            keep_hourly: 4,
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, true, true, true, true]);
        // 5 days back from the newest (01-08 10:00) reaches 01-03 10:00: 01-03 09:00 is out.
        let p = Policy {
            keep_within: Some(Within::parse("5d").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, false, false, false, true]);
        let p = Policy {
            keep_within: Some(Within::parse("1w").unwrap()),
            ..Default::default()
        };
        // The cutoff itself is within.
        assert_eq!(kept(&n, p), vec![true, true, true, true, true]);
        let p = Policy {
            keep_within: Some(Within::parse("6d23h").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&n, p), vec![false, false, true, true, true]);
        let d = decide(
            &n,
            &Policy {
                keep_within: Some(Within::parse("1m").unwrap()),
                keep_last: 1,
                ..Default::default()
            },
        );
        assert_eq!(d[4].reasons, vec!["last", "within"]);
        assert_eq!(d[0].reasons, vec!["within"]);
    }

    #[test]
    fn durations_parse_like_restic() {
        let w = Within::parse("1y2m").unwrap();
        assert_eq!((w.months, w.hours), (14, 0));
        let w = Within::parse("2w36h").unwrap();
        assert_eq!((w.months, w.hours), (0, 14 * 24 + 36));
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "1d1d",
            "0d",
            "-1d",
            "99999999999999999999y",
        ] {
            assert!(Within::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
