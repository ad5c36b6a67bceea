//! Property test of the point-in-time fold (`History`) against a simple model: random
//! sequences of create/modify/delete/backup produce increments the way the engine writes them;
//! every point-in-time view must equal the model's state at that time — and after deleting
//! random increments, views may lose only versions that only those increments held.

use std::collections::{BTreeMap, BTreeSet};

use backup_core::format::{CatalogEntry, Category, FileKind, IndexEntry, MTime, Op};
use backup_core::history::{Holder, IncrementInfo};
use backup_core::{ContentHash, History, IncrementMeta, IncrementName, MirrorIndex, RelPath};
use proptest::prelude::*;

const PATHS: [&str; 4] = ["a", "b", "d/c", "d/e/f"];

#[derive(Clone, Debug)]
enum Step {
    Write(usize),
    Delete(usize),
    Backup,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..PATHS.len()).prop_map(Step::Write),
        1 => (0..PATHS.len()).prop_map(Step::Delete),
        2 => Just(Step::Backup),
    ]
}

/// A version is identified by a number, stored as its size, mtime and hash.
fn n(s: &str) -> IncrementName {
    IncrementName::parse(s).unwrap()
}

fn hash(id: u64) -> ContentHash {
    ContentHash::of(&id.to_le_bytes())
}

fn entry(id: u64, category: Category, op: Op, version_of: Option<String>) -> CatalogEntry {
    let version_of = version_of.map(|s| n(&s));
    CatalogEntry {
        size: id,
        mtime: MTime::from_ns(id as i64),
        category,
        op: Some(op),
        kind: FileKind::File,
        mode: Some(0o644),
        hash: Some(hash(id)),
        version_of,
        attrs: Default::default(),
    }
}

/// One model event of a path: at increment `at`, version `Some(id)` (stored there) or deletion.
#[derive(Clone, Debug)]
struct Ev {
    at: String,
    version: Option<u64>,
    /// For a deletion: the increment that stored the deleted version.
    deleted_start: Option<String>,
}

struct Run {
    increments: Vec<IncrementInfo>,
    mirror: MirrorIndex,
    /// Model state (path -> version id) right after each increment.
    states: Vec<(String, BTreeMap<String, u64>)>,
    events: BTreeMap<String, Vec<Ev>>,
    /// The final mirror: path -> (version id, start).
    mirror_holds: BTreeMap<String, (u64, String)>,
}

/// Plays the steps the way the engine does: each backup compares the source with the mirror,
/// records new/changed versions in `track/`, deletions in `deleted/` (naming the increment
/// that stored the deleted version), and makes no increment when nothing changed.
fn play(steps: &[Step]) -> Run {
    let mut source: BTreeMap<String, u64> = BTreeMap::new();
    // path -> (version id, start increment)
    let mut mirror: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut next_id = 1u64;
    let mut run = Run {
        increments: Vec::new(),
        mirror: MirrorIndex::default(),
        states: Vec::new(),
        events: BTreeMap::new(),
        mirror_holds: BTreeMap::new(),
    };
    let mut k = 0u32;
    for s in steps.iter().chain(std::iter::once(&Step::Backup)) {
        match s {
            Step::Write(i) => {
                source.insert(PATHS[*i].to_owned(), next_id);
                next_id += 1;
            }
            Step::Delete(i) => {
                source.remove(PATHS[*i]);
            }
            Step::Backup => {
                k += 1;
                let name = format!("backup_20240101_{:02}{:02}00", k / 60, k % 60);
                let mut meta = IncrementMeta::new(&name, String::new());
                for (p, id) in &source {
                    let op = match mirror.get(p) {
                        None => Op::New,
                        Some((m, _)) if m != id => Op::Changed,
                        Some(_) => continue,
                    };
                    meta.file_catalog.insert(
                        RelPath::parse(p).unwrap(),
                        entry(*id, Category::Tracked, op, None),
                    );
                    mirror.insert(p.clone(), (*id, name.clone()));
                    run.events.entry(p.clone()).or_default().push(Ev {
                        at: name.clone(),
                        version: Some(*id),
                        deleted_start: None,
                    });
                }
                let gone: Vec<String> = mirror
                    .keys()
                    .filter(|p| !source.contains_key(*p))
                    .cloned()
                    .collect();
                for p in gone {
                    let (id, start) = mirror.remove(&p).unwrap();
                    meta.file_catalog.insert(
                        RelPath::parse(&p).unwrap(),
                        entry(id, Category::Deleted, Op::Deleted, Some(start.clone())),
                    );
                    run.events.entry(p).or_default().push(Ev {
                        at: name.clone(),
                        version: None,
                        deleted_start: Some(start),
                    });
                }
                if !meta.file_catalog.is_empty() {
                    run.increments.push(IncrementInfo::new(n(&name), meta));
                    run.states.push((name, source.clone()));
                }
            }
        }
    }
    for (p, (id, start)) in &mirror {
        run.mirror.files.insert(
            RelPath::parse(p).unwrap(),
            IndexEntry {
                size: *id,
                mtime: MTime::from_ns(*id as i64),
                tracked: true,
                kind: FileKind::File,
                mode: Some(0o644),
                hash: Some(hash(*id)),
                version_of: Some(n(start)),
                attrs: Default::default(),
                ctime_ns: Default::default(),
            },
        );
    }
    run.mirror_holds = mirror;
    run
}

