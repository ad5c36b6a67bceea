//! `recreate`: rebuild increment metadata from the files on disk, for increments whose
//! metadata is missing or unreadable (or every increment with `force`).
//!
//! [`rebuild_increment_meta`] is the one function that turns an increment's `track/` and
//! `deleted/` back into its catalog: `recreate` uses it, and so does the recovery of a run
//! interrupted before it wrote its metadata.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;

use backup_platform::dir::EntryKind;
use backup_platform::sandbox::SafeDir;
use serde::Serialize;

use super::check::hash_reader;
use super::{Backup, ExploreError};
use crate::durable::{DirRole, SyncSet};
use crate::format::{
    CatalogEntry, CatalogSink, Category, ContentHash, FileKind, FolderEntry, FormatProblem,
    IncrementMeta, MTime, Op,
};
use crate::identity::IncrementTime;
use crate::index::{IncrementState, Index};
use crate::relpath::RelPath;
use crate::repo::{IncrementName, Repository, WriteLock};

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

/// Rebuilds metadata of `only` (one increment) or of every increment folder.
pub fn recreate(
    backup: &Backup,
    only: Option<&IncrementName>,
    force: bool,
    lock: &WriteLock,
) -> Result<Vec<Rebuilt>, ExploreError> {
    recreate_with_progress(backup, only, force, lock, &|_| {})
}

/// [`recreate`], telling `progress` about each increment handled. After each metadata file
/// written, the index reads it (so the next increment's `op`s see it, and the index is current
/// when the command exits).
pub fn recreate_with_progress(
    backup: &Backup,
    only: Option<&IncrementName>,
    force: bool,
    lock: &WriteLock,
    progress: crate::progress::WorkSink,
) -> Result<Vec<Rebuilt>, ExploreError> {
    let repo = &backup.repo;
    let incs = backup.increments()?;
    progress(crate::progress::Work::Start {
        items: incs.len() as u64,
        bytes: 0,
    });
    if let Some(o) = only {
        if !incs.iter().any(|i| &i.name == o) {
            return Err(ExploreError::NoSuchIncrement(o.to_string()));
        }
    }
    let mut out = Vec::new();
    for rec in &incs {
        progress(crate::progress::Work::Item { bytes: 0 });
        let name = &rec.name;
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if !force && rec.state == IncrementState::Ok {
            out.push(Rebuilt {
                name: name.clone(),
                status: RebuildStatus::Kept,
                files: rec.files,
                error: None,
            });
            continue;
        }
        let failed = |files, error| Rebuilt {
            name: name.clone(),
            status: RebuildStatus::Failed,
            files,
            error: Some(error),
        };
        let meta = match rebuild_increment_meta(repo, backup.index(), name) {
            Ok(m) => m,
            Err(e) => {
                out.push(failed(0, e.to_string()));
                continue;
            }
        };
        let path = repo.increment_meta_path(name);
        let files = meta.file_catalog.len() as u64;
        // What the metadata describes must be durable before it does (files left by an
        // interrupted run may still be in the page cache, or a FUSE daemon's).
        let sync = SyncSet::new(repo.root());
        let durable = sync
            .tree(DirRole::Increment, &repo.increment_dir(name))
            .map_err(|e| format!("sync {}: {e}", repo.increment_dir(name).display()))
            .and_then(|()| sync.flush().map_err(|e| e.to_string()));
        if let Err(error) = durable {
            out.push(failed(files, error));
            continue;
        }
        if let Err(e) = backup_platform::fs::write_atomic(&path, &meta.to_json()) {
            out.push(failed(files, format!("write {}: {e}", path.display())));
            continue;
        }
        backup.sync(lock)?;
        out.push(Rebuilt {
            name: name.clone(),
            status: RebuildStatus::Rebuilt,
            files,
            error: None,
        });
    }
    Ok(out)
}

/// What can be kept of readable metadata: its time, its other top-level keys, its folder
/// records (which the files on disk cannot tell).
#[derive(Default)]
struct Kept {
    timestamp: Option<String>,
    extra: serde_json::Map<String, serde_json::Value>,
    folders: BTreeMap<RelPath, FolderEntry>,
}

fn kept_of(repo: &Repository, name: &IncrementName) -> Kept {
    struct Folders(BTreeMap<RelPath, FolderEntry>);
    impl CatalogSink for Folders {
        fn entry(&mut self, _: RelPath, _: CatalogEntry) {}
        fn folder(&mut self, path: RelPath, f: FolderEntry) {
            self.0.insert(path, f);
        }
        fn problem(&mut self, _: FormatProblem) {}
    }
    let path = repo.increment_meta_path(name);
    let Ok(file) = std::fs::File::open(&path) else {
        return Kept::default();
    };
    let mut sink = Folders(BTreeMap::new());
    match crate::format::read_increment(&path.display().to_string(), file, &mut sink) {
        Ok(h) => Kept {
            timestamp: Some(h.timestamp).filter(|t| !t.is_empty()),
            extra: h.extra,
            folders: sink.0,
        },
        Err(_) => Kept::default(),
    }
}

