//! Test environment shared by the end-to-end tests: temporary source trees, config files, and
//! the real `backup` / `backup-tool` binaries.
//!
//! ```no_run
//! use backup_tests::{TestEnv, tree};
//! let env = TestEnv::new();
//! env.write("docs/a.txt", b"hello");
//! env.config(serde_json::json!({"track_dirs": ["docs"]}));
//! env.backup_ok(&[]);
//! assert_eq!(tree(&env.src), tree(&env.mirror()));
//! ```
//!
//! Binaries: the tests live in `cli/tests`, integration tests of the package that defines
//! `backup` and `backup-tool`, so Cargo builds both before any test runs and names them in
//! `CARGO_BIN_EXE_<name>` (see [`bin`]); nothing here ever runs `cargo build`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use serde_json;

/// The workspace binary `name` (`backup` or `backup-tool`), in this order:
///
/// 1. `FAULTS_BIN_DIR/<name>` when that is set: the campaign scripts run a frozen copy, so
///    rebuilding the workspace meanwhile cannot change what is tested;
/// 2. `CARGO_BIN_EXE_<name>`, which Cargo sets for the integration tests of `backup-cli`
///    (at run time as well as at compile time);
/// 3. next to the test executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`),
///    where Cargo put the binaries it built for those same tests: for a Cargo that sets
///    `CARGO_BIN_EXE_*` at compile time only, or a test executable started by hand.
pub fn bin(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("FAULTS_BIN_DIR") {
        return PathBuf::from(d).join(name);
    }
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the end-to-end tests through `cargo test -p backup-cli`, which builds it",
        path.display()
    );
    path
}

/// A temporary folder with `src/` (the source tree), a `dist` path (not created) and a config
/// file path.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dist: PathBuf,
    pub config_path: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir src");
        let dist = dir.path().join("dist");
        let config_path = dir.path().join("config.json");
        TestEnv {
            dir,
            src,
            dist,
            config_path,
        }
    }

    /// Same, with `dist` somewhere else (a tmpfs or exFAT mount).
    pub fn with_dist(dist: PathBuf) -> Self {
        let mut env = Self::new();
        env.dist = dist;
        env
    }

    pub fn mirror(&self) -> PathBuf {
        self.dist.join("mirror")
    }

    /// Writes the config: `src`, `dist` and the given rule keys.
    pub fn config(&self, rules: serde_json::Value) {
        let mut v = serde_json::json!({
            "src": self.src,
            "dist": self.dist,
        });
        if let (Some(m), serde_json::Value::Object(r)) = (v.as_object_mut(), rules) {
            m.extend(r);
        }
        std::fs::write(&self.config_path, serde_json::to_vec_pretty(&v).unwrap())
            .expect("write config");
    }

    /// Writes a source file (parents created) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, data: &[u8]) -> PathBuf {
        let p = self.src.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        // Replace rather than write in place, like editors do; either must work.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).expect("write source file");
        p
    }

    /// Writes a source file whose name is raw bytes (non-UTF-8 allowed).
    pub fn write_raw(&self, dir: &str, name: &[u8], data: &[u8]) -> PathBuf {
        let d = self.src.join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        let p = d.join(OsStr::from_bytes(name));
        std::fs::write(&p, data).expect("write source file");
        p
    }

    pub fn remove(&self, rel: impl AsRef<Path>) {
        std::fs::remove_file(self.src.join(rel)).expect("remove source file");
    }

    /// Runs `backup --config <config> ARGS`.
    pub fn backup(&self, args: &[&str]) -> Output {
        Command::new(bin("backup"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run backup")
    }

    /// Runs `backup --config <config> ARGS` with extra environment variables (a time zone, a
    /// faked clock: see [`clock_at`]).
    pub fn backup_env(&self, env: &[(String, String)], args: &[&str]) -> Output {
        Command::new(bin("backup"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run backup")
    }

    /// Runs `backup-tool DIST ARGS` with extra environment variables.
    pub fn tool_env(&self, env: &[(String, String)], args: &[&str]) -> Output {
        Command::new(bin("backup-tool"))
            .arg(&self.dist)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run backup-tool")
    }

    /// Runs `backup` and asserts exit status 0; returns stdout.
    pub fn backup_ok(&self, args: &[&str]) -> String {
        let out = self.backup(args);
        assert!(
            out.status.success(),
            "backup failed ({:?})\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `backup --json` successfully and parses the summary.
    pub fn backup_json(&self) -> serde_json::Value {
        let s = self.backup_ok(&["--json", "-q"]);
        serde_json::from_str(&s).expect("summary JSON")
    }

    /// Runs `backup-tool ARGS` (no implicit backup path).
    pub fn tool(&self, args: &[&str]) -> Output {
        Command::new(bin("backup-tool"))
            .args(args)
            .output()
            .expect("run backup-tool")
    }

    /// Increment folder names at `dist`, sorted.
    pub fn increments(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dist)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.starts_with("backup_"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The mirror's state as the index records it, in the `mirror.json` shape
    /// (`{"files": {path: entry}}`), read through `backup-tool export-mirror-json -`.
    pub fn mirror_state(&self) -> serde_json::Value {
        let out = Command::new(bin("backup-tool"))
            .arg(&self.dist)
            .args(["export-mirror-json", "-"])
            .output()
            .expect("run backup-tool export-mirror-json");
        assert!(
            out.status.success(),
            "export-mirror-json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("mirror state JSON")
    }

    /// Every byte of the index files (the database and its WAL), to prove a run wrote nothing.
    pub fn index_bytes(&self) -> Vec<(String, Vec<u8>)> {
        ["", "-wal"]
            .iter()
            .map(|ext| {
                let p = self.dist.join(format!(".backup-index.sqlite{ext}"));
                (ext.to_string(), std::fs::read(&p).unwrap_or_default())
            })
            .collect()
    }

    /// The metadata JSON of one increment.
    pub fn increment_meta(&self, name: &str) -> serde_json::Value {
        let p = self.dist.join(name).join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(&p).expect("read increment metadata"))
            .expect("increment metadata JSON")
    }
}

/// One entry of a tree as compared by tests: content hash, size, mtime (ns), permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File {
        hash: [u8; 32],
        size: u64,
        mtime_ns: i64,
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
        mtime_ns: i64,
    },
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Every file and symlink under `root` (directories and special files left out), keyed by raw
/// relative path bytes. Symlinks are never followed.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = m.file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(
                    rel,
                    Node::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                        mtime_ns: mtime_ns(&m),
                    },
                );
            } else if ft.is_file() {
                let data = std::fs::read(&p).expect("read");
                out.insert(
                    rel,
                    Node::File {
                        hash: *blake3::hash(&data).as_bytes(),
                        size: m.len(),
                        mtime_ns: mtime_ns(&m),
                        mode: m.mode() & 0o7777,
                    },
                );
            }
        }
    }
    out
}

