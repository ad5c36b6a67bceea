//! `backup-tool mount`, really mounted over backups made by the real `backup`: the layout,
//! every snapshot against the fold model, history, `cp -a` restores, and a backup written by
//! the original Python tool.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use backup_tests::mount::MountedBackup;
use backup_tests::mount_fixture::write_python_backup;
use backup_tests::Tree;
use backup_tests::{assert_same_tree, set_mtime, tree, Node, TestEnv};

/// Tracked files as the model sees them (symlink mtimes left out: not every step keeps them).
fn tracked(root: &Path) -> Tree {
    tree(root)
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"docs/") || k.starts_with(b"code/"))
        .map(|(k, n)| match n {
            Node::Symlink { target, .. } => (
                k,
                Node::Symlink {
                    target,
                    mtime_ns: 0,
                },
            ),
            n => (k, n),
        })
        .collect()
}

fn snapshot_tree(root: &Path) -> Tree {
    tree(root)
        .into_iter()
        .map(|(k, n)| match n {
            Node::Symlink { target, .. } => (
                k,
                Node::Symlink {
                    target,
                    mtime_ns: 0,
                },
            ),
            n => (k, n),
        })
        .collect()
}

/// The tracked files right after each increment, by increment name.
type Model = Vec<(String, Tree)>;

/// Runs `backup` and, when it made an increment, records the model state under its name.
fn run(env: &TestEnv, model: &mut Model) {
    let before = env.increments();
    env.backup_ok(&["-q"]);
    let after = env.increments();
    if after.len() > before.len() {
        let name = after.last().unwrap().clone();
        model.push((name, tracked(&env.src)));
    }
}

