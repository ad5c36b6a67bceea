//! Unreadable parts of the source, for real: the tests run as root, so `backup` runs as
//! `nobody` (setpriv) on a tree where a directory and a file are mode 000. The run names each,
//! exits 1, backs up everything else, and the next run (permissions fixed) converges.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use backup_tests::bin;
use backup_tests::capability::{self, require};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ]);
    c
}

/// Running as `nobody` needs root and a working setpriv.
fn require_nobody() -> Option<String> {
    let probe = capability::root().and_then(|()| capability::run_probe(as_nobody().arg("true")));
    require("setpriv --reuid=65534 as root (util-linux)", probe)
}

fn backup_as_nobody(config: &Path) -> Output {
    as_nobody()
        .arg(bin("backup"))
        .arg("--config")
        .arg(config)
        .output()
        .expect("run setpriv")
}

#[test]
fn unreadable_dir_and_file_are_named_and_the_rest_is_kept() {
    if require_nobody().is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    chmod(root, 0o755);
    let src = root.join("src");
    for (rel, data) in [
        ("ok/a.txt", "a"),
        ("ok/secret.txt", "s"),
        ("locked/b.txt", "b"),
        ("locked/deeper/c.txt", "c"),
    ] {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    // Writable by nobody: dist is created inside.
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    chmod(&out_dir, 0o777);
    let config = root.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"src": {:?}, "dist": {:?}, "track_dirs": ["."]}}"#,
            src,
            out_dir.join("dist")
        ),
    )
    .unwrap();
    chmod(&src.join("locked"), 0o000);
    chmod(&src.join("ok/secret.txt"), 0o000);

    let out = backup_as_nobody(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("locked"),
        "unreadable dir not named: {stderr}"
    );
    assert!(
        stderr.contains("secret.txt"),
        "unreadable file not named: {stderr}"
    );
    let mirror = out_dir.join("dist/mirror");
    assert_eq!(std::fs::read(mirror.join("ok/a.txt")).unwrap(), b"a");
    assert!(!mirror.join("locked/b.txt").exists());

    // Fixed: the next run picks up what was missed and ends clean.
    chmod(&src.join("locked"), 0o755);
    chmod(&src.join("ok/secret.txt"), 0o644);
    let out = backup_as_nobody(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    for (rel, data) in [
        ("ok/a.txt", "a"),
        ("ok/secret.txt", "s"),
        ("locked/b.txt", "b"),
        ("locked/deeper/c.txt", "c"),
    ] {
        assert_eq!(
            std::fs::read(mirror.join(rel)).unwrap(),
            data.as_bytes(),
            "{rel}"
        );
    }
}

#[test]
fn unreadable_dir_keeps_what_the_mirror_already_has() {
    // A directory that becomes unreadable after a good run must not be taken for deleted.
    if require_nobody().is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    chmod(root, 0o755);
    let src = root.join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/keep.txt"), "k").unwrap();
    std::fs::write(src.join("top.txt"), "t").unwrap();
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    chmod(&out_dir, 0o777);
    let config = root.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"src": {:?}, "dist": {:?}, "track_dirs": ["docs"], "include_files": ["top.txt"]}}"#,
            src,
            out_dir.join("dist")
        ),
    )
    .unwrap();
    let out = backup_as_nobody(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    chmod(&src.join("docs"), 0o000);
    let out = backup_as_nobody(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("docs"), "{stderr}");
    let dist = out_dir.join("dist");
    assert_eq!(
        std::fs::read(dist.join("mirror/docs/keep.txt")).unwrap(),
        b"k"
    );
    // No increment records it as deleted.
    for e in std::fs::read_dir(&dist).unwrap() {
        let p = e.unwrap().path();
        assert!(
            !p.join("deleted/docs/keep.txt").exists(),
            "{} marks docs/keep.txt deleted",
            p.display()
        );
    }
    chmod(&src.join("docs"), 0o755);
}
