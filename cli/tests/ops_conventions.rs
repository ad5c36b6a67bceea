//! Command-line conventions of both binaries: shell completions bash can source, man pages
//! `man -l` renders, `-c`/`-v`/`-q` everywhere, `-n` for every dry run, `show latest`, absolute
//! source paths through a profile, "did you mean" for a mistyped subcommand without a backup
//! path, an example in every `--help`, plurals; and a dead mount cleaned at the next mount.

use std::process::{Command, Stdio};

use backup_tests::mount::{is_mounted, wait_until};
use backup_tests::{bin, text, TestEnv};
use serde_json::json;

fn run(b: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin(b)).args(args).output().unwrap()
}

const TOOL_SUBCOMMANDS: &[&str] = &[
    "list",
    "show",
    "search",
    "log",
    "diff",
    "restore",
    "check",
    "recreate",
    "delete",
    "prune",
    "mount",
    "completions",
    "man",
];

#[test]
fn completions_source_in_bash_and_exist_for_every_shell() {
    for b in ["backup", "backup-tool"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source <('{}' completions bash) && complete -p {b}",
                bin(b).display()
            ))
            .output()
            .unwrap();
        let (so, se) = text(&out);
        assert!(out.status.success(), "{b}: {se}");
        assert!(so.contains(&format!(" {b}")), "{b}: {so}");
        for shell in ["zsh", "fish", "powershell"] {
            let out = run(b, &["completions", shell]);
            assert!(out.status.success(), "{b} {shell}");
            let so = text(&out).0;
            assert!(so.contains("restore") || b == "backup", "{b} {shell}");
            assert!(
                so.contains("check-config") || b == "backup-tool",
                "{b} {shell}"
            );
        }
    }
}

#[test]
fn man_pages_render() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man1");
    for b in ["backup", "backup-tool"] {
        let out = run(b, &["man", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out).1);
    }
    for (page, wants) in [
        ("backup.1", &["--check-config", "--explain", "Examples"][..]),
        ("backup-tool.1", &["restore", "mount", "completions"][..]),
        (
            "backup-tool-prune.1",
            &["--keep-within", "--keep-hourly", "Examples"][..],
        ),
        ("backup-tool-restore.1", &["--at", "full restore"][..]),
    ] {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join(page))
            .env("MANWIDTH", "80")
            .env("PAGER", "cat")
            .output()
            .expect("man (Debian package man-db)");
        let (so, se) = text(&out);
        assert!(out.status.success(), "{page}: {se}");
        let plain = strip_overstrike(&so);
        for w in wants {
            assert!(plain.contains(w), "{page} lacks {w}: {plain}");
        }
    }
    // Without DIR: the page on stdout.
    let out = run("backup-tool", &["man"]);
    assert!(text(&out).0.starts_with(".ie") || text(&out).0.contains(".TH"));
}

