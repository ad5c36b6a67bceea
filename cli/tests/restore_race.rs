//! A restore running as root while a local user who can write inside the target swaps a
//! folder of it for a symlink to an outside folder, as fast as the kernel allows
//! (`renameat2(RENAME_EXCHANGE)` in a loop). Nothing may appear outside the target, and every
//! file the restore could not write is named with the operation that failed.
//!
//! `RESTORE_RACE_TOOL=/path/to/backup-tool` runs the same attack against another build (the
//! check that this test fails on the old path-based restore).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use backup_tests::{TestEnv, Tree};

const FILES: usize = 2_000;
const ROUNDS: usize = 5;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Exchanges `a` and `b` until `stop`; counts the exchanges.
fn swapper(a: PathBuf, b: PathBuf, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) {
    let (a, b) = (cstr(&a), cstr(&b));
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: two valid NUL-terminated paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_folder_swapped_for_a_symlink_mid_restore_never_leads_outside() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            !backup_tests::capability::under_ci(),
            "CI runs this test as root"
        );
        eprintln!("skipped: the attack matters for a root restore; run as root");
        return;
    }
    let tool = std::env::var_os("RESTORE_RACE_TOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| backup_tests::bin("backup-tool"));
    let env = TestEnv::new();
    for i in 0..FILES {
        env.write_at(
            &format!("top/d/f{i:05}"),
            format!("file {i}\n").as_bytes(),
            1_704_448_800,
        );
    }
    env.backup_all().unwrap();

    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me").unwrap();
    let before = Tree::with_dirs(outside.path());
    let mut total_failures = 0;
    let mut total_swaps = 0;
    for round in 0..ROUNDS {
        let to = env.dir.path().join(format!("target{round}"));
        // The user's preparation: the folder restore will write into, and a symlink to swap.
        fs::create_dir_all(to.join("top/d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), to.join("top/swap")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let t = {
            let (a, b) = (to.join("top/d"), to.join("top/swap"));
            let (stop, swaps) = (stop.clone(), swaps.clone());
            std::thread::spawn(move || swapper(a, b, stop, swaps))
        };
        let out = std::process::Command::new(&tool)
            .arg(&env.dist)
            .args(["restore", "--to"])
            .arg(&to)
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        total_swaps += swaps.load(Ordering::Relaxed);

        let after = Tree::with_dirs(outside.path());
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, d)| before.get(*p) != Some(*d))
            .map(|(p, _)| p)
            .collect();
        assert!(
            changed.is_empty() && after.len() == before.len(),
            "round {round}: the restore wrote {} entries outside its target, e.g. {:?}",
            changed.len(),
            &changed[..changed.len().min(3)]
        );
        let code = out.status.code();
        assert!(code == Some(0) || code == Some(1), "round {round}: {out:?}");
        // Every failure names the file, under the target, and what failed.
        let err = String::from_utf8_lossy(&out.stderr);
        let failures: Vec<&str> = err.lines().filter(|l| l.contains("top/d/f")).collect();
        for l in &failures {
            assert!(l.contains(to.to_str().unwrap()), "round {round}: {l}");
            assert!(
                ["open folder", "create", "rename", "stat"]
                    .iter()
                    .any(|op| l.contains(op)),
                "round {round}: no operation named: {l}"
            );
        }
        // A folder whose recorded metadata could not be applied (swapped away when its turn
        // came, after its files) is a failure too, named with its operation.
        let folder_failures: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("backup-tool: top/d:") || l.starts_with("backup-tool: top:"))
            .collect();
        for l in &folder_failures {
            assert!(l.contains("open folder"), "round {round}: {l}");
        }
        assert_eq!(
            failures.is_empty() && folder_failures.is_empty(),
            code == Some(0),
            "round {round}: {err}"
        );
        // What was not refused was restored, into the real folder (wherever it is now).
        let restored = walkdir::WalkDir::new(&to)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(restored + failures.len(), FILES, "round {round}: {err}");
        total_failures += failures.len();
        if let Some(l) = failures.first() {
            eprintln!("round {round}: {} refused, e.g. {l}", failures.len());
        }
    }
    assert!(total_swaps > 0, "the attacker never got to swap");
    eprintln!("{ROUNDS} rounds, {total_swaps} swaps, {total_failures} refused files");
}
