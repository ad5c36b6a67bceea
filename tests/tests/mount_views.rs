//! `backup-tool mount`, really mounted: the layout, every snapshot against the fold model,
//! history, `cp -a` restores, and a backup of the original Python tool.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use backup_tests::mount::{read_tree, MountedBackup, TreeFile};
use backup_tests::mount_fixture::{write_python_backup, Change, FixtureBackup, ModelFile};

const A: &str = "backup_20240101_100000";
const B: &str = "backup_20240102_100000";
const C: &str = "backup_20240102_100000_01";

fn fixture(dist: &std::path::Path) -> FixtureBackup {
    let mut f = FixtureBackup::new(dist);
    f.backup(
        A,
        &[
            Change::Write("docs/report.txt", b"report v1"),
            Change::WriteMode("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o750),
            Change::WriteMode("private/key", b"secret", 0o600),
            Change::Write("name with spaces & 'quotes'.txt", b"odd name"),
            Change::Write("gone.txt", b"short-lived"),
        ],
    );
    f.backup(
        B,
        &[
            Change::Write("docs/report.txt", b"report v2, longer"),
            Change::Delete("gone.txt"),
        ],
    );
    f.backup(
        C,
        &[
            Change::Write("docs/new.txt", b"new in C"),
            Change::Write("docs/report.txt", b"report v3"),
        ],
    );
    f.untracked("untracked.txt", b"only in the mirror");
    f
}

fn as_tree(model: &BTreeMap<String, ModelFile>) -> BTreeMap<String, TreeFile> {
    model
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                TreeFile {
                    content: v.content.clone(),
                    mtime_ns: v.mtime_ns,
                    mode: v.mode,
                },
            )
        })
        .collect()
}

fn ls(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("ls {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn layout_snapshots_and_history_match_the_model() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    let f = fixture(&dist);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));

    assert_eq!(ls(&m.dir), ["history", "increments", "mirror", "snapshots"]);
    assert_eq!(ls(&m.path("increments")), [A, B, C]);
    assert_eq!(ls(&m.path("snapshots")), [A, B, C, "latest"]);
    assert_eq!(
        ls(&m.path(&format!("increments/{B}"))),
        [format!("{B}.json"), "deleted".into(), "track".into()]
    );
    assert_eq!(
        fs::read(m.path(&format!("increments/{B}/deleted/gone.txt"))).unwrap(),
        b"short-lived"
    );
    // mirror/ is the mirror on disk, untracked files included.
    assert_eq!(
        read_tree(&m.path("mirror")),
        read_tree(&dist.join("mirror"))
    );

    for (name, model) in &f.states {
        let seen = read_tree(&m.path(&format!("snapshots/{name}")));
        assert_eq!(seen, as_tree(model), "snapshots/{name}");
    }
    assert_eq!(
        read_tree(&m.path("snapshots/latest")),
        as_tree(&f.states.last().unwrap().1)
    );

    // history/: every stored version, named by time so they sort, with its bytes.
    let dir = m.path("history/docs/report.txt");
    let names = ls(&dir);
    assert_eq!(
        names,
        [
            "2024-01-01_100000_report.txt",
            "2024-01-02_100000_report.txt",
            "2024-01-02_100000~01_report.txt"
        ]
    );
    let contents: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect();
    let expected: Vec<Vec<u8>> = f
        .versions("docs/report.txt")
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(contents, expected);
    for path in ["bin/run.sh", "private/key", "gone.txt", "docs/new.txt"] {
        let listed = ls(&m.path(&format!("history/{path}")));
        assert_eq!(listed.len(), f.versions(path).len(), "history/{path}");
    }

    // statfs, xattr queries and readdir offsets answer sanely.
    let out = Command::new("df").arg(&m.dir).output().unwrap();
    assert!(
        out.status.success(),
        "df: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(m.path("snapshots/latest/docs/report.txt"))
        .output();
    if let Ok(out) = out {
        assert!(
            out.status.success(),
            "getfattr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let probe =
        std::ffi::CString::new(m.path("snapshots/latest/docs/report.txt").to_str().unwrap())
            .unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C string and buffer.
    let r = unsafe {
        libc::getxattr(
            probe.as_ptr(),
            c"user.nothing".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );
    // Stable inode numbers: the same path answers with the same number.
    use std::os::unix::fs::MetadataExt;
    let p = m.path("snapshots/latest/docs/report.txt");
    let i1 = fs::metadata(&p).unwrap().ino();
    let _ = read_tree(&m.path("snapshots"));
    assert_eq!(fs::metadata(&p).unwrap().ino(), i1);
}

#[test]
fn cp_a_of_a_snapshot_restores_bytes_mtimes_and_permissions() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    let f = fixture(&dist);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));
    for (name, model) in &f.states {
        let dest = t.path().join(format!("restore-{name}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(m.path(&format!("snapshots/{name}")))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a snapshots/{name}");
        assert_eq!(read_tree(&dest), as_tree(model), "restored {name}");
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
    assert_eq!(
        fs::read(m.path("snapshots/latest/docs/a.txt")).unwrap(),
        b"python version A"
    );
    assert_eq!(
        fs::read(m.path("mirror/notes.md")).unwrap(),
        b"untracked notes"
    );
    assert_eq!(
        ls(&m.path("history/docs/a.txt")),
        ["2024-01-05_100000_a.txt"]
    );
    assert!(!m.path("snapshots/latest/notes.md").exists());
}
