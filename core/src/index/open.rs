//! Opening the index of a backup for a command: created when missing, filled from an old
//! `mirror.json` or from `mirror/` when its mirror table is empty, and its catalog brought in
//! step with the increment folders. Every command, reader or writer, goes through here, so a
//! deleted index is rebuilt by whichever runs first, and increments added or removed by hand
//! are noticed by all.

use serde::Serialize;

use super::{Index, IndexError, Reconciled, Result, SyncReport, Touched};
use crate::format::FormatProblem;
use crate::repo::{Repository, WriteLock};

/// Something the command should say once about the index it opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "kebab-case")]
pub enum IndexNote {
    /// There was no index: it was created (and filled from the backup).
    Created,
    /// The mirror's state was imported from `mirror.json` (a backup made by the original
    /// tool or an earlier version).
    Imported { entries: u64 },
    /// The mirror's state was rebuilt from `mirror/` and the catalogs (nothing stored again).
    Rebuilt { reconciled: Reconciled },
    /// Increments changed at `dist` since the index last saw them (added, copied or renamed in
    /// by hand, removed, or rewritten).
    CatalogChanged { sync: SyncReport },
    /// The index could not be brought up to date (a backup holds it, or the drive is
    /// read-only): what it shows may lag behind.
    Stale { reason: String },
    /// `dist` cannot be written: the index was built in a temporary file for this command.
    Temporary { path: String },
    /// A running backup holds the index where no reader can enter it.
    Busy { error: String },
    /// Entries of `mirror.json` that could not be used.
    Skipped { problems: Vec<FormatProblem> },
    /// The index file could not be read as an index: it was set aside (`kept`) and rebuilt.
    Damaged { error: String, kept: String },
}

impl std::fmt::Display for IndexNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexNote::Created => write!(f, "the index was missing; it was rebuilt from the backup"),
            IndexNote::Imported { entries } => {
                write!(f, "imported the mirror's state ({entries} entries) from mirror.json")
            }
            IndexNote::Rebuilt { reconciled: r } => write!(
                f,
                "rebuilt the mirror's state from mirror/ ({} entries, {} recognised as stored versions; nothing stored again)",
                r.described + r.kept,
                r.recognised
            ),
            IndexNote::CatalogChanged { sync } => {
                let list = |v: &[crate::IncrementName]| {
                    v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                };
                let mut parts = Vec::new();
                if !sync.added.is_empty() {
                    parts.push(format!("new: {}", list(&sync.added)));
                }
                if !sync.removed.is_empty() {
                    parts.push(format!("gone: {}", list(&sync.removed)));
                }
                if !sync.reread.is_empty() {
                    parts.push(format!("rewritten: {}", list(&sync.reread)));
                }
                write!(f, "increments changed since the index last saw them ({})", parts.join("; "))
            }
            IndexNote::Stale { reason } => write!(f, "the index may lag behind the backup: {reason}"),
            IndexNote::Busy { error } => write!(
                f,
                "the index is held by a running backup ({error}); reading the backup itself"
            ),
            IndexNote::Temporary { path } => write!(
                f,
                "the backup cannot be written; its index was built in the temporary file {path}"
            ),
            IndexNote::Damaged { error, kept } => write!(
                f,
                "the index was damaged ({error}); it was set aside as {kept} and rebuilt from the backup"
            ),
            IndexNote::Skipped { problems } => {
                write!(f, "{} entries of mirror.json could not be used", problems.len())
            }
        }
    }
}

/// An index opened for one command, with what it is worth saying about it.
pub struct Opened {
    pub index: Index,
    pub notes: Vec<IndexNote>,
    /// Keeps a temporary index file alive for the command.
    _temp: Option<tempfile::TempDir>,
}