/// Rebuilds the catalog (metadata) of increment `name` from its `track/` and `deleted/` files:
/// size, ns mtime, mode, kind, blake3 hash — every file read through directory handles that
/// never follow a symlink, so a stored file or folder swapped for a symlink is recorded as the
/// symlink it is, never followed out of the backup. The index says the rest: `op` is `changed`
/// when an earlier increment already knew the path, else `new`; a `deleted/` entry names the
/// latest earlier increment that stored a version of the path (`version_of`), so views keep
/// it if that one is pruned. Readable metadata keeps its time, other keys and folder records;
/// without, the time is the name's.
pub fn rebuild_increment_meta(
    repo: &Repository,
    index: &Index,
    name: &IncrementName,
) -> Result<IncrementMeta, ExploreError> {
    let kept = kept_of(repo, name);
    let time = IncrementTime::of(kept.timestamp.as_deref(), name);
    let mut meta = IncrementMeta::new(name.as_str(), time.at.to_rfc3339());
    meta.extra = kept.extra;
    meta.folders = kept.folders;
    let inc_dir = repo.increment_dir(name);
    let dist = SafeDir::open_root(repo.root()).map_err(|e| ExploreError::Io {
        op: "open",
        path: repo.root().display().to_string(),
        source: e.source,
    })?;
    let inc = match dist.open_dir(name.as_str().as_ref()) {
        Ok(d) => d,
        Err(e) => {
            return Err(ExploreError::Io {
                op: "open increment folder",
                path: inc_dir.display().to_string(),
                source: e.source,
            })
        }
    };
    for cat in [Category::Tracked, Category::Deleted] {
        let root = match inc.open_dir(cat.dir_name().as_ref()) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ExploreError::Io {
                    op: "open",
                    path: inc_dir.join(cat.dir_name()).display().to_string(),
                    source: e.source,
                })
            }
        };
        // Depth first; one folder's names per level.
        let mut stack: Vec<(Option<RelPath>, SafeDir, VecDeque<OsString>)> = Vec::new();
        let mut root = root;
        let names = list_sorted(&mut root)?;
        stack.push((None, root, names));
        while let Some((dir, handle, names)) = stack.last_mut() {
            let Some(n) = names.pop_front() else {
                stack.pop();
                continue;
            };
            let rel = match dir {
                Some(d) => d.join(n.as_encoded_bytes()),
                None => RelPath::from_bytes(n.as_encoded_bytes()),
            }
            .map_err(|e| ExploreError::Refused(format!("a name in {}: {e}", inc_dir.display())))?;
            let st = handle.lstat(&n).map_err(fs_err)?;
            let (kind, hash) = match st.kind {
                EntryKind::Dir => {
                    let mut d = handle.open_dir(&n).map_err(fs_err)?;
                    let names = list_sorted(&mut d)?;
                    stack.push((Some(rel), d, names));
                    continue;
                }
                EntryKind::File => {
                    let mut f = handle.open_file(&n).map_err(fs_err)?;
                    let h = hash_reader(&mut f).map_err(|source| ExploreError::Io {
                        op: "read",
                        path: handle.child_path(&n).display().to_string(),
                        source,
                    })?;
                    (FileKind::File, Some(h))
                }
                EntryKind::Symlink => {
                    let t = handle.read_link(&n).map_err(fs_err)?;
                    (
                        FileKind::Symlink,
                        Some(ContentHash::of(t.as_os_str().as_encoded_bytes())),
                    )
                }
                // FIFOs, sockets, devices: never something a run stores.
                _ => continue,
            };
            let (op, version_of) = history_of(index, &rel, name, cat)?;
            meta.file_catalog.insert(
                rel,
                CatalogEntry {
                    size: st.size,
                    mtime: MTime::from_ns(st.mtime_ns),
                    category: cat,
                    op: Some(op),
                    kind,
                    mode: (kind != FileKind::Symlink).then_some(st.mode),
                    hash,
                    version_of,
                    attrs: Default::default(),
                },
            );
        }
    }
    meta.recount();
    Ok(meta)
}

fn fs_err(e: backup_platform::sandbox::FsError) -> ExploreError {
    ExploreError::Io {
        op: e.op,
        path: e.path.display().to_string(),
        source: e.source,
    }
}

fn list_sorted(d: &mut SafeDir) -> Result<VecDeque<OsString>, ExploreError> {
    let mut names: Vec<OsString> = d
        .list()
        .map_err(fs_err)?
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names.into())
}

/// The `op` of a file of increment `name`, and for a deletion the increment that stored the
/// version, from what the index knows of the path before `name`.
fn history_of(
    index: &Index,
    rel: &RelPath,
    name: &IncrementName,
    cat: Category,
) -> Result<(Op, Option<IncrementName>), ExploreError> {
    let before: Vec<_> = index
        .timeline(rel)?
        .into_iter()
        .filter(|f| f.at.as_ref().is_none_or(|a| a < name))
        .collect();
    Ok(match cat {
        Category::Deleted => (
            Op::Deleted,
            before
                .iter()
                .rev()
                .filter_map(|f| f.version.as_ref())
                .find_map(|v| v.start.clone().filter(|s| s < name)),
        ),
        Category::Tracked if before.is_empty() => (Op::New, None),
        Category::Tracked => (Op::Changed, None),
    })
}
