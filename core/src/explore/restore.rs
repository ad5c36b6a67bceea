//! `restore`: a plan (which version of which file, read from where) and its application under
//! a target folder. Nothing is ever written outside the target: destinations are `RelPath`s
//! joined under it, every folder on the way is checked not to be a symlink (whether it was
//! there or the restore made it), files are written to a temporary sibling and renamed into
//! place (so an existing symlink is replaced, never written through), and sources are read
//! without following any symlink inside the backup.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::mask::Selection;
use super::point::Point;
use super::safefs::{open_nofollow, set_symlink_mtime, SafeReader, SafeWriter};
use super::{holder_root, Backup, ExploreError};
use crate::format::{ContentHash, FileKind, MTime};
use crate::history::Holder;
use crate::relpath::RelPath;

/// What to do with a destination file that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    Always,
    /// Replace unless size and mtime already equal the version's.
    IfChanged,
    #[default]
    Never,
}

/// One file to restore.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub path: RelPath,
    /// Folder of the backup the bytes are read from (`mirror` or `<increment>/<category>`).
    #[serde(skip)]
    pub root: PathBuf,
    pub from: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: Option<u32>,
    pub kind: FileKind,
    #[serde(skip)]
    pub hash: Option<ContentHash>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub at: String,
    pub items: Vec<Item>,
    /// The backup's root: a target inside it is refused, so a restore never alters the backup.
    #[serde(skip)]
    pub dist: PathBuf,
}

