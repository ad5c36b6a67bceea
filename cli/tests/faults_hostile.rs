//! Hostile backups: crafted increment metadata and `mirror.json` (`..`, absolute paths, huge
//! sizes, wrong types, invalid UTF-8, truncated JSON, symlinks in increments pointing outside)
//! must never make a `backup-tool` command panic or hang, nor read or write outside the backup
//! or the restore target. Every command (list, show, search, log, diff, restore, check,
//! recreate, delete/prune dry runs, and a mount that is listed and read) runs on every variant.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_tests::{bin, serde_json, serde_json::json, tree, TestEnv};

const SECRET: &[u8] = b"VICTIM-SECRET-never-to-be-read";

/// Runs a command with a deadline; returns (exit code, stdout, stderr), `None` code on timeout.
fn run(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    // Drain output on threads so a chatty command cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let so = String::from_utf8_lossy(&to.join().unwrap()).into_owned();
    let se = String::from_utf8_lossy(&te.join().unwrap()).into_owned();
    (code, so, se)
}

fn meta_path(dist: &Path, name: &str) -> PathBuf {
    dist.join(name).join(format!("{name}.json"))
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &serde_json::Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Adds catalog entries (raw JSON values) to an increment's metadata.
fn add_entries(dist: &Path, name: &str, entries: &[(&str, serde_json::Value)]) {
    let p = meta_path(dist, name);
    let mut v = read_json(&p);
    for (k, e) in entries {
        v["file_catalog"][*k] = e.clone();
    }
    write_json(&p, &v);
}

fn entry(size: serde_json::Value) -> serde_json::Value {
    json!({"size": size, "mtime": 1_700_000_000.0, "category": "tracked", "op": "new"})
}

type Variant = (&'static str, Box<dyn Fn(&Path, &[String], &Path)>);

fn variants() -> Vec<Variant> {
    vec![
        (
            "dot-dot and absolute catalog paths",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                add_entries(
                    d,
                    &n[0],
                    &[
                        ("../../../outside/victim.txt", entry(json!(30))),
                        ("../../outside/victim.txt", entry(json!(30))),
                        ("docs/../../../../outside/victim.txt", entry(json!(30))),
                        ("/etc/passwd", entry(json!(30))),
                        ("//outside", entry(json!(30))),
                        ("docs/./a.txt", entry(json!(30))),
                        ("", entry(json!(1))),
                        (".", entry(json!(1))),
                        ("docs/with\u{0}nul", entry(json!(1))),
                        ("docs/new\nline", entry(json!(1))),
                    ],
                );
            }),
        ),
        (
            "huge and negative sizes and times",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                let mut e = entry(json!(u64::MAX));
                e["mtime"] = json!(i64::MAX);
                let mut neg = entry(json!(-1));
                neg["mtime"] = json!(-1e300);
                let mut inf = entry(json!(1e308));
                inf["mtime"] = json!(1.7976931348623157e308);
                add_entries(
                    d,
                    &n[0],
                    &[
                        ("docs/a.txt", e),
                        ("docs/neg.txt", neg),
                        ("docs/inf.txt", inf),
                    ],
                );
                let p = meta_path(d, &n[1]);
                let mut v = read_json(&p);
                v["summary"] = json!({"new": u64::MAX, "changed": -5, "bytes": u64::MAX});
                v["timestamp"] = json!("99999-99-99T99:99:99");
                write_json(&p, &v);
            }),
        ),
        (
            "wrong types everywhere",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                add_entries(
                    d,
                    &n[0],
                    &[
                        ("docs/s.txt", entry(json!("abc"))),
                        ("docs/t.txt", json!([1, 2, 3])),
                        ("docs/u.txt", json!(null)),
                        (
                            "docs/v.txt",
                            json!({"size": 1, "mtime": {"x": 1}, "category": 7, "op": "explode"}),
                        ),
                        (
                            "docs/w.txt",
                            json!({"size": 1, "mtime": 1, "category": "tracked", "hash": "zz", "mode": "rwx", "kind": "fifo"}),
                        ),
                    ],
                );
                let p = meta_path(d, &n[1]);
                let mut v = read_json(&p);
                v["file_catalog"] = json!(["not", "a", "map"]);
                v["version"] = json!({"nested": true});
                write_json(&p, &v);
                let m = d.join("mirror.json");
                let mut v = read_json(&m);
                v["files"]["docs/a.txt"] = json!("string instead of an entry");
                v["files"]["../../outside/victim.txt"] =
                    json!({"size": 30, "mtime": 1, "tracked": true});
                write_json(&m, &v);
            }),
        ),
        (
            "invalid UTF-8 bytes",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                let p = meta_path(d, &n[0]);
                let mut b = std::fs::read(&p).unwrap();
                let at = b.iter().position(|c| *c == b'"').unwrap() + 1;
                b.splice(at..at, [0xff, 0xfe, 0xc3]);
                std::fs::write(&p, b).unwrap();
                let p = meta_path(d, &n[1]);
                let b = std::fs::read(&p).unwrap();
                let s = String::from_utf8(b)
                    .unwrap()
                    .replacen("docs/", "do\u{fffd}cs/", 1);
                let mut b = s.into_bytes();
                let i = b
                    .windows(3)
                    .position(|w| w == "\u{fffd}".as_bytes())
                    .unwrap();
                b.splice(i..i + 3, [0x80, 0x80]);
                std::fs::write(&p, b).unwrap();
            }),
        ),
        (
            "truncated and empty JSON",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                let p = meta_path(d, &n[0]);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                std::fs::write(meta_path(d, &n[1]), b"").unwrap();
                let m = d.join("mirror.json");
                let b = std::fs::read(&m).unwrap();
                std::fs::write(&m, &b[..b.len() / 3]).unwrap();
            }),
        ),
        (
            "deeply nested JSON and a metadata folder",
            Box::new(|d: &Path, n: &[String], _o: &Path| {
                let deep = "[".repeat(100_000);
                std::fs::write(meta_path(d, &n[0]), deep).unwrap();
                let p = meta_path(d, &n[1]);
                std::fs::remove_file(&p).unwrap();
                std::fs::create_dir(&p).unwrap();
            }),
        ),
        (
            "symlinks in increments and the mirror pointing outside",
            Box::new(|d: &Path, n: &[String], o: &Path| {
                let victim = o.join("victim.txt");
                // A stored file replaced by a symlink to a file outside, catalogued as a file.
                let a = d.join(&n[0]).join("track/docs/a.txt");
                std::fs::remove_file(&a).unwrap();
                symlink(&victim, &a).unwrap();
                // A whole stored folder replaced by a symlink to a folder outside.
                let sub = d.join(&n[1]).join("track/docs/sub");
                std::fs::remove_dir_all(&sub).unwrap();
                symlink(o, &sub).unwrap();
                add_entries(d, &n[1], &[("docs/sub/victim.txt", entry(json!(30)))]);
                // The mirror's folder too.
                let md = d.join("mirror/docs/sub");
                std::fs::remove_dir_all(&md).unwrap();
                symlink(o, &md).unwrap();
                // The metadata itself a symlink to a file outside.
                let m = d.join("mirror.json");
                std::fs::remove_file(&m).unwrap();
                symlink(&victim, &m).unwrap();
            }),
        ),
        (
            "a damaged index",
            Box::new(|d: &Path, _n: &[String], _o: &Path| {
                let ix = d.join(".backup-index.sqlite");
                let mut b = std::fs::read(&ix).unwrap();
                // Keep the header, scribble over the pages.
                for (i, byte) in b.iter_mut().enumerate().skip(100) {
                    *byte = (i % 7) as u8;
                }
                std::fs::write(&ix, &b).unwrap();
            }),
        ),
        (
            "crafted index rows naming paths outside",
            Box::new(|d: &Path, _n: &[String], _o: &Path| {
                let sql = "
                    INSERT INTO mirror(key, kind, size, mtime_ns, tracked)
                        VALUES (CAST('..' AS BLOB) || x'00' || CAST('outside' AS BLOB) || x'00'
                                || CAST('victim.txt' AS BLOB), 0, 30, 0, 1);
                    INSERT INTO mirror(key, kind, size, mtime_ns, tracked)
                        VALUES (x'00' || CAST('etc' AS BLOB), 0, 30, 0, 1);
                    INSERT INTO dirs(parent, name, depth) VALUES (1, CAST('..' AS BLOB), 1);
                    CREATE TEMP TABLE t AS SELECT * FROM events LIMIT 1;
                    UPDATE t SET dir = (SELECT max(id) FROM dirs),
                                 name = CAST('victim.txt' AS BLOB), size = 30;
                    INSERT INTO events SELECT * FROM t;
                    UPDATE t SET dir = 1, name = CAST('a/../../x' AS BLOB);
                    INSERT INTO events SELECT * FROM t;
                    UPDATE increments SET name = '../../outside' WHERE id = (SELECT min(id) FROM increments);
                ";
                let st = Command::new("sqlite3")
                    .arg(d.join(".backup-index.sqlite"))
                    .arg(sql)
                    .status()
                    .expect("sqlite3 (apt-get install sqlite3)");
                assert!(st.success());
            }),
        ),
        (
            "the index a symlink to a file outside",
            Box::new(|d: &Path, _n: &[String], o: &Path| {
                let ix = d.join(".backup-index.sqlite");
                std::fs::remove_file(&ix).unwrap();
                let _ = std::fs::remove_file(d.join(".backup-index.sqlite-wal"));
                let _ = std::fs::remove_file(d.join(".backup-index.sqlite-shm"));
                symlink(o.join("victim.txt"), &ix).unwrap();
            }),
        ),
        (
            "increment folders that are files or symlinks out",
            Box::new(|d: &Path, n: &[String], o: &Path| {
                std::fs::remove_dir_all(d.join(&n[0]).join("track")).unwrap();
                std::fs::write(d.join(&n[0]).join("track"), b"not a folder").unwrap();
                std::fs::remove_dir_all(d.join(&n[1]).join("track")).unwrap();
                symlink(o, d.join(&n[1]).join("track")).unwrap();
                std::fs::write(
                    d.join("backup_20200101_000000"),
                    b"a file named like an increment",
                )
                .unwrap();
                symlink(o, d.join("backup_20200102_000000")).unwrap();
            }),
        ),
    ]
}