impl Index {
    /// Opens the index of `repo` for a command. With `lock` (a writer), the mirror table is
    /// always made complete; without, that is done only when no writer holds the backup.
    /// The catalog is synced in every case it can be.
    pub fn open_for(repo: &Repository, lock: Option<&WriteLock>) -> Result<Opened> {
        let path = repo.index_path();
        let existed = path.exists();
        let mut notes = Vec::new();
        // An index that is not a plain file (a symlink planted in the backup, a folder) is
        // treated as damaged: set aside, never followed or copied.
        let planted = std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file());
        let opened = match planted {
            true => Err(IndexError::Corrupt {
                path: path.display().to_string(),
                message: "is not a plain file (a symlink or a folder); it is not followed".into(),
            }),
            false => open_waiting(repo, lock.is_none()),
        };
        let (index, temp) = match opened {
            Ok(i) => (i, None),
            Err(e) if is_damaged(&e) && (lock.is_some() || !repo.writer_running()) => {
                // A damaged index (a failing disk, a file truncated or edited by hand) is
                // derived data: set it aside for whoever wants to look, and build it anew.
                let aside = repo.root().join(format!(
                    "{}.damaged-{}",
                    crate::repo::INDEX_FILE,
                    chrono::Local::now().format("%Y%m%d%H%M%S")
                ));
                std::fs::rename(&path, &aside).map_err(|source| IndexError::Io {
                    op: "set aside",
                    path: path.display().to_string(),
                    source,
                })?;
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(
                        repo.root()
                            .join(format!("{}{ext}", crate::repo::INDEX_FILE)),
                    );
                }
                notes.push(IndexNote::Damaged {
                    error: e.to_string(),
                    kept: aside.display().to_string(),
                });
                (Index::open(repo)?, None)
            }
            Err(e) if lock.is_none() && is_busy(&e) && !is_read_only(&e) => {
                // A writer holds the index in a state no reader can enter (stopped while it
                // opened the index, say): read the backup itself, through a temporary index.
                let dir = tempfile::tempdir().map_err(|source| IndexError::Io {
                    op: "create a temporary folder for",
                    path: path.display().to_string(),
                    source,
                })?;
                let tpath = dir.path().join("index.sqlite");
                notes.push(IndexNote::Busy {
                    error: e.to_string(),
                });
                notes.push(IndexNote::Temporary {
                    path: tpath.display().to_string(),
                });
                (Index::open_at(&tpath, false)?, Some(dir))
            }
            Err(e) if lock.is_none() && is_read_only(&e) => {
                // A read-only drive: build the index where we may, from the same sources.
                let dir = tempfile::tempdir().map_err(|source| IndexError::Io {
                    op: "create a temporary folder for",
                    path: path.display().to_string(),
                    source,
                })?;
                let tpath = dir.path().join("index.sqlite");
                if existed {
                    std::fs::copy(&path, &tpath).map_err(|source| IndexError::Io {
                        op: "copy",
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                notes.push(IndexNote::Temporary {
                    path: tpath.display().to_string(),
                });
                (Index::open_at(&tpath, false)?, Some(dir))
            }
            Err(e) => return Err(e),
        };
        // Only a backup that already held something lost an index (a new one just gets one).
        // (A run makes `mirror/` with `dist`: an empty one holds nothing to lose.)
        let had_backup = std::fs::read_dir(repo.mirror_dir()).is_ok_and(|mut d| d.next().is_some())
            || repo.mirror_index_path().exists()
            || repo.increment_names().is_ok_and(|n| !n.is_empty());
        if !existed && temp.is_none() && had_backup {
            notes.push(IndexNote::Created);
        }
        // A reader does not wait for a writer's whole run to sync: it shows what is committed.
        if lock.is_none() {
            index.set_busy_timeout(std::time::Duration::from_millis(250))?;
        }
        let synced = index.sync_catalog(repo, lock);
        index.set_busy_timeout(std::time::Duration::from_secs(30))?;
        match synced {
            Ok(sync) if !sync.is_empty() && existed => {
                notes.push(IndexNote::CatalogChanged { sync })
            }
            Ok(_) => {}
            Err(e) if lock.is_none() && is_busy(&e) => notes.push(IndexNote::Stale {
                reason: "a backup is writing it; increments it has not recorded yet are not shown"
                    .into(),
            }),
            Err(e) => return Err(e),
        }
        // The mirror table is empty only in a new index (or a new backup): fill it, once the
        // catalog is known, so files of the mirror are recognised as the versions they are.
        // A `mirror.json` written after the last import (the original tool ran on this backup
        // again) is imported again: it describes the mirror as that run left it.
        let json = json_stat(repo);
        let json_changed = json.is_some() && index.setting(MIRROR_JSON_IMPORTED)? != json;
        let empty = index.mirror_is_empty()?;
        if (empty && (json.is_some() || repo.mirror_dir().is_dir())) || json_changed {
            let own_lock;
            let held = match lock {
                Some(l) => Some(l),
                None => match repo.lock_for_writing() {
                    Ok(l) => {
                        own_lock = l;
                        Some(&own_lock)
                    }
                    Err(_) => None,
                },
            };
            // Nothing can write to a drive whose index had to go to a temporary file.
            match held.is_some() || temp.is_some() {
                true => notes.extend(index.fill_mirror(repo)?),
                false => notes.push(IndexNote::Stale {
                    reason: "a backup is running; the mirror's state is filled in by it".into(),
                }),
            }
        }
        Ok(Opened {
            index,
            notes,
            _temp: temp,
        })
    }

    /// Fills an empty mirror table: from `mirror.json` when there is one (an old backup),
    /// else from `mirror/` itself.
    /// Fills this index's mirror table from the backup (an old `mirror.json`, else the
    /// mirror folder), for an index built outside `dist` (a dry run, a read-only drive).
    pub fn fill_mirror_from(&self, repo: &Repository) -> Result<Vec<IndexNote>> {
        self.fill_mirror(repo)
    }

    fn fill_mirror(&self, repo: &Repository) -> Result<Vec<IndexNote>> {
        let mut notes = Vec::new();
        self.begin()?;
        let result = (|| -> Result<()> {
            let mut touched = Touched::default();
            touched.everything();
            let json = repo.mirror_index_path();
            if json.exists() {
                let mut problems = Vec::new();
                match self.import_mirror_json(&json, &mut problems) {
                    Ok(entries) => {
                        if let Some(stat) = json_stat(repo) {
                            self.set_setting(MIRROR_JSON_IMPORTED, &stat)?;
                        }
                        notes.push(IndexNote::Imported { entries });
                        if !problems.is_empty() {
                            notes.push(IndexNote::Skipped { problems });
                        }
                        // The old index may lag behind the folder (an interrupted run of the
                        // old tool): make the rows true to the disk, cheaply where they are.
                        self.reconcile_mirror(repo, &mut touched, false)?;
                    }
                    Err(IndexError::Format(_)) => {
                        // A damaged mirror.json: rebuild from the folder instead.
                        self.mirror_clear()?;
                        let r = self.reconcile_mirror(repo, &mut touched, false)?;
                        notes.push(IndexNote::Rebuilt { reconciled: r });
                    }
                    Err(e) => return Err(e),
                }
            } else {
                let r = self.reconcile_mirror(repo, &mut touched, false)?;
                // An empty mirror (a backup of nothing yet) has nothing to rebuild or tell.
                if r.described + r.kept > 0 {
                    notes.push(IndexNote::Rebuilt { reconciled: r });
                }
            }
            self.settle(&mut touched)
        })();
        match result {
            Ok(()) => {
                self.commit()?;
                Ok(notes)
            }
            Err(e) => {
                let _ = self.rollback();
                self.forget_dirs();
                Err(e)
            }
        }
    }
}

/// The setting that remembers which `mirror.json` (size and mtime) was imported last.
const MIRROR_JSON_IMPORTED: &str = "mirror_json_imported";

impl Index {
    /// Records that `mirror.json` was just written from this index (`export-mirror-json`), so
    /// the next open does not import it back as if the original tool had run.
    pub fn mark_mirror_json_current(&self, repo: &Repository) -> Result<()> {
        match json_stat(repo) {
            Some(stat) => self.set_setting(MIRROR_JSON_IMPORTED, &stat),
            None => Ok(()),
        }
    }
}

fn json_stat(repo: &Repository) -> Option<String> {
    let m = std::fs::metadata(repo.mirror_index_path()).ok()?;
    Some(format!("{} {}", m.len(), crate::format::MTime::of(&m).ns))
}

fn sqlite_code(e: &IndexError) -> Option<rusqlite::ErrorCode> {
    match e {
        IndexError::Sql { source, .. } => source.sqlite_error_code(),
        _ => None,
    }
}

/// The file is not a readable SQLite database of ours (truncated, overwritten).
fn is_damaged(e: &IndexError) -> bool {
    matches!(
        sqlite_code(e),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    ) || matches!(e, IndexError::Foreign { .. } | IndexError::Corrupt { .. })
}

fn is_read_only(e: &IndexError) -> bool {
    matches!(
        sqlite_code(e),
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen)
    )
}

fn is_busy(e: &IndexError) -> bool {
    matches!(
        sqlite_code(e),
        Some(rusqlite::ErrorCode::DatabaseBusy)
            | Some(rusqlite::ErrorCode::DatabaseLocked)
            // A reader that found the WAL index changing under it too many times in a row.
            | Some(rusqlite::ErrorCode::FileLockingProtocolFailed)
    ) || is_read_only(e)
}

/// Opens the index; a reader that finds it busy (a writer in the middle of opening or
/// recovering it) tries again for a few seconds before giving up.
fn open_waiting(repo: &Repository, reader: bool) -> Result<Index> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match Index::open(repo) {
            Err(e)
                if reader
                    && is_busy(&e)
                    && !is_read_only(&e)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}