/// The files of `point` selected by `selection`, sorted by path (so a folder's entries come
/// after anything that would replace the folder).
pub fn plan(backup: &Backup, point: &Point, selection: &Selection) -> Plan {
    let mut items = Vec::new();
    match point {
        Point::Mirror => {
            let root = backup.repo.mirror_dir();
            for (path, e) in &backup.mirror.files {
                if selection.is_match(path) {
                    items.push(Item {
                        path: path.clone(),
                        root: root.clone(),
                        from: "mirror".into(),
                        size: e.size,
                        mtime_ns: e.mtime.ns,
                        mode: e.mode,
                        kind: e.kind,
                        hash: e.hash,
                    });
                }
            }
        }
        Point::Increment(name) => {
            let filtered;
            let history = if selection.is_all() {
                backup.history()
            } else {
                filtered = backup.history_of(|p| selection.is_match(p));
                &filtered
            };
            for (path, v) in history.snapshot(name) {
                if selection.is_match(&path) {
                    let from = match &v.holder {
                        Holder::Mirror => "mirror".to_owned(),
                        Holder::Increment { name, category } => {
                            format!("{name}/{}", category.dir_name())
                        }
                    };
                    items.push(Item {
                        root: holder_root(&backup.repo, &v.holder),
                        path,
                        from,
                        size: v.size,
                        mtime_ns: v.mtime.ns,
                        mode: v.mode,
                        kind: v.kind,
                        hash: v.hash,
                    });
                }
            }
        }
    }
    Plan {
        at: point.label(),
        items,
        dist: backup.repo.root().to_path_buf(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Outcome {
    /// Written (or, in a dry run, would be).
    Restored,
    SkippedExists,
    SkippedUnchanged,
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct ItemResult {
    pub path: RelPath,
    pub from: String,
    pub size: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub at: String,
    pub to: String,
    pub dry_run: bool,
    pub results: Vec<ItemResult>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }
}

/// Applies `plan` under `to` (created if missing). Per-file failures are reported, not fatal.
pub fn apply(
    plan: &Plan,
    to: &Path,
    overwrite: Overwrite,
    dry_run: bool,
) -> Result<Report, ExploreError> {
    apply_with_progress(plan, to, overwrite, dry_run, &|_| {})
}

/// [`apply`], telling `progress` about each file.
pub fn apply_with_progress(
    plan: &Plan,
    to: &Path,
    overwrite: Overwrite,
    dry_run: bool,
    progress: crate::progress::WorkSink,
) -> Result<Report, ExploreError> {
    use crate::progress::Work;
    let dist = plan
        .dist
        .canonicalize()
        .map_err(|e| ExploreError::io("resolve", &plan.dist, e))?;
    if resolve_existing_prefix(to).starts_with(&dist) {
        return Err(ExploreError::Refused(format!(
            "{} lies inside the backup {}; restore somewhere else",
            to.display(),
            dist.display()
        )));
    }
    let root = if dry_run && !to.exists() {
        to.to_path_buf()
    } else {
        if !dry_run {
            std::fs::create_dir_all(to).map_err(|e| ExploreError::io("create", to, e))?;
        }
        to.canonicalize()
            .map_err(|e| ExploreError::io("resolve", to, e))?
    };
    let mut reader = SafeReader::default();
    let mut writer = SafeWriter::new(root.clone(), dry_run || !root.exists());
    let mut results = Vec::with_capacity(plan.items.len());
    progress(Work::Start {
        items: plan.items.len() as u64,
        // Sizes come from metadata, which may be hostile: saturate, never overflow.
        bytes: plan
            .items
            .iter()
            .map(|i| i.size)
            .fold(0u64, u64::saturating_add),
    });
    for item in &plan.items {
        let outcome = match restore_one(item, &mut reader, &mut writer, overwrite, dry_run) {
            Ok(o) => o,
            Err(e) => Outcome::Failed {
                error: e.to_string(),
            },
        };
        progress(Work::Item { bytes: item.size });
        results.push(ItemResult {
            path: item.path.clone(),
            from: item.from.clone(),
            size: item.size,
            outcome,
        });
    }
    Ok(Report {
        at: plan.at.clone(),
        to: root.display().to_string(),
        dry_run,
        results,
    })
}

/// `p` with its longest existing prefix resolved (symlinks followed), the rest appended: where
/// a folder that does not exist yet would be created.
pub fn resolve_existing_prefix(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = base.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return abs,
        }
    }
}

fn restore_one(
    item: &Item,
    reader: &mut SafeReader,
    writer: &mut SafeWriter,
    overwrite: Overwrite,
    dry_run: bool,
) -> io::Result<Outcome> {
    let source = reader.resolve(&item.root, &item.path)?;
    let dest = writer.prepare(&item.path)?;
    let existing = if writer.is_planned_parent(&dest) {
        None
    } else {
        match std::fs::symlink_metadata(&dest) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        }
    };
    if let Some(md) = &existing {
        if md.is_dir() {
            return Err(io::Error::other(format!(
                "{} is a folder; not replacing it",
                dest.display()
            )));
        }
        match overwrite {
            Overwrite::Never => return Ok(Outcome::SkippedExists),
            Overwrite::IfChanged => {
                if same_version(md, item) {
                    return Ok(Outcome::SkippedUnchanged);
                }
            }
            Overwrite::Always => {}
        }
    }
    match item.kind {
        FileKind::Dir => return Err(io::Error::other("folders are restored on their own")),
        FileKind::File => {
            let (mut src, md) = open_nofollow(&source)?;
            if dry_run {
                return Ok(Outcome::Restored);
            }
            let parent = dest.parent().unwrap_or(&dest);
            let mut tmp = tempfile::Builder::new()
                .prefix(".restore-")
                .tempfile_in(parent)?;
            // Hash while copying: a damaged stored version is restored (better than nothing)
            // but reported, never passed off as good.
            let mut hasher = blake3::Hasher::new();
            io::copy(
                &mut HashingReader {
                    inner: &mut src,
                    hasher: &mut hasher,
                },
                tmp.as_file_mut(),
            )?;
            let damaged = item
                .hash
                .is_some_and(|want| ContentHash::from(hasher.finalize()) != want);
            let f = tmp.as_file();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = item.mode.unwrap_or_else(|| {
                    use std::os::unix::fs::MetadataExt;
                    md.mode()
                }) & 0o7777;
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            #[cfg(not(unix))]
            let _ = md;
            f.set_modified(MTime::from_ns(item.mtime_ns).to_system_time())?;
            tmp.persist(&dest).map_err(|e| e.error)?;
            if damaged {
                return Ok(Outcome::Failed {
                    error: "restored, but its content differs from the recorded hash (damaged backup? run `check --verify`)".into(),
                });
            }
        }
        FileKind::Symlink => {
            let md = std::fs::symlink_metadata(&source)?;
            if !md.file_type().is_symlink() {
                return Err(io::Error::other(format!(
                    "{} should be a symlink",
                    source.display()
                )));
            }
            let target = std::fs::read_link(&source)?;
            if dry_run {
                return Ok(Outcome::Restored);
            }
            make_symlink(&target, &dest)?;
            set_symlink_mtime(&dest, item.mtime_ns)?;
        }
    }
    Ok(Outcome::Restored)
}

struct HashingReader<'a, R> {
    inner: &'a mut R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: io::Read> io::Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn same_version(md: &std::fs::Metadata, item: &Item) -> bool {
    let kind_ok = match item.kind {
        FileKind::File => md.is_file(),
        FileKind::Symlink => md.file_type().is_symlink(),
        FileKind::Dir => md.is_dir(),
    };
    let mtime_ok = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_nanos() as i64 == item.mtime_ns);
    kind_ok && mtime_ok && (item.kind == FileKind::Symlink || md.len() == item.size)
}

/// Creates a symlink at a temporary name beside `dest` and renames it over `dest`, so an
/// existing file (or symlink) at `dest` is replaced rather than followed.
#[cfg(unix)]
fn make_symlink(target: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().unwrap_or(dest);
    for n in 0..1000u32 {
        let tmp = parent.join(format!(".restore-link-{}-{n}", std::process::id()));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {
                return std::fs::rename(&tmp, dest).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temporary name for a symlink"))
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, _dest: &Path) -> io::Result<()> {
    Err(io::Error::other("symlinks are restored on Unix only"))
}
