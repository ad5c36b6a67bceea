//! `delete NAME --mask GLOB...`: remove matching files from one increment and its catalog.
//! The metadata is rewritten first, so an interruption leaves only unrecorded files (which
//! `check` reports as extra), never a catalog naming files that are gone.

use serde::Serialize;

use super::mask::Masks;
use super::{Backup, ExploreError};
use crate::durable::{DirRole, SyncSet};
use crate::format::Op;
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
    let inc = backup.increment(name)?;
    let repo = &backup.repo;
    let mut meta = inc.meta.clone();
    let removed: Vec<Removed> = inc
        .meta
        .file_catalog
        .iter()
        .filter(|(p, _)| masks.is_match(p))
        .map(|(p, e)| Removed {
            path: p.clone(),
            category: e.category,
            size: e.size,
        })
        .collect();
    let mut report = DeleteReport {
        increment: name.clone(),
        dry_run,
        removed,
        failed: Vec::new(),
    };
    if dry_run || report.removed.is_empty() {
        return Ok(report);
    }
    for r in &report.removed {
        meta.file_catalog.remove(&r.path);
    }
    meta.summary = Default::default();
    for e in meta.file_catalog.values() {
        match e.op() {
            Op::New => meta.summary.new += 1,
            Op::Changed => meta.summary.changed += 1,
            Op::Deleted => meta.summary.deleted += 1,
        }
        meta.summary.bytes = meta.summary.bytes.saturating_add(e.size);
    }
    let meta_path = repo.increment_meta_path(&inc.name);
    backup_platform::fs::write_atomic(&meta_path, &meta.to_json())
        .map_err(|e| ExploreError::io("write", &meta_path, e))?;
    let sync = SyncSet::new(repo.root());
    for r in &report.removed {
        let root = repo.increment_dir(&inc.name).join(r.category.dir_name());
        let path = r.path.under(&root);
        // remove_file never follows a symlink: it removes the link itself.
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync.entry_changed(DirRole::Increment, &path);
                prune_empty_parents(&root, &r.path, &sync);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report
                .failed
                .push((r.path.encode(), format!("remove {}: {e}", path.display()))),
        }
    }
    // Reported as removed only once the removals are durable.
    if let Err(e) = sync.flush() {
        report.failed.push((inc.name.to_string(), e.to_string()));
    }
    Ok(report)
}

fn prune_empty_parents(root: &std::path::Path, rel: &RelPath, sync: &SyncSet) {
    let mut cur = rel.parent();
    while let Some(p) = cur {
        // remove_dir fails on a non-empty folder, which ends the climb.
        let dir = p.under(root);
        if std::fs::remove_dir(&dir).is_err() {
            break;
        }
        sync.entry_changed(DirRole::Increment, &dir);
        cur = p.parent();
    }
}
