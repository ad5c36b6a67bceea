//! Invariant 4 of SPEC §2: interrupted runs (kill -9 at random moments, a full disk) lose
//! nothing stored earlier, and the next run converges. Plus the lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backup_tests::capability::{require, Tmpfs};
use backup_tests::{assert_same_tree, bin, text, tree, Node, TestEnv};
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

fn selection(env: &TestEnv) -> BTreeMap<Vec<u8>, Node> {
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

    let mut kept: BTreeMap<String, BTreeMap<Vec<u8>, Node>> = BTreeMap::new();
    let trials = std::env::var("BACKUP_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut killed = 0;
    for round in 0..trials {
        for name in env.increments() {
            if env.dist.join(&name).join(format!("{name}.json")).exists() {
                kept.entry(name.clone())
                    .or_insert_with(|| tree(&env.dist.join(&name)));
            }
        }
        mutate(&env, &mut rng, round);
        let mut child = Command::new(bin("backup"))
            .arg("--config")
            .arg(&env.config_path)
            .arg("-q")
            .spawn()
            .unwrap();
        // Later runs copy a fraction of the first one's bytes: aim inside them.
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1000));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        for (name, t) in &kept {
            assert_same_tree(t, &tree(&env.dist.join(name)));
        }
    }
    eprintln!("{killed} of {trials} runs killed while running");
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
fn second_run_is_refused_while_the_lock_is_held() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["t"]}));
    env.write("t/a", b"a");
    env.backup_ok(&[]);
    let before = tree(&env.dist);
    // Hold the lock the way a running backup does (flock on the lock file).
    let lock = std::fs::File::open(env.dist.join(".backup.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: valid descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    env.write("t/a", b"changed");
    let out = env.backup(&[]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(
        se.contains(".backup.lock"),
        "the message names the lock: {se}"
    );
    assert_eq!(se.lines().count(), 1, "one clear line: {se}");
    assert_same_tree(&before, &tree(&env.dist));
    drop(lock);
    // A lock file left behind (as after kill -9) does not block.
    env.backup_ok(&[]);
}

#[test]
fn full_disk_stops_cleanly_and_the_next_run_converges() {
    let env = TestEnv::new();
    let mnt = env.dir.path().join("small");
    let Some(_tmpfs) = require("tmpfs mount (mount -t tmpfs)", Tmpfs::mount(&mnt, "40m")) else {
        return;
    };
    let env = TestEnv {
        dist: mnt.join("dist"),
        ..env
    };
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