fn view(h: &History, at: &str) -> BTreeMap<String, u64> {
    h.snapshot(&n(at))
        .into_iter()
        .map(|(p, v)| (p.to_string(), v.size))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn views_equal_the_model(steps in prop::collection::vec(step(), 0..40)) {
        let run = play(&steps);
        let h = History::build(run.increments.clone(), &run.mirror);
        for (name, state) in &run.states {
            prop_assert_eq!(&view(&h, name), state, "view at {}", name);
            for (p, id) in state {
                let v = h.version_at(&RelPath::parse(p).unwrap(), &n(name)).unwrap();
                prop_assert_eq!(v.hash, Some(hash(*id)));
            }
        }
        // log: every stored version of a path, in order.
        for (p, evs) in &run.events {
            let want: Vec<u64> = evs.iter().filter_map(|e| e.version).collect();
            let got: Vec<u64> = h.versions(&RelPath::parse(p).unwrap()).iter().map(|v| v.size).collect();
            prop_assert_eq!(got, want, "versions of {}", p);
        }
    }

    #[test]
    fn deleting_increments_loses_only_their_own_versions(
        steps in prop::collection::vec(step(), 0..40),
        keep in prop::collection::vec(any::<bool>(), 40),
        // Entries removed from surviving increments (`delete NAME --mask`): a few per run.
        drop in prop::collection::vec((0usize..40, 0..PATHS.len()), 0..4),
    ) {
        let run = play(&steps);
        let mut dropped: BTreeSet<(String, String)> = BTreeSet::new();
        let kept: Vec<IncrementInfo> = run
            .increments
            .iter()
            .enumerate()
            .filter(|(i, _)| keep[*i % keep.len()])
            .map(|(i, inc)| {
                let mut inc = inc.clone();
                for (k, p) in &drop {
                    if *k == i {
                        let path = RelPath::parse(PATHS[*p]).unwrap();
                        if inc.meta.file_catalog.remove(&path).is_some() {
                            dropped.insert((inc.name.to_string(), PATHS[*p].to_owned()));
                        }
                    }
                }
                inc
            })
            .collect();
        let alive: BTreeSet<String> = kept.iter().map(|i| i.name.to_string()).collect();
        // An event still recorded: its increment survives and its entry was not removed.
        let recorded = |at: &str, p: &str| {
            alive.contains(at) && !dropped.contains(&(at.to_owned(), p.to_owned()))
        };
        let h = History::build(kept, &run.mirror);

        // Where each version's bytes survive: its own track/ link, the deleted/ link of the
        // increment that recorded its deletion, or the mirror.
        let held = |p: &str, id: u64, start: &str| -> bool {
            recorded(start, p)
                || run.mirror_holds.get(p).is_some_and(|(m, _)| *m == id)
                || run.events[p].iter().any(|e| {
                    e.version.is_none()
                        && e.deleted_start.as_deref() == Some(start)
                        && recorded(&e.at, p)
                })
        };
        for (name, state) in run.states.iter().filter(|(n, _)| alive.contains(n)) {
            let got = view(&h, name);
            // The oracle: the last surviving event at or before this increment. A version's
            // event survives while any holder does; a deletion while its increment does.
            let mut want = BTreeMap::new();
            for (p, evs) in &run.events {
                let last = evs.iter().rev().filter(|e| e.at.as_str() <= name.as_str()).find(|e| match e.version {
                    Some(id) => held(p, id, &e.at),
                    None => recorded(&e.at, p),
                });
                if let Some(Ev { version: Some(id), .. }) = last {
                    want.insert(p.clone(), *id);
                }
            }
            prop_assert_eq!(&got, &want, "view at {} after deleting some increments", name);
            // Nothing held elsewhere is lost: the model's version at this time is shown
            // whenever its bytes survive.
            for (p, id) in state {
                let start = &run.events[p].iter().find(|e| e.version == Some(*id)).unwrap().at;
                if held(p, *id, start) {
                    prop_assert_eq!(got.get(p), Some(id), "{} at {} lost", p, name);
                }
            }
            // Every version shown is read from a holder that still exists.
            for v in h.snapshot(&n(name)).values() {
                match &v.holder {
                    Holder::Mirror => prop_assert!(run.mirror_holds.get(&v.path.to_string()).is_some_and(|(m, _)| *m == v.size)),
                    Holder::Increment { name: n, category } => {
                        prop_assert!(recorded(n.as_str(), &v.path.to_string()));
                        let inc = h.increment(n).unwrap();
                        let e = &inc.meta.file_catalog[&v.path];
                        prop_assert_eq!(e.category, *category);
                        prop_assert_eq!(e.size, v.size);
                    }
                }
            }
        }
    }

    /// The index folds the same as `History`: every snapshot (walked folder by folder), every
    /// path's versions, and folder presence — after building it from the metadata files, and
    /// again after increments are deleted by hand and the catalog notices.
    #[test]
    fn the_index_folds_like_history(
        steps in prop::collection::vec(step(), 0..30),
        keep in prop::collection::vec(any::<bool>(), 40),
    ) {
        let run = play(&steps);
        let dist = tempfile::tempdir().unwrap();
        let repo = backup_core::Repository::at(dist.path());
        for inc in &run.increments {
            let dir = dist.path().join(inc.name.as_str());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{}.json", inc.name)), inc.meta.to_json()).unwrap();
        }
        let index = backup_core::index::Index::open(&repo).unwrap();
        index.begin().unwrap();
        for (p, e) in &run.mirror.files {
            index.mirror_put(p, e).unwrap();
        }
        index.commit().unwrap();
        index.sync_catalog(&repo, None).unwrap();
        compare(&index, &History::build(run.increments.clone(), &run.mirror))?;

        let kept: Vec<IncrementInfo> = run
            .increments
            .iter()
            .enumerate()
            .filter(|(i, inc)| {
                let keep = keep[*i % keep.len()];
                if !keep {
                    std::fs::remove_dir_all(dist.path().join(inc.name.as_str())).unwrap();
                }
                keep
            })
            .map(|(_, inc)| inc.clone())
            .collect();
        index.sync_catalog(&repo, None).unwrap();
        compare(&index, &History::build(kept, &run.mirror))?;
    }
}

