//! The virtual directory trees built from metadata: one per snapshot, and the history tree.

use std::collections::{BTreeMap, HashMap};

use backup_core::identity::IncrementTime;
use backup_core::{History, IncrementName, RelPath, Version};

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

/// Half-open ranges `[from, to)` of increment indexes (positions in the sorted names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spans(Vec<(u32, u32)>);

impl Spans {
    pub fn contains(&self, k: u32) -> bool {
        let i = self.0.partition_point(|&(from, _)| from <= k);
        i > 0 && k < self.0[i - 1].1
    }

    fn normalize(&mut self) {
        self.0.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for &(a, b) in &self.0 {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.0 = out;
    }

    /// When a path exists, from its events: an event at time `t` holds for every increment
    /// whose name sorts at or after `t`, until the next event.
    fn of(
        timeline: &[(Option<&IncrementName>, Option<&Version>)],
        names: &[IncrementName],
    ) -> Spans {
        let n = names.len() as u32;
        let mut steps: Vec<(u32, bool)> = Vec::with_capacity(timeline.len());
        for (t, v) in timeline {
            let e = match t {
                Some(t) => names.partition_point(|x| x < *t) as u32,
                None => 0,
            };
            match steps.last_mut() {
                Some(last) if last.0 == e => last.1 = v.is_some(),
                _ => steps.push((e, v.is_some())),
            }
        }
        let mut out = Vec::new();
        let mut open: Option<u32> = None;
        for (e, present) in steps {
            if e >= n {
                break;
            }
            match (present, open) {
                (true, None) => open = Some(e),
                (false, Some(from)) => {
                    if e > from {
                        out.push((from, e));
                    }
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            out.push((from, n));
        }
        Spans(out)
    }
}

/// What a name in a snapshot directory can be (both, with messy metadata; the directory wins
/// wherever it exists).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChildKinds {
    pub file: bool,
    pub dir: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SnapDir {
    pub children: BTreeMap<Vec<u8>, ChildKinds>,
    /// The increments whose snapshot holds something below this directory.
    pub spans: Spans,
}

/// One index serves every snapshot: each directory ever seen, with the increments in which it
/// exists. A snapshot's listing then costs its children only, never a fold of the whole tree,
/// so `find snapshots/ -maxdepth 2` over hundreds of snapshots stays cheap. A file's version at
/// a point comes from `History::version_at`.
pub(crate) struct SnapIndex {
    pub dirs: HashMap<Vec<u8>, SnapDir>,
}

impl SnapIndex {
    pub fn build(history: &History, names: &[IncrementName]) -> SnapIndex {
        let mut dirs: HashMap<Vec<u8>, SnapDir> = HashMap::new();
        dirs.entry(Vec::new()).or_default();
        for path in history.paths() {
            let spans = Spans::of(&history.timeline(path), names);
            if spans.0.is_empty() {
                continue;
            }
            dirs.entry(parent_key(path))
                .or_default()
                .children
                .entry(path.file_name().to_vec())
                .or_default()
                .file = true;
            let bytes = path.as_bytes();
            let mut parent: Vec<u8> = Vec::new();
            let mut start = 0;
            while let Some(pos) = bytes[start..].iter().position(|&b| b == b'/') {
                let end = start + pos;
                let here = bytes[..end].to_vec();
                dirs.entry(parent)
                    .or_default()
                    .children
                    .entry(bytes[start..end].to_vec())
                    .or_default()
                    .dir = true;
                dirs.entry(here.clone())
                    .or_default()
                    .spans
                    .0
                    .extend_from_slice(&spans.0);
                parent = here;
                start = end + 1;
            }
        }
        for d in dirs.values_mut() {
            d.spans.normalize();
        }
        SnapIndex { dirs }
    }

    /// True when `rel` (`None` = the snapshot's root) is a directory in snapshot `k`.
    pub fn is_dir(&self, rel: Option<&RelPath>, k: u32) -> bool {
        match rel {
            None => true,
            Some(r) => self
                .dirs
                .get(r.as_bytes())
                .map(|d| d.spans.contains(k))
                .unwrap_or(false),
        }
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
                let time = v.start.as_ref().map(|s| match history.increment(s) {
                    Some(i) => i.time,
                    None => IncrementTime::of(None, s),
                });
                let mut name = version_file_name(time.as_ref(), 0, path.file_name());
                // Two versions stored in the same second (or with the same recorded time after a
                // clock step): keep both, the later one with a `~NN` counter.
                let mut n = 0;
                while own.contains_key(&name) {
                    n += 1;
                    name = version_file_name(time.as_ref(), n, path.file_name());
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

/// The time of the increment that stored a version (in this machine's time zone) + the file
/// name: `2024-01-05_100000_report.txt`; the `n`th other version of the same second gets
/// `~NN` (`2024-01-05_100000~01_report.txt`), which sorts after the plain name. A version whose
/// storing increment is unknown gets `0000-00-00_000000`, which sorts first, as the version is
/// older than all.
pub(crate) fn version_file_name(time: Option<&IncrementTime>, n: u32, file_name: &[u8]) -> Vec<u8> {
    let mut out = match time {
        Some(t) => t.local().format("%Y-%m-%d_%H%M%S").to_string().into_bytes(),
        None => b"0000-00-00_000000".to_vec(),
    };
    if n > 0 {
        out.extend_from_slice(format!("~{n:02}").as_bytes());
    }
    out.push(b'_');
    out.extend_from_slice(file_name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_events_and_merge() {
        let names: Vec<IncrementName> = [
            "backup_20240101_000000",
            "backup_20240102_000000",
            "backup_20240103_000000",
            "backup_20240104_000000",
        ]
        .iter()
        .map(|n| IncrementName::parse(n).unwrap())
        .collect();
        let v = Version {
            path: RelPath::parse("x").unwrap(),
            start: None,
            holder: backup_core::Holder::Mirror,
            size: 0,
            mtime: backup_core::MTime::from_ns(0),
            mode: None,
            kind: backup_core::FileKind::File,
            hash: None,
            attrs: Default::default(),
        };
        let tl = vec![
            (None, Some(&v)),
            (Some(&names[1]), None),
            (Some(&names[2]), Some(&v)),
        ];
        let s = Spans::of(&tl, &names);
        assert_eq!(s, Spans(vec![(0, 1), (2, 4)]));
        assert!(
            s.contains(0) && !s.contains(1) && s.contains(2) && s.contains(3) && !s.contains(4)
        );
        let mut m = Spans(vec![(2, 4), (0, 1), (1, 2), (6, 7)]);
        m.normalize();
        assert_eq!(m, Spans(vec![(0, 4), (6, 7)]));
    }

    #[test]
    fn version_names_sort_by_time() {
        let n = |s: &str| IncrementName::parse(s).unwrap();
        let t = |s: &str| IncrementTime::of(None, &n(s));
        let a = version_file_name(Some(&t("backup_20240105_100000")), 0, b"r.txt");
        let b = version_file_name(Some(&t("backup_20240105_100000_01")), 1, b"r.txt");
        let c = version_file_name(Some(&t("backup_20240106_000000")), 0, b"r.txt");
        let z = version_file_name(None, 0, b"r.txt");
        assert_eq!(a, b"2024-01-05_100000_r.txt");
        assert_eq!(b, b"2024-01-05_100000~01_r.txt");
        assert!(z < a && a < b && b < c);
        let recorded = IncrementTime::of(
            Some("2024-01-05T10:00:00+00:00"),
            &n("backup_20240105_100000"),
        );
        let local = recorded.local().format("%Y-%m-%d_%H%M%S").to_string();
        assert_eq!(
            version_file_name(Some(&recorded), 0, b"r"),
            format!("{local}_r").into_bytes()
        );
    }
}
