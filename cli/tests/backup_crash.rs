//! Invariant 4 of `docs/format.md`: interrupted runs (kill -9 at random moments, a full disk) lose
//! nothing stored earlier, and the next run converges. Plus the lock, between real runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_tests::capability::{require, Tmpfs};
use backup_tests::faultfs::{self, FailAt};
use backup_tests::faults::{assert_check_clean, assert_no_orphan_increment, kill_after};
use backup_tests::{assert_same_tree, bin, text, tree, TestEnv, Tree};
use serde_json::json;

/// A tiny deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("BACKUP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn content(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max) as usize;
    let b = rng.next() as u8;
    (0..len).map(|i| b.wrapping_add((i % 253) as u8)).collect()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn mutate(env: &TestEnv, rng: &mut Rng, round: usize) {
    let files = files_under(&env.src);
    for _ in 0..40 {
        if files.is_empty() {
            break;
        }
        let f = &files[rng.below(files.len() as u64) as usize];
        if rng.below(5) == 0 {
            let _ = std::fs::remove_file(f);
        } else {
            let _ = std::fs::write(f, content(rng, 300_000));
        }
    }
    for i in 0..8 {
        let dir = if rng.below(2) == 0 { "t" } else { "u" };
        env.write(
            format!("{dir}/r{round}/d{}/f{i}", rng.below(3)),
            &content(rng, 200_000),
        );
    }
}

/// Every increment with metadata: the files its catalog names exist and have the recorded hash.
fn check_catalogs(env: &TestEnv) {
    for name in env.increments() {
        let meta_path = env.dist.join(&name).join(format!("{name}.json"));
        assert!(meta_path.exists(), "increment {name} has no metadata");
        let meta = env.increment_meta(&name);
        for (path, e) in meta["file_catalog"].as_object().unwrap() {
            let dir = if e["category"] == "deleted" {
                "deleted"
            } else {
                "track"
            };
            let p = env.dist.join(&name).join(dir).join(path);
            let m = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|err| panic!("{name}: {path} listed but missing: {err}"));
            let data = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            assert_eq!(
                e["hash"].as_str().unwrap(),
                blake3::hash(&data).to_hex().as_str(),
                "{name}: {path} content differs from its catalog"
            );
        }
    }
}

