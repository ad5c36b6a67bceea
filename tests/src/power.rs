//! Power-cut campaign: `dist` on [LazyFS](crate::lazyfs), power cut at random moments of
//! `backup` and right after it exits 0, on a source that changes between runs (changes,
//! additions, deletions, renames of files and folders).
//!
//! After every cut, before anything runs again:
//! - every increment that has metadata holds, byte for byte, what its catalog records (an
//!   independent blake3 of each `track/` and `deleted/` file against the catalog's `hash`);
//! - every version that an earlier *finished* run stored is still there, unchanged;
//! - after a cut that came once `backup` had exited 0: the mirror equals the selection of
//!   that run, the index describes it, and `backup-tool check --verify` is clean — the run
//!   had said it was done.
//!
//! Then the next run (recovering the interrupted one) must exit 0 and converge: mirror ==
//! selected source, `check --verify` clean, no increment without metadata. Only the binaries'
//! behaviour is used (their files on disk and their exit codes), so the campaign keeps working
//! across rewrites of the pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::faults::{
    assert_versions_kept, committed_versions, corpus, increment_dirs, selected, Rng, INCLUDED_TOP,
    TRACKED_TOP,
};
use crate::lazyfs::{self, LazyMount};
use crate::{text, tree, Node, Tree};

/// Campaign parameters (`BACKUP_POWER_TRIALS`, `BACKUP_POWER_FILES`, `BACKUP_POWER_SEED`
/// override the defaults).
#[derive(Clone, Debug)]
pub struct PowerOptions {
    pub trials: usize,
    pub files: usize,
    pub seed: u64,
}

impl PowerOptions {
    pub fn from_env(trials: usize, files: usize) -> Self {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        PowerOptions {
            trials: get("BACKUP_POWER_TRIALS").map_or(trials, |v| v as usize),
            files: get("BACKUP_POWER_FILES").map_or(files, |v| v as usize),
            seed: get("BACKUP_POWER_SEED").unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            }),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PowerReport {
    pub trials: usize,
    /// Cuts while `backup` was still running.
    pub cuts_mid_run: usize,
    /// Cuts right after `backup` exited 0.
    pub cuts_after_exit: usize,
    /// Cuts that hit the recovering run of an earlier cut.
    pub cuts_of_recovery: usize,
    /// Increments whose files were re-hashed against their catalog after a cut.
    pub increments_verified: usize,
    pub files_verified: usize,
    /// Runs that reported a recovered interrupted run.
    pub recoveries: usize,
    pub fsyncs: u64,
    pub fsyncdirs: u64,
}

fn decode_key(key: &str) -> Vec<u8> {
    match key.strip_prefix("\u{0}hex:") {
        Some(hex) => (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect(),
        None => key.as_bytes().to_vec(),
    }
}

fn content_hash(path: &Path) -> std::io::Result<(String, u64)> {
    let m = std::fs::symlink_metadata(path)?;
    let bytes = if m.file_type().is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        std::fs::read_link(path)?.as_os_str().as_bytes().to_vec()
    } else {
        std::fs::read(path)?
    };
    Ok((
        blake3::hash(&bytes).to_hex().to_string(),
        bytes.len() as u64,
    ))
}

fn under(root: &Path, rel: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    root.join(std::ffi::OsStr::from_bytes(rel))
}

/// Re-hashes every file of every increment that has metadata against its catalog; returns
/// the problems found and the (increments, files) checked.
pub fn verify_increments(dist: &Path) -> (Vec<String>, usize, usize) {
    let mut problems = Vec::new();
    let (mut incs, mut files) = (0, 0);
    for (name, has_meta) in increment_dirs(dist) {
        if !has_meta {
            continue;
        }
        let meta_path = dist.join(&name).join(format!("{name}.json"));
        let meta: serde_json::Value = match std::fs::read(&meta_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{name}: metadata unreadable: {e}"));
                continue;
            }
        };
        incs += 1;
        let Some(cat) = meta["file_catalog"].as_object() else {
            problems.push(format!("{name}: no file_catalog"));
            continue;
        };
        for (key, e) in cat {
            files += 1;
            let dir = match e["category"].as_str() {
                Some("deleted") => "deleted",
                _ => "track",
            };
            let path = under(&dist.join(&name).join(dir), &decode_key(key));
            match content_hash(&path) {
                Err(err) => problems.push(format!("{name}: {key}: {err}")),
                Ok((hash, size)) => {
                    if Some(hash.as_str()) != e["hash"].as_str() {
                        problems.push(format!(
                            "{name}: {key}: content {hash} ({size} bytes), catalog says {} ({} bytes)",
                            e["hash"], e["size"]
                        ));
                    }
                }
            }
        }
    }
    (problems, incs, files)
}

