//! The mount under stress: 8 parallel readers walk and read `snapshots/`, `history/`,
//! `increments/` and `mirror/` while backups land and increments are pruned. Every version is
//! self-describing (a header names its path and version, the rest derives from them), so each
//! byte read can be verified without knowing which version a reader got. Errors are allowed
//! only where a pruned increment vanished under a reader (ENOENT, ESTALE); no wrong byte, no
//! crash of the mount.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use backup_tests::faults::assert_check_clean;
use backup_tests::mount::MountedBackup;
use backup_tests::{serde_json::json, text, TestEnv};

fn version_bytes(path: &str, n: u64) -> Vec<u8> {
    let mut out = format!("{path} v{n}\n").into_bytes();
    let mut x = blake3::hash(format!("{path}/{n}").as_bytes());
    // Sizes from a few bytes to ~300 KiB, so reads span many FUSE requests.
    let len = out.len() + (x.as_bytes()[0] as usize * 1200) + (n as usize % 7) * 50;
    while out.len() < len {
        out.extend_from_slice(x.as_bytes());
        x = blake3::hash(x.as_bytes());
    }
    out.truncate(len);
    out
}

/// True when `data` is exactly the version its header names.
fn consistent(data: &[u8]) -> bool {
    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..nl]).into_owned();
    let Some((path, v)) = head.rsplit_once(" v") else {
        return false;
    };
    let Ok(n) = v.parse::<u64>() else {
        return false;
    };
    version_bytes(path, n) == data
}

#[derive(Default)]
struct Stats {
    verified: AtomicU64,
    clean_errors: AtomicU64,
    wrong: Mutex<Vec<String>>,
}

fn clean(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ESTALE) | Some(libc::ENOTDIR)
    )
}

impl Stats {
    /// A failed `op` on `p`: allowed when a pruned increment vanished, else a bad read.
    fn error(&self, op: &str, p: &Path, e: &std::io::Error) {
        if clean(e) {
            self.clean_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.wrong
                .lock()
                .unwrap()
                .push(format!("{op} {}: {e}", p.display()));
        }
    }
}

fn walk(dir: &Path, stats: &Stats, stop: &AtomicBool) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return stats.error("readdir", dir, &e),
    };
    for e in rd {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(e) = e else {
            stats.clean_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, stats, stop),
            Ok(m) if m.is_file() => match std::fs::read(&p) {
                // An increment's metadata, read whole: it must be complete JSON.
                Ok(data)
                    if p.extension().is_some_and(|x| x == "json")
                        && backup_tests::serde_json::from_slice::<
                            backup_tests::serde_json::Value,
                        >(&data)
                        .is_ok() =>
                {
                    stats.verified.fetch_add(1, Ordering::Relaxed);
                }
                Ok(data) if consistent(&data) => {
                    stats.verified.fetch_add(1, Ordering::Relaxed);
                }
                Ok(data) => stats.wrong.lock().unwrap().push(format!(
                    "wrong bytes in {} ({} bytes)",
                    p.display(),
                    data.len()
                )),
                Err(e) => stats.error("read", &p, &e),
            },
            Ok(_) => {}
            Err(e) => stats.error("stat", &p, &e),
        }
    }
}

#[test]
fn eight_readers_while_backups_land_and_increments_are_pruned() {
    let env = TestEnv::new();
    let files: Vec<String> = (0..40)
        .map(|i| format!("docs/d{}/f{i}.bin", i % 5))
        .collect();
    let mut version = vec![0u64; files.len()];
    let write = |i: usize, n: u64| env.write(&files[i], &version_bytes(&files[i], n));
    for i in 0..files.len() {
        write(i, 0);
    }
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    let mnt = env.dir.path().join("mnt");
    let mut mount = MountedBackup::start(&env.dist, &mnt);

    let stats = Stats::default();
    let stop = AtomicBool::new(false);
    let roots: Vec<PathBuf> = ["snapshots", "history", "increments", "mirror"]
        .iter()
        .map(|r| mount.path(r))
        .collect();
    let mut landed = 0;
    let mut pruned_runs = 0;
    std::thread::scope(|s| {
        for r in 0..8 {
            let (stats, stop, roots) = (&stats, &stop, &roots);
            s.spawn(move || {
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    walk(&roots[k % roots.len()], stats, stop);
                    k += 1;
                }
            });
        }
        for round in 1..=10u64 {
            // A day of work: a quarter of the files get a new version, one is deleted and
            // comes back later.
            for (i, v) in version.iter_mut().enumerate() {
                if (i as u64 + round).is_multiple_of(4) {
                    *v = round;
                    write(i, round);
                }
            }
            let gone = &files[round as usize % files.len()];
            let _ = std::fs::remove_file(env.src.join(gone));
            let out = env.backup(&[]);
            assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
            landed += 1;
            let back = round as usize % files.len();
            write(back, version[back]);
            if round.is_multiple_of(2) {
                let out = env.tool(&[env.dist.to_str().unwrap(), "prune", "--keep-last", "3"]);
                assert!(out.status.success(), "prune: {:?}", text(&out));
                pruned_runs += 1;
            }
        }
        // Let the readers go over the final state too.
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });

    let wrong = stats.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} bad reads:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    let verified = stats.verified.load(Ordering::Relaxed);
    assert!(verified > 200, "readers verified only {verified} files");
    // The mount survived it all and still unmounts cleanly.
    let status = mount.terminate();
    assert!(status.success(), "mount ended with {status}");
    assert_check_clean(&env.dist, "after the stress");
    eprintln!(
        "{landed} backups landed, {pruned_runs} prunes, {verified} files read and verified, {} clean errors",
        stats.clean_errors.load(Ordering::Relaxed)
    );
}
