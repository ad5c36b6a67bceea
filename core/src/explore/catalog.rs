//! The catalog: what each increment holds (`list`, `show`), from metadata alone, plus the
//! bytes an increment holds that nothing else shares (needs one `lstat` per stored file).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{Backup, ExploreError};
use crate::format::{Category, Op};
use crate::history::IncrementInfo;
use crate::identity::TimeSource;
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

#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub increments: Vec<IncrementRow>,
    /// Increment folders whose metadata is missing or unreadable (run `check`/`recreate`).
    pub without_metadata: Vec<String>,
    pub mirror: MirrorRow,
}

pub fn row(repo: &Repository, inc: &IncrementInfo, exclusive: bool) -> IncrementRow {
    let (mut new, mut changed, mut deleted, mut bytes) = (0, 0, 0, 0);
    for e in inc.meta.file_catalog.values() {
        match e.op() {
            Op::New => new += 1,
            Op::Changed => changed += 1,
            Op::Deleted => deleted += 1,
        }
        // Sizes come from metadata a user (or damage) may have changed: never overflow.
        bytes = u64::saturating_add(bytes, e.size);
    }
    IncrementRow {
        name: inc.name.clone(),
        time: inc.time.at.to_rfc3339(),
        time_source: inc.time.source,
        timestamp: inc.meta.timestamp.clone(),
        files: inc.meta.file_catalog.len() as u64,
        new,
        changed,
        deleted,
        bytes,
        exclusive_bytes: exclusive.then(|| exclusive_bytes(repo, &inc.name)),
    }
}

pub fn list(backup: &Backup, detailed: bool) -> Listing {
    let increments = backup
        .increments
        .iter()
        .map(|i| row(&backup.repo, i, detailed))
        .collect();
    let m = &backup.mirror;
    Listing {
        increments,
        without_metadata: backup
            .without_metadata
            .iter()
            .map(|n| n.to_string())
            .collect(),
        mirror: MirrorRow {
            files: m.files.len() as u64,
            tracked: m.files.values().filter(|e| e.tracked).count() as u64,
            bytes: m.files.values().map(|e| e.size).sum(),
            updated: m.updated.clone(),
        },
    }
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

/// `show NAME`: one increment's row and its catalog.
pub fn show<'a>(
    backup: &'a Backup,
    name: &IncrementName,
) -> Result<(IncrementRow, &'a IncrementInfo), ExploreError> {
    let inc = backup.increment(name)?;
    Ok((row(&backup.repo, inc, true), inc))
}
