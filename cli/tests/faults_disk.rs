//! The disk fills up at every moment of a run (a sweep of free space on a small tmpfs, so the
//! ENOSPC lands in the copies, the increment links, the journal, the metadata or the index):
//! the run stops with a message that says the disk is full and a non-zero status, nothing
//! stored earlier changes, and once space is freed the next run converges with `check` clean.
//! (The engine's tests cover one full-disk run; this sweeps where it lands.)

use std::path::{Path, PathBuf};

use backup_tests::capability::{require, Tmpfs};
use backup_tests::faults::{
    assert_check_clean, assert_no_orphan_increment, assert_versions_kept, committed_versions,
};
use backup_tests::{assert_same_tree, serde_json::json, text, tree, TestEnv};

fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a zeroed statvfs to fill.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

/// Fills the file system at `dir` until about `leave` bytes are free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let ballast = dir.join("ballast");
    let free = free_bytes(dir);
    let size = free.saturating_sub(leave);
    let _ = std::fs::write(&ballast, vec![0u8; size as usize]);
    ballast
}

#[test]
fn disk_full_at_any_moment_loses_nothing_and_the_next_run_converges() {
    let env = TestEnv::new();
    let mnt = env.dir.path().join("small");
    let Some(_tmpfs) = require("tmpfs mount (mount -t tmpfs)", Tmpfs::mount(&mnt, "24m")) else {
        return;
    };
    let mut env = env;
    env.dist = mnt.join("dist");
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["media"], "max_workers": 2}));
    let pattern: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let write_round = |round: usize| {
        for i in 0..12 {
            let mut d = pattern[..60_000 + i * 1000].to_vec();
            d[0] = round as u8;
            env.write(format!("docs/d{i}.txt"), &d);
        }
        for i in 0..4 {
            let mut d = pattern.clone();
            d[1] = round as u8;
            env.write(format!("media/m{i}.bin"), &d);
        }
        env.write(format!("docs/new{round}/n.txt"), &pattern[..50_000]);
        if round > 0 {
            let _ = std::fs::remove_dir_all(env.src.join(format!("docs/new{}", round - 1)));
        }
    };
    write_round(0);
    env.backup_ok(&[]);

    let mut full_runs = 0;
    let leaves: [u64; 10] = [
        0,
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        512 << 10,
        1 << 20,
        2 << 20,
        3 << 20,
        4 << 20,
    ];
    for (round, leave) in leaves.iter().enumerate() {
        let round = round + 1;
        write_round(round);
        let recorded = committed_versions(&env.dist);
        let ballast = fill(&mnt, *leave);
        let out = env.backup(&[]);
        let (so, se) = text(&out);
        let when = format!("round {round}, {leave} bytes free");
        assert!(!se.contains("panicked"), "{when}: {se}");
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                full_runs += 1;
                assert!(
                    se.contains("full"),
                    "{when}: exit 1 without saying the disk is full:\n{so}\n{se}"
                );
            }
            other => panic!("{when}: exit {other:?}\n{so}\n{se}"),
        }
        assert_versions_kept(&env.dist, &recorded, &when);

        std::fs::remove_file(&ballast).unwrap();
        let out = env.backup(&[]);
        let (so, se) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{when}, space freed:\n{so}\n{se}"
        );
        assert_versions_kept(&env.dist, &recorded, &when);
        assert_same_tree(&tree(&env.src), &tree(&env.mirror()));
        assert_check_clean(&env.dist, &when);
        assert_no_orphan_increment(&env.dist, &when);
    }
    // The sweep must actually have hit a full disk, more than once.
    assert!(full_runs >= 3, "only {full_runs} runs met a full disk");
    eprintln!(
        "{full_runs} of {} runs stopped by a full disk",
        leaves.len()
    );
}
