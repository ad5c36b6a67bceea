//! `diff A B`: what was added, changed or deleted between two points (increments or the
//! mirror). Against an increment, the mirror counts with its tracked files only, since
//! untracked files have no history to compare with.
//!
//! Both sides are streamed in path order ([`RelPath`]'s order, which snapshot walks and the
//! mirror's keys share) and merged: memory is one folder listing per level, plus the changes.

use std::iter::Peekable;

use serde::Serialize;

use super::point::Point;
use super::walk::{MirrorWalk, SnapItem, SnapshotWalk};
use super::{Backup, ExploreError};
use crate::format::{ContentHash, FileKind, MTime};
use crate::relpath::RelPath;

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    size: u64,
    mtime: MTime,
    hash: Option<ContentHash>,
}

type Entries<'a> = Box<dyn Iterator<Item = Result<(RelPath, State), ExploreError>> + 'a>;

/// The files at `p`, in path order.
fn state<'a>(backup: &'a Backup, p: &Point, tracked_only: bool) -> Entries<'a> {
    match p {
        Point::Mirror => Box::new(MirrorWalk::new(backup.index(), None).filter_map(
            move |r| match r {
                Err(e) => Some(Err(e.into())),
                Ok((_, e)) if e.kind == FileKind::Dir || (tracked_only && !e.tracked) => None,
                Ok((p, e)) => Some(Ok((
                    p,
                    State {
                        size: e.size,
                        mtime: e.mtime,
                        hash: e.hash,
                    },
                ))),
            },
        )),
        Point::Increment(n) => Box::new(SnapshotWalk::new(backup.index(), n, None).filter_map(
            |r| match r {
                Err(e) => Some(Err(e.into())),
                Ok(SnapItem::Dir(_)) => None,
                Ok(SnapItem::File(v)) => Some(Ok((
                    v.path.clone(),
                    State {
                        size: v.size,
                        mtime: v.mtime,
                        hash: v.hash,
                    },
                ))),
            },
        )),
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

pub fn diff(backup: &Backup, a: &Point, b: &Point) -> Result<DiffReport, ExploreError> {
    let tracked_only = matches!(a, Point::Increment(_)) || matches!(b, Point::Increment(_));
    let mut sa: Peekable<Entries<'_>> = state(backup, a, tracked_only).peekable();
    let mut sb: Peekable<Entries<'_>> = state(backup, b, tracked_only).peekable();
    let mut changes = Vec::new();
    loop {
        let order = match (sa.peek(), sb.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(next_err(&mut sa)),
            (_, Some(Err(_))) => return Err(next_err(&mut sb)),
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(Ok(_))) => std::cmp::Ordering::Greater,
            (Some(Ok((pa, _))), Some(Ok((pb, _)))) => pa.cmp(pb),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(Ok((p, x))) = sa.next() {
                    changes.push(Change {
                        path: p,
                        change: "deleted",
                        size_before: Some(x.size),
                        size_after: None,
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(Ok((p, y))) = sb.next() {
                    changes.push(Change {
                        path: p,
                        change: "added",
                        size_before: None,
                        size_after: Some(y.size),
                    });
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(Ok((p, x))), Some(Ok((_, y)))) = (sa.next(), sb.next()) {
                    let differs = match (x.hash, y.hash) {
                        (Some(h1), Some(h2)) => h1 != h2,
                        _ => x.size != y.size || x.mtime != y.mtime,
                    };
                    if differs {
                        changes.push(Change {
                            path: p,
                            change: "changed",
                            size_before: Some(x.size),
                            size_after: Some(y.size),
                        });
                    }
                }
            }
        }
    }
    Ok(DiffReport {
        from: a.label(),
        to: b.label(),
        changes,
    })
}

fn next_err(it: &mut Peekable<Entries<'_>>) -> ExploreError {
    match it.next() {
        Some(Err(e)) => e,
        _ => ExploreError::Refused("diff: walk ended unexpectedly".into()),
    }
}
