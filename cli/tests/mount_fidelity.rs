//! What the catalog records is what the mount shows: owners, modes (setuid included),
//! extended attributes, folder modes and mtimes (`folders`), hard-link groups as one inode;
//! `cp -a --preserve=all` out of a snapshot keeps it; `history/` symlinks resolve; `df` tells
//! the backup volume's real size and free space.
//!
//! The backup is written by hand in the documented format (docs/format.md), since the engine
//! does not record all of this yet.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use backup_core::format::{Attrs, FolderEntry, Owner, Xattr};
use backup_core::{
    CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, MTime, Op, RelPath,
};
use backup_tests::mount::MountedBackup;

const A: &str = "backup_20240101_100000";
const B: &str = "backup_20240102_100000";
/// Folder mtimes recorded by A and B for `docs`.
const DOCS_A_NS: i64 = 1_600_000_000_250_000_000;
const DOCS_B_NS: i64 = 1_650_000_000_500_000_000;

fn set_mtime(p: &Path, ns: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

struct File<'a> {
    path: &'a str,
    data: &'a [u8],
    mode: u32,
    attrs: Attrs,
    kind: FileKind,
}

fn file<'a>(path: &'a str, data: &'a [u8], mode: u32) -> File<'a> {
    File {
        path,
        data,
        mode,
        attrs: Attrs::default(),
        kind: FileKind::File,
    }
}

fn owner(uid: u32, gid: u32) -> Option<Owner> {
    Some(Owner {
        uid,
        gid,
        user: None,
        group: None,
    })
}

