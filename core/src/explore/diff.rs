//! `diff A B`: what was added, changed or deleted between two points (increments or the
//! mirror). Against an increment, the mirror counts with its tracked files only, since
//! untracked files have no history to compare with.

use std::collections::BTreeMap;

use serde::Serialize;

use super::point::Point;
use super::Backup;
use crate::format::{ContentHash, MTime};
use crate::relpath::RelPath;

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    size: u64,
    mtime: MTime,
    hash: Option<ContentHash>,
}

fn state(backup: &Backup, p: &Point, tracked_only: bool) -> BTreeMap<RelPath, State> {
    match p {
        Point::Mirror => backup
            .mirror
            .files
            .iter()
            .filter(|(_, e)| !tracked_only || e.tracked)
            .map(|(p, e)| {
                (
                    p.clone(),
                    State {
                        size: e.size,
                        mtime: e.mtime,
                        hash: e.hash,
                    },
                )
            })
            .collect(),
        Point::Increment(n) => backup
            .history()
            .snapshot(n)
            .into_iter()
            .map(|(p, v)| {
                (
                    p,
                    State {
                        size: v.size,
                        mtime: v.mtime,
                        hash: v.hash,
                    },
                )
            })
            .collect(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub path: RelPath,
    /// `added`, `changed` or `deleted`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
}

pub fn diff(backup: &Backup, a: &Point, b: &Point) -> DiffReport {
    let tracked_only = matches!(a, Point::Increment(_)) || matches!(b, Point::Increment(_));
    let (sa, sb) = (
        state(backup, a, tracked_only),
        state(backup, b, tracked_only),
    );
    let mut changes = Vec::new();
    for (p, x) in &sa {
        match sb.get(p) {
            None => changes.push(Change {
                path: p.clone(),
                change: "deleted",
                size_before: Some(x.size),
                size_after: None,
            }),
            Some(y) => {
                let differs = match (x.hash, y.hash) {
                    (Some(h1), Some(h2)) => h1 != h2,
                    _ => x.size != y.size || x.mtime != y.mtime,
                };
                if differs {
                    changes.push(Change {
                        path: p.clone(),
                        change: "changed",
                        size_before: Some(x.size),
                        size_after: Some(y.size),
                    });
                }
            }
        }
    }
    for (p, y) in &sb {
        if !sa.contains_key(p) {
            changes.push(Change {
                path: p.clone(),
                change: "added",
                size_before: None,
                size_after: Some(y.size),
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    DiffReport {
        from: a.label(),
        to: b.label(),
        changes,
    }
}
