//! The `backup` command line: dry run, refusals, JSON summary, quiet pipes, help.

use backup_tests::{bin, text, TestEnv, Tree};
use serde_json::json;

#[test]
fn dry_run_prints_the_plan_and_creates_nothing() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["data"]}));
    env.write("docs/a.txt", b"a");
    env.write("data/b.bin", b"bb");
    let out = env.backup(&["--dry-run"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(so.contains("new") && so.contains("docs/a.txt"), "{so}");
    assert!(so.contains("data/b.bin"), "{so}");
    assert!(so.contains("would create increment backup_"), "{so}");
    assert!(!env.dist.exists(), "dry run must not even create dist");

    let out = env.backup(&["--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["new"], 1);
    assert_eq!(plan["plan"]["copies"].as_array().unwrap().len(), 2);
    assert!(!env.dist.exists());

    // After a real run, the dry run of a change shows just that change.
    env.backup_ok(&[]);
    let before = Tree::dist(&env.dist);
    env.remove("docs/a.txt");
    let out = env.backup(&["--dry-run"]);
    let (so, _) = text(&out);
    assert!(so.contains("deleted") && so.contains("docs/a.txt"), "{so}");
    assert_eq!(before, Tree::dist(&env.dist), "dry run changed the backup");
}

#[test]
fn bad_configs_are_refused_with_one_line_and_nothing_created() {
    let env = TestEnv::new();
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "{\"src\": \"x\",\n \"dist\": }".to_owned()),
        (
            "unknown key",
            json!({"src": env.src, "dist": env.dist, "track_dir": ["docs"]}).to_string(),
        ),
        (
            "missing src",
            json!({"dist": env.dist, "track_dirs": ["docs"]}).to_string(),
        ),
        (
            "no rules",
            json!({"src": env.src, "dist": env.dist}).to_string(),
        ),
        (
            "zero workers",
            json!({"src": env.src, "dist": env.dist, "track_dirs": ["d"], "max_workers": 0})
                .to_string(),
        ),
    ];
    for (what, cfg) in cases {
        std::fs::write(&env.config_path, cfg).unwrap();
        let out = env.backup(&[]);
        let (so, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {so}\n{se}");
        assert_eq!(se.trim_end().lines().count(), 1, "{what}: one line: {se}");
        assert!(!env.dist.exists(), "{what}: nothing may be created");
    }
    let out = std::process::Command::new(bin("backup"))
        .args(["--config", "/nonexistent/profile.json"])
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("/nonexistent/profile.json"), "{se}");
}

#[test]
fn json_summary_and_quiet_pipes() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"hello");
    let out = env.backup(&["--json"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    // Not a terminal: no progress bar, no notes for a clean tree.
    assert!(se.is_empty(), "stderr should stay silent in a pipe: {se:?}");
    let s: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(s["new"], 1);
    assert_eq!(s["copied"], 1);
    assert_eq!(s["copied_bytes"], 5);
    assert!(s["increment"].as_str().unwrap().starts_with("backup_"));
    assert_eq!(s["errors"], json!([]));

    env.write("docs/b.txt", b"b");
    let out = env.backup(&["-q"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let out = env.backup(&[]);
    let (so, _) = text(&out);
    assert!(so.contains("no tracked change"), "{so}");
}

#[test]
fn help_has_examples() {
    let out = std::process::Command::new(bin("backup"))
        .arg("--help")
        .output()
        .unwrap();
    let (so, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    for want in [
        "--config",
        "--dry-run",
        "--json",
        "--checksum",
        "Examples",
        "Exit status",
    ] {
        assert!(so.contains(want), "help lacks {want}: {so}");
    }
}