/// The index's record of the mirror against the mirror: every file it lists is there with
/// the recorded hash. Read straight from the database file (SQLite replays a committed WAL
/// on open, as it does for the binaries), so nothing the binaries do on open can mend it.
pub fn verify_mirror_index(dist: &Path) -> Vec<String> {
    let path = dist.join(".backup-index.sqlite");
    /// (key, blake3) of each file the index lists in the mirror.
    type Rows = Vec<(Vec<u8>, Option<Vec<u8>>)>;
    let rows: Result<Rows, String> = rusqlite::Connection::open(&path)
        .and_then(|c| {
            let mut s = c.prepare("SELECT key, hash FROM mirror WHERE kind != 2")?;
            let rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .map_err(|e| e.to_string());
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return vec![format!("{}: unreadable: {e}", path.display())],
    };
    if rows.is_empty()
        && tree(&dist.join("mirror"))
            .values()
            .any(|n| matches!(n, Node::File { .. }))
    {
        return vec!["the index records no file of a non-empty mirror".into()];
    }
    let mut problems = Vec::new();
    for (key, hash) in rows {
        // The key is the path with '/' stored as NUL (it sorts in walk order).
        let rel: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
        let shown = String::from_utf8_lossy(&rel).into_owned();
        let want = hash.map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match content_hash(&under(&dist.join("mirror"), &rel)) {
            Err(err) => problems.push(format!("mirror: {shown}: {err}")),
            Ok((got, _)) if Some(&got) != want.as_ref() => {
                problems.push(format!("mirror: {shown}: content differs from the index"))
            }
            Ok(_) => {}
        }
    }
    problems
}

fn check_verify(dist: &Path) -> Output {
    Command::new(crate::bin("backup-tool"))
        .arg(dist)
        .args(["check", "--verify"])
        .output()
        .expect("run backup-tool check --verify")
}

fn fail(problems: &[String], when: &str) {
    if !problems.is_empty() {
        let mut p = problems.to_vec();
        let n = p.len();
        p.truncate(25);
        panic!("{when}: {n} problems:\n{}", p.join("\n"));
    }
}

/// Renames a few files (within and across folders) and, now and then, a whole folder of the
/// tracked part of the source.
fn rename_some(src: &Path, rng: &mut Rng, round: usize) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for top in TRACKED_TOP {
        for e in walkdir::WalkDir::new(src.join(top))
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            if e.file_type().is_file() {
                files.push(e.into_path());
            } else if e.file_type().is_dir() {
                dirs.push(e.into_path());
            }
        }
    }
    if files.is_empty() {
        return;
    }
    for i in 0..(1 + rng.below(4)) {
        let f = &files[rng.below(files.len() as u64) as usize];
        if !f.exists() {
            continue;
        }
        let to_dir = if rng.below(2) == 0 || dirs.is_empty() {
            f.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            dirs[rng.below(dirs.len() as u64) as usize].clone()
        };
        if !to_dir.is_dir() {
            continue;
        }
        let _ = std::fs::rename(f, to_dir.join(format!("renamed_{round}_{i}.txt")));
    }
    if rng.below(3) == 0 && !dirs.is_empty() {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        if d.is_dir() {
            let _ = std::fs::rename(d, d.with_file_name(format!("moved_dir_{round}")));
        }
    }
}

fn spawn_backup(config: &Path) -> std::process::Child {
    Command::new(crate::bin("backup"))
        .arg("--config")
        .arg(config)
        .arg("-q")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup")
}

