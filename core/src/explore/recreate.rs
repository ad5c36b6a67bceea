//! `recreate`: rebuild increment metadata from the files on disk, for increments whose
//! metadata is missing or unreadable (or every increment with `force`).

use std::collections::HashSet;

use serde::Serialize;

use super::check::hash_file;
use super::{Backup, ExploreError};
use crate::durable::{DirRole, SyncSet};
use crate::format::{CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, MTime, Op};
use crate::relpath::RelPath;
use crate::repo::IncrementName;

#[derive(Clone, Debug, Serialize)]
pub struct Rebuilt {
    pub name: String,
    /// `rebuilt`, `kept` (metadata fine and no force) or `failed`.
    pub status: &'static str,
    pub files: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Rebuilds metadata of `only` (one increment) or of every increment folder. The op of a
/// tracked file is `changed` when an earlier increment already knew the path, else `new`.
pub fn recreate(
    backup: &Backup,
    only: Option<&str>,
    force: bool,
) -> Result<Vec<Rebuilt>, ExploreError> {
    let repo = &backup.repo;
    let names = repo.increment_names()?;
    if let Some(o) = only {
        if !names.iter().any(|n| n.as_str() == o) {
            return Err(ExploreError::NoSuchIncrement(o.to_owned()));
        }
    }
    let broken: HashSet<&IncrementName> = backup.without_metadata.iter().collect();
    let mut known: HashSet<RelPath> = HashSet::new();
    let mut out = Vec::new();
    for name in &names {
        let selected = only.is_none_or(|o| o == name.as_str());
        let keep = !force && !broken.contains(name);
        if !selected || keep {
            // Earlier increments still tell which paths existed before.
            if let Ok(inc) = backup.increment(name.as_str()) {
                known.extend(inc.meta.file_catalog.keys().cloned());
            }
            if selected {
                out.push(Rebuilt {
                    name: name.to_string(),
                    status: "kept",
                    files: backup
                        .increment(name.as_str())
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
                        name: name.to_string(),
                        status: "failed",
                        files,
                        error: Some(error),
                    });
                    continue;
                }
                match backup_platform::fs::write_atomic(&path, &meta.to_json()) {
                    Ok(()) => out.push(Rebuilt {
                        name: name.to_string(),
                        status: "rebuilt",
                        files,
                        error: None,
                    }),
                    Err(e) => out.push(Rebuilt {
                        name: name.to_string(),
                        status: "failed",
                        files,
                        error: Some(format!("write {}: {e}", path.display())),
                    }),
                }
            }
            Err(e) => out.push(Rebuilt {
                name: name.to_string(),
                status: "failed",
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
    let old = backup.increment(name.as_str()).ok();
    let mut meta = IncrementMeta::new(name.as_str(), name.time().to_rfc3339());
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
                        .find(|v| v.start.as_str() < name.as_str() && !v.start.is_empty())
                        .map(|v| v.start.clone())
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
