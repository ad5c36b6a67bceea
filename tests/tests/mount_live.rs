//! A mounted backup follows the backup on disk, and serves many readers at once.

use std::fs;
use std::io::Read;
use std::process::Command;

use backup_tests::mount::{read_tree, wait_until, MountedBackup};
use backup_tests::mount_fixture::{Change, FixtureBackup};

const A: &str = "backup_20240101_100000";
const B: &str = "backup_20240102_100000";
const C: &str = "backup_20240103_100000";

#[test]
fn a_backup_that_lands_while_mounted_becomes_visible_and_a_pruned_one_vanishes() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    let mut f = FixtureBackup::new(&dist);
    f.backup(
        A,
        &[
            Change::Write("docs/report.txt", b"report v1"),
            Change::Write("keep.txt", b"keep"),
        ],
    );
    f.backup(B, &[Change::Write("docs/report.txt", b"report v2")]);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));
    let latest = m.path("snapshots/latest/docs/report.txt");
    assert_eq!(fs::read(&latest).unwrap(), b"report v2");
    // Keep kernel caches warm, so only invalidation can make the new state visible.
    let _ = fs::read_dir(m.path("snapshots")).unwrap().count();

    f.backup(
        C,
        &[Change::Write(
            "docs/report.txt",
            b"report v3 landed while mounted",
        )],
    );
    wait_until("the new increment in snapshots/", || {
        m.path(&format!("snapshots/{C}")).is_dir()
    });
    wait_until("latest to move", || {
        fs::read(&latest).ok().as_deref() == Some(&b"report v3 landed while mounted"[..])
    });
    assert!(fs::read_dir(m.path("increments"))
        .unwrap()
        .any(|e| e.unwrap().file_name() == C));
    assert_eq!(
        fs::read_dir(m.path("history/docs/report.txt"))
            .unwrap()
            .count(),
        3
    );

    // Prune A while one of its versions is open.
    let mut held = fs::File::open(m.path(&format!("snapshots/{A}/docs/report.txt"))).unwrap();
    fs::remove_dir_all(dist.join(A)).unwrap();
    wait_until("the pruned increment to vanish", || {
        !m.path(&format!("snapshots/{A}")).exists() && !m.path(&format!("increments/{A}")).exists()
    });
    // The open file either still reads the version it opened or fails cleanly.
    let mut v = Vec::new();
    match held.read_to_end(&mut v) {
        Ok(_) => assert_eq!(v, b"report v1"),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOENT)),
            "unexpected error {e}"
        ),
    }
    // The mount is alive and the views after A keep what others hold (keep.txt via the mirror).
    assert_eq!(
        fs::read(m.path(&format!("snapshots/{B}/keep.txt"))).unwrap(),
        b"keep"
    );
    assert_eq!(
        fs::read(m.path(&format!("snapshots/{B}/docs/report.txt"))).unwrap(),
        b"report v2"
    );
}

fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn eight_parallel_readers_copy_identical_bytes() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    let mut f = FixtureBackup::new(&dist);
    let files: Vec<(String, Vec<u8>)> = (0..120u64)
        .map(|i| {
            let len = match i % 4 {
                0 => 0,
                1 => 4096,
                2 => 300_000 + i as usize * 17,
                _ => 1_100_000 + i as usize,
            };
            (
                format!("d{}/sub{}/f{i}.bin", i % 5, i % 3),
                pseudo_random_bytes(i, len),
            )
        })
        .collect();
    let changes: Vec<Change> = files.iter().map(|(p, c)| Change::Write(p, c)).collect();
    f.backup(A, &changes);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));
    let src = m.path("snapshots/latest");
    let expected = read_tree(&dist.join("mirror"));
    assert_eq!(expected.len(), files.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let src = src.clone();
                let dest = t.path().join(format!("copy{i}"));
                s.spawn(move || {
                    let st = Command::new("cp")
                        .arg("-a")
                        .arg(&src)
                        .arg(&dest)
                        .status()
                        .unwrap();
                    assert!(st.success(), "cp -a by reader {i}");
                    read_tree(&dest)
                })
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            assert_eq!(got.len(), expected.len());
            for (k, v) in &expected {
                assert!(got[k].content == v.content, "bytes of {k} differ");
                assert_eq!(got[k].mtime_ns, v.mtime_ns, "mtime of {k}");
            }
        }
    });
}
