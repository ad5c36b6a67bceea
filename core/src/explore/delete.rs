//! `delete NAME --mask GLOB...`: remove matching files from one increment and its catalog.
//! The metadata is rewritten first, so an interruption leaves only unrecorded files (which
//! `check` reports as extra), never a catalog naming files that are gone.

use serde::Serialize;

use super::mask::Masks;
use super::walk::CatalogWalk;
use super::{Backup, ExploreError};
use crate::durable::{DirRole, SyncSet};
use crate::format::IncrementMeta;
use crate::relpath::RelPath;
use crate::repo::{IncrementName, WriteLock};

#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    pub path: RelPath,
    pub category: crate::format::Category,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeleteReport {
    pub increment: IncrementName,
    pub dry_run: bool,
    pub removed: Vec<Removed>,
    pub failed: Vec<(String, String)>,
}

pub fn delete(
    backup: &Backup,
    name: &IncrementName,
    masks: &Masks,
    // `None`: a dry run, which changes nothing and needs no lock.
    write: Option<&WriteLock>,
) -> Result<DeleteReport, ExploreError> {
    let dry_run = write.is_none();
    if masks.is_empty() {
        return Err(ExploreError::Refused(
            "name at least one --mask of files to delete".into(),
        ));
    }
    let rec = backup.readable(name)?;
    let repo = &backup.repo;
    let mut removed = Vec::new();
    for item in CatalogWalk::of(backup.index(), &rec, None, None)? {
        let (path, e) = item?;
        if masks.is_match(&path) {
            removed.push(Removed {
                path,
                category: e.category,
                size: e.size,
            });
        }
    }
    let mut report = DeleteReport {
        increment: name.clone(),
        dry_run,
        removed,
        failed: Vec::new(),
    };
    let Some(lock) = write else {
        return Ok(report);
    };
    if report.removed.is_empty() {
        return Ok(report);
    }
    // The one increment's metadata, rewritten without the removed entries (what is not a
    // removed entry is kept as written, other keys included).
    let meta_path = repo.increment_meta_path(name);
    let (mut meta, _) = IncrementMeta::load(&meta_path)
        .map_err(|e| ExploreError::Refused(format!("cannot rewrite its metadata: {e}")))?;
    for r in &report.removed {
        meta.file_catalog.remove(&r.path);
    }
    meta.recount();
    backup_platform::fs::write_atomic(&meta_path, &meta.to_json())
        .map_err(|e| ExploreError::io("write", &meta_path, e))?;
    let sync = SyncSet::new(repo.root());
    for r in &report.removed {
        let root = repo.increment_dir(name).join(r.category.dir_name());
        match remove_stored(repo, name, r.category, &r.path) {
            Ok(()) => {
                // The folders that lost an entry (and the ones that went with it).
                let mut cur = Some(r.path.clone());
                while let Some(p) = cur {
                    sync.entry_changed(DirRole::Increment, &p.under(&root));
                    cur = p.parent();
                }
            }
            Err(e) => report.failed.push((r.path.encode(), e)),
        }
    }
    // Reported as removed only once the removals are durable.
    if let Err(e) = sync.flush() {
        report.failed.push((name.to_string(), e.to_string()));
    }
    backup.sync(lock)?;
    Ok(report)
}

/// Removes `<increment>/<category>/<rel>` and the folders it leaves empty, through handles
/// that never follow a symlink: a stored folder swapped for a symlink to elsewhere makes the
/// removal fail, never removes a file outside the backup.
fn remove_stored(
    repo: &crate::repo::Repository,
    name: &IncrementName,
    category: crate::format::Category,
    rel: &RelPath,
) -> Result<(), String> {
    let Some(root) = super::check::open_below(repo, &[name.as_str(), category.dir_name()])? else {
        return Ok(());
    };
    let parent = match rel.parent() {
        Some(p) => match root.open_dir_beneath(&p.to_path_buf()) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        },
        None => root.try_clone().map_err(|e| e.to_string())?,
    };
    match parent.unlink(&rel.file_name_os()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    // Emptied folders, deepest first; rmdir fails on a non-empty folder, which ends the climb.
    let mut cur = rel.parent();
    while let Some(d) = cur {
        let up = match d.parent() {
            Some(pp) => root.open_dir_beneath(&pp.to_path_buf()),
            None => root.try_clone(),
        };
        match up {
            Ok(h) if h.rmdir(&d.file_name_os()).is_ok() => cur = d.parent(),
            _ => break,
        }
    }
    Ok(())
}
