//! The profile's hooks: their environment, a failing `before` (exit 2, nothing written),
//! `on_error`, output in the log, the timeout, and the refusal of hooks in a profile other
//! users could write when running as root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use backup_tests::{text, TestEnv};
use serde_json::json;

/// `KEY=VALUE` lines of a file written by `env > FILE`, only the `BACKUP_` ones.
fn env_file(p: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("hook did not write {}: {e}", p.display()))
        .lines()
        .filter(|l| l.starts_with("BACKUP_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn hooks_see_the_run_summary() {
    let env = TestEnv::new();
    let after = env.dir.path().join("after.env");
    let before = env.dir.path().join("before.env");
    let on_error = env.dir.path().join("on_error.env");
    env.config(json!({
        "track_dirs": ["docs"],
        "hooks": {
            // A string runs with sh -c; a list runs directly.
            "before": [format!("env > '{}'", before.display())],
            "after": [["sh", "-c", "env > \"$0\"", after.to_str().unwrap()]],
            "on_error": [format!("env > '{}'", on_error.display())],
        },
    }));
    env.write("docs/a.txt", b"a");
    env.write("docs/b.txt", b"b");
    let log = env.dir.path().join("run.log");
    let out = env.backup(&["--log-file", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let inc = env.increments().pop().expect("an increment");
    let e = env_file(&after);
    let src = env.src.canonicalize().unwrap();
    for (k, v) in [
        ("BACKUP_STATUS", "success"),
        ("BACKUP_EXIT", "0"),
        ("BACKUP_HOOK", "after"),
        ("BACKUP_INCREMENT", inc.as_str()),
        ("BACKUP_NEW", "2"),
        ("BACKUP_CHANGED", "0"),
        ("BACKUP_DELETED", "0"),
        ("BACKUP_COPIED", "2"),
        ("BACKUP_ERRORS", "0"),
        ("BACKUP_SRC", src.to_str().unwrap()),
        ("BACKUP_CONFIG", env.config_path.to_str().unwrap()),
    ] {
        assert_eq!(e.get(k).map(String::as_str), Some(v), "{k} in {e:?}");
    }
    assert!(e["BACKUP_DIST"].ends_with("/dist"), "{e:?}");
    let b = env_file(&before);
    assert_eq!(b.get("BACKUP_HOOK").map(String::as_str), Some("before"));
    assert_eq!(b.get("BACKUP_SRC"), e.get("BACKUP_SRC"));
    assert!(!on_error.exists(), "on_error ran after a successful run");

    // A changed and a deleted file show up in the counts.
    env.write("docs/a.txt", b"a2");
    env.remove("docs/b.txt");
    env.backup_ok(&["-q"]);
    let e = env_file(&after);
    assert_eq!(
        (
            e["BACKUP_NEW"].as_str(),
            e["BACKUP_CHANGED"].as_str(),
            e["BACKUP_DELETED"].as_str()
        ),
        ("0", "1", "1")
    );
}

#[test]
fn failing_before_hook_refuses_the_run_and_writes_nothing() {
    let env = TestEnv::new();
    let on_error = env.dir.path().join("on_error.env");
    let after = env.dir.path().join("after.env");
    env.config(json!({
        "track_dirs": ["docs"],
        "hooks": {
            "before": ["echo mounting the disk; echo 'no disk' >&2; exit 3"],
            "after": [format!("env > '{}'", after.display())],
            "on_error": [format!("env > '{}'", on_error.display())],
        },
    }));
    env.write("docs/a.txt", b"a");
    let log = env.dir.path().join("run.log");
    let out = env.backup(&["--log-file", log.to_str().unwrap()]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("before[1]") && se.contains("status 3"), "{se}");
    assert!(!env.dist.exists(), "a refused run wrote dist");
    // on_error ran with status refused; after did not (the run never started).
    let e = env_file(&on_error);
    assert_eq!(e.get("BACKUP_STATUS").map(String::as_str), Some("refused"));
    assert_eq!(e.get("BACKUP_EXIT").map(String::as_str), Some("2"));
    assert!(!after.exists(), "after ran for a run that never started");
    // The hook's output (stdout and stderr) is in the log.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("mounting the disk") && logged.contains("no disk"),
        "{logged}"
    );

    // With --json, the refusal is one JSON object.
    let out = env.backup(&["--json", "-q"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exit"], 2);
    assert!(
        doc["error"].as_str().unwrap().contains("before[1]"),
        "{doc}"
    );
}

#[test]
fn a_failing_after_hook_is_exit_1() {
    let env = TestEnv::new();
    let on_error = env.dir.path().join("on_error.env");
    env.config(json!({
        "track_dirs": ["docs"],
        "hooks": {
            "after": [["false"]],
            "on_error": [format!("env > '{}'", on_error.display())],
        },
    }));
    env.write("docs/a.txt", b"a");
    let out = env.backup(&[]);
    let (_, se) = text(&out);
    // The backup itself succeeded: after's failure makes it 1, on_error does not run for it.
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("after[1]"), "{se}");
    assert!(env.dist.join("mirror/docs/a.txt").exists());
    assert!(!on_error.exists());
}

/// A partial run (an unreadable file) runs `on_error` with the error count. The tests run as
/// root, who reads anything, so the run is made as `nobody` (setpriv), as in scan_unreadable.
#[test]
fn partial_run_runs_on_error() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    chmod(root, 0o755);
    let src = root.join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/a.txt"), b"a").unwrap();
    std::fs::write(src.join("docs/secret.txt"), b"s").unwrap();
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    chmod(&out_dir, 0o777);
    let on_error = out_dir.join("on_error.env");
    let config = root.join("config.json");
    std::fs::write(
        &config,
        json!({
            "src": src, "dist": out_dir.join("dist"), "track_dirs": ["docs"],
            "hooks": {"on_error": [format!("env > '{}'", on_error.display())]},
        })
        .to_string(),
    )
    .unwrap();
    chmod(&src.join("docs/secret.txt"), 0o000);
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(backup_tests::bin("backup"))
        .arg("-c")
        .arg(&config)
        .output()
        .expect("setpriv (util-linux)");
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{se}");
    let e = env_file(&on_error);
    assert_eq!(e.get("BACKUP_STATUS").map(String::as_str), Some("partial"));
    assert_eq!(e.get("BACKUP_EXIT").map(String::as_str), Some("1"));
    assert_eq!(e.get("BACKUP_ERRORS").map(String::as_str), Some("1"));
}

#[test]
fn hook_timeout_kills_it() {
    let env = TestEnv::new();
    env.config(json!({
        "track_dirs": ["docs"],
        "hooks": {"before": ["sleep 600"], "timeout": 1},
    }));
    env.write("docs/a.txt", b"a");
    let out = env.backup(&[]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("timeout of 1 s"), "{se}");
    assert!(!env.dist.exists());
}

#[test]
fn hooks_in_a_profile_others_can_write_are_refused_as_root() {
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !backup_tests::capability::under_ci(),
            "CI runs as root; this test needs root"
        );
        return;
    }
    let env = TestEnv::new();
    let marker = env.dir.path().join("ran");
    env.config(json!({
        "track_dirs": ["docs"],
        "hooks": {"before": [format!("touch '{}'", marker.display())]},
    }));
    env.write("docs/a.txt", b"a");
    for (file_mode, dir_mode) in [(0o666, 0o700), (0o644, 0o777)] {
        std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(file_mode))
            .unwrap();
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(dir_mode))
            .unwrap();
        let out = env.backup(&[]);
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{se}");
        assert!(se.contains("refusing to run its hooks as root"), "{se}");
        assert!(!marker.exists() && !env.dist.exists());
    }
    std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.backup_ok(&["-q"]);
    assert!(marker.exists());
}
