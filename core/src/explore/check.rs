//! `check`: the mirror against `mirror.json`, each increment against its metadata, and the
//! leftovers of interrupted runs. With `verify`, stored content is re-hashed against the
//! recorded blake3 hashes (each inode once: hard links share their bytes).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::safefs::open_nofollow;
use super::Backup;
use crate::format::{Category, ContentHash, FileKind, MTime};
use crate::relpath::RelPath;
use crate::repo::{JOURNAL_FILE, STAGING_DIR};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Recorded in metadata, absent on disk.
    Missing,
    /// On disk, not recorded.
    Extra,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    MtimeMismatch {
        expected_ns: i64,
        actual_ns: i64,
    },
    /// A symlink recorded as a file or the other way round.
    KindMismatch,
    HashMismatch {
        expected: String,
        actual: String,
    },
    Unreadable {
        error: String,
    },
    /// An increment folder without (readable) metadata: an interrupted run, or damage.
    NoMetadata {
        reason: String,
    },
    /// An entry or file of metadata that could not be read.
    BadMetadata {
        message: String,
    },
    /// A staging folder or journal left by an interrupted run.
    Leftover,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// `mirror`, an increment name, or `dist`.
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(flatten)]
    pub kind: ProblemKind,
}

/// A writer (a `backup` run, or `recreate`/`delete`/`prune`) holding the lock while `check`
/// ran: its journal, staging files and the increment it is writing are work in progress, not
/// damage, and the mirror may be half updated, so those are not judged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Running {
    /// The increment that run is writing, if its journal names one.
    pub increment: Option<crate::repo::IncrementName>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Set when a writer held the lock: see [`Running`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
    pub increments: u64,
    pub files_checked: u64,
    /// Files whose content was re-hashed (with `verify`).
    pub files_verified: u64,
    /// Files recorded without a hash (original-tool metadata), which `verify` cannot prove.
    pub files_without_hash: u64,
    pub problems: Vec<Problem>,
}

struct Expected {
    size: u64,
    mtime: MTime,
    kind: FileKind,
    hash: Option<ContentHash>,
}

pub fn check(backup: &Backup, verify: bool) -> CheckReport {
    check_with_progress(backup, verify, &|_| {})
}

/// [`check`], telling `progress` about each recorded file compared (and re-hashed).
pub fn check_with_progress(
    backup: &Backup,
    verify: bool,
    progress: crate::progress::WorkSink,
) -> CheckReport {
    progress(crate::progress::Work::Start {
        items: backup.mirror.files.len() as u64
            + backup
                .increments
                .iter()
                .map(|i| i.meta.file_catalog.len() as u64)
                .sum::<u64>(),
        // Sizes come from metadata, which may be hostile: saturate, never overflow.
        bytes: if verify {
            backup
                .mirror
                .files
                .values()
                .map(|e| e.size)
                .chain(
                    backup
                        .increments
                        .iter()
                        .flat_map(|i| i.meta.file_catalog.values())
                        .map(|e| e.size),
                )
                .fold(0u64, u64::saturating_add)
        } else {
            0
        },
    });
    let mut report = CheckReport::default();
    let repo = &backup.repo;
    if repo.writer_running() {
        report.running = Some(Running {
            increment: crate::journal::read(repo).and_then(|j| j.increment),
        });
    }
    let in_progress = report.running.as_ref().and_then(|r| r.increment.clone());
    let mut hashes: HashMap<(u64, u64), Result<ContentHash, String>> = HashMap::new();

    let meta_files: HashMap<String, &crate::repo::IncrementName> = backup
        .without_metadata
        .iter()
        .map(|n| (repo.increment_meta_path(n).display().to_string(), n))
        .collect();
    for name in &backup.without_metadata {
        if in_progress.as_ref() == Some(name) {
            continue;
        }
        let path = repo.increment_meta_path(name).display().to_string();
        let reason = backup
            .problems
            .iter()
            .find(|p| p.file == path)
            .map(|p| p.message.clone())
            .unwrap_or_default();
        report.problems.push(Problem {
            location: name.to_string(),
            path: None,
            kind: ProblemKind::NoMetadata { reason },
        });
    }
    for p in &backup.problems {
        if meta_files.contains_key(&p.file) {
            continue;
        }
        report.problems.push(Problem {
            location: location_of_file(&p.file),
            path: p.key.clone(),
            kind: ProblemKind::BadMetadata {
                message: p.message.clone(),
            },
        });
    }
    let running = report.running.is_some();
    for leftover in [STAGING_DIR, JOURNAL_FILE] {
        if !running && std::fs::symlink_metadata(repo.root().join(leftover)).is_ok() {
            report.problems.push(Problem {
                location: "dist".into(),
                path: Some(leftover.into()),
                kind: ProblemKind::Leftover,
            });
        }
    }
    // Other hidden leftovers of ours (temporary files of an interrupted write or prune).
    if let Ok(rd) = std::fs::read_dir(repo.root()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !running && (n.starts_with(".backup-prune-") || n.contains(".tmp-")) {
                report.problems.push(Problem {
                    location: "dist".into(),
                    path: Some(n),
                    kind: ProblemKind::Leftover,
                });
            }
        }
    }

    let mirror: BTreeMap<&RelPath, Expected> = backup
        .mirror
        .files
        .iter()
        .map(|(p, e)| {
            (
                p,
                Expected {
                    size: e.size,
                    mtime: e.mtime,
                    kind: e.kind,
                    hash: e.hash,
                },
            )
        })
        .collect();
    // A running backup renames versions into the mirror before it records them.
    if !running && (repo.mirror_dir().exists() || !mirror.is_empty()) {
        compare_tree(
            &repo.mirror_dir(),
            "mirror",
            &mirror,
            verify,
            &mut hashes,
            &mut report,
            progress,
        );
    }

    for inc in &backup.increments {
        report.increments += 1;
        let name = inc.name.to_string();
        for cat in [Category::Tracked, Category::Deleted] {
            let expected: BTreeMap<&RelPath, Expected> = inc
                .meta
                .file_catalog
                .iter()
                .filter(|(_, e)| e.category == cat)
                .map(|(p, e)| {
                    (
                        p,
                        Expected {
                            size: e.size,
                            mtime: e.mtime,
                            kind: e.kind,
                            hash: e.hash,
                        },
                    )
                })
                .collect();
            let dir = repo.increment_dir(&inc.name).join(cat.dir_name());
            compare_tree(
                &dir,
                &name,
                &expected,
                verify,
                &mut hashes,
                &mut report,
                progress,
            );
        }
        // Anything else in the increment folder besides track/, deleted/ and its metadata.
        if let Ok(rd) = std::fs::read_dir(repo.increment_dir(&inc.name)) {
            let meta_name = format!("{name}.json");
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != "track" && n != "deleted" && n != meta_name {
                    report.problems.push(Problem {
                        location: name.clone(),
                        path: Some(n),
                        kind: ProblemKind::Extra,
                    });
                }
            }
        }
    }
    report
}