fn run_backup(config: &Path) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(crate::bin("backup"))
        .arg("--config")
        .arg(config)
        .arg("--json")
        .arg("-q")
        .output()
        .expect("run backup");
    (out, t.elapsed())
}

/// Runs `backup`, cutting the power after `delay` if it is still running. `Some(output)` when
/// it finished first (the power is then still on).
fn cut_after(m: &LazyMount, config: &Path, delay: Duration) -> Option<Output> {
    let start = Instant::now();
    let mut child = spawn_backup(config);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("backup output"));
        }
        if start.elapsed() >= delay {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    m.kill_and_cut(&mut child);
    None
}

struct Campaign<'a> {
    m: &'a LazyMount,
    src: PathBuf,
    dist: PathBuf,
    config: PathBuf,
    top: Vec<&'static str>,
    /// The stored versions of every finished run: never to be lost.
    recorded: BTreeMap<String, Tree>,
    report: PowerReport,
    seed: u64,
}

impl Campaign<'_> {
    /// After any cut: increments with metadata are what they say, finished runs' versions kept.
    fn after_cut(&mut self, when: &str) {
        let (problems, incs, files) = verify_increments(&self.dist);
        fail(
            &problems,
            &format!("{when}: increments after the power cut"),
        );
        self.report.increments_verified += incs;
        self.report.files_verified += files;
        assert_versions_kept(&self.dist, &self.recorded, when);
    }

    /// After a cut that followed an exit 0: the run's whole result was durable.
    fn after_finished_run_cut(&mut self, when: &str) {
        self.after_cut(when);
        let expected = selected(&self.src, &self.top);
        let mirror = tree(&self.dist.join("mirror"));
        if expected != mirror {
            eprintln!("{when}: the mirror is not the selection of the finished run");
            crate::assert_same_tree(&expected, &mirror);
        }
        fail(
            &verify_mirror_index(&self.dist),
            &format!("{when}: the index after the power cut"),
        );
        let out = check_verify(&self.dist);
        assert!(
            out.status.success(),
            "{when}: check --verify after a power cut that followed exit 0: {:?}",
            text(&out)
        );
    }

    /// A run that must finish (exit 0) and converge.
    fn converge(&mut self, when: &str) -> Duration {
        let (out, took) = run_backup(&self.config);
        assert!(
            out.status.success(),
            "{when}: exit {:?}: {:?}",
            out.status.code(),
            text(&out)
        );
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            if v["recovered"] == serde_json::Value::Bool(true) {
                self.report.recoveries += 1;
            }
        }
        self.finished(when);
        took
    }

    /// Checks of a run that exited 0 (power still on), then records what it stored.
    fn finished(&mut self, when: &str) {
        assert_versions_kept(&self.dist, &self.recorded, when);
        let expected = selected(&self.src, &self.top);
        let mirror = tree(&self.dist.join("mirror"));
        if expected != mirror {
            crate::assert_same_tree(&expected, &mirror);
        }
        let out = check_verify(&self.dist);
        assert!(
            out.status.success(),
            "{when}: check --verify: {:?}",
            text(&out)
        );
        crate::faults::assert_no_orphan_increment(&self.dist, when);
        self.recorded = committed_versions(&self.dist);
    }

    fn mutate(&mut self, trial: usize, rng: &mut Rng) {
        let seed = (2001 + trial % 100_000).to_string();
        let pct = |r: &mut Rng| format!("{}", 1 + r.below(10));
        let (c, d, a) = (pct(rng), pct(rng), pct(rng));
        corpus(
            &[
                "mutate", "--seed", &seed, "--change", &c, "--delete", &d, "--add", &a,
            ],
            &self.src,
        );
        rename_some(&self.src, rng, trial);
    }
}

