//! Retention like restic/borg: every `--keep-...` rule, `--keep-within`, the profile's
//! `"retention"` for `backup-tool prune` without flags and for `backup --prune`, and what each
//! rule kept. Increments with chosen times are written as metadata (the mount fixture) or made
//! by the real `backup` under `faketime`.

use std::process::Command;

use backup_tests::mount_fixture::{Change, FixtureBackup};
use backup_tests::{bin, text};
use serde_json::{json, Value};

/// A backup whose increments have these names (times), oldest first.
fn fixture(names: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("dist");
    let mut f = FixtureBackup::new(&dist);
    for (i, n) in names.iter().enumerate() {
        let data = format!("version {i}");
        f.backup(n, &[Change::Write("a.txt", data.as_bytes())]);
    }
    (t, dist)
}

fn prune_json(dist: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(bin("backup-tool"))
        .arg(dist)
        .arg("prune")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {se}");
    serde_json::from_str(&so).unwrap()
}

/// (name, reasons) of the kept increments.
fn kept(doc: &Value) -> Vec<(String, Vec<String>)> {
    doc["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

const NAMES: &[&str] = &[
    "backup_20220615_120000",
    "backup_20231231_230000",
    "backup_20240101_090000",
    "backup_20240101_091500",
    "backup_20240101_100000",
    "backup_20240102_100000",
    "backup_20240110_100000",
    "backup_20240201_100000",
];

#[test]
fn every_rule_keeps_what_restic_would() {
    let (_t, dist) = fixture(NAMES);
    let names = |v: Vec<(String, Vec<String>)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    let doc = prune_json(&dist, &["-n", "--keep-last", "2"]);
    assert_eq!(
        names(kept(&doc)),
        ["backup_20240110_100000", "backup_20240201_100000"]
    );
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["schema"], 1);
    // Hourly: the newest in each of the last 5 hours that have one (09:15 beats 09:00).
    let doc = prune_json(&dist, &["-n", "--keep-hourly", "5"]);
    assert_eq!(
        names(kept(&doc)),
        [
            "backup_20240101_091500",
            "backup_20240101_100000",
            "backup_20240102_100000",
            "backup_20240110_100000",
            "backup_20240201_100000"
        ]
    );
    let doc = prune_json(&dist, &["-n", "--keep-daily", "3"]);
    assert_eq!(
        names(kept(&doc)),
        [
            "backup_20240102_100000",
            "backup_20240110_100000",
            "backup_20240201_100000"
        ]
    );
    let doc = prune_json(&dist, &["-n", "--keep-weekly", "2"]);
    assert_eq!(
        names(kept(&doc)),
        ["backup_20240110_100000", "backup_20240201_100000"]
    );
    let doc = prune_json(&dist, &["-n", "--keep-monthly", "3"]);
    assert_eq!(
        names(kept(&doc)),
        [
            "backup_20231231_230000",
            "backup_20240110_100000",
            "backup_20240201_100000"
        ]
    );
    let doc = prune_json(&dist, &["-n", "--keep-yearly", "10"]);
    assert_eq!(
        names(kept(&doc)),
        [
            "backup_20220615_120000",
            "backup_20231231_230000",
            "backup_20240201_100000"
        ]
    );
    // Within 1 month of the newest (02-01 10:00): from 01-01 10:00 on.
    let doc = prune_json(&dist, &["-n", "--keep-within", "1m"]);
    assert_eq!(
        names(kept(&doc)),
        [
            "backup_20240101_100000",
            "backup_20240102_100000",
            "backup_20240110_100000",
            "backup_20240201_100000"
        ]
    );
    let doc = prune_json(&dist, &["-n", "--keep-within", "3w2d"]);
    assert_eq!(
        names(kept(&doc)),
        ["backup_20240110_100000", "backup_20240201_100000"]
    );
    // Several rules: each kept increment says which rules kept it.
    let doc = prune_json(
        &dist,
        &[
            "-n",
            "--keep-last",
            "1",
            "--keep-monthly",
            "2",
            "--keep-yearly",
            "3",
        ],
    );
    let k = kept(&doc);
    assert!(
        k.contains(&(
            "backup_20240201_100000".into(),
            vec!["last".into(), "monthly".into(), "yearly".into()]
        )),
        "{k:?}"
    );
    assert!(
        k.contains(&("backup_20231231_230000".into(), vec!["yearly".into()])),
        "{k:?}"
    );
    assert!(
        k.contains(&("backup_20240110_100000".into(), vec!["monthly".into()])),
        "{k:?}"
    );
    // The dry run removed nothing.
    assert_eq!(
        std::fs::read_dir(&dist)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("backup_"))
            .count(),
        NAMES.len()
    );
}