/// Waits until `mnt` is a mount point (or gives up).
fn wait_mounted(mnt: &Path, child: &mut std::process::Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Reads every file under `root` (bounded per file), never following symlinks; returns the
/// concatenated contents' check for the secret.
fn read_all_bounded(root: &Path, found_secret: &mut bool, files: &mut usize) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        // lstat, not the listing's type: a stored symlink is shown as one, and following it
        // is the reader's choice, not the mount's.
        let Ok(ft) = std::fs::symlink_metadata(e.path()).map(|m| m.file_type()) else {
            continue;
        };
        if ft.is_dir() {
            read_all_bounded(&e.path(), found_secret, files);
        } else if ft.is_file() {
            *files += 1;
            if let Ok(f) = std::fs::File::open(e.path()) {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut buf);
                if buf.windows(SECRET.len()).any(|w| w == SECRET) {
                    eprintln!("outside bytes read through {}", e.path().display());
                    *found_secret = true;
                }
            }
        }
    }
}

/// True when `root` (a file, or a folder read recursively) holds the outside file's bytes.
fn contains_secret(root: &Path) -> bool {
    let mut found = false;
    let mut n = 0;
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_file() => {
            let b = std::fs::read(root).unwrap_or_default();
            found = b.windows(SECRET.len()).any(|w| w == SECRET);
        }
        Ok(m) if m.is_dir() => read_all_bounded(root, &mut found, &mut n),
        _ => {}
    }
    found
}