/// Four real runs: new files, changes (same size too), a deletion, odd names, a symlink, modes.
fn history_env() -> (TestEnv, Model) {
    let env = TestEnv::new();
    env.config(serde_json::json!({
        "track_dirs": ["docs", "code"],
        "include_dirs": ["media"],
    }));
    let mut model = Vec::new();
    env.write("docs/report.txt", b"report v1");
    env.write("docs/name with spaces & 'quotes'.txt", b"odd name");
    env.write_raw("docs", b"caf\xe9-latin1.txt", b"non-utf8 name");
    env.write("docs/gone.txt", b"short-lived");
    let run_sh = env.write("code/bin/run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&run_sh, fs::Permissions::from_mode(0o750)).unwrap();
    let key = env.write("code/private/key", b"secret");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("../docs/report.txt", env.src.join("code/link")).unwrap();
    env.write("media/photo.jpg", b"untracked bytes");
    run(&env, &mut model);

    let p = env.write("docs/report.txt", b"report v2");
    set_mtime(&p, 1_700_000_100, 123_456_789);
    env.remove("docs/gone.txt");
    run(&env, &mut model);

    env.write("docs/report.txt", b"report v3, longer than before");
    env.write("code/new.rs", b"fn main() {}\n");
    run(&env, &mut model);

    env.write("docs/report.txt", b"report v4");
    run(&env, &mut model);
    assert_eq!(model.len(), 4, "each run changed tracked files");
    (env, model)
}

fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("ls {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn layout_snapshots_and_history_match_the_model() {
    let (env, model) = history_env();
    let names: Vec<String> = model.iter().map(|(n, _)| n.clone()).collect();
    let m = MountedBackup::start(&env.dist, &env.dir.path().join("mnt"));

    assert_eq!(ls(&m.dir), ["history", "increments", "mirror", "snapshots"]);
    assert_eq!(ls(&m.path("increments")), names);
    let mut with_latest = names.clone();
    with_latest.push("latest".into());
    assert_eq!(ls(&m.path("snapshots")), with_latest);
    let second = &names[1];
    let inc = ls(&m.path(&format!("increments/{second}")));
    assert!(inc.contains(&format!("{second}.json")), "{inc:?}");
    assert_eq!(
        fs::read(m.path(&format!("increments/{second}/deleted/docs/gone.txt"))).unwrap(),
        b"short-lived"
    );
    // mirror/ is the mirror on disk, untracked files included.
    assert_same_tree(&tree(&env.mirror()), &tree(&m.path("mirror")));
    assert!(m.path("mirror/media/photo.jpg").is_file());

    for (name, state) in &model {
        assert_same_tree(state, &snapshot_tree(&m.path(&format!("snapshots/{name}"))));
    }
    assert_same_tree(
        &model.last().unwrap().1,
        &snapshot_tree(&m.path("snapshots/latest")),
    );
    assert!(
        !m.path("snapshots/latest/media").exists(),
        "untracked files have no history"
    );

    // history/: every stored version, named by increment time so they sort, with its bytes.
    let dir = m.path("history/docs/report.txt.versions");
    let versions = ls(&dir);
    assert_eq!(versions.len(), 4, "{versions:?}");
    for (v, (name, _)) in versions.iter().zip(&model) {
        // backup_20261130_052301[_01] → 2026-11-30_052301[~01]_report.txt
        let stamp = &name["backup_".len()..];
        assert!(
            v.starts_with(&format!(
                "{}-{}-{}",
                &stamp[0..4],
                &stamp[4..6],
                &stamp[6..8]
            )),
            "{v} for {name}"
        );
        assert!(v.ends_with("_report.txt"), "{v}");
    }
    let contents: Vec<Vec<u8>> = versions
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            b"report v1".to_vec(),
            b"report v2".to_vec(),
            b"report v3, longer than before".to_vec(),
            b"report v4".to_vec()
        ]
    );
    assert_eq!(
        fs::metadata(dir.join(&versions[1])).unwrap().mtime(),
        1_700_000_100
    );
    assert_eq!(ls(&m.path("history/docs/gone.txt.versions")).len(), 1);
    assert_eq!(ls(&m.path("history/code/new.rs.versions")).len(), 1);
    let raw = m
        .path("history/docs")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt.versions"));
    assert_eq!(fs::read_dir(&raw).unwrap().count(), 1);

    // statfs, xattr queries and stable inode numbers.
    let out = Command::new("df").arg(&m.dir).output().unwrap();
    assert!(
        out.status.success(),
        "df: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe =
        std::ffi::CString::new(m.path("snapshots/latest/docs/report.txt").to_str().unwrap())
            .unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C string and buffer.
    let (r, l) = unsafe {
        let r = libc::getxattr(
            probe.as_ptr(),
            c"user.nothing".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        let e = std::io::Error::last_os_error().raw_os_error();
        let l = libc::listxattr(probe.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        let le = std::io::Error::last_os_error().raw_os_error();
        ((r, e), (l, le))
    };
    // No attribute: ENODATA, or EOPNOTSUPP once the mount has told the kernel that this
    // backup records none (docs/mount.md).
    assert!(
        r == (-1, Some(libc::ENODATA)) || r == (-1, Some(libc::EOPNOTSUPP)),
        "{r:?}"
    );
    assert!(l.0 == 0 || l == (-1, Some(libc::EOPNOTSUPP)), "{l:?}");
    let p = m.path("snapshots/latest/docs/report.txt");
    let ino = fs::metadata(&p).unwrap().ino();
    let _ = tree(&m.path("snapshots"));
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
    assert_ne!(
        fs::metadata(m.path(&format!("snapshots/{}/docs/report.txt", names[0])))
            .unwrap()
            .ino(),
        ino
    );
}

#[test]
fn cp_a_of_a_snapshot_restores_bytes_mtimes_and_permissions() {
    let (env, model) = history_env();
    let m = MountedBackup::start(&env.dist, &env.dir.path().join("mnt"));
    for (name, state) in &model {
        let dest = env.dir.path().join(format!("restore-{name}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(m.path(&format!("snapshots/{name}")))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a snapshots/{name}");
        assert_same_tree(state, &snapshot_tree(&dest));
    }
}

#[test]
fn a_backup_of_the_original_python_tool_mounts() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    write_python_backup(&dist);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));
    let snap = m.path("snapshots/backup_20240105_100000/docs/a.txt");
    assert_eq!(fs::read(&snap).unwrap(), b"python version A");
    assert_eq!(fs::metadata(&snap).unwrap().mtime(), 1_704_448_800);
    assert_eq!(
        fs::read(m.path("snapshots/latest/docs/a.txt")).unwrap(),
        b"python version A"
    );
    assert_eq!(
        fs::read(m.path("mirror/notes.md")).unwrap(),
        b"untracked notes"
    );
    assert_eq!(
        ls(&m.path("history/docs/a.txt.versions")),
        ["2024-01-05_100000_a.txt"]
    );
    assert!(!m.path("snapshots/latest/notes.md").exists());
}

#[test]
fn a_large_directory_lists_completely_across_readdir_calls() {
    // 1000 entries need many readdir requests (one page each): offsets must resume exactly.
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["big"]}));
    let mut expected: Vec<String> = (0..1000)
        .map(|i| format!("a-rather-long-file-name-to-fill-buffers-{i:05}.txt"))
        .collect();
    for n in &expected {
        env.write(format!("big/{n}"), n.as_bytes());
    }
    env.backup_ok(&["-q"]);
    let m = MountedBackup::start(&env.dist, &env.dir.path().join("mnt"));
    expected.sort();
    for view in ["snapshots/latest/big", "mirror/big"] {
        assert_eq!(ls(&m.path(view)), expected, "{view}");
    }
    let name = &env.increments()[0];
    assert_eq!(
        ls(&m.path(&format!("increments/{name}/track/big"))),
        expected
    );
}