fn location_of_file(file: &str) -> String {
    let name = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "mirror" {
        "mirror".into()
    } else if name.is_empty() {
        "dist".into()
    } else {
        name
    }
}

/// Recorded mtimes from float seconds (the original tool) carry rounding error; equal to the
/// microsecond is equal.
fn mtime_matches(expected: MTime, actual_ns: i64) -> bool {
    expected.ns == actual_ns || (expected.ns - actual_ns).abs() < 1_000
}

fn compare_tree(
    root: &Path,
    location: &str,
    expected: &BTreeMap<&RelPath, Expected>,
    verify: bool,
    hashes: &mut HashMap<(u64, u64), Result<ContentHash, String>>,
    report: &mut CheckReport,
    progress: crate::progress::WorkSink,
) {
    let problem = |path: &RelPath, kind: ProblemKind| Problem {
        location: location.to_owned(),
        path: Some(path.encode()),
        kind,
    };
    let mut on_disk: BTreeMap<RelPath, std::fs::Metadata> = BTreeMap::new();
    if root.exists() {
        for entry in walkdir::WalkDir::new(root)
            .follow_root_links(false)
            .follow_links(false)
            .min_depth(1)
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report.problems.push(Problem {
                        location: location.to_owned(),
                        path: e.path().map(|p| p.display().to_string()),
                        kind: ProblemKind::Unreadable {
                            error: e.to_string(),
                        },
                    });
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root).map(RelPath::from_path) else {
                continue;
            };
            let Ok(rel) = rel else { continue };
            match entry.metadata() {
                Ok(md) => {
                    on_disk.insert(rel, md);
                }
                Err(e) => report.problems.push(problem(
                    &rel,
                    ProblemKind::Unreadable {
                        error: e.to_string(),
                    },
                )),
            }
        }
    }
    for rel in on_disk.keys() {
        if !expected.contains_key(rel) {
            report.problems.push(problem(rel, ProblemKind::Extra));
        }
    }
    for (rel, exp) in expected {
        report.files_checked += 1;
        progress(crate::progress::Work::Item {
            bytes: if verify { exp.size } else { 0 },
        });
        let Some(md) = on_disk.get(*rel) else {
            report.problems.push(problem(rel, ProblemKind::Missing));
            continue;
        };
        let is_link = md.file_type().is_symlink();
        if is_link != (exp.kind == FileKind::Symlink) {
            report
                .problems
                .push(problem(rel, ProblemKind::KindMismatch));
            continue;
        }
        if !is_link && md.len() != exp.size {
            report.problems.push(problem(
                rel,
                ProblemKind::SizeMismatch {
                    expected: exp.size,
                    actual: md.len(),
                },
            ));
        }
        let actual_ns = MTime::of(md).ns;
        if !mtime_matches(exp.mtime, actual_ns) {
            report.problems.push(problem(
                rel,
                ProblemKind::MtimeMismatch {
                    expected_ns: exp.mtime.ns,
                    actual_ns,
                },
            ));
        }
        if !verify {
            continue;
        }
        let Some(want) = exp.hash else {
            report.files_without_hash += 1;
            continue;
        };
        let path = rel.under(root);
        let got = if is_link {
            std::fs::read_link(&path)
                .map(|t| ContentHash::of(t.as_os_str().as_encoded_bytes()))
                .map_err(|e| e.to_string())
        } else {
            let key = inode_key(md);
            match key.and_then(|k| hashes.get(&k).cloned()) {
                Some(h) => h,
                None => {
                    let h = hash_file(&path);
                    if let Some(k) = key {
                        hashes.insert(k, h.clone());
                    }
                    h
                }
            }
        };
        report.files_verified += 1;
        match got {
            Ok(h) if h == want => {}
            Ok(h) => report.problems.push(problem(
                rel,
                ProblemKind::HashMismatch {
                    expected: want.to_hex(),
                    actual: h.to_hex(),
                },
            )),
            Err(error) => report
                .problems
                .push(problem(rel, ProblemKind::Unreadable { error })),
        }
    }
}

fn inode_key(md: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((md.dev(), md.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = md;
        None
    }
}

/// blake3 of a regular file's bytes, never following a symlink.
pub fn hash_file(path: &Path) -> Result<ContentHash, String> {
    let (mut f, _) = open_nofollow(path).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(hasher.finalize().into())
}