/// Starts `mount` (a `backup-tool BACKUP mount MNT`), waits for the mount, reads everything
/// through it, then stops it with SIGTERM. Returns what went wrong: the mount never appearing
/// (the tool exited or hung first: then nothing could be checked), the outside file's bytes
/// served, `find` hanging, a panic, no clean stop.
fn mount_and_read_all(mut mount: Command, mnt: &Path, what: &str) -> Vec<String> {
    let limit = Duration::from_secs(30);
    let mut failures = Vec::new();
    let mut child = mount
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the mount");
    if wait_mounted(mnt, &mut child) {
        if contains_secret(mnt) {
            failures.push(format!(
                "[{what}] the mount served the outside file's bytes"
            ));
        }
        let (code, _, se) = run(Command::new("find").arg(mnt), limit);
        if code.is_none() {
            failures.push(format!("[{what}] find over the mount hung: {se}"));
        }
    } else {
        failures.push(format!(
            "[{what}] the mount never appeared, so nothing was read through it"
        ));
    }
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    match status {
        None => failures.push(format!("[{what}] mount did not stop on SIGTERM")),
        Some(st) if st.code() == Some(101) || err.contains("panicked") => {
            failures.push(format!("[{what}] mount panicked: {err}"))
        }
        Some(st) if failures.iter().any(|f| f.contains("never appeared")) => {
            failures.push(format!("[{what}] the mount ended with {st}: {err}"))
        }
        _ => {}
    }
    failures
}

