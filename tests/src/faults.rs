//! Fault-injection harness: the crash campaign (kill -9 at random moments of `backup` on a
//! mutating corpus) and the checks shared by the fault tests — committed increments unchanged,
//! mirror equal to the selection, `backup-tool check` clean, no increment without metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, text, tree, Tree};

/// The corpus generator shared by benchmarks and tests.
pub fn corpus_script() -> PathBuf {
    if let Ok(p) = std::env::var("BACKUP_CORPUS_PY") {
        return PathBuf::from(p);
    }
    // tests/ → workspace root → ../shared (the checkout sits next to shared/).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for cand in [
        root.join("../shared/bench/corpus.py"),
        PathBuf::from("/work/shared/bench/corpus.py"),
    ] {
        if cand.exists() {
            return cand;
        }
    }
    panic!("corpus.py not found; set BACKUP_CORPUS_PY");
}

pub fn corpus(args: &[&str], dir: &Path) {
    let out = Command::new("python3")
        .arg(corpus_script())
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("run corpus.py");
    assert!(out.status.success(), "corpus.py {args:?}: {:?}", text(&out));
}

/// A tiny deterministic PRNG (xorshift64*): reproducible campaigns from a printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every increment folder at `dist` (name sorted) and whether its metadata file exists.
pub fn increment_dirs(dist: &Path) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = std::fs::read_dir(dist)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("backup_"))
                .map(|n| {
                    let has = dist.join(&n).join(format!("{n}.json")).is_file();
                    (n, has)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The stored versions of every increment that has metadata: `name → tree(track/ + deleted/)`.
/// The metadata file itself is left out (recovery may finish it), the versions are not.
pub fn committed_versions(dist: &Path) -> BTreeMap<String, Tree> {
    increment_dirs(dist)
        .into_iter()
        .filter(|(_, has)| *has)
        .map(|(n, _)| {
            let mut t = tree(&dist.join(&n));
            let meta = format!("{n}.json");
            t.remove(meta.as_bytes());
            (n, t)
        })
        .collect()
}

/// Panics naming the first damaged increments when a recorded increment is gone or differs.
pub fn assert_versions_kept(dist: &Path, recorded: &BTreeMap<String, Tree>, when: &str) {
    let bad = versions_changed(dist, recorded);
    assert!(
        bad.is_empty(),
        "{when}: stored versions changed:\n{}",
        bad.join("\n")
    );
}

/// The first 20 ways the recorded increments differ from what `dist` holds now: an increment
/// (or its metadata) gone, a version lost, changed or added.
pub fn versions_changed(dist: &Path, recorded: &BTreeMap<String, Tree>) -> Vec<String> {
    let now = committed_versions(dist);
    let mut bad = Vec::new();
    for (name, files) in recorded {
        match now.get(name) {
            None => bad.push(format!("{name}: increment (or its metadata) is gone")),
            Some(t) if t != files => {
                for (k, v) in files {
                    match t.get(k) {
                        None => bad.push(format!("{name}: lost {}", String::from_utf8_lossy(k))),
                        Some(a) if a != v => bad.push(format!(
                            "{name}: changed {}: {v:?} -> {a:?}",
                            String::from_utf8_lossy(k)
                        )),
                        _ => {}
                    }
                }
                for k in t.keys() {
                    if !files.contains_key(k) {
                        bad.push(format!("{name}: appeared {}", String::from_utf8_lossy(k)));
                    }
                }
            }
            _ => {}
        }
    }
    bad.truncate(20);
    bad
}

/// The part of `tree(src)` the campaign's config selects: everything under the given top-level
/// folders.
pub fn selected(src: &Path, top: &[&str]) -> Tree {
    tree(src)
        .into_iter()
        .filter(|(k, _)| {
            let first = k.split(|b| *b == b'/').next().unwrap_or_default();
            top.iter().any(|t| t.as_bytes() == first)
        })
        .collect()
}

/// `backup-tool DIST check`: exit 0 or panic with its report.
pub fn assert_check_clean(dist: &Path, when: &str) {
    if let Some(report) = check_problems(dist) {
        panic!("{when}: {report}");
    }
}

/// `None` when `backup-tool DIST check` exits 0, else its exit status and report.
pub fn check_problems(dist: &Path) -> Option<String> {
    let out = Command::new(bin("backup-tool"))
        .arg(dist)
        .arg("check")
        .output()
        .expect("run backup-tool check");
    (!out.status.success()).then(|| {
        format!(
            "backup-tool check failed ({:?}):\n{:?}",
            out.status.code(),
            text(&out)
        )
    })
}

/// Directories under `root` that hold no file (at any depth): a run that converged prunes them.
pub fn empty_dirs(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) -> bool {
        let mut has_file = false;
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                has_file |= walk(&e.path(), out);
            } else {
                has_file = true;
            }
        }
        if !has_file {
            out.push(dir.display().to_string());
        }
        has_file
    }
    let mut out = Vec::new();
    if root.is_dir() {
        walk(root, &mut out);
    }
    out
}

