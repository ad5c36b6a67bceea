//! `backup-tool mount` cannot damage a backup: every write-type operation fails with EROFS
//! and the backup stays byte-for-byte the same; SIGTERM unmounts; bad mount points are refused.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use backup_tests::mount::{is_mounted, MountedBackup};
use backup_tests::{TestEnv, Tree};

/// Two real runs: `[A, B]`.
fn two_backups() -> (TestEnv, String, String) {
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.write("docs/report.txt", b"report v1");
    env.write("docs/sub/x.txt", b"x");
    env.backup_ok(&["-q"]);
    env.write("docs/report.txt", b"report v2");
    env.backup_ok(&["-q"]);
    let names = env.increments();
    assert_eq!(names.len(), 2);
    (env, names[0].clone(), names[1].clone())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn last_errno(r: i64) -> Option<i32> {
    if r == -1 {
        std::io::Error::last_os_error().raw_os_error()
    } else {
        None
    }
}

fn assert_erofs(what: &str, r: std::io::Result<impl std::fmt::Debug>) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded on a read-only mount: {v:?}"),
    }
}

/// Every write-type call on files and folders of each part of the tree (mirror, increments,
/// snapshots, history) under the mount at `root` fails with EROFS; reading still works.
fn assert_every_write_is_erofs(root: &Path, a: &str, b: &str) {
    let dirs = [
        "mirror/docs".to_string(),
        format!("increments/{b}/track/docs"),
        "snapshots/latest/docs".to_string(),
        format!("snapshots/{a}/docs"),
        "history/docs/report.txt.versions".to_string(),
    ];
    for d in &dirs {
        let dir = root.join(d);
        let file = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("a file in {d}"));
        let sub = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir());
        let new = dir.join("new-file");
        assert_erofs("create", fs::File::create(&new));
        assert_erofs(
            "open for writing",
            fs::OpenOptions::new().write(true).open(&file),
        );
        assert_erofs(
            "open for append",
            fs::OpenOptions::new().append(true).open(&file),
        );
        assert_erofs(
            "open with O_TRUNC",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&file),
        );
        assert_erofs("unlink", fs::remove_file(&file));
        assert_erofs("mkdir", fs::create_dir(dir.join("new-dir")));
        if let Some(sub) = &sub {
            assert_erofs("rmdir", fs::remove_dir(sub));
        }
        assert_erofs("rename", fs::rename(&file, dir.join("renamed")));
        assert_erofs("link", fs::hard_link(&file, dir.join("hardlink")));
        assert_erofs(
            "symlink",
            std::os::unix::fs::symlink("target", dir.join("symlink")),
        );
        assert_erofs(
            "chmod",
            fs::set_permissions(&file, fs::Permissions::from_mode(0o777)),
        );
        let c = cstr(&file);
        // SAFETY: valid C strings; each call only reports an error.
        unsafe {
            assert_eq!(
                last_errno(libc::truncate(c.as_ptr(), 0) as i64),
                Some(libc::EROFS),
                "truncate {d}"
            );
            assert_eq!(
                last_errno(libc::chown(c.as_ptr(), 1, 1) as i64),
                Some(libc::EROFS),
                "chown {d}"
            );
            assert_eq!(
                last_errno(libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) as i64),
                Some(libc::EROFS),
                "utimensat {d}"
            );
            assert_eq!(
                last_errno(libc::setxattr(
                    c.as_ptr(),
                    c"user.x".as_ptr(),
                    b"1".as_ptr().cast(),
                    1,
                    0
                ) as i64),
                Some(libc::EROFS),
                "setxattr {d}"
            );
            assert_eq!(
                last_errno(libc::removexattr(c.as_ptr(), c"user.x".as_ptr()) as i64),
                Some(libc::EROFS),
                "removexattr {d}"
            );
            let fifo = cstr(&dir.join("fifo"));
            assert_eq!(
                last_errno(libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) as i64),
                Some(libc::EROFS),
                "mknod {d}"
            );
        }
        // Reading works and changes nothing either.
        fs::read(&file).unwrap();
    }
    let _ = Tree::files(&root.join("snapshots"));
}

/// The options column of `dir`'s line in /proc/mounts.
fn mount_options(dir: &Path) -> String {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(dir.as_str()))
        .and_then(|l| l.split(' ').nth(3).map(str::to_owned))
        .expect("mount listed")
}

/// The backup's fingerprint, once its index exists. The index is derived data that the tool's
/// commands create or bring up to date (the first mount too): made by a first mount, so that
/// the digest covers it as well. SQLite's shared-memory file of the WAL is rewritten by every
/// reader (read marks): it is not part of what the backup holds.
fn digest_with_index(env: &TestEnv, dist: &Path) -> impl Fn(&Path) -> Tree {
    drop(MountedBackup::start(dist, &env.dir.path().join("mnt0")));
    |d: &Path| -> Tree {
        let mut t = Tree::exact(d);
        t.remove(b".backup-index.sqlite-shm".as_slice());
        t
    }
}