fn compare(index: &backup_core::index::Index, h: &History) -> Result<(), TestCaseError> {
    let names: Vec<IncrementName> = index
        .increments()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let want: Vec<IncrementName> = h.increments().iter().map(|i| i.name.clone()).collect();
    prop_assert_eq!(&names, &want);
    for name in &names {
        let mut got = BTreeMap::new();
        index
            .snapshot_walk(name, None, &mut |v| {
                got.insert(v.path.clone(), (v.size, v.holder.clone(), v.start.clone()));
                Ok(())
            })
            .unwrap();
        let want: BTreeMap<RelPath, _> = h
            .snapshot(name)
            .into_iter()
            .map(|(p, v)| (p, (v.size, v.holder.clone(), v.start.clone())))
            .collect();
        prop_assert_eq!(&got, &want, "snapshot {}", name);
        // A folder exists in a snapshot exactly when something below it does.
        for d in ["d", "d/e"] {
            let rel = RelPath::parse(d).unwrap();
            let has = want.keys().any(|p| p.starts_with(&rel) && *p != rel);
            prop_assert_eq!(
                index.snapshot_has_dir(name, Some(&rel)).unwrap(),
                has,
                "{} at {}",
                d,
                name
            );
        }
    }
    for p in PATHS {
        let rel = RelPath::parse(p).unwrap();
        let got: Vec<(u64, Option<IncrementName>)> = index
            .versions(&rel)
            .unwrap()
            .into_iter()
            .map(|v| (v.size, v.start))
            .collect();
        let want: Vec<(u64, Option<IncrementName>)> = h
            .versions(&rel)
            .into_iter()
            .map(|v| (v.size, v.start.clone()))
            .collect();
        prop_assert_eq!(got, want, "versions of {}", p);
    }
    Ok(())
}
