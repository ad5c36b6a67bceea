//! Real WebDAV and HTTP clients against `backup-tool serve`: rclone (list, copy, check),
//! davfs2 (a kernel mount: find, cat, cp -a, and writes that change nothing) and headless
//! Chromium (the HTML listing, rendered).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use backup_tests::mount::{is_mounted, wait_until};
use backup_tests::serve::{curl, fixture, fixture_with, have, status, Server};
use backup_tests::{text, tree, Tree};

fn rclone(args: &[&str]) -> Output {
    Command::new("rclone")
        .args(args)
        .args([
            "--config",
            "/dev/null",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ])
        .output()
        .expect("run rclone")
}

fn rclone_ok(args: &[&str]) -> String {
    let out = rclone(args);
    assert!(out.status.success(), "rclone {args:?}: {}", text(&out).1);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Relative paths (as text) of the files under `root`.
fn utf8_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = tree(root)
        .contents()
        .into_keys()
        .filter_map(|k| String::from_utf8(k).ok())
        .collect();
    v.sort();
    v
}

/// The server on a loopback port, for user `ann` with `password` (from a password file).
fn serve_as_ann(env: &backup_tests::TestEnv, password: &str) -> Server {
    let pw = env.dir.path().join("pw");
    fs::write(&pw, format!("{password}\n")).unwrap();
    Server::start_with(
        &env.dist,
        &[
            "--listen",
            "127.0.0.1:0",
            "--user",
            "ann",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn rclone_lists_copies_and_checks_through_the_server() {
    if !have("rclone") {
        return;
    }
    let env = fixture(false);
    let incs = env.increments();
    let s = serve_as_ann(&env, "rclone-pass");
    let obscured = rclone_ok(&["obscure", "rclone-pass"]);
    let url = format!("--webdav-url={}/", s.base);
    let pass = format!("--webdav-pass={}", obscured.trim());
    let auth = ["--webdav-user=ann", pass.as_str()];
    let remote = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![url.clone()];
        v.extend(auth.iter().map(|s| s.to_string()));
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: &[&str]| -> String {
        let v = remote(args);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        rclone_ok(&v)
    };

    // The whole tree, recursively: the mount's layout.
    let all = run(&["lsf", "-R", ":webdav:"]);
    let all: Vec<&str> = all.lines().collect();
    for p in [
        "mirror/docs/big.bin",
        "snapshots/latest/docs/sub/deep.txt",
        "history/docs/plain.txt.versions/",
    ] {
        assert!(all.contains(&p), "{p} missing from rclone lsf -R");
    }
    for n in &incs {
        assert!(all.contains(&format!("snapshots/{n}/docs/plain.txt").as_str()));
        assert!(all.contains(&format!("increments/{n}/").as_str()));
    }
    // The latest snapshot lists exactly the mirror's files.
    let latest = run(&["lsf", "-R", "--files-only", ":webdav:snapshots/latest"]);
    let mut latest: Vec<String> = latest.lines().map(str::to_owned).collect();
    latest.sort();
    let mirror_files = utf8_files(&env.mirror());
    let latest_utf8: Vec<String> = latest
        .iter()
        .filter(|p| !p.contains('\u{fffd}') && !p.contains("caf"))
        .cloned()
        .collect();
    let mirror_utf8: Vec<String> = mirror_files
        .iter()
        .filter(|p| !p.contains("caf"))
        .cloned()
        .collect();
    assert_eq!(latest_utf8, mirror_utf8);
    assert_eq!(
        latest.len(),
        tree(&env.mirror()).contents().len(),
        "the non-UTF-8 name is listed too"
    );

    // Copy the first snapshot and compare it byte for byte with what it must hold.
    let dest = env.dir.path().join("copied");
    run(&[
        "copy",
        &format!(":webdav:snapshots/{}", incs[0]),
        dest.to_str().unwrap(),
    ]);
    let mut expected = tree(&env.mirror()).contents();
    expected.insert(
        b"docs/plain.txt".to_vec(),
        *blake3::hash(b"plain v1\n").as_bytes(),
    );
    let got = tree(&dest).contents();
    let utf8 = |m: &BTreeMap<Vec<u8>, [u8; 32]>| -> BTreeMap<Vec<u8>, [u8; 32]> {
        m.iter()
            .filter(|(k, _)| std::str::from_utf8(k).is_ok_and(|s| !s.contains('\u{fffd}')))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(utf8(&got), utf8(&expected), "copied snapshot differs");
    assert_eq!(got.len(), expected.len(), "a file was not copied");
    // The non-UTF-8 file's bytes came through, whatever rclone named it locally.
    let mut got_hashes: Vec<_> = got.values().collect();
    let mut want_hashes: Vec<_> = expected.values().collect();
    got_hashes.sort();
    want_hashes.sort();
    assert_eq!(got_hashes, want_hashes);

    // rclone check: the mirror served equals the mirror on disk (sizes, then bytes).
    let mirror = env.mirror();
    let out = {
        let v = remote(&[
            "check",
            "--download",
            mirror.to_str().unwrap(),
            ":webdav:mirror",
        ]);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        rclone(&v)
    };
    assert!(out.status.success(), "rclone check: {}", text(&out).1);
    assert!(
        text(&out).1.contains("0 differences found"),
        "{}",
        text(&out).1
    );
}

/// A davfs2 mount that is always taken down, even when the test fails.
struct DavMount {
    dir: PathBuf,
}

impl Drop for DavMount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn davfs2_mounts_the_server_reads_work_and_writes_change_nothing() {
    if !have("mount.davfs") || !have("curl") {
        return;
    }
    // davfs2 keeps names as UTF-8 only, so this fixture has no Latin-1 name.
    let env = fixture_with(false, false);
    let before = Tree::dist(&env.dist);
    let s = serve_as_ann(&env, "dav pass");
    // Non-interactive credentials: a secrets file, named by a private davfs2.conf. The cache
    // lives where davfs2's own user can write. `buf_size 64` works around davfs2 1.6/1.7 and
    // Linux >= 6.16 failing every readdir with EINVAL (davfs2 issue #22).
    let cache = tempfile::Builder::new()
        .prefix("davfs2-cache")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let secrets = env.dir.path().join("secrets");
    fs::write(&secrets, format!("{}/ ann \"dav pass\"\n", s.base)).unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    let conf = env.dir.path().join("davfs2.conf");
    fs::write(
        &conf,
        format!(
            "secrets {}\ncache_dir {}\nuse_locks 0\nbuf_size 64\nask_auth 0\n",
            secrets.display(),
            cache.path().display()
        ),
    )
    .unwrap();
    let mnt = env.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "davfs", &format!("{}/", s.base)])
        .arg(&mnt)
        .arg("-o")
        .arg(format!("conf={}", conf.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(st.status.success(), "mount.davfs: {}", text(&st).1);
    let guard = DavMount { dir: mnt.clone() };
    wait_until("the davfs2 mount", || is_mounted(&mnt));

    // find: the layout, and every file of the mirror.
    let out = Command::new("find").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "find: {}", text(&out).1);
    let found = text(&out).0;
    for p in [
        "mirror/docs/big.bin",
        "snapshots/latest/docs/sub/deep.txt",
        "history/docs/plain.txt.versions",
    ] {
        assert!(
            found.contains(&format!("{}/{p}", mnt.display())),
            "find misses {p}"
        );
    }
    assert_eq!(utf8_files(&mnt.join("mirror")), utf8_files(&env.mirror()));
    // cat, and cp -a of a whole snapshot.
    let out = Command::new("cat")
        .arg(mnt.join("mirror/docs/big.bin"))
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        fs::read(env.mirror().join("docs/big.bin")).unwrap()
    );
    let dest = env.dir.path().join("cp");
    let out = Command::new("cp")
        .arg("-a")
        .arg(mnt.join("snapshots/latest"))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {}", text(&out).1);
    assert_eq!(tree(&dest).contents(), tree(&env.mirror()).contents());

    // Writes: what davfs2 refuses itself fails at once; what it caches locally (a new file, an
    // overwrite, a removal) is refused by the server when davfs2 sends it.
    let docs = mnt.join("mirror/docs");
    assert!(
        fs::create_dir(docs.join("newdir")).is_err(),
        "mkdir succeeded"
    );
    assert!(
        fs::rename(docs.join("plain.txt"), docs.join("moved.txt")).is_err(),
        "rename succeeded"
    );
    let _ = fs::write(docs.join("new.txt"), b"new");
    let _ = fs::write(docs.join("big.bin"), b"overwritten");
    let _ = fs::remove_file(docs.join("a b#c%d?.txt"));
    let _ = Command::new("sync").status();
    // umount.davfs waits while mount.davfs tries to upload what it cached (and is refused);
    // on a loaded machine it may give up waiting: then the mount is detached lazily. Either
    // way the uploads were attempted and refused, which is what is checked below.
    let st = Command::new("umount").arg(&mnt).output().unwrap();
    if !st.status.success() {
        eprintln!("umount: {}", text(&st).1);
    }
    drop(guard);
    wait_until("mount.davfs to finish", || {
        Command::new("pgrep")
            .args(["-f", &format!("mount.davfs.*{}", mnt.display())])
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(true)
    });

    assert_eq!(
        before,
        Tree::dist(&env.dist),
        "the backup changed through davfs2"
    );
    assert_eq!(
        status(&["-u", "ann:dav pass", &s.url("mirror/docs/new.txt")]),
        404
    );
    let out = curl(&["-u", "ann:dav pass", &s.url("mirror/docs/big.bin")]);
    assert_eq!(
        out.stdout,
        fs::read(env.mirror().join("docs/big.bin")).unwrap()
    );
    let out = curl(&[
        "-u",
        "ann:dav pass",
        &s.url("mirror/docs/a%20b%23c%25d%3F.txt"),
    ]);
    assert_eq!(out.stdout, b"awkward name\n");
}

fn chromium(args: &[&str], profile: &Path) -> Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn a_browser_renders_the_folder_listing() {
    if !have("chromium") {
        return;
    }
    let env = fixture(true);
    let s = Server::start(&env.dist);
    let profile = env.dir.path().join("chromium");
    let out = chromium(&["--dump-dom", &s.url("mirror/docs/")], &profile);
    assert!(out.status.success(), "chromium: {}", text(&out).1);
    let dom = text(&out).0;
    for name in [
        "big.bin",
        "plain.txt",
        ".hidden",
        "sub/",
        "a b#c%d?.txt",
        "caf\u{fffd}.txt",
        "inlink",
    ] {
        assert!(
            dom.contains(&format!(">{name}</a>")),
            "{name} not rendered as a link:\n{dom}"
        );
    }
    assert!(dom.contains("/etc/passwd (link not served)"));
    assert!(dom.contains("300000 bytes"));

    // History: versions, oldest first, each a download link.
    let out = chromium(
        &["--dump-dom", &s.url("history/docs/plain.txt.versions/")],
        &profile,
    );
    let dom = text(&out).0;
    let incs = env.increments();
    let first = dom.find("_plain.txt</a>").expect("a version link");
    let last = dom.rfind("_plain.txt</a>").unwrap();
    assert!(first < last, "two versions expected:\n{dom}");
    assert_eq!(incs.len(), 2);

    let shot = env.dir.path().join("listing.png");
    let out = chromium(
        &[
            "--window-size=1000,560",
            &format!("--screenshot={}", shot.display()),
            &s.url("mirror/docs/"),
        ],
        &profile,
    );
    assert!(
        out.status.success(),
        "chromium screenshot: {}",
        text(&out).1
    );
    let png = fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a real screenshot"
    );
    if let Some(to) = std::env::var_os("SERVE_SCREENSHOT_TO") {
        fs::copy(&shot, to).expect("copy screenshot");
    }
}