/// `a\x08a` (bold by overstrike, as man formats for a terminal) → `a`.
fn strip_overstrike(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && chars[i + 1] == '\u{8}' {
            i += 2;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in TOOL_SUBCOMMANDS {
        let out = run("backup-tool", &[sub, "--help"]);
        let so = text(&out).0;
        assert!(out.status.success(), "{sub}");
        assert!(
            so.contains("Example") && so.contains("backup-tool"),
            "backup-tool {sub} --help has no example:\n{so}"
        );
    }
    for sub in ["init", "completions", "man"] {
        let so = text(&run("backup", &[sub, "--help"])).0;
        assert!(so.contains("Example"), "backup {sub} --help: {so}");
    }
    // Both binaries take -c, -v, -q; every dry run answers -n.
    for b in ["backup", "backup-tool"] {
        let so = text(&run(b, &["--help"])).0;
        for f in ["-c, --config", "-v, --verbose", "-q, --quiet", "Example"] {
            assert!(so.contains(f), "{b} --help lacks {f}: {so}");
        }
    }
    for sub in ["restore", "delete", "prune"] {
        let so = text(&run("backup-tool", &[sub, "--help"])).0;
        assert!(so.contains("-n, --dry-run"), "{sub}: {so}");
    }
    assert!(text(&run("backup", &["--help"]))
        .0
        .contains("-n, --dry-run"));
}

#[test]
fn mistyped_subcommand_without_a_backup_path() {
    let out = run("backup-tool", &["lst"]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(
        se.contains("unrecognized subcommand 'lst'") && se.contains("'list'"),
        "{se}"
    );
    let out = run("backup-tool", &["-c", "/nonexistent.json", "restroe"]);
    assert!(text(&out).1.contains("'restore'"), "{}", text(&out).1);
    // With a backup path, clap's own suggestion.
    let t = tempfile::tempdir().unwrap();
    let out = run("backup-tool", &[t.path().to_str().unwrap(), "lsit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("list"), "{}", text(&out).1);
}

/// A backup made through a profile, with three versions of one tracked file.
fn profile_env() -> TestEnv {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["misc"]}));
    env.write("docs/a.txt", b"one");
    env.write("misc/m.txt", b"m");
    env.backup_ok(&["-q"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.write("docs/a.txt", b"two");
    env.backup_ok(&["-q"]);
    env
}

#[test]
fn show_latest_absolute_paths_dry_runs_and_plurals() {
    let env = profile_env();
    let cfg = env.config_path.to_str().unwrap();
    let incs = env.increments();
    assert_eq!(incs.len(), 2);
    // show latest = the newest increment.
    let out = run("backup-tool", &["-c", cfg, "show", "latest"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(so.starts_with(&incs[1]), "{so}");

    // log with an absolute path inside src, through the profile.
    let abs = env.src.join("docs/a.txt");
    let out = run("backup-tool", &["-c", cfg, "log", abs.to_str().unwrap()]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(so.contains(&incs[0]) && so.contains(&incs[1]), "{so}");
    // restore one file by its absolute path as it was in the first increment.
    let to = env.dir.path().join("r");
    let out = run(
        "backup-tool",
        &[
            "-c",
            cfg,
            "restore",
            abs.to_str().unwrap(),
            "--at",
            &incs[0],
            "--to",
            to.to_str().unwrap(),
        ],
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert_eq!(std::fs::read(to.join("docs/a.txt")).unwrap(), b"one");
    assert!(so.contains("restored 1 file at"), "plural: {so}");
    // Without the profile, an absolute path is refused with the reason.
    let out = run(
        "backup-tool",
        &[env.dist.to_str().unwrap(), "log", abs.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--config"), "{}", text(&out).1);
    // Outside src: refused.
    let out = run("backup-tool", &["-c", cfg, "log", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not inside"), "{}", text(&out).1);

    // -n is a dry run everywhere.
    let to2 = env.dir.path().join("r2");
    let out = run(
        "backup-tool",
        &["-c", cfg, "restore", "-n", "--to", to2.to_str().unwrap()],
    );
    assert!(
        text(&out).0.contains("would restore 2 files"),
        "{}",
        text(&out).0
    );
    assert!(!to2.exists());
    let out = run(
        "backup-tool",
        &["-c", cfg, "delete", &incs[0], "-m", "*", "-n"],
    );
    assert!(
        text(&out).0.contains("would remove 1 file from"),
        "{}",
        text(&out).0
    );
    let out = run(
        "backup-tool",
        &["-c", cfg, "prune", "--keep-last", "1", "-n"],
    );
    assert!(
        text(&out).0.contains("would remove 1 increment,"),
        "{}",
        text(&out).0
    );
    assert_eq!(env.increments().len(), 2);

    // Plurals and counts elsewhere.
    let out = run("backup-tool", &["-c", cfg, "search", "--mask", "m.txt"]);
    assert!(
        text(&out).0.contains("1 match in 1 place"),
        "{}",
        text(&out).0
    );
    let out = run("backup-tool", &["-c", cfg, "check"]);
    assert!(
        text(&out).0.contains("2 increments, 4 files checked"),
        "{}",
        text(&out).0
    );

    // A full restore is `restore` without --at: the mirror, untracked files included.
    let full = env.dir.path().join("full");
    let out = run(
        "backup-tool",
        &["-c", cfg, "-q", "restore", "--to", full.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(std::fs::read(full.join("docs/a.txt")).unwrap(), b"two");
    assert_eq!(std::fs::read(full.join("misc/m.txt")).unwrap(), b"m");
}

/// `backup-tool mount` killed with SIGKILL leaves a dead FUSE mount (ENOTCONN); the next mount
/// on the same directory says so and cleans it.
#[test]
fn dead_mount_is_detected_and_cleaned() {
    assert!(
        std::path::Path::new("/dev/fuse").exists() || !backup_tests::capability::under_ci(),
        "/dev/fuse is required under CI"
    );
    if !std::path::Path::new("/dev/fuse").exists() {
        return;
    }
    let env = profile_env();
    let dir = env.dir.path().join("mnt");
    let mut first = backup_tests::mount::MountedBackup::start(&env.dist, &dir);
    assert!(first.path("mirror/docs/a.txt").exists());
    first.signal(libc::SIGKILL);
    assert!(is_mounted(&first.dir), "SIGKILL left no mount to test with");
    // Listing reaches the dead daemon (a stat may still be answered from the attr cache).
    let err = std::fs::read_dir(&first.dir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    let mut second = Command::new(bin("backup-tool"))
        .arg(&env.dist)
        .arg("mount")
        .arg(&first.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = first.dir.join("mirror/docs/a.txt");
    wait_until("the second mount to serve files", || {
        if let Ok(Some(st)) = second.try_wait() {
            let mut se = String::new();
            use std::io::Read;
            second
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut se)
                .unwrap();
            panic!("second mount exited {st}: {se}");
        }
        std::fs::read(&probe).map(|b| b == b"two").unwrap_or(false)
    });
    unsafe {
        libc::kill(second.id() as i32, libc::SIGTERM);
    }
    let out = second.wait_with_output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        se.contains("a previous mount on") && se.contains("died") && se.contains("fusermount3"),
        "{se}"
    );
    wait_until("unmount", || !is_mounted(&first.dir));
}
