//! Opening the index of an existing backup: an old `mirror.json` is imported, a lost index is
//! rebuilt from `mirror/` and the catalogs without storing anything again, and increments
//! added or removed by hand are noticed.

use std::path::Path;

use backup_core::format::{CatalogEntry, Category, FileKind, IncrementMeta, MTime, Op};
use backup_core::index::{Index, IndexNote};
use backup_core::{ContentHash, IncrementName, RelPath, Repository};

fn set_mtime(p: &Path, ns: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A backup of two increments written the way the engine writes them: `a` stored in the first
/// and unchanged since (the mirror holds the same version), `b` changed in the second; plus an
/// untracked file.
fn backup(dist: &Path) -> Vec<IncrementName> {
    let names: Vec<IncrementName> = ["backup_20240101_100000", "backup_20240102_100000"]
        .iter()
        .map(|n| IncrementName::parse(n).unwrap())
        .collect();
    let write = |p: &Path, data: &[u8], ns: i64| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        set_mtime(p, ns);
    };
    let entry = |data: &[u8], ns: i64, op: Op| CatalogEntry {
        size: data.len() as u64,
        mtime: MTime::from_ns(ns),
        category: Category::Tracked,
        op: Some(op),
        kind: FileKind::File,
        mode: Some(0o644),
        hash: Some(ContentHash::of(data)),
        version_of: None,
        attrs: Default::default(),
    };
    let mut m0 = IncrementMeta::new(names[0].as_str(), "2024-01-01T10:00:00+00:00".into());
    m0.file_catalog.insert(
        RelPath::parse("d/a").unwrap(),
        entry(b"aaa", 1_000, Op::New),
    );
    m0.file_catalog
        .insert(RelPath::parse("d/b").unwrap(), entry(b"b1", 2_000, Op::New));
    let mut m1 = IncrementMeta::new(names[1].as_str(), "2024-01-02T10:00:00+00:00".into());
    m1.file_catalog.insert(
        RelPath::parse("d/b").unwrap(),
        entry(b"b2", 3_000, Op::Changed),
    );
    for (n, m) in names.iter().zip([&m0, &m1]) {
        let dir = dist.join(n.as_str());
        for (p, e) in &m.file_catalog {
            let data: &[u8] = match (p.display().as_ref(), e.size) {
                ("d/a", _) => b"aaa",
                (_, 2) if e.mtime.ns == 2_000 => b"b1",
                _ => b"b2",
            };
            write(&p.under(&dir.join("track")), data, e.mtime.ns);
        }
        std::fs::write(dir.join(format!("{n}.json")), m.to_json()).unwrap();
    }
    write(&dist.join("mirror/d/a"), b"aaa", 1_000);
    write(&dist.join("mirror/d/b"), b"b2", 3_000);
    write(&dist.join("mirror/u.txt"), b"untracked", 4_000);
    names
}

