//! No clock can lose a version (issue 8), as a property: random sequences of runs of the real
//! `backup`, each under a faked wall clock stepped back by seconds to days, forward, or held
//! in the same second, in a time zone that changes between runs, after random edits,
//! additions and deletions of tracked files. After every sequence, every version a run
//! reported stored is listed by `log`, comes back from `restore --at` its increment, is a file
//! of the mount's `history/`, and `check` is clean.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 24 here).

use std::collections::BTreeSet;

use backup_tests::mount::MountedBackup;
use backup_tests::{clock_at, serde_json, text, TestEnv};
use proptest::prelude::*;

const FILES: [&str; 3] = ["docs/a.txt", "docs/sub/b.txt", "docs/c.md"];
const ZONES: [&str; 4] = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin"];

#[derive(Clone, Debug)]
enum Edit {
    Write(usize),
    Delete(usize),
}

#[derive(Clone, Debug)]
struct Step {
    /// Seconds the wall clock moves before this run (negative: stepped back).
    clock: i64,
    zone: usize,
    edits: Vec<Edit>,
}

fn step() -> impl Strategy<Value = Step> {
    let clock = prop_oneof![
        Just(0i64),
        -5i64..0,
        (1i64..48).prop_map(|h| -h * 3600),
        (1i64..400).prop_map(|d| -d * 86_400),
        1i64..100_000_000,
    ];
    let edit = prop_oneof![
        3 => (0..FILES.len()).prop_map(Edit::Write),
        1 => (0..FILES.len()).prop_map(Edit::Delete),
    ];
    (clock, 0..ZONES.len(), proptest::collection::vec(edit, 1..3))
        .prop_map(|(clock, zone, edits)| Step { clock, zone, edits })
}

/// A faked wall-clock reading (what libfaketime takes), `secs` after 2024-06-01 12:00:00.
fn wall(secs: i64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(2024, 6, 1)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    (base + chrono::Duration::seconds(secs))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// (path, content hash, increment) of every version a run reported stored.
type Stored = BTreeSet<(String, String, String)>;

fn run_sequence(steps: &[Step]) -> Result<(), TestCaseError> {
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    let mut clock = 0i64;
    let mut stored = Stored::new();
    for (n, s) in steps.iter().enumerate() {
        let mut written = Vec::new();
        for e in &s.edits {
            match *e {
                Edit::Write(i) => {
                    // Each version distinct (and of its own length).
                    let body = format!("{} in run {n}{}\n", FILES[i], "!".repeat(n));
                    env.write(FILES[i], body.as_bytes());
                    written.retain(|(p, _)| *p != FILES[i]);
                    written.push((FILES[i], hash(body.as_bytes())));
                }
                Edit::Delete(i) => {
                    let _ = std::fs::remove_file(env.src.join(FILES[i]));
                    written.retain(|(p, _)| *p != FILES[i]);
                }
            }
        }
        clock += s.clock;
        let out = env.backup_env(&clock_at(&wall(clock), ZONES[s.zone]), &["--json", "-q"]);
        let (so, se) = text(&out);
        prop_assert!(out.status.success(), "run {n} {s:?}:\n{so}\n{se}");
        let summary: serde_json::Value = serde_json::from_str(&so).unwrap();
        if let Some(inc) = summary["increment"].as_str() {
            prop_assert!(
                backup_core::IncrementName::parse(inc).is_some(),
                "run {n}: {inc} does not parse"
            );
            for (p, h) in written {
                stored.insert((p.to_owned(), h, inc.to_owned()));
            }
        } else {
            prop_assert!(written.is_empty(), "run {n} stored nothing: {so}");
        }
    }
    eprintln!(
        "{} runs, {} stored versions verified",
        steps.len(),
        stored.len()
    );
    verify(&env, &stored)
}

fn verify(env: &TestEnv, stored: &Stored) -> Result<(), TestCaseError> {
    let dist = env.dist.to_str().unwrap();
    let tool = |args: &[&str]| {
        let mut full = vec![dist];
        full.extend_from_slice(args);
        env.tool(&full)
    };
    let check = tool(&["check"]);
    prop_assert!(check.status.success(), "check: {:?}", text(&check));
    // The increments are listed in name order, which is their order of creation.
    let list: serde_json::Value =
        serde_json::from_slice(&tool(&["list", "--json"]).stdout).unwrap();
    let names: Vec<String> = list["increments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| backup_core::IncrementName::parse(n).unwrap());
    prop_assert_eq!(&names, &sorted);

    let scratch = tempfile::tempdir().unwrap();
    for (k, (path, h, inc)) in stored.iter().enumerate() {
        let log: serde_json::Value =
            serde_json::from_slice(&tool(&["log", path, "--json"]).stdout).unwrap();
        let listed = log["events"].as_array().unwrap().iter().any(|e| {
            e["event"] == "stored" && e["increment"] == inc.as_str() && e["hash"] == h.as_str()
        });
        prop_assert!(listed, "log {path} lacks {inc} {h}: {log}");
        let to = scratch.path().join(format!("r{k}"));
        let out = tool(&["restore", path, "--at", inc, "--to", to.to_str().unwrap()]);
        prop_assert!(
            out.status.success(),
            "restore {path} --at {inc}: {:?}",
            text(&out)
        );
        let got = std::fs::read(to.join(path)).unwrap();
        prop_assert_eq!(&hash(&got), h, "restore {} --at {}", path, inc);
    }
    // Every version is a file of history/<path>.versions/ in the mount.
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut m = MountedBackup::start(&env.dist, &mnt);
    let mut missing = Vec::new();
    for (path, h, inc) in stored {
        let folder = m.path(&format!("history/{path}.versions"));
        let hashes: BTreeSet<String> = std::fs::read_dir(&folder)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .map(|b| hash(&b))
                    .collect()
            })
            .unwrap_or_default();
        if !hashes.contains(h) {
            missing.push(format!("{path} from {inc} not in {}", folder.display()));
        }
    }
    m.terminate();
    prop_assert!(missing.is_empty(), "{missing:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        // Each case runs the binaries a few dozen times: shrinking would take minutes.
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]
    #[test]
    fn every_stored_version_survives_any_clock(steps in proptest::collection::vec(step(), 3..8)) {
        run_sequence(&steps)?;
    }
}
