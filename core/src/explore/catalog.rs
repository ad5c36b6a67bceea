//! The catalog: what each increment holds (`list`, `show`), from the index alone (counts are
//! in its `increments` rows; `list` reads no catalog row), plus the bytes an increment holds
//! that nothing else shares (one `lstat` per stored file of that increment).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{Backup, ExploreError};
use crate::format::Category;
use crate::identity::TimeSource;
use crate::index::{IncrementRecord, IncrementState};
use crate::repo::{IncrementName, Repository};

/// One row of `list`.
#[derive(Clone, Debug, Serialize)]
pub struct IncrementRow {
    pub name: IncrementName,
    /// The increment's time (RFC 3339 with the UTC offset it was recorded in).
    pub time: String,
    /// Where that time came from: the metadata's `timestamp`, or the name as a fallback.
    pub time_source: TimeSource,
    /// The `timestamp` its metadata records (free-form for original-tool metadata).
    pub timestamp: String,
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Sum of the recorded sizes of the versions it stores.
    pub bytes: u64,
    /// Bytes of files no other increment nor the mirror links to (what pruning it frees);
    /// computed only when asked for, since it needs the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_bytes: Option<u64>,
}

/// The mirror's line in `list`.
#[derive(Clone, Debug, Serialize)]
pub struct MirrorRow {
    pub files: u64,
    pub tracked: u64,
    pub bytes: u64,
    pub updated: Option<String>,
}

/// An increment folder whose metadata cannot be used.
#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    pub name: IncrementName,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// Increments with usable metadata, oldest first.
    pub increments: Vec<IncrementRow>,
    /// Increment folders whose metadata is missing or unreadable (run `check`/`recreate`).
    pub without_metadata: Vec<String>,
    /// The same, with why, in increment order.
    #[serde(skip)]
    pub unreadable: Vec<Unreadable>,
    /// Every increment folder in order: `Ok(row)` or why it cannot be read.
    #[serde(skip)]
    pub all: Vec<Result<IncrementRow, Unreadable>>,
    pub mirror: MirrorRow,
}

pub fn row(repo: &Repository, rec: &IncrementRecord, exclusive: bool) -> IncrementRow {
    IncrementRow {
        name: rec.name.clone(),
        time: rec.time.at.to_rfc3339(),
        time_source: rec.time.source,
        timestamp: rec.timestamp.clone().unwrap_or_default(),
        files: rec.files,
        new: rec.new,
        changed: rec.changed,
        deleted: rec.deleted,
        bytes: rec.bytes,
        exclusive_bytes: exclusive.then(|| exclusive_bytes(repo, &rec.name)),
    }
}

pub fn list(backup: &Backup, detailed: bool) -> Result<Listing, ExploreError> {
    let mut increments = Vec::new();
    let mut unreadable = Vec::new();
    let mut all = Vec::new();
    for rec in backup.increments()? {
        if rec.state == IncrementState::Ok {
            let r = row(&backup.repo, &rec, detailed);
            increments.push(r.clone());
            all.push(Ok(r));
        } else {
            let u = Unreadable {
                reason: super::damage_reason(&rec),
                name: rec.name,
            };
            unreadable.push(u.clone());
            all.push(Err(u));
        }
    }
    let t = backup.index().mirror_totals()?;
    Ok(Listing {
        increments,
        without_metadata: unreadable.iter().map(|u| u.name.to_string()).collect(),
        unreadable,
        all,
        mirror: MirrorRow {
            files: t.files,
            tracked: t.tracked,
            bytes: t.bytes,
            updated: backup.index().mirror_updated()?,
        },
    })
}

/// Bytes of the files under the increment that no link outside it shares: a file whose link
/// count equals the number of its links inside this increment. On a `dist` that cannot
/// hard-link (copies instead of links) every file counts, which is also what pruning frees.
pub fn exclusive_bytes(repo: &Repository, name: &IncrementName) -> u64 {
    let dir = repo.increment_dir(name);
    let mut total = 0u64;
    // (dev, ino) -> (links seen here, link count, size)
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut seen: HashMap<(u64, u64), (u64, u64, u64)> = HashMap::new();
    for cat in [Category::Tracked, Category::Deleted] {
        walk_files(&dir.join(cat.dir_name()), &mut |md| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                if md.nlink() <= 1 {
                    total += md.len();
                } else {
                    let e = seen
                        .entry((md.dev(), md.ino()))
                        .or_insert((0, md.nlink(), md.len()));
                    e.0 += 1;
                }
            }
            #[cfg(not(unix))]
            {
                total += md.len();
            }
        });
    }
    total
        + seen
            .values()
            .filter(|(here, links, _)| here >= links)
            .map(|(_, _, size)| size)
            .sum::<u64>()
}

/// Calls `f` with the lstat metadata of every non-folder below `root`, never following links.
fn walk_files(root: &Path, f: &mut dyn FnMut(&std::fs::Metadata)) {
    for entry in walkdir::WalkDir::new(root)
        .follow_root_links(false)
        .follow_links(false)
        .into_iter()
    {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() {
            continue;
        }
        if let Ok(md) = entry.metadata() {
            f(&md);
        }
    }
}

/// `show NAME`: one increment's row (its catalog is walked with
/// [`super::walk::CatalogWalk`]). An increment whose metadata cannot be used is refused.
pub fn show(
    backup: &Backup,
    name: &IncrementName,
) -> Result<(IncrementRow, IncrementRecord), ExploreError> {
    let rec = backup.readable(name)?;
    Ok((row(&backup.repo, &rec, true), rec))
}
