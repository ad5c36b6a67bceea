//! The LazyFS power-loss model (tests/src/lazyfs.rs), through a real mount: what an fsync makes
//! durable, what a power cut takes away, and that SQLite in WAL mode keeps its committed rows.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use backup_tests::lazyfs::{fsync_path, mount_for_test, LazyMount};

fn setup() -> Option<(tempfile::TempDir, LazyMount)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mount_for_test(&dir.path().join("mnt"))?;
    Some((dir, m))
}

fn write_file(path: &Path, data: &[u8], sync: bool) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
    if sync {
        f.sync_all().expect("fsync");
    }
}

#[test]
fn fsynced_file_and_directory_survive() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    std::fs::create_dir(root.join("a")).unwrap();
    write_file(&root.join("a/f"), b"hello", true);
    fsync_path(&root.join("a")).unwrap();
    fsync_path(root).unwrap();
    let before = m.counters();
    assert!(before.fsyncs >= 1 && before.fsyncdirs >= 2, "{before:?}");
    m.power_cut();
    assert_eq!(std::fs::read(root.join("a/f")).unwrap(), b"hello");
}

#[test]
fn unsynced_write_is_lost_and_an_unsynced_inode_comes_back_empty() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    write_file(&root.join("kept"), b"one", true);
    write_file(&root.join("never"), b"never fsynced", false);
    fsync_path(root).unwrap();
    // Overwrite without fsync: volatile.
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("kept"))
        .unwrap()
        .write_all(b"TWO and more")
        .unwrap();
    assert_eq!(std::fs::read(root.join("kept")).unwrap(), b"TWO and more");
    m.power_cut();
    assert_eq!(std::fs::read(root.join("kept")).unwrap(), b"one");
    // Reachable (its name is durable) but its data never was.
    assert_eq!(std::fs::metadata(root.join("never")).unwrap().len(), 0);
}

#[test]
fn a_name_is_lost_without_an_fsync_of_its_directory() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    std::fs::create_dir(root.join("d")).unwrap();
    fsync_path(root).unwrap();
    write_file(&root.join("d/f"), b"data", true);
    std::fs::create_dir(root.join("d/sub")).unwrap();
    m.power_cut();
    assert!(root.join("d").is_dir());
    assert!(
        !root.join("d/f").exists(),
        "the name was never made durable"
    );
    assert!(!root.join("d/sub").exists());
    // The mount goes on working after the cut.
    write_file(&root.join("d/g"), b"after", true);
    fsync_path(&root.join("d")).unwrap();
    m.power_cut();
    assert_eq!(std::fs::read(root.join("d/g")).unwrap(), b"after");
}

#[test]
fn rename_over_a_file_is_atomic() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    write_file(&root.join("x"), b"old content", true);
    fsync_path(root).unwrap();
    write_file(&root.join(".x.tmp"), b"new content!", true);
    std::fs::rename(root.join(".x.tmp"), root.join("x")).unwrap();
    m.power_cut();
    // The rename was not made durable: the old file, whole.
    assert_eq!(std::fs::read(root.join("x")).unwrap(), b"old content");
    assert!(!root.join(".x.tmp").exists());

    write_file(&root.join(".x.tmp"), b"new content!", true);
    std::fs::rename(root.join(".x.tmp"), root.join("x")).unwrap();
    fsync_path(root).unwrap();
    m.power_cut();
    assert_eq!(std::fs::read(root.join("x")).unwrap(), b"new content!");
    assert!(!root.join(".x.tmp").exists());
}

#[test]
fn a_rename_across_directories_needs_both_directories() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    for d in ["from", "to"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    write_file(&root.join("from/f"), b"moving", true);
    for d in ["from", "to", ""] {
        fsync_path(&root.join(d)).unwrap();
    }
    std::fs::rename(root.join("from/f"), root.join("to/f")).unwrap();
    // Only the source directory: the file is in neither place afterwards.
    fsync_path(&root.join("from")).unwrap();
    m.power_cut();
    assert!(!root.join("from/f").exists());
    assert!(!root.join("to/f").exists());
}

#[test]
fn hard_links_share_an_inode_and_count_their_names() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    std::fs::create_dir(root.join("inc")).unwrap();
    write_file(&root.join("a"), b"linked", true);
    std::fs::hard_link(root.join("a"), root.join("inc/b")).unwrap();
    let (ma, mb) = (
        std::fs::metadata(root.join("a")).unwrap(),
        std::fs::metadata(root.join("inc/b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!(ma.nlink(), 2);
    fsync_path(root).unwrap();
    m.power_cut();
    // `inc` was durable (root fsynced) but its entry `b` never was.
    assert!(!root.join("inc/b").exists());
    assert_eq!(std::fs::metadata(root.join("a")).unwrap().nlink(), 1);

    std::fs::hard_link(root.join("a"), root.join("inc/b")).unwrap();
    fsync_path(&root.join("inc")).unwrap();
    std::fs::remove_file(root.join("a")).unwrap();
    m.power_cut();
    // The unlink of `a` was not synced: both names, one inode, two links.
    let (ma, mb) = (
        std::fs::metadata(root.join("a")).unwrap(),
        std::fs::metadata(root.join("inc/b")).unwrap(),
    );
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2));
    assert_eq!(std::fs::read(root.join("inc/b")).unwrap(), b"linked");
}