#[test]
fn every_write_type_operation_fails_with_erofs_and_changes_nothing() {
    let (env, a, b) = two_backups();
    let dist = env.dist.clone();
    let digest = digest_with_index(&env, &dist);
    let before = digest(&dist);
    let m = MountedBackup::start(&dist, &env.dir.path().join("mnt"));
    assert_every_write_is_erofs(&m.dir, &a, &b);
    drop(m);
    assert_eq!(
        digest(&dist),
        before,
        "the backup changed under a read-only mount"
    );
}

#[test]
fn without_the_kernel_read_only_flag_the_adapter_itself_refuses_every_write() {
    use backup_mountfs::BackupFs;
    use backup_platform::fs::volume_stats;
    use backup_platform::fuse::{mount, MountConfig};
    use std::sync::Arc;

    let (env, a, b) = two_backups();
    let dist = env.dist.clone();
    let digest = digest_with_index(&env, &dist);
    let before = digest(&dist);
    let fs = Arc::new(BackupFs::open(backup_core::Repository::at(&dist)).unwrap());
    assert_eq!(fs.load_metadata(), vec![]);
    let dir = env.dir.path().join("rw-mnt");
    fs::create_dir(&dir).unwrap();
    let cfg = MountConfig {
        kernel_read_only: false,
        ..MountConfig::default()
    };
    let mounted = mount(fs, &dir, &cfg).expect("mount through the adapter");
    // The kernel would let writes through: only the adapter stands in their way.
    let options = mount_options(&dir);
    assert!(options.split(',').any(|o| o == "rw"), "{options}");
    assert_every_write_is_erofs(&dir, &a, &b);
    // statfs: the size and free space of the disk holding the backup (so `df` shows how full
    // the backup drive is), though nothing can be written through the mount.
    let (on_mount, on_disk) = (volume_stats(&dir).unwrap(), volume_stats(&dist).unwrap());
    assert_eq!(
        (on_mount.total_bytes, on_mount.block_size, on_mount.files),
        (on_disk.total_bytes, on_disk.block_size, on_disk.files),
    );
    // Free space moves with everything else on the machine: equal within 64 MiB.
    assert!(on_mount.available_bytes.abs_diff(on_disk.available_bytes) < 64 << 20);
    mounted.unmount().unwrap();
    assert_eq!(
        digest(&dist),
        before,
        "the backup changed under the adapter's mount"
    );
}

#[test]
fn sigterm_and_ctrl_c_unmount_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        unmounts_on(sig);
    }
}

fn unmounts_on(sig: i32) {
    let (env, _, _) = two_backups();
    let mut m = MountedBackup::start(&env.dist, &env.dir.path().join("mnt"));
    // A reader inside the mount must not keep it from ending.
    assert_eq!(
        fs::read(m.path("snapshots/latest/docs/report.txt")).unwrap(),
        b"report v2"
    );
    let status = m.signal(sig);
    assert!(status.success(), "exit status {status} after signal {sig}");
    assert!(!is_mounted(&m.dir), "still in /proc/mounts");
    assert!(fs::read_dir(&m.dir).unwrap().next().is_none());
}

#[test]
fn missing_busy_or_non_empty_mount_points_are_refused() {
    let (env, _, _) = two_backups();
    let t = env.dir.path();
    let dist = env.dist.clone();
    let tool = backup_tests::bin("backup-tool");
    let run = |dir: &Path| {
        Command::new(&tool)
            .arg(&dist)
            .arg("mount")
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run(&t.join("missing"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let full = t.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("f"), b"x").unwrap();
    let out = run(&full);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    let m = MountedBackup::start(&dist, &t.join("mnt"));
    let out = run(&m.dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    assert!(is_mounted(&m.dir), "the first mount must survive");

    let inside = dist.join("mirror/empty");
    fs::create_dir(&inside).unwrap();
    let out = run(&inside);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the backup"));
    fs::remove_dir(&inside).unwrap();
}

#[test]
fn allow_other_only_when_asked() {
    let (env, _, _) = two_backups();
    let options = mount_options;
    let m = MountedBackup::start(&env.dist, &env.dir.path().join("private"));
    let o = options(&m.dir);
    assert!(o.split(',').any(|x| x == "ro"), "{o}");
    assert!(!o.contains("allow_other"), "{o}");
    let shared = MountedBackup::start_with(
        &env.dist,
        &env.dir.path().join("shared"),
        &["--allow-other"],
    );
    assert!(options(&shared.dir).contains("allow_other"));
}