/// Runs the script `search --generate-script` wrote, in a folder of its own, and returns how
/// many files it restored and what went wrong: it reading the outside file's bytes into what
/// it wrote, writing anywhere but `restored/` there, changing the backup, hanging, or never
/// having been written.
fn run_generated_script(
    script: &Path,
    run_dir: &Path,
    dist: &Path,
    what: &str,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    if !script.is_file() {
        return (
            0,
            vec![format!("[{what}] search --generate-script wrote no script")],
        );
    }
    std::fs::create_dir(run_dir).unwrap();
    let dist_before = tree(dist);
    let (code, so, se) = run(
        Command::new("bash")
            .arg(script)
            .arg("restored")
            .current_dir(run_dir),
        Duration::from_secs(30),
    );
    if code.is_none() {
        failures.push(format!("[{what}] the generated script hung"));
    }
    // A hostile catalog may leave nothing to restore, or make a copy fail (exit 1): both fine.
    let restored = tree(&run_dir.join("restored")).len();
    if code.is_some_and(|c| c > 1) || se.contains("syntax error") {
        failures.push(format!(
            "[{what}] the generated script broke ({code:?}): {so}{se}"
        ));
    }
    if contains_secret(run_dir) {
        failures.push(format!(
            "[{what}] the generated script copied the outside file's bytes ({code:?})"
        ));
    }
    let top: Vec<_> = std::fs::read_dir(run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if top.iter().any(|n| n != "restored") {
        failures.push(format!("[{what}] the generated script wrote {top:?}"));
    }
    if tree(dist) != dist_before {
        failures.push(format!("[{what}] the generated script changed the backup"));
    }
    (restored, failures)
}

/// The backup every case starts from: two increments over `docs/` and an exported
/// `mirror.json`, next to a folder `outside/` holding [`SECRET`].
struct Hostile {
    env: TestEnv,
    outside: PathBuf,
    names: Vec<String>,
}

fn hostile_backup() -> Hostile {
    let env = TestEnv::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), SECRET).unwrap();
    env.write("docs/a.txt", b"a1");
    env.write("docs/sub/s.txt", b"s1");
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    std::thread::sleep(Duration::from_millis(10));
    env.write("docs/a.txt", b"a2");
    env.write("docs/sub/s.txt", b"s2");
    env.write("docs/b.txt", b"b");
    env.backup_ok(&[]);
    let names = env.increments();
    assert_eq!(names.len(), 2);
    // The backup keeps its state in the index; a `mirror.json` (the original tool's, or one
    // exported for it) is imported when it changes: write one, for the variants to craft.
    let d0 = env.dist.to_str().unwrap();
    let out = env.tool(&[d0, "export-mirror-json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(env.dist.join("mirror.json").is_file());

    Hostile {
        env,
        outside,
        names,
    }
}

/// Every mount test of the variants takes its turn: the cases ran one after the other when
/// they were one test, and their time limits assume so.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One named case: variant `what` crafted into a copy of the shared backup, then every
/// `backup-tool` command and two mounts on it. Nothing may panic or hang, nothing outside the
/// backup may be read, written or restored, nothing may appear next to the backups; when
/// `script_restores`, the script `search --generate-script` wrote must really copy files.
fn hostile_case(what: &str, script_restores: bool) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Hostile {
        env,
        outside,
        names,
    } = hostile_backup();
    let (i, craft) = variants()
        .into_iter()
        .enumerate()
        .find(|(_, (w, _))| *w == what)
        .map(|(i, (_, c))| (i, c))
        .unwrap_or_else(|| panic!("no variant {what:?}"));
    let base = env.dist.clone();
    let outside_before = tree(&outside);
    let tool_limit = Duration::from_secs(30);
    let mut failures = Vec::new();
    let mut commands_run = 0;
    let mut scripts_that_restored = 0;
    let dist = env.dir.path().join(format!("dist{i}"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(&base)
        .arg(&dist)
        .status()
        .unwrap();
    assert!(st.success());
    craft(&dist, &names, &outside);
    let scratch = env.dir.path().join(format!("scratch{i}"));
    std::fs::create_dir(&scratch).unwrap();
    let d = dist.to_str().unwrap().to_owned();
    let s = |p: &str| scratch.join(p).to_str().unwrap().to_owned();
    let (n0, n1) = (names[0].as_str(), names[1].as_str());
    let mut cmds: Vec<Vec<String>> = vec![
        vec!["list".into()],
        vec!["list".into(), "--detailed".into(), "--json".into()],
        vec!["show".into(), n0.into()],
        vec!["show".into(), n1.into(), "--json".into()],
        vec!["show".into(), "../../outside".into()],
        vec!["search".into(), "--mask".into(), "*".into()],
        vec![
            "search".into(),
            "--mask".into(),
            "victim".into(),
            "--full-paths".into(),
            "--json".into(),
        ],
        vec![
            "search".into(),
            "--mask".into(),
            "*".into(),
            "--generate-script".into(),
            s("restore.sh"),
        ],
        vec!["log".into(), "docs/a.txt".into()],
        vec!["log".into(), "../../outside/victim.txt".into()],
        vec!["diff".into(), n0.into(), n1.into()],
        vec!["diff".into(), n0.into(), "mirror".into()],
        vec!["check".into()],
        vec!["check".into(), "--verify".into(), "--json".into()],
        vec![
            "delete".into(),
            n0.into(),
            "--mask".into(),
            "*".into(),
            "--dry-run".into(),
        ],
        vec![
            "prune".into(),
            "--keep-last".into(),
            "1".into(),
            "--dry-run".into(),
        ],
    ];
    for (j, at) in [n0, n1, "mirror", "latest"].iter().enumerate() {
        cmds.push(vec![
            "restore".into(),
            "--at".into(),
            (*at).into(),
            "--to".into(),
            s(&format!("r{j}")),
        ]);
    }
    cmds.push(vec![
        "restore".into(),
        "../../outside/victim.txt".into(),
        "docs/sub/victim.txt".into(),
        "--at".into(),
        n1.into(),
        "--to".into(),
        s("r9"),
    ]);
    // recreate changes metadata: after the mount, on this copy.
    let later: Vec<Vec<String>> = vec![
        vec!["recreate".into()],
        vec!["recreate".into(), "--force".into()],
        vec!["check".into(), "--verify".into()],
    ];
    let tool = |args: &Vec<String>, failures: &mut Vec<String>| {
        let (code, so, se) = run(
            Command::new(bin("backup-tool")).arg(&d).args(args),
            tool_limit,
        );
        let bad = match code {
            None => Some("timed out".to_string()),
            Some(101) => Some("exit 101".into()),
            _ if se.contains("panicked") => Some("panicked".into()),
            _ => None,
        };
        if let Some(why) = bad {
            failures.push(format!(
                "[{what}] backup-tool {}: {why}\n{so}\n{se}",
                args.join(" ")
            ));
        }
    };
    for args in &cmds {
        tool(args, &mut failures);
    }
    commands_run += cmds.len() + later.len() + 3;
    // The mount: list and read everything through it.
    let mnt = scratch.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut mount = Command::new(bin("backup-tool"));
    mount.arg(&d).arg("mount").arg(&mnt);
    failures.extend(mount_and_read_all(mount, &mnt, what));
    // The restore script search wrote: run it, and look at what it wrote.
    let (restored, found) = run_generated_script(
        &scratch.join("restore.sh"),
        &scratch.join("script-run"),
        &dist,
        what,
    );
    failures.extend(found);
    if restored > 0 {
        scripts_that_restored += 1;
    }

    for args in &later {
        tool(args, &mut failures);
    }
    // Metadata rebuilt from disk (--force) names only files inside the backup.
    for n in [n0, n1] {
        if let Ok(b) = std::fs::read(meta_path(&dist, n)) {
            if String::from_utf8_lossy(&b).contains("victim") {
                failures.push(format!(
                    "[{what}] recreate --force recorded a file from outside in {n}"
                ));
            }
        }
    }
    // After recreate, the mount must still not serve outside bytes.
    let mnt2 = scratch.join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let mut mount = Command::new(bin("backup-tool"));
    mount.arg(&d).arg("mount").arg(&mnt2);
    failures.extend(
        mount_and_read_all(mount, &mnt2, what)
            .into_iter()
            .map(|f| format!("after recreate: {f}")),
    );

    // Nothing outside changed, nothing of the outside was restored.
    if tree(&outside) != outside_before {
        failures.push(format!("[{what}] the folder outside the backup changed"));
    }
    for r in std::fs::read_dir(&scratch).unwrap().flatten() {
        // Every restore target, the generated script itself and what it restored.
        if !r.file_name().to_string_lossy().starts_with("mnt") && contains_secret(&r.path()) {
            failures.push(format!(
                "[{what}] {} holds the outside file's bytes",
                r.path().display()
            ));
        }
    }
    // Nothing was created next to the backups but what the test made.
    let mut top: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !(n.starts_with("dist")
                || n.starts_with("scratch")
                || ["src", "outside", "config.json"].contains(&n.as_str()))
        })
        .collect();
    top.sort();
    assert!(top.is_empty(), "files appeared outside: {top:?}");
    eprintln!(
        "[{what}] {commands_run} hostile command runs; generated script restored files: {}",
        scripts_that_restored > 0
    );
    // Most variants leave something to find: their scripts must really have copied files.
    assert!(
        !script_restores || scripts_that_restored == 1,
        "[{what}] the generated script restored nothing"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

/// The named cases, one per variant of [`variants`] (`true`: its generated restore script
/// must copy files; at least six do, as the single test demanded before the split).
macro_rules! hostile_cases {
    ($($name:ident: $what:literal, $restores:expr;)*) => {
        $(
            #[test]
            fn $name() {
                hostile_case($what, $restores);
            }
        )*

        #[test]
        fn every_variant_is_a_named_case_and_six_scripts_restore() {
            let named = [$($what),*];
            let all: Vec<&str> = variants().iter().map(|(w, _)| *w).collect();
            assert_eq!(named.to_vec(), all);
            assert!([$($restores),*].iter().filter(|r| **r).count() >= 6);
        }
    };
}

hostile_cases! {
    dot_dot_and_absolute_catalog_paths: "dot-dot and absolute catalog paths", true;
    huge_and_negative_sizes_and_times: "huge and negative sizes and times", true;
    wrong_types_everywhere: "wrong types everywhere", true;
    invalid_utf8_bytes: "invalid UTF-8 bytes", true;
    truncated_and_empty_json: "truncated and empty JSON", true;
    deeply_nested_json_and_a_metadata_folder: "deeply nested JSON and a metadata folder", true;
    symlinks_in_increments_and_the_mirror_pointing_outside: "symlinks in increments and the mirror pointing outside", true;
    a_damaged_index: "a damaged index", true;
    crafted_index_rows_naming_paths_outside: "crafted index rows naming paths outside", true;
    the_index_a_symlink_to_a_file_outside: "the index a symlink to a file outside", true;
    increment_folders_that_are_files_or_symlinks_out: "increment folders that are files or symlinks out", false;
}

#[test]
fn the_mount_check_fails_when_the_mount_never_appears() {
    let env = TestEnv::new();
    let mnt = env.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Not a backup: the tool refuses and exits without mounting anything.
    let mut mount = Command::new(bin("backup-tool"));
    mount
        .arg(env.dir.path().join("nothing-here"))
        .arg("mount")
        .arg(&mnt);
    let failures = mount_and_read_all(mount, &mnt, "no backup");
    assert!(
        failures.iter().any(|f| f.contains("never appeared")),
        "{failures:?}"
    );
}

#[test]
fn the_script_check_fails_on_a_script_that_copies_outside_bytes_or_is_missing() {
    let env = TestEnv::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), SECRET).unwrap();
    env.write("docs/a.txt", b"a");
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    // A script that does what a broken generator might: copy a file from outside the backup.
    let script = env.dir.path().join("evil.sh");
    std::fs::write(
        &script,
        format!(
            "mkdir -p restored && cp {} restored/\n",
            outside.join("victim.txt").display()
        ),
    )
    .unwrap();
    let (_, failures) =
        run_generated_script(&script, &env.dir.path().join("run1"), &env.dist, "evil");
    assert!(
        failures.iter().any(|f| f.contains("outside file's bytes")),
        "{failures:?}"
    );
    let (_, failures) = run_generated_script(
        &env.dir.path().join("never-written.sh"),
        &env.dir.path().join("run2"),
        &env.dist,
        "missing",
    );
    assert!(
        failures.iter().any(|f| f.contains("wrote no script")),
        "{failures:?}"
    );
}