pub fn assert_no_orphan_increment(dist: &Path, when: &str) {
    let orphans = orphan_increments(dist);
    assert!(
        orphans.is_empty(),
        "{when}: increment folders without metadata: {orphans:?}"
    );
}

/// Increment folders without metadata.
pub fn orphan_increments(dist: &Path) -> Vec<String> {
    increment_dirs(dist)
        .into_iter()
        .filter(|(_, has)| !has)
        .map(|(n, _)| n)
        .collect()
}

/// What a campaign checks right after a kill: every increment committed earlier (`recorded`:
/// before the trial, `before`: just before this kill) is still there, byte for byte. Returns
/// the problems found (empty: none).
pub fn verify_after_kill(
    dist: &Path,
    recorded: &BTreeMap<String, Tree>,
    before: &BTreeMap<String, Tree>,
) -> Vec<String> {
    let mut problems = versions_changed(dist, recorded);
    problems.extend(versions_changed(dist, before));
    problems.dedup();
    problems
}

/// What a campaign checks after the run that follows the kills: nothing committed earlier
/// changed, the mirror equals the selection of `src` (the top-level folders `top`) with no
/// empty folder left, `check` is clean and no increment lacks metadata. Returns the problems.
pub fn verify_converged(
    src: &Path,
    top: &[&str],
    dist: &Path,
    recorded: &BTreeMap<String, Tree>,
    before: &BTreeMap<String, Tree>,
) -> Vec<String> {
    let mut problems = verify_after_kill(dist, recorded, before);
    let mirror = tree(&dist.join("mirror"));
    problems.extend(
        selected(src, top)
            .differences(&mirror)
            .into_iter()
            .map(|d| format!("mirror != selection: {d}")),
    );
    let empty = empty_dirs(&dist.join("mirror"));
    if !empty.is_empty() {
        problems.push(format!("empty dirs left in the mirror: {empty:?}"));
    }
    problems.extend(check_problems(dist));
    let orphans = orphan_increments(dist);
    if !orphans.is_empty() {
        problems.push(format!("increment folders without metadata: {orphans:?}"));
    }
    problems
}

/// Campaign parameters (`CRASH_TRIALS`, `CRASH_FILES`, `CRASH_SEED` override the defaults).
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    pub trials: usize,
    pub files: usize,
    pub seed: u64,
    pub workdir: Option<PathBuf>,
}

