//! The virtual directory trees built from metadata: one per snapshot, and the history tree.

use std::collections::{BTreeMap, HashMap};

use backup_core::{FileKind, History, IncrementName, RelPath, Version};
use backup_platform::rofs::NodeKind;

/// The children of each directory of a tree, keyed by the directory's path bytes (`""` for
/// the tree's root), sorted by name.
pub(crate) type Dirs<C> = HashMap<Vec<u8>, BTreeMap<Vec<u8>, C>>;

fn add_ancestors<C>(dirs: &mut Dirs<C>, path: &RelPath, dir_child: impl Fn() -> C) {
    let bytes = path.as_bytes();
    let mut start = 0;
    let mut parent: Vec<u8> = Vec::new();
    dirs.entry(Vec::new()).or_default();
    while let Some(pos) = bytes[start..].iter().position(|&b| b == b'/') {
        let end = start + pos;
        let name = bytes[start..end].to_vec();
        let here = bytes[..end].to_vec();
        dirs.entry(parent).or_default().insert(name, dir_child());
        dirs.entry(here.clone()).or_default();
        parent = here;
        start = end + 1;
    }
}

fn parent_key(path: &RelPath) -> Vec<u8> {
    path.parent()
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The point-in-time view right after one increment: every tracked file as it was then.
pub(crate) struct SnapTree {
    pub files: BTreeMap<RelPath, Version>,
    pub dirs: Dirs<NodeKind>,
}

impl SnapTree {
    pub fn build(history: &History, at: &str) -> SnapTree {
        let files = history.snapshot(at);
        let mut dirs: Dirs<NodeKind> = HashMap::new();
        dirs.entry(Vec::new()).or_default();
        for (path, v) in &files {
            add_ancestors(&mut dirs, path, || NodeKind::Dir);
            let kind = match v.kind {
                FileKind::File => NodeKind::File,
                FileKind::Symlink => NodeKind::Symlink,
            };
            // A path that is both a file and a parent (messy metadata): the directory wins,
            // so nothing below it hides.
            let name = path.file_name().to_vec();
            let slot = dirs.entry(parent_key(path)).or_default();
            slot.entry(name).or_insert(kind);
        }
        SnapTree { files, dirs }
    }

    pub fn is_dir(&self, rel: Option<&RelPath>) -> bool {
        self.dirs
            .contains_key(rel.map(RelPath::as_bytes).unwrap_or_default())
    }
}

/// A child in the history tree: a directory, or one stored version of the file `path`
/// (`index` into `History::versions(path)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HistChild {
    Dir,
    Version { path: RelPath, index: usize },
}

/// `history/<rel path>/` holds every stored version of that file, named so they sort by time.
pub(crate) struct HistTree {
    pub dirs: Dirs<HistChild>,
}

impl HistTree {
    pub fn build(history: &History) -> HistTree {
        let mut dirs: Dirs<HistChild> = HashMap::new();
        dirs.entry(Vec::new()).or_default();
        for path in history.paths() {
            let versions = history.versions(path);
            if versions.is_empty() {
                continue;
            }
            add_ancestors(&mut dirs, path, || HistChild::Dir);
            dirs.entry(parent_key(path))
                .or_default()
                .insert(path.file_name().to_vec(), HistChild::Dir);
            let own = dirs.entry(path.as_bytes().to_vec()).or_default();
            for (index, v) in versions.iter().enumerate() {
                let mut name = version_file_name(&v.start, path.file_name());
                // Two versions stored at the same time (metadata quirks): keep both.
                let mut n = 1;
                while own.contains_key(&name) {
                    n += 1;
                    let mut stamp = version_file_name(&v.start, b"");
                    stamp.pop();
                    name = format!("{}~v{n}_", String::from_utf8_lossy(&stamp)).into_bytes();
                    name.extend_from_slice(path.file_name());
                }
                own.insert(
                    name,
                    HistChild::Version {
                        path: path.clone(),
                        index,
                    },
                );
            }
        }
        HistTree { dirs }
    }
}

/// `backup_20240105_100000` + `report.txt` → `2024-01-05_100000_report.txt`; a same-second
/// suffix becomes `~01` (`2024-01-05_100000~01_report.txt`) so it sorts after the unsuffixed
/// name. A version whose storing increment is
/// unknown gets `0000-00-00_000000`, which sorts first, as the version is older than all.
pub(crate) fn version_file_name(start: &str, file_name: &[u8]) -> Vec<u8> {
    // `start` can come from untrusted metadata (`version_of`): only a valid increment name is
    // turned into a time; anything else is "unknown", never part of a file name.
    let mut out = match IncrementName::parse(start) {
        Some(n) => {
            let (stamp, suffix) = n.as_str()["backup_".len()..].split_at(15);
            let mut s = String::with_capacity(32);
            s.push_str(&stamp[0..4]);
            s.push('-');
            s.push_str(&stamp[4..6]);
            s.push('-');
            s.push_str(&stamp[6..8]);
            s.push_str(&stamp[8..]);
            // `_01` → `~01`: `~` sorts after the `_` that follows an unsuffixed stamp.
            if let Some(n) = suffix.strip_prefix('_') {
                s.push('~');
                s.push_str(n);
            }
            s.into_bytes()
        }
        None => b"0000-00-00_000000".to_vec(),
    };
    out.push(b'_');
    out.extend_from_slice(file_name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_sort_by_time() {
        let a = version_file_name("backup_20240105_100000", b"r.txt");
        let b = version_file_name("backup_20240105_100000_01", b"r.txt");
        let c = version_file_name("backup_20240106_000000", b"r.txt");
        let z = version_file_name("", b"r.txt");
        assert_eq!(
            version_file_name("backup_é/../x_2024", b"r.txt"),
            b"0000-00-00_000000_r.txt"
        );
        assert_eq!(a, b"2024-01-05_100000_r.txt");
        assert_eq!(b, b"2024-01-05_100000~01_r.txt");
        assert!(z < a && a < b && b < c);
    }
}
