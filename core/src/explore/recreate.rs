//! `recreate`: rebuild increment metadata from the files on disk, for increments whose
//! metadata is missing or unreadable (or every increment with `force`).

use std::collections::HashSet;

use serde::Serialize;

use super::check::hash_file;
use super::{Backup, ExploreError};
use crate::durable::{DirRole, SyncSet};
use crate::format::{CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, MTime, Op};
use crate::identity::IncrementTime;
use crate::relpath::RelPath;
use crate::repo::{IncrementName, WriteLock};

/// What `recreate` did with one increment's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebuildStatus {
    /// Rebuilt from the files on disk and written.
    Rebuilt,
    /// The metadata was readable and `--force` was not given.
    Kept,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rebuilt {
    pub name: IncrementName,
    pub status: RebuildStatus,
    pub files: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Rebuilds metadata of `only` (one increment) or of every increment folder. The op of a
/// tracked file is `changed` when an earlier increment already knew the path, else `new`.
pub fn recreate(
    backup: &Backup,
    only: Option<&IncrementName>,
    force: bool,
    lock: &WriteLock,
) -> Result<Vec<Rebuilt>, ExploreError> {
    recreate_with_progress(backup, only, force, lock, &|_| {})
}

/// [`recreate`], telling `progress` about each increment handled.
pub fn recreate_with_progress(
    backup: &Backup,
    only: Option<&IncrementName>,
    force: bool,
    _lock: &WriteLock,
    progress: crate::progress::WorkSink,
) -> Result<Vec<Rebuilt>, ExploreError> {
    let repo = &backup.repo;
    let names = repo.increment_names()?;
    progress(crate::progress::Work::Start {
        items: names.len() as u64,
        bytes: 0,
    });
    if let Some(o) = only {
        if !names.contains(o) {
            return Err(ExploreError::NoSuchIncrement(o.to_string()));
        }
    }
    let broken: HashSet<&IncrementName> = backup.without_metadata.iter().collect();
    let mut known: HashSet<RelPath> = HashSet::new();
    let mut out = Vec::new();
    for name in &names {
        progress(crate::progress::Work::Item { bytes: 0 });
        let selected = only.is_none_or(|o| o == name);
        let keep = !force && !broken.contains(name);
        if !selected || keep {
            // Earlier increments still tell which paths existed before.
            if let Ok(inc) = backup.increment(name) {
                known.extend(inc.meta.file_catalog.keys().cloned());
            }
            if selected {
                out.push(Rebuilt {
                    name: name.clone(),
                    status: RebuildStatus::Kept,
                    files: backup
                        .increment(name)
                        .ok()
                        .map_or(0, |i| i.meta.file_catalog.len() as u64),
                    error: None,
                });
            }
            continue;
        }
        match rebuild_one(backup, name, &known) {
            Ok(meta) => {
                known.extend(meta.file_catalog.keys().cloned());
                let path = repo.increment_meta_path(name);
                let files = meta.file_catalog.len() as u64;
                // What the metadata describes must be durable before it does (files left by
                // an interrupted run may still be in the page cache, or a FUSE daemon's).
                let sync = SyncSet::new(repo.root());
                let durable = sync
                    .tree(DirRole::Increment, &repo.increment_dir(name))
                    .map_err(|e| format!("sync {}: {e}", repo.increment_dir(name).display()))
                    .and_then(|()| sync.flush().map_err(|e| e.to_string()));
                if let Err(error) = durable {
                    out.push(Rebuilt {
                        name: name.clone(),
                        status: RebuildStatus::Failed,
                        files,
                        error: Some(error),
                    });
                    continue;
                }
                match backup_platform::fs::write_atomic(&path, &meta.to_json()) {
                    Ok(()) => out.push(Rebuilt {
                        name: name.clone(),
                        status: RebuildStatus::Rebuilt,
                        files,
                        error: None,
                    }),
                    Err(e) => out.push(Rebuilt {
                        name: name.clone(),
                        status: RebuildStatus::Failed,
                        files,
                        error: Some(format!("write {}: {e}", path.display())),
                    }),
                }
            }
            Err(e) => out.push(Rebuilt {
                name: name.clone(),
                status: RebuildStatus::Failed,
                files: 0,
                error: Some(e),
            }),
        }
    }
    Ok(out)
}

fn rebuild_one(
    backup: &Backup,
    name: &IncrementName,
    known: &HashSet<RelPath>,
) -> Result<IncrementMeta, String> {
    let repo = &backup.repo;
    let old = backup.increment(name).ok();
    // Keep the recorded time; without one, the name's (the best guess there is).
    let time = IncrementTime::of(old.map(|o| o.meta.timestamp.as_str()), name);
    let mut meta = IncrementMeta::new(name.as_str(), time.at.to_rfc3339());
    if let Some(o) = old {
        meta.extra = o.meta.extra.clone();
    }
    for cat in [Category::Tracked, Category::Deleted] {
        let root = repo.increment_dir(name).join(cat.dir_name());
        if !root.exists() {
            continue;
        }
        // A `track` that is a symlink (damage, or a crafted backup) must not lead outside.
        for entry in walkdir::WalkDir::new(&root)
            .follow_root_links(false)
            .follow_links(false)
            .min_depth(1)
        {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&root)
                .map_err(|e| e.to_string())
                .and_then(|p| RelPath::from_path(p).map_err(|e| e.to_string()))?;
            let md = entry.metadata().map_err(|e| e.to_string())?;
            let is_link = md.file_type().is_symlink();
            let hash = if is_link {
                std::fs::read_link(entry.path())
                    .ok()
                    .map(|t| ContentHash::of(t.as_os_str().as_encoded_bytes()))
            } else {
                hash_file(entry.path()).ok()
            };
            let op = match cat {
                Category::Deleted => Op::Deleted,
                Category::Tracked if known.contains(&rel) => Op::Changed,
                Category::Tracked => Op::New,
            };
            // A deleted/ link keeps the version an earlier increment stored; name the latest
            // earlier one that knew the path, so the fold can show it if that one is pruned.
            let version_of = (cat == Category::Deleted)
                .then(|| {
                    backup
                        .history()
                        .versions(&rel)
                        .into_iter()
                        .rev()
                        .find_map(|v| v.start.clone().filter(|s| s < name))
                })
                .flatten();
            let (mtime, mode) = (MTime::of(&md), backup_platform::fs::mode_bits(&md));
            meta.file_catalog.insert(
                rel,
                CatalogEntry {
                    size: md.len(),
                    mtime,
                    category: cat,
                    op: Some(op),
                    kind: if is_link {
                        FileKind::Symlink
                    } else {
                        FileKind::File
                    },
                    mode,
                    hash,
                    version_of,
                    attrs: Default::default(),
                },
            );
        }
    }
    for e in meta.file_catalog.values() {
        match e.op() {
            Op::New => meta.summary.new += 1,
            Op::Changed => meta.summary.changed += 1,
            Op::Deleted => meta.summary.deleted += 1,
        }
        meta.summary.bytes += e.size;
    }
    meta.extra.remove("summary");
    Ok(meta)
}