/// Runs the campaign; panics at the first broken promise (with the seed to replay it).
pub fn power_campaign(opts: &PowerOptions) -> Option<PowerReport> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = lazyfs::mount_for_test(&tmp.path().join("disk"))?;
    let src = tmp.path().join("src");
    let dist = m.mountpoint.join("dist");
    let config = tmp.path().join("config.json");
    corpus(
        &["make", "--files", &opts.files.to_string(), "--seed", "11"],
        &src,
    );
    let cfg = serde_json::json!({
        "src": src,
        "dist": dist,
        "track_dirs": TRACKED_TOP,
        "include_dirs": INCLUDED_TOP,
        "exclude_files": ["*.swp"],
        "max_workers": 4,
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).expect("config");
    let mut top: Vec<&'static str> = TRACKED_TOP.to_vec();
    top.extend_from_slice(INCLUDED_TOP);
    eprintln!(
        "power campaign: {} trials, {} files, seed {} (BACKUP_POWER_SEED to replay)",
        opts.trials, opts.files, opts.seed
    );
    let mut c = Campaign {
        m: &m,
        src,
        dist,
        config,
        top,
        recorded: BTreeMap::new(),
        report: PowerReport::default(),
        seed: opts.seed,
    };
    let mut rng = Rng::new(opts.seed);

    // The first run, then the power goes out at once: all of it must be there.
    let (out, first) = run_backup(&c.config);
    assert!(out.status.success(), "initial backup: {:?}", text(&out));
    c.finished("initial run");
    c.m.power_cut();
    c.report.cuts_after_exit += 1;
    c.after_finished_run_cut(&format!("cut after the initial run (seed {})", c.seed));
    eprintln!("initial run {first:?}");
    // The typical duration of a run after a mutation, kept as a moving average of the runs
    // that finished: cuts are spread over [0, 1.1 × typical], so most land mid-run.
    c.mutate(usize::MAX / 2, &mut rng);
    let (out, mutated) = run_backup(&c.config);
    assert!(out.status.success(), "second run: {:?}", text(&out));
    c.finished("second run");
    let mut typical = mutated.max(Duration::from_millis(20));

    for trial in 0..opts.trials {
        c.mutate(trial, &mut rng);
        let when = format!("trial {trial} (seed {})", c.seed);
        if trial % 3 == 2 {
            // Cut right after a run that exited 0.
            let (out, took) = run_backup(&c.config);
            assert!(out.status.success(), "{when}: {:?}", text(&out));
            typical = typical.mul_f64(0.7) + took.mul_f64(0.3);
            c.m.power_cut();
            c.report.cuts_after_exit += 1;
            c.after_finished_run_cut(&format!("{when}: cut after exit 0"));
            c.recorded = committed_versions(&c.dist);
        } else {
            // The first cut comes early, so even the short mode surely cuts a run midway.
            let spread = if trial == 0 { 0.3 } else { 1.1 };
            let delay = typical.mul_f64(spread * rng.unit());
            match cut_after(c.m, &c.config, delay) {
                None => {
                    c.report.cuts_mid_run += 1;
                    c.after_cut(&format!("{when}: cut after {delay:?}"));
                }
                Some(out) => {
                    assert!(out.status.success(), "{when}: {:?}", text(&out));
                    c.m.power_cut();
                    c.report.cuts_after_exit += 1;
                    c.after_finished_run_cut(&format!("{when}: cut after exit 0"));
                    c.recorded = committed_versions(&c.dist);
                }
            }
            // Now and then the recovering run is cut too.
            if rng.below(4) == 0 {
                let delay = typical.mul_f64(0.8 * rng.unit());
                if cut_after(c.m, &c.config, delay).is_none() {
                    c.report.cuts_of_recovery += 1;
                    c.after_cut(&format!("{when}: recovery cut after {delay:?}"));
                }
            }
        }
        // The next run recovers whatever is left and converges.
        let took = c.converge(&format!("{when}: convergence run"));
        typical = typical.mul_f64(0.7) + took.mul_f64(0.3);
        // A cut right after the recovering run's exit 0 loses nothing either.
        if rng.below(2) == 0 {
            c.m.power_cut();
            c.report.cuts_after_exit += 1;
            c.after_finished_run_cut(&format!("{when}: cut after the convergence run"));
        }
        c.report.trials += 1;
    }
    let k = c.m.counters();
    c.report.fsyncs = k.fsyncs;
    c.report.fsyncdirs = k.fsyncdirs;
    Some(c.report)
}
