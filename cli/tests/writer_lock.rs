//! One lock for every writer: while a real `backup` runs (frozen mid-run with SIGSTOP, so the
//! test does not depend on timing), `recreate`, `delete` and `prune` are refused with exit 2 and
//! change nothing, a second `backup` is refused, and `check` describes the run instead of
//! advising repairs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backup_tests::{bin, serde_json, text, TestEnv, Tree};

struct Frozen(Child);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGCONT);
        }
        let _ = self.0.wait();
    }
}

/// Starts `backup` and freezes it as soon as it holds the lock (before it finishes).
fn frozen_backup(env: &TestEnv) -> Frozen {
    let lock = env.dist.join(".backup.lock");
    let child = Command::new(bin("backup"))
        .arg("--config")
        .arg(&env.config_path)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backup");
    let pid = child.id() as i32;
    let frozen = Frozen(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if backup_platform::fs::FileLock::is_held(&lock).unwrap_or(false) {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
            }
            // The signal takes effect asynchronously: wait until every thread has stopped.
            while !stopped(pid) {
                assert!(Instant::now() < deadline, "backup never stopped");
                std::thread::sleep(Duration::from_millis(1));
            }
            return frozen;
        }
        assert!(Instant::now() < deadline, "backup never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True when every thread of `pid` is stopped (state `T` in /proc).
fn stopped(pid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

fn setup() -> TestEnv {
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.write("docs/first.txt", b"first");
    env.backup_ok(&["-q"]);
    // Enough work that the second run is still going when it is frozen.
    for i in 0..1000 {
        env.write(format!("docs/d{}/f{i}.txt", i % 50), &vec![b'x'; 4096]);
    }
    env
}

#[test]
fn writers_are_refused_while_a_backup_runs_and_check_describes_it() {
    let env = setup();
    let first = env.increments()[0].clone();
    let dist = env.dist.to_str().unwrap().to_owned();
    let frozen = frozen_backup(&env);
    let before = Tree::dist(&env.dist);

    for args in [
        vec!["recreate", "--force"],
        vec!["delete", first.as_str(), "--mask", "*"],
        vec!["prune", "--keep-last", "1"],
        // Replaces DIST/mirror.json: a write at dist like the others.
        vec!["export-mirror-json"],
    ] {
        let mut full = vec![dist.as_str()];
        full.extend(args.iter().copied());
        let out = env.tool(&full);
        let (o, e) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} must be refused\n{o}\n{e}"
        );
        assert!(e.contains("another backup is running"), "{args:?}: {e}");
    }
    // Dry runs change nothing and may run beside a backup.
    let out = env.tool(&[&dist, "prune", "--keep-last", "1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    // A second real run is refused too.
    let out = env.backup(&["-q"]);
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("another backup is running"), "{e}");

    // check describes the run, does not call its work leftovers of a crash.
    let out = env.tool(&[&dist, "check", "--json"]);
    let (o, e) = text(&out);
    let report: serde_json::Value = serde_json::from_str(&o).unwrap_or_else(|_| panic!("{o}\n{e}"));
    assert!(report["running"].is_object(), "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .all(|p| p["kind"] != "leftover" && p["kind"] != "no-metadata"),
        "{report}"
    );
    let out = env.tool(&[&dist, "check"]);
    let (o, _) = text(&out);
    assert!(o.contains("a backup is running"), "{o}");
    assert!(
        !o.contains("recreate"),
        "no repair advice during a run: {o}"
    );

    assert_eq!(
        before,
        Tree::dist(&env.dist),
        "refused commands changed nothing"
    );
    drop(frozen);
    // After the run, everything is consistent.
    let out = env.tool(&[&dist, "check"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}