fn selection(env: &TestEnv) -> Tree {
    tree(&env.src)
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_converges() {
    let seed = seed();
    eprintln!("seed {seed} (BACKUP_TEST_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["t"], "include_dirs": ["u"], "max_workers": 2}));
    for i in 0..150 {
        let dir = if i % 3 == 0 { "u" } else { "t" };
        env.write(
            format!("{dir}/d{}/f{i}", i % 7),
            &content(&mut rng, 400_000),
        );
    }
    bin("backup"); // builds it if needed, outside the timing
    let started = Instant::now();
    env.backup_ok(&[]);
    let full = started.elapsed();

    let mut kept: BTreeMap<String, Tree> = BTreeMap::new();
    let trials = std::env::var("BACKUP_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // Every trial ends with a kill that lands while `backup` runs: a run that finished before
    // its kill came (and was checked like any other) is followed by another change and another
    // try, aimed inside the duration that run took.
    let mut window = full;
    let (mut killed, mut finished) = (0, 0);
    for round in 0..trials {
        for attempt in 0.. {
            for name in env.increments() {
                if env.dist.join(&name).join(format!("{name}.json")).exists() {
                    kept.entry(name.clone())
                        .or_insert_with(|| tree(&env.dist.join(&name)));
                }
            }
            mutate(&env, &mut rng, round * 100 + attempt);
            let delay = if attempt < 20 {
                Duration::from_micros(rng.below(window.as_micros() as u64 + 1))
            } else {
                Duration::ZERO
            };
            let (mid_run, took) = kill_after(&env.config_path, delay);
            for (name, t) in &kept {
                assert_same_tree(t, &tree(&env.dist.join(name)));
            }
            if mid_run {
                killed += 1;
                break;
            }
            finished += 1;
            window = took.unwrap_or(window);
        }
    }
    eprintln!(
        "{killed} of {trials} trials killed a running backup ({finished} runs finished first)"
    );
    assert_eq!(killed, trials, "a trial ended without a kill mid-run");
    let out = env.backup(&["--json"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    for (name, t) in &kept {
        assert_same_tree(t, &tree(&env.dist.join(name)));
    }
    assert_same_tree(&selection(&env), &tree(&env.mirror()));
    check_catalogs(&env);
    assert!(!env.dist.join(".backup-journal.json").exists());
    assert!(!env.dist.join(".backup-staging").exists());
    // mirror.json agrees with the mirror: a further run has nothing to do.
    let s = env.backup_json();
    assert_eq!(
        (s["copied"].as_u64(), s["removed"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
}

#[test]
fn a_run_that_ends_before_its_kill_is_not_counted_as_killed() {
    // The kill counter above can go both ways: a refused run (its config names no source)
    // exits at once and is reported as finished, even with the kill due much later...
    let env = TestEnv::new();
    std::fs::write(&env.config_path, br#"{"dist": "/nonexistent/dist"}"#).unwrap();
    let (mid_run, took) = kill_after(&env.config_path, Duration::from_secs(60));
    assert!(!mid_run && took.is_some(), "{mid_run} {took:?}");
    // ...and a real run killed at once is reported as killed.
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["t"]}));
    env.write("t/a", b"a");
    let (mid_run, took) = kill_after(&env.config_path, Duration::ZERO);
    assert!(mid_run && took.is_none(), "{mid_run} {took:?}");
}

/// Starts a real `backup` whose copy of `slow` hangs (a stalled read of the fault file
/// system) and returns once it is stuck there, holding the lock in the middle of its run.
fn start_stuck_backup(env: &TestEnv, fs: &faultfs::Mounted, slow: &str) -> std::process::Child {
    fs.set_fault(slow, Some(FailAt::Stall));
    let mut child = Command::new(bin("backup"))
        .arg("--config")
        .arg(&env.config_path)
        .arg("-q")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    let start = Instant::now();
    while fs.stalled_reads() == 0 {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the first backup ended ({st}) before reaching {slow}: {:?}",
                text(&out)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first backup never read {slow}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_second_backup_is_refused_while_one_runs_and_the_lock_dies_with_its_holder() {
    let env = TestEnv::new();
    let real = env.dir.path().join("real");
    std::fs::create_dir_all(real.join("docs")).unwrap();
    std::fs::write(real.join("docs/a.txt"), b"a1").unwrap();
    std::fs::write(real.join("docs/slow.bin"), vec![7u8; 64 << 10]).unwrap();
    let Some(fs) = require(
        "FUSE mount (/dev/fuse)",
        faultfs::mount(&real, &env.src).map_err(|e| e.to_string()),
    ) else {
        return;
    };
    env.config(json!({"track_dirs": ["docs"]}));

    // 1. A real run is busy (stuck copying docs/slow.bin); a second real run on the same
    //    dist is refused before doing anything.
    let first = start_stuck_backup(&env, &fs, "docs/slow.bin");
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{so}\n{se}");
    assert!(
        se.contains(".backup.lock"),
        "the message names the lock: {se}"
    );
    assert_eq!(se.lines().count(), 1, "one clear line: {se}");
    assert!(fs.stalled_reads() > 0, "the first run is still busy");
    // The first run, released, finishes undisturbed.
    fs.set_fault("docs/slow.bin", None);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after the refused second run");

    // 2. A run killed (-9) while holding the lock: the kernel drops its lock with it, and the
    //    next run recovers and converges.
    std::fs::write(real.join("docs/a.txt"), b"a2").unwrap();
    std::fs::write(real.join("docs/slow.bin"), vec![8u8; 64 << 10]).unwrap();
    let mut holder = start_stuck_backup(&env, &fs, "docs/slow.bin");
    assert!(env.dist.join(".backup.lock").exists());
    holder.kill().unwrap();
    // A read already handed to the file system must be answered before the killed process
    // can finish dying (the kernel waits for it): lift the stall, then reap it.
    fs.set_fault("docs/slow.bin", None);
    holder.wait().unwrap();
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    assert_check_clean(&env.dist, "after the holder was killed");
    assert_no_orphan_increment(&env.dist, "after the holder was killed");
    drop(fs);
}

#[test]
fn full_disk_stops_cleanly_and_the_next_run_converges() {
    let env = TestEnv::new();
    let mnt = env.dir.path().join("small");
    let Some(_tmpfs) = require("tmpfs mount (mount -t tmpfs)", Tmpfs::mount(&mnt, "40m")) else {
        return;
    };
    let mut env = env;
    env.dist = mnt.join("dist");
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["big"]}));
    let mb: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 249) as u8).collect();
    for i in 0..10 {
        env.write(format!("docs/d{i}"), &mb[..100_000 + i]);
    }
    for i in 0..20 {
        env.write(format!("big/b{i}"), &mb);
    }
    env.backup_ok(&[]);
    let first = env.increments();
    let kept = tree(&env.dist.join(&first[0]));
    // Something else on the same disk, which the user deletes to make room afterwards.
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![0u8; 12 << 20]).unwrap();

    for i in 0..10 {
        env.write(format!("docs/d{i}"), &mb[..200_000 + i]);
    }
    for i in 0..30 {
        env.write(format!("big/c{i}"), &mb);
    }
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(se.contains("disk") && se.contains("full"), "{se}");
    assert_same_tree(&kept, &tree(&env.dist.join(&first[0])));

    std::fs::remove_file(&ballast).unwrap();
    for i in 0..25 {
        env.remove(format!("big/c{i}"));
    }
    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_same_tree(&kept, &tree(&env.dist.join(&first[0])));
    assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
    check_catalogs(&env);
}