fn xattr(name: &str, value: &[u8]) -> Xattr {
    Xattr {
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

/// Writes increment `name` storing `files` (in `track/` and `mirror/`) and recording
/// `folders`.
fn increment(
    dist: &Path,
    name: &str,
    ts: &str,
    files: &[File<'_>],
    folders: &[(&str, FolderEntry)],
) {
    let mut meta = IncrementMeta::new(name, ts.into());
    for (i, f) in files.iter().enumerate() {
        let rel = RelPath::parse(f.path).unwrap();
        let mtime = 1_500_000_000_000_000_000 + i as i64 * 1_000_000_000;
        for root in [dist.join(name).join("track"), dist.join("mirror")] {
            let p = rel.under(&root);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            let _ = fs::remove_file(&p);
            match f.kind {
                FileKind::Symlink => {
                    std::os::unix::fs::symlink(std::str::from_utf8(f.data).unwrap(), &p).unwrap()
                }
                _ => {
                    fs::write(&p, f.data).unwrap();
                    set_mtime(&p, mtime);
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
                }
            }
        }
        meta.file_catalog.insert(
            rel,
            CatalogEntry {
                size: f.data.len() as u64,
                mtime: MTime::from_ns(mtime),
                category: Category::Tracked,
                op: Some(Op::New),
                kind: f.kind,
                mode: (f.kind == FileKind::File).then_some(f.mode),
                hash: Some(ContentHash::of(f.data)),
                version_of: None,
                attrs: f.attrs.clone(),
            },
        );
    }
    for (p, e) in folders {
        meta.folders.insert(RelPath::parse(p).unwrap(), e.clone());
    }
    fs::write(dist.join(name).join(format!("{name}.json")), meta.to_json()).unwrap();
}

fn backup(dist: &Path) {
    let secret = File {
        attrs: Attrs {
            owner: owner(1234, 2345),
            xattrs: vec![
                xattr("user.bin", &[0, 1, 2, 255]),
                xattr("user.foo", b"bar"),
            ],
            ..Default::default()
        },
        ..file("docs/a.txt", b"version A", 0o4750)
    };
    let h2 = File {
        attrs: Attrs {
            hardlink_of: Some(RelPath::parse("docs/h1").unwrap()),
            ..Default::default()
        },
        ..file("sub/h2", b"linked", 0o640)
    };
    let rel_link = File {
        kind: FileKind::Symlink,
        ..file("links/rel", b"../docs/h1", 0)
    };
    let abs_link = File {
        kind: FileKind::Symlink,
        ..file("links/abs", b"/etc/hostname", 0)
    };
    let docs_a = FolderEntry {
        mtime: MTime::from_ns(DOCS_A_NS),
        mode: Some(0o700),
        attrs: Attrs {
            owner: owner(1234, 2345),
            xattrs: vec![xattr("user.dir", b"d")],
            ..Default::default()
        },
    };
    increment(
        dist,
        A,
        "2024-01-01T10:00:00+00:00",
        &[
            secret,
            file("docs/h1", b"linked", 0o640),
            h2,
            rel_link,
            abs_link,
            file("sticky/t", b"t", 0o1777),
        ],
        &[("docs", docs_a)],
    );
    let docs_b = FolderEntry {
        mtime: MTime::from_ns(DOCS_B_NS),
        mode: Some(0o750),
        attrs: Attrs::default(),
    };
    increment(
        dist,
        B,
        "2024-01-02T10:00:00+00:00",
        &[File {
            attrs: Attrs {
                owner: owner(1234, 2345),
                xattrs: vec![xattr("user.foo", b"changed")],
                ..Default::default()
            },
            ..file("docs/a.txt", b"version B", 0o2755)
        }],
        &[("docs", docs_b)],
    );
}

fn getfattr(p: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-d", "-m", "-", "-e", "hex"])
        .arg(p)
        .output()
        .expect("getfattr (package attr)");
    assert!(out.status.success(), "getfattr {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

#[test]
fn recorded_owners_modes_xattrs_folders_and_links_are_shown_and_copied() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    backup(&dist);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));

    // Owners, setuid/setgid/sticky bits, xattrs of each version.
    let a_old = fs::symlink_metadata(m.path(&format!("snapshots/{A}/docs/a.txt"))).unwrap();
    assert_eq!(a_old.mode() & 0o7777, 0o4750);
    assert_eq!((a_old.uid(), a_old.gid()), (1234, 2345));
    let a_new = fs::symlink_metadata(m.path("snapshots/latest/docs/a.txt")).unwrap();
    assert_eq!(a_new.mode() & 0o7777, 0o2755);
    let sticky = fs::symlink_metadata(m.path("snapshots/latest/sticky/t")).unwrap();
    assert_eq!(sticky.mode() & 0o7777, 0o1777);
    assert_eq!(
        getfattr(&m.path(&format!("snapshots/{A}/docs/a.txt"))),
        "user.bin=0x000102ff\nuser.foo=0x626172"
    );
    assert_eq!(
        getfattr(&m.path("snapshots/latest/docs/a.txt")),
        "user.foo=0x6368616e676564"
    );
    assert_eq!(getfattr(&m.path("snapshots/latest/docs/h1")), "");
    let versions = m.path("history/docs/a.txt.versions");
    let mut names: Vec<_> = fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2);
    assert_eq!(
        getfattr(&versions.join(&names[0])),
        "user.bin=0x000102ff\nuser.foo=0x626172"
    );

    // Folder modes, owners, xattrs and mtimes as recorded at each point.
    let docs_a = fs::metadata(m.path(&format!("snapshots/{A}/docs"))).unwrap();
    assert_eq!(docs_a.mode() & 0o7777, 0o700);
    assert_eq!((docs_a.uid(), docs_a.gid()), (1234, 2345));
    assert_eq!(mtime_ns(&docs_a), DOCS_A_NS);
    assert_eq!(
        getfattr(&m.path(&format!("snapshots/{A}/docs"))),
        "user.dir=0x64"
    );
    let docs_b = fs::metadata(m.path("snapshots/latest/docs")).unwrap();
    assert_eq!(docs_b.mode() & 0o7777, 0o750);
    assert_eq!(mtime_ns(&docs_b), DOCS_B_NS);
    let out = Command::new("stat")
        .args(["-c", "%y"])
        .arg(m.path(&format!("snapshots/{A}/docs")))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(".250000000"),
        "stat -c %y: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let hist_docs = fs::metadata(m.path("history/docs")).unwrap();
    assert_eq!(hist_docs.mode() & 0o7777, 0o750);

    // A hard-link group recorded by the catalog is one inode with two names.
    let h1 = fs::symlink_metadata(m.path("snapshots/latest/docs/h1")).unwrap();
    let h2 = fs::symlink_metadata(m.path("snapshots/latest/sub/h2")).unwrap();
    assert_eq!(h1.ino(), h2.ino());
    assert_eq!((h1.nlink(), h2.nlink()), (2, 2));
    // Listed by a thread that has not stat'ed anything (given names only, see docs/mount.md),
    // every folder before any `stat`: each entry's number in the listing is the one `stat`
    // gives, the group's for a member.
    let (latest, mirror) = (m.path("snapshots/latest"), m.path("mirror"));
    let listed: Vec<(std::path::PathBuf, u64)> = std::thread::spawn(move || {
        let mut listed = Vec::new();
        for dir in ["docs", "sub"] {
            for root in [&latest, &mirror] {
                for e in fs::read_dir(root.join(dir)).unwrap() {
                    let e = e.unwrap();
                    listed.push((e.path(), std::os::unix::fs::DirEntryExt::ino(&e)));
                }
            }
        }
        listed
    })
    .join()
    .unwrap();
    assert!(listed.len() >= 6, "{listed:?}");
    for (path, ino) in listed {
        let st = fs::symlink_metadata(&path).unwrap();
        assert_eq!(ino, st.ino(), "listed and stat'ed numbers of {path:?}");
    }

    // `cp -a --preserve=all` keeps what was recorded.
    let dest = t.path().join("restored");
    let st = Command::new("cp")
        .args(["-a", "--preserve=all"])
        .arg(m.path("snapshots/latest"))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a --preserve=all");
    let r = fs::symlink_metadata(dest.join("docs/a.txt")).unwrap();
    assert_eq!(r.mode() & 0o7777, 0o2755);
    assert_eq!((r.uid(), r.gid()), (1234, 2345));
    assert_eq!(
        getfattr(&dest.join("docs/a.txt")),
        "user.foo=0x6368616e676564"
    );
    let rd = fs::metadata(dest.join("docs")).unwrap();
    assert_eq!(rd.mode() & 0o7777, 0o750);
    assert_eq!(mtime_ns(&rd), DOCS_B_NS);
    let (r1, r2) = (
        fs::metadata(dest.join("docs/h1")).unwrap(),
        fs::metadata(dest.join("sub/h2")).unwrap(),
    );
    assert_eq!(r1.ino(), r2.ino(), "the hard link survives cp -a");
    assert_eq!(
        fs::read_link(dest.join("links/rel")).unwrap(),
        Path::new("../docs/h1")
    );

    // history/: a relative symlink resolves (into the snapshot of its increment); an absolute
    // one keeps its target.
    let rel_versions = m.path("history/links/rel.versions");
    let v = fs::read_dir(&rel_versions)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        fs::read_link(&v).unwrap(),
        Path::new(&format!("../../../snapshots/{A}/links/../docs/h1"))
    );
    assert_eq!(fs::read(&v).unwrap(), b"linked", "ls -lL resolves it");
    let out = Command::new("ls")
        .arg("-lL")
        .arg(&rel_versions)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ls -lL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let abs = fs::read_dir(m.path("history/links/abs.versions"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(fs::read_link(&abs).unwrap(), Path::new("/etc/hostname"));
}

#[test]
fn df_shows_the_backup_volume_and_writes_still_fail() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    backup(&dist);
    let m = MountedBackup::start(&dist, &t.path().join("mnt"));
    let df = |p: &Path| -> (u64, u64) {
        let out = Command::new("df")
            .args(["--block-size=1K", "--output=size,avail"])
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let nums: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        (nums[0], nums[1])
    };
    let (msize, mavail) = df(&m.dir);
    let (dsize, davail) = df(&dist);
    assert_eq!(msize, dsize, "size");
    assert!(mavail > 0, "the mount shows free space");
    // Other processes write on the same volume meanwhile: within 64 MiB.
    assert!(
        mavail.abs_diff(davail) < 64 * 1024,
        "avail {mavail} vs {davail}"
    );
    let e = fs::write(m.path("snapshots/latest/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}