/// Like [`tree`] but content only (hash of bytes or link target): for file systems that cannot
/// keep modes or exact mtimes (exFAT).
pub fn contents(root: &Path) -> BTreeMap<Vec<u8>, [u8; 32]> {
    tree(root)
        .into_iter()
        .map(|(k, n)| {
            let h = match n {
                Node::File { hash, .. } => hash,
                Node::Symlink { target, .. } => *blake3::hash(&target).as_bytes(),
            };
            (k, h)
        })
        .collect()
}

/// Asserts two trees are equal, naming the first differences.
pub fn assert_same_tree(expected: &BTreeMap<Vec<u8>, Node>, actual: &BTreeMap<Vec<u8>, Node>) {
    let diffs = tree_differences(expected, actual);
    if !diffs.is_empty() {
        panic!("trees differ:\n{}", diffs.join("\n"));
    }
}

/// The first 20 differences between two trees (missing, differing, unexpected entries).
pub fn tree_differences(
    expected: &BTreeMap<Vec<u8>, Node>,
    actual: &BTreeMap<Vec<u8>, Node>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    if expected == actual {
        return diffs;
    }
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing {:?}", String::from_utf8_lossy(k))),
            Some(a) if a != v => diffs.push(format!(
                "differs {:?}: expected {v:?}, got {a:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected {:?}", String::from_utf8_lossy(k)));
        }
    }
    diffs.truncate(20);
    diffs
}

/// Files at `dist` that are not part of what the backup holds: the index (derived data that
/// every command, reader or writer, creates or brings up to date, with SQLite's WAL and
/// shared-memory files) and the lock file (which only records who last held the lock).
pub fn is_derived(rel: &[u8]) -> bool {
    rel == b".backup.lock" || rel.starts_with(b".backup-index.sqlite")
}

/// Every byte under `dir` (files, symlinks, and directories by name) but the derived files of
/// [`is_derived`], for "nothing changed" checks: compare two calls.
pub fn hash_dist(dir: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut t = tree(dir);
    t.retain(|k, _| !is_derived(k));
    t
}

/// Sets a file's times (seconds + ns) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = filetime::FileTime::from_unix_time(secs, nsec as u32);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
}

/// Output as text, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod capability;
pub mod exfat;
pub mod faultfs;
pub mod faults;
pub mod lazyfs;
pub mod mount;
pub mod mount_fixture;
pub mod power;
pub mod serve;

pub mod toolenv;

/// The environment that makes a process see the wall clock at `at` (`"2024-01-05 10:00:00"`,
/// read in `tz`) and the time zone `tz`, through libfaketime (Debian package `faketime`): the
/// real binaries see a clock stepped back or forward exactly as after an NTP step or a DST
/// change. File times (`stat`) stay real.
pub fn clock_at(at: &str, tz: &str) -> Vec<(String, String)> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime (Debian package faketime) is needed for clock tests");
    vec![
        ("LD_PRELOAD".into(), lib.into()),
        // `@`: start the faked clock there and let it run.
        ("FAKETIME".into(), format!("@{at}")),
        ("NO_FAKE_STAT".into(), "1".into()),
        ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("TZ".into(), tz.into()),
    ]
}
