//! Test environment of the `backup-tool` tests: a source tree, a backup of it, and the real
//! `backup-tool` binary.
//!
//! Backups are made by the real `backup`; crafted backups (hostile metadata, the original
//! Python tool's format) are written by the tests themselves.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub dist: PathBuf,
    /// Paths below these (relative) prefixes are untracked; everything else is tracked.
    pub untracked_prefixes: Vec<String>,
    clock: i64,
}

pub fn ns_of(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let dist = tmp.path().join("dist");
        fs::create_dir_all(&src).unwrap();
        Env {
            tmp,
            src,
            dist,
            untracked_prefixes: vec!["untracked".into()],
            // 2024-01-05 10:00:00 UTC
            clock: 1_704_448_800,
        }
    }

    /// Writes a source file with a fixed mtime (seconds since the epoch).
    pub fn write_at(&self, rel: &str, content: &[u8], mtime_secs: i64) {
        let p = self.src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs as u64))
            .unwrap();
    }

    pub fn write(&mut self, rel: &str, content: &[u8]) {
        self.clock += 60;
        let t = self.clock;
        self.write_at(rel, content, t);
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.src.join(rel)).unwrap();
    }

    /// One run of the real `backup` (tracking every top-level folder but those named in
    /// `untracked_prefixes`, which are included untracked); returns the increment it made.
    pub fn backup(&mut self) -> Option<String> {
        let mut track = Vec::new();
        let mut include = Vec::new();
        for e in fs::read_dir(&self.src).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            if self.untracked_prefixes.contains(&n) {
                include.push(n);
            } else {
                track.push(n);
            }
        }
        let config = serde_json::json!({
            "src": self.src, "dist": self.dist,
            "track_dirs": track, "include_dirs": include,
        });
        let path = self.tmp.path().join("config.json");
        fs::write(&path, config.to_string()).unwrap();
        let before = if self.dist.exists() {
            self.increments()
        } else {
            Vec::new()
        };
        let out = std::process::Command::new(crate::bin("backup"))
            .arg("--config")
            .arg(&path)
            .arg("-q")
            .output()
            .expect("run backup");
        assert!(
            out.status.success(),
            "backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.increments().into_iter().find(|n| !before.contains(n))
    }

    /// Runs `backup-tool DIST args...`.
    pub fn tool(&self, args: &[&str]) -> Output {
        self.tool_env(args, &[])
    }

    pub fn tool_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = std::process::Command::new(crate::bin("backup-tool"));
        c.arg(&self.dist).args(args).env_remove("NO_COLOR");
        for (k, v) in env {
            c.env(k, v);
        }
        c.current_dir(self.tmp.path());
        c.output().expect("run backup-tool")
    }

    /// Runs and expects exit status `code`; returns stdout.
    pub fn tool_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.tool(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "backup-tool {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub fn tool_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.tool_ok(&a, code)).expect("valid JSON")
    }

    pub fn increments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dist)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("backup_") && !n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// A fingerprint of a whole tree: every entry's path, type, content, mode and mtime (and
/// symlink targets), so a read-only command can be shown to change nothing.
pub fn fingerprint(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        // The lock file only records who last held the lock; taking it (a writer command that
        // finds nothing to do) is not a change of the backup.
        if e.file_name() == ".backup.lock" {
            continue;
        }
        // The index (`.backup-index.sqlite` and SQLite's `-wal`/`-shm`/`-journal` beside it) is
        // derived data every command may create or bring up to date (SPEC §2 "The index"):
        // not a change of the backup. For the same reason `dist`'s own mtime, which those
        // files' creation moves, is left out; its entries are all still compared.
        let name = e.file_name().to_string_lossy();
        if e.depth() == 1 && name.starts_with(".backup-index.sqlite") {
            continue;
        }
        let md = e.metadata().unwrap();
        if e.depth() == 0 {
            let _ = writeln!(
                &mut out as &mut dyn std::fmt::Write,
                "{} {:o} (dist: mtime not compared)",
                e.path().display(),
                md.mode()
            );
            continue;
        }
        let content = if md.is_file() {
            blake3::hash(&fs::read(e.path()).unwrap())
                .to_hex()
                .to_string()
        } else if md.file_type().is_symlink() {
            fs::read_link(e.path()).unwrap().display().to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            &mut out as &mut dyn std::fmt::Write,
            "{} {:o} {} {} {} {}",
            e.path().display(),
            md.mode(),
            md.mtime(),
            md.mtime_nsec(),
            md.nlink(),
            content
        );
    }
    out
}

/// Writes `text` to `path`, creating folders.
pub fn put(path: &Path, text: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    f.write_all(text).unwrap();
}

/// The standard history used by most tests: four increments over a small tree.
///
/// 1. new `projects/a.py` (v1), `projects/b.pdf`, `docs/readme.md`; untracked `untracked/u.txt`
/// 2. `a.py` changed (v2), new `projects/sub/c.py`
/// 3. `b.pdf` deleted, `readme.md` changed
/// 4. `a.py` changed (v3)
pub struct Scenario {
    pub env: Env,
    pub incs: Vec<String>,
}

pub fn scenario() -> Scenario {
    let mut env = Env::new();
    let mut incs = Vec::new();
    env.write("projects/a.py", b"print('v1')\n");
    env.write("projects/b.pdf", &vec![b'%'; 2048]);
    env.write("docs/readme.md", b"# readme v1\n");
    env.write("untracked/u.txt", b"untracked\n");
    incs.push(env.backup().expect("first increment"));
    env.write("projects/a.py", b"print('version two')\n");
    env.write("projects/sub/c.py", b"c = 1\n");
    incs.push(env.backup().expect("second increment"));
    env.remove("projects/b.pdf");
    env.write("docs/readme.md", b"# readme, second edition\n");
    incs.push(env.backup().expect("third increment"));
    env.write("projects/a.py", b"print('v3')\n");
    incs.push(env.backup().expect("fourth increment"));
    Scenario { env, incs }
}