#[test]
fn a_lost_index_is_rebuilt_without_storing_anything_again() {
    let d = tempfile::tempdir().unwrap();
    let names = backup(d.path());
    let repo = Repository::at(d.path());
    let opened = Index::open_for(&repo, None).unwrap();
    assert!(
        opened.notes.contains(&IndexNote::Created),
        "{:?}",
        opened.notes
    );
    assert!(
        opened
            .notes
            .iter()
            .any(|n| matches!(n, IndexNote::Rebuilt { reconciled } if reconciled.recognised == 2)),
        "{:?}",
        opened.notes
    );
    let index = opened.index;
    let a = index
        .mirror_get(&RelPath::parse("d/a").unwrap())
        .unwrap()
        .unwrap();
    assert!(a.tracked);
    assert_eq!(a.hash, Some(ContentHash::of(b"aaa")));
    assert_eq!(a.version_of.as_ref(), Some(&names[0]));
    let b = index
        .mirror_get(&RelPath::parse("d/b").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(b.version_of.as_ref(), Some(&names[1]));
    let u = index
        .mirror_get(&RelPath::parse("u.txt").unwrap())
        .unwrap()
        .unwrap();
    assert!(!u.tracked && u.hash.is_none());
    assert!(index
        .mirror_get(&RelPath::parse("d").unwrap())
        .unwrap()
        .is_some_and(|e| e.kind == FileKind::Dir));
    // The catalog: both increments, with their recorded times.
    let incs = index.increments().unwrap();
    assert_eq!(
        incs.iter().map(|i| &i.name).collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>()
    );
    assert_eq!(incs[0].time.at.timestamp(), 1_704_103_200);
    // A reopen changes nothing and says nothing.
    drop(index);
    let again = Index::open_for(&repo, None).unwrap();
    assert!(again.notes.is_empty(), "{:?}", again.notes);
}

#[test]
fn an_old_mirror_json_is_imported_and_hand_made_changes_are_noticed() {
    let d = tempfile::tempdir().unwrap();
    let names = backup(d.path());
    // The original tool's flat index.
    std::fs::write(
        d.path().join("mirror.json"),
        br#"{"d/a": {"size": 3, "mtime": 0.000001, "tracked": true},
             "d/b": {"size": 2, "mtime": 0.000003, "tracked": true},
             "u.txt": {"size": 9, "mtime": 0.000004, "tracked": false}}"#,
    )
    .unwrap();
    let repo = Repository::at(d.path());
    let opened = Index::open_for(&repo, None).unwrap();
    assert!(
        opened
            .notes
            .iter()
            .any(|n| matches!(n, IndexNote::Imported { entries: 3 })),
        "{:?}",
        opened.notes
    );
    drop(opened);
    // An increment removed by hand, another renamed to something that is not a name.
    std::fs::rename(
        d.path().join(names[1].as_str()),
        d.path().join("backup_X_old"),
    )
    .unwrap();
    let opened = Index::open_for(&repo, None).unwrap();
    assert!(
        opened.notes.iter().any(
            |n| matches!(n, IndexNote::CatalogChanged { sync } if sync.removed == vec![names[1].clone()])
        ),
        "{:?}",
        opened.notes
    );
    let index = opened.index;
    assert_eq!(index.increments().unwrap().len(), 1);
    // b's second version lost its increment, but the mirror still holds it (unchanged since),
    // so it stays visible at its original start; the first is held by the first increment.
    let b = index.versions(&RelPath::parse("d/b").unwrap()).unwrap();
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(
        b[0].holder,
        backup_core::Holder::Increment {
            name: names[0].clone(),
            category: Category::Tracked
        }
    );
    assert_eq!(b[1].holder, backup_core::Holder::Mirror);
    assert_eq!(b[1].start.as_ref(), Some(&names[1]));
    drop(index);
    // Renamed back: noticed again.
    std::fs::rename(
        d.path().join("backup_X_old"),
        d.path().join(names[1].as_str()),
    )
    .unwrap();
    let opened = Index::open_for(&repo, None).unwrap();
    assert_eq!(opened.index.increments().unwrap().len(), 2);
    assert_eq!(
        opened
            .index
            .versions(&RelPath::parse("d/b").unwrap())
            .unwrap()
            .len(),
        2
    );
}

/// A mount (or any reader) that follows the backup syncs its catalog while a run is filling a
/// new increment: it must neither wait for the run (which holds the index's write lock until it
/// commits) nor record the half-written increment; once the run has recorded it, the reader's
/// sync finds nothing left to do instead of adding it a second time.
#[test]
fn a_reader_leaves_the_increment_a_running_writer_fills_to_it() {
    let d = tempfile::tempdir().unwrap();
    let names = backup(d.path());
    let repo = Repository::at(d.path());
    let reader = Index::open_for(&repo, None).unwrap().index;
    assert_eq!(reader.increments().unwrap().len(), 2);

    // A run: the repository's lock, its index transaction, its increment folder (no metadata
    // yet: that lands last).
    let lock = repo.lock_for_writing().unwrap();
    let writer = Index::open_for(&repo, Some(&lock)).unwrap().index;
    writer.begin().unwrap();
    let third = IncrementName::parse("backup_20240103_100000").unwrap();
    std::fs::create_dir(repo.increment_dir(&third)).unwrap();
    let t = std::time::Instant::now();
    let report = reader.sync_catalog(&repo, None).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "the reader waited for the writer ({:?})",
        t.elapsed()
    );
    assert_eq!(reader.increments().unwrap().len(), 2);

    // The run records its increment and commits; the reader then sees it as recorded.
    let meta = IncrementMeta::load(&repo.increment_meta_path(&names[1]))
        .unwrap()
        .0;
    std::fs::write(repo.increment_meta_path(&third), meta.to_json()).unwrap();
    writer.rollback().unwrap();
    let synced = writer.sync_catalog(&repo, Some(&lock)).unwrap();
    assert_eq!(synced.added, vec![third.clone()]);
    drop(writer);
    drop(lock);
    let report = reader.sync_catalog(&repo, None).unwrap();
    assert!(report.is_empty(), "{report:?}");
    let incs = reader.increments().unwrap();
    assert_eq!(incs.len(), 3);
    assert_eq!(incs[2].name, third);
}
