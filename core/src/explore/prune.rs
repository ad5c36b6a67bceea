//! `prune`: remove whole increments by a retention policy over increment times (the newest
//! increment of each of the last N days/weeks/months is kept, plus the last N increments).

use std::collections::{BTreeSet, HashSet};

use chrono::Datelike;
use serde::Serialize;

use super::{Backup, ExploreError};
use crate::repo::{IncrementName, Repository};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: usize,
    pub keep_daily: usize,
    pub keep_weekly: usize,
    pub keep_monthly: usize,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    /// Which rules keep it (`last`, `daily`, `weekly`, `monthly`).
    pub reasons: Vec<&'static str>,
}

/// Decides for every increment folder, oldest first. Folders without metadata are judged by
/// their name's time like the others.
pub fn decide(names: &[IncrementName], policy: &Policy) -> Vec<Decision> {
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); names.len()];
    // Newest first.
    let order: Vec<usize> = (0..names.len()).rev().collect();
    for &i in order.iter().take(policy.keep_last) {
        reasons[i].push("last");
    }
    let mut bucketed = |n: usize, label: &'static str, key: &dyn Fn(&IncrementName) -> i64| {
        let mut seen: HashSet<i64> = HashSet::new();
        for &i in &order {
            if seen.len() >= n {
                break;
            }
            if seen.insert(key(&names[i])) {
                reasons[i].push(label);
            }
        }
    };
    bucketed(policy.keep_daily, "daily", &|n| {
        let t = n.time();
        t.year() as i64 * 1000 + t.ordinal() as i64
    });
    bucketed(policy.keep_weekly, "weekly", &|n| {
        let w = n.time().iso_week();
        w.year() as i64 * 100 + w.week() as i64
    });
    bucketed(policy.keep_monthly, "monthly", &|n| {
        let t = n.time();
        t.year() as i64 * 100 + t.month() as i64
    });
    names
        .iter()
        .zip(reasons)
        .map(|(n, r)| Decision {
            name: n.to_string(),
            keep: !r.is_empty(),
            reasons: r,
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// Increments removed (or that would be).
    pub removed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

pub fn prune(backup: &Backup, policy: &Policy, dry_run: bool) -> Result<PruneReport, ExploreError> {
    if policy.is_empty() {
        return Err(ExploreError::Refused(
            "no retention rule given (--keep-last/--keep-daily/--keep-weekly/--keep-monthly); refusing to remove every increment".into(),
        ));
    }
    let names = backup.repo.increment_names()?;
    let decisions = decide(&names, policy);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let doomed: BTreeSet<&str> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.name.as_str())
        .collect();
    for name in names.iter().filter(|n| doomed.contains(n.as_str())) {
        if dry_run {
            removed.push(name.to_string());
            continue;
        }
        match remove_increment(&backup.repo, name) {
            Ok(()) => removed.push(name.to_string()),
            Err(e) => failed.push((name.to_string(), e.to_string())),
        }
    }
    Ok(PruneReport {
        dry_run,
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

    fn names(v: &[&str]) -> Vec<IncrementName> {
        v.iter().map(|s| IncrementName::parse(s).unwrap()).collect()
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
        let d = decide(
            &n,
            &Policy {
                keep_daily: 2,
                ..Default::default()
            },
        );
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![false, false, false, true, true]);
        let d = decide(
            &n,
            &Policy {
                keep_monthly: 2,
                keep_last: 1,
                ..Default::default()
            },
        );
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![false, false, true, false, true]);
    }
}