impl CampaignOptions {
    pub fn from_env(trials: usize, files: usize) -> Self {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = get("CRASH_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        CampaignOptions {
            trials: get("CRASH_TRIALS").map(|v| v as usize).unwrap_or(trials),
            files: get("CRASH_FILES").map(|v| v as usize).unwrap_or(files),
            seed,
            workdir: std::env::var_os("CRASH_DIR").map(PathBuf::from),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    pub trials: usize,
    /// kill -9 sent while `backup` was still running.
    pub kills_mid_run: usize,
    /// The run had already finished when the kill came.
    pub finished_before_kill: usize,
    /// Kills that hit the recovery run of an earlier kill.
    pub double_kills: usize,
    /// Increments checked byte for byte after kills (summed over trials).
    pub increments_checked: usize,
    pub files_checked: usize,
    /// Trials whose verification found a problem (the campaign stops at the first: later
    /// trials would only compare against a damaged backup).
    pub failures: usize,
    /// What was found, with the trial, the kill and the seed to replay it.
    pub problems: Vec<String>,
}

/// Top-level corpus folders the campaign's config selects (`cache/` is left out).
pub const TRACKED_TOP: &[&str] = &["docs", "notes", "projects", "photos"];
pub const INCLUDED_TOP: &[&str] = &["music", "tmp"];

fn run_backup(config: &Path) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = Command::new(bin("backup"))
        .arg("--config")
        .arg(config)
        .arg("-q")
        .output()
        .expect("run backup");
    (out, t.elapsed())
}

/// Starts `backup --config CONFIG -q`, kills it with SIGKILL after `delay`; returns true when
/// it was still running at that moment, and the run time when it finished by itself.
pub fn kill_after(config: &Path, delay: Duration) -> (bool, Option<Duration>) {
    let start = Instant::now();
    let mut child = Command::new(bin("backup"))
        .arg("--config")
        .arg(config)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backup");
    loop {
        if let Some(_st) = child.try_wait().expect("wait") {
            return (false, Some(start.elapsed()));
        }
        if start.elapsed() >= delay {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    (true, None)
}

/// Runs the campaign. A broken invariant ends it: counted in `failures`, described (with the
/// seed to replay it) in `problems`.
pub fn crash_campaign(opts: &CampaignOptions) -> CampaignReport {
    let tmp = match &opts.workdir {
        Some(d) => tempfile::tempdir_in(d).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let src = tmp.path().join("src");
    let dist = tmp.path().join("dist");
    let config = tmp.path().join("config.json");
    let files = opts.files.to_string();
    corpus(&["make", "--files", &files, "--seed", "7"], &src);
    let cfg = serde_json::json!({
        "src": src,
        "dist": dist,
        "track_dirs": TRACKED_TOP,
        "include_dirs": INCLUDED_TOP,
        "exclude_files": ["*.swp"],
        "max_workers": 4,
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).expect("config");
    let mut top: Vec<&str> = TRACKED_TOP.to_vec();
    top.extend_from_slice(INCLUDED_TOP);

    let mut rng = Rng::new(opts.seed);
    let mut report = CampaignReport::default();
    eprintln!(
        "crash campaign: {} trials, {} files, seed {} (CRASH_SEED to replay)",
        opts.trials, opts.files, opts.seed
    );

    let (out, first) = run_backup(&config);
    assert!(out.status.success(), "initial backup: {:?}", text(&out));
    // The typical duration of a run after a mutation, kept as a moving average of the runs
    // that finished: kills are spread over [0, 1.2 × typical], so most land mid-run.
    corpus(&["mutate", "--seed", "1000"], &src);
    let (out, mutated) = run_backup(&config);
    assert!(out.status.success(), "second backup: {:?}", text(&out));
    let mut typical = mutated.max(Duration::from_millis(20));
    eprintln!("initial run {first:?}, run after a mutation {mutated:?}");
    let mut recorded = committed_versions(&dist);

    for trial in 0..opts.trials {
        let seed = (1001 + trial).to_string();
        let pct = |r: &mut Rng| format!("{}", 1 + r.below(8));
        let (c, d, a) = (pct(&mut rng), pct(&mut rng), pct(&mut rng));
        corpus(
            &[
                "mutate", "--seed", &seed, "--change", &c, "--delete", &d, "--add", &a,
            ],
            &src,
        );
        let kills = if rng.below(10) < 3 { 2 } else { 1 };
        for k in 0..kills {
            let delay = typical.mul_f64(1.2 * rng.unit());
            // What had committed metadata just before the kill (includes a run that finished).
            let before = committed_versions(&dist);
            let (mid, natural) = kill_after(&config, delay);
            if mid {
                report.kills_mid_run += 1;
                if k > 0 {
                    report.double_kills += 1;
                }
            } else {
                report.finished_before_kill += 1;
                if let Some(n) = natural {
                    typical = typical.mul_f64(0.7) + n.mul_f64(0.3);
                }
            }
            let when = format!(
                "trial {trial} kill {k} after {delay:?} (seed {})",
                opts.seed
            );
            let found = verify_after_kill(&dist, &recorded, &before);
            if !found.is_empty() {
                report.failures += 1;
                report
                    .problems
                    .push(format!("{when}:\n{}", found.join("\n")));
                return report;
            }
            report.increments_checked += before.len();
            report.files_checked += before.values().map(|t| t.len()).sum::<usize>();
        }

        // The next run recovers and converges.
        let before = committed_versions(&dist);
        let (out, took) = run_backup(&config);
        let when = format!("trial {trial} convergence run (seed {})", opts.seed);
        typical = typical.mul_f64(0.7) + took.mul_f64(0.3);
        let mut found = Vec::new();
        if !out.status.success() {
            found.push(format!("exit {:?}: {:?}", out.status.code(), text(&out)));
        }
        found.extend(verify_converged(&src, &top, &dist, &recorded, &before));
        if !found.is_empty() {
            report.failures += 1;
            report
                .problems
                .push(format!("{when}:\n{}", found.join("\n")));
            return report;
        }
        recorded = committed_versions(&dist);
        report.trials += 1;
    }
    report
}