#[test]
fn human_output_says_what_each_rule_kept_and_prunes_for_real() {
    let (_t, dist) = fixture(NAMES);
    let out = Command::new(bin("backup-tool"))
        .arg(&dist)
        .args(["prune", "--keep-daily", "2", "--keep-within", "36h"])
        .output()
        .unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let line = |name: &str| {
        so.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not listed: {so}"))
            .to_owned()
    };
    assert!(
        line("backup_20240201_100000").contains("kept by daily, within"),
        "{so}"
    );
    assert!(
        line("backup_20240110_100000").contains("kept by daily"),
        "{so}"
    );
    assert!(line("backup_20240102_100000").starts_with("remove"), "{so}");
    assert!(
        so.contains("removed 6 increments, kept 2 (keep-daily 2, keep-within 36h)"),
        "{so}"
    );
    assert!(!dist.join("backup_20240102_100000").exists());
    assert!(dist.join("backup_20240201_100000").exists());

    // One increment: singular.
    let out = Command::new(bin("backup-tool"))
        .arg(&dist)
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(
        text(&out).0.contains("removed 1 increment, kept 1"),
        "{}",
        text(&out).0
    );

    // Bad durations and no rule at all are refused, exit 2.
    for args in [&["--keep-within", "7x"][..], &[][..]] {
        let out = Command::new(bin("backup-tool"))
            .arg(&dist)
            .arg("prune")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out).1);
    }
}

#[test]
fn profile_retention_applies_to_prune_without_flags() {
    let (t, dist) = fixture(NAMES);
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let cfg = t.path().join("config.json");
    std::fs::write(
        &cfg,
        json!({
            "src": t.path().join("src"), "dist": dist, "track_dirs": ["."],
            "retention": {"keep_last": 1, "keep_yearly": 2},
        })
        .to_string(),
    )
    .unwrap();
    let out = Command::new(bin("backup-tool"))
        .args(["-c", cfg.to_str().unwrap(), "prune", "-n", "--json"])
        .output()
        .unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let doc: Value = serde_json::from_str(&so).unwrap();
    assert_eq!(doc["policy"], "keep-last 1, keep-yearly 2");
    let k: Vec<String> = kept(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(k, ["backup_20231231_230000", "backup_20240201_100000"]);
    // Flags win over the profile.
    let out = Command::new(bin("backup-tool"))
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "prune",
            "-n",
            "--keep-last",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["policy"], "keep-last 3");
}

/// `backup --prune` after each run, with the real binary at chosen times (faketime).
#[test]
fn backup_prune_applies_retention_after_a_successful_run() {
    assert!(
        Command::new("faketime").arg("--version").output().is_ok(),
        "faketime (Debian package faketime) is required"
    );
    let env = backup_tests::TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "retention": {"keep_daily": 2}}));
    let mut made = Vec::new();
    for (i, day) in [
        "2024-03-01 10:00:00",
        "2024-03-01 18:00:00",
        "2024-03-02 10:00:00",
        "2024-03-03 10:00:00",
    ]
    .iter()
    .enumerate()
    {
        env.write("docs/a.txt", format!("v{i}").as_bytes());
        let out = Command::new("faketime")
            .arg(day)
            .arg(bin("backup"))
            .args(["-c", env.config_path.to_str().unwrap(), "--prune"])
            .output()
            .unwrap();
        let (so, se) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{so}{se}");
        made.push(so);
    }
    assert!(
        made[3].contains("prune (keep-daily 2): removed 1 increment, kept 2"),
        "{}",
        made[3]
    );
    // faketime starts each run's clock at that time and lets it run: a slow start on a busy
    // machine names the increment a second or two later.
    let kept = env.increments();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept[0].starts_with("backup_20240302_1000") && kept[1].starts_with("backup_20240303_1000"),
        "{kept:?}"
    );
    // Without a "retention", --prune is refused before anything runs.
    env.config(json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"again");
    let out = env.backup(&["--prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(text(&out).1.contains("retention"));
    assert_eq!(env.increments().len(), 2);
}