#[test]
fn attributes_and_xattrs_are_durable_with_the_file() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    let f = root.join("f");
    write_file(&f, b"x", false);
    backup_tests::set_mtime(&f, 1_000_000, 123);
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let st = Command::new("setfattr")
        .args(["-n", "user.k", "-v", "v1"])
        .arg(&f)
        .status();
    let have_attr = st.is_ok_and(|s| s.success());
    fsync_path(&f).unwrap();
    fsync_path(root).unwrap();
    backup_tests::set_mtime(&f, 2_000_000, 0);
    m.power_cut();
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000, 123));
    assert_eq!(md.mode() & 0o7777, 0o640);
    if have_attr {
        let out = Command::new("getfattr")
            .args(["-n", "user.k", "--only-values"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"v1");
    } else {
        assert!(
            !backup_tests::capability::under_ci(),
            "setfattr (package attr)"
        );
    }
}

#[test]
fn symlinks_are_durable_with_their_directory() {
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    std::os::unix::fs::symlink("target/path", root.join("l")).unwrap();
    fsync_path(root).unwrap();
    m.power_cut();
    assert_eq!(
        std::fs::read_link(root.join("l")).unwrap(),
        Path::new("target/path")
    );
}

#[test]
fn power_cut_while_a_process_writes() {
    let Some((_d, m)) = setup() else { return };
    let root = m.mountpoint.clone();
    write_file(&root.join("base"), b"durable", true);
    fsync_path(&root).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("i=0; while :; do i=$((i+1)); echo $i > f$i; done")
        .current_dir(&root)
        .spawn()
        .expect("spawn writer");
    std::thread::sleep(std::time::Duration::from_millis(300));
    m.kill_and_cut(&mut child);
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("base")]);
    assert_eq!(std::fs::read(root.join("base")).unwrap(), b"durable");
}

#[test]
fn sqlite_in_wal_mode_keeps_committed_rows() {
    let Some((_d, m)) = setup() else { return };
    let Ok(v) = Command::new("sqlite3").arg("-version").output() else {
        assert!(
            !backup_tests::capability::under_ci(),
            "sqlite3 is needed (package sqlite3)"
        );
        eprintln!("SKIPPED: no sqlite3");
        return;
    };
    assert!(v.status.success());
    let db = m.mountpoint.join("index.sqlite");
    let sql = |q: &str| {
        // A reader opening the file at the same moment briefly locks it: wait, as the
        // backup's connections do, instead of failing.
        let out = Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(&db)
            .arg(q)
            .output()
            .expect("run sqlite3");
        assert!(
            out.status.success(),
            "sqlite3 {q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(sql("PRAGMA journal_mode=WAL;"), "wal");
    sql("PRAGMA synchronous=FULL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);");
    sql("PRAGMA synchronous=FULL; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<500) INSERT INTO t SELECT i, hex(randomblob(40)) FROM n;");
    // The last connection to close checkpoints the WAL into the database: a reader kept open
    // keeps the next commit in the WAL only.
    let mut reader = Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = reader.stdin.as_mut().unwrap();
    writeln!(stdin, "BEGIN; SELECT count(*) FROM t;").unwrap();
    // Its read transaction is open once it has answered.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "500");
    sql("PRAGMA synchronous=FULL; INSERT INTO t VALUES (1000, 'in the wal');");
    assert!(
        std::fs::metadata(m.mountpoint.join("index.sqlite-wal"))
            .unwrap()
            .len()
            > 0
    );
    // An unsynced write after the commit: lost.
    sql("PRAGMA synchronous=OFF; INSERT INTO t VALUES (1001, 'not synced');");
    m.kill_and_cut(&mut reader);
    assert_eq!(sql("PRAGMA integrity_check;"), "ok");
    assert_eq!(sql("SELECT count(*) FROM t WHERE k <= 1000;"), "501");
    assert_eq!(sql("SELECT v FROM t WHERE k = 1000;"), "in the wal");
    assert_eq!(sql("SELECT count(*) FROM t WHERE k = 1001;"), "0");
    assert_eq!(sql("PRAGMA journal_mode;"), "wal");
}

#[test]
fn syncfs_does_not_reach_it_and_the_backup_knows_not_to_trust_it() {
    use std::os::fd::AsRawFd;
    let Some((_d, m)) = setup() else { return };
    let root = &m.mountpoint;
    write_file(&root.join("f"), b"written", false);
    let dir = std::fs::File::open(root).unwrap();
    // SAFETY: a valid descriptor of the mount's root.
    assert_eq!(
        unsafe { libc::syncfs(dir.as_raw_fd()) },
        0,
        "syncfs reports success"
    );
    m.power_cut();
    assert!(!root.join("f").exists(), "yet nothing reached the disk");
    assert_eq!(
        backup_core::durable::Strategy::chosen(),
        backup_core::durable::Strategy::EachFile
    );
}
