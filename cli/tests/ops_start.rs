//! Getting started: `backup init`, `--check-config`, `--explain`, and `-v` naming what a run
//! uses — through the real binary.

use std::process::Command;

use backup_tests::{bin, text, TestEnv};
use serde_json::{json, Value};

fn backup_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("backup"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run backup")
}

#[test]
fn init_writes_a_profile_that_loads_and_refuses_to_overwrite() {
    let env = TestEnv::new();
    let cfg = env.dir.path().join("new.json");
    let cfg_s = cfg.to_str().unwrap();
    let src = env.src.to_str().unwrap();
    let out = backup_in(
        env.dir.path(),
        &["init", "-c", cfg_s, "--src", src, "--dist", "dist"],
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert!(so.contains("wrote") && so.contains("new.json"), "{so}");
    let written = std::fs::read_to_string(&cfg).unwrap();
    // Comments are `_` keys; the file is plain JSON.
    let v: Value = serde_json::from_str(&written).unwrap();
    assert!(v["_comment"].is_string(), "{written}");
    assert_eq!(v["src"], json!(src));
    assert!(
        v["hooks"].is_object() && v["retention"].is_object(),
        "{written}"
    );

    // The loader accepts it (comment keys ignored) and resolves src and dist.
    let out = backup_in(env.dir.path(), &["-c", cfg_s, "--check-config", "--json"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let doc: Value = serde_json::from_str(&so).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["src"], json!(env.src.canonicalize().unwrap()));
    assert!(doc["dist"].as_str().unwrap().ends_with("/dist"), "{doc}");
    // And runs (a dry run: nothing written).
    let out = backup_in(env.dir.path(), &["-c", cfg_s, "-n"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(!env.dir.path().join("dist").exists());

    // A second init refuses, exit 2, and leaves the file as it was.
    std::fs::write(&cfg, b"{\"mine\": true}").unwrap();
    let out = backup_in(env.dir.path(), &["init", "-c", cfg_s]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("already exists"), "{se}");
    assert_eq!(std::fs::read(&cfg).unwrap(), b"{\"mine\": true}");
}

#[test]
fn check_config_prints_the_effective_configuration_without_scanning() {
    let env = TestEnv::new();
    env.config(json!({
        "_comment": "ignored",
        "track_dirs": ["docs"],
        "exclude_files": ["*.tmp"],
        "retention": {"keep_daily": 7, "keep_within": "2w", "_why": "ignored too"},
        "hooks": {"after": ["true"], "timeout": 30},
    }));
    // A directory the scan could not read would fail a run; --check-config never looks.
    let out = env.backup(&["--check-config"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let src = env.src.canonicalize().unwrap();
    assert!(so.contains(&format!("src:    {}", src.display())), "{so}");
    assert!(
        so.contains("dist:") && so.contains("created by the first run"),
        "{so}"
    );
    assert!(so.contains("track_dirs") && so.contains("\"docs\""), "{so}");
    assert!(
        so.contains("exclude_files") && so.contains("\"*.tmp\""),
        "{so}"
    );
    assert!(so.contains("keep-daily 7, keep-within 2w"), "{so}");
    assert!(so.contains("after") && so.contains("timeout 30 s"), "{so}");
    assert!(!env.dist.exists(), "check-config created dist");

    // An invalid profile: exit 2, one line.
    std::fs::write(
        &env.config_path,
        json!({"src": env.src, "dist": env.dist, "track_dirs": ["d"], "retention": {"keep_dayly": 3}}).to_string(),
    )
    .unwrap();
    let out = env.backup(&["--check-config"]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("did you mean \"keep_daily\""), "{se}");
}

#[test]
fn explain_names_the_rule_that_decided() {
    let env = TestEnv::new();
    env.config(json!({
        "include_dirs": ["."],
        "track_dirs": ["projects"],
        "exclude_dirs": ["cache"],
        "exclude_files": ["*.log"],
        "include_files": ["keep.log:rec"],
    }));
    env.write("projects/a.txt", b"a");
    env.write("cache/b.txt", b"b");
    env.write("notes/x.log", b"x");
    env.write("cache/keep.log", b"k");
    let abs = env.src.join("projects/a.txt");
    let out = env.backup(&[
        "--explain",
        "projects/a.txt",
        "cache/b.txt",
        "notes/x.log",
        "cache/keep.log",
        abs.to_str().unwrap(),
        "notes/never.txt",
    ]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), 6, "{so}");
    assert!(
        lines[0].starts_with("projects/a.txt: tracked")
            && lines[0].contains("track_dirs \"projects\"")
            && lines[0].contains("overrules include_dirs \".\""),
        "{so}"
    );
    assert!(
        lines[1].starts_with("cache/b.txt: not backed up")
            && lines[1].contains("excluded by exclude_dirs \"cache\" at cache/"),
        "{so}"
    );
    assert!(
        lines[2].starts_with("notes/x.log: not backed up")
            && lines[2].contains("exclude_files \"*.log\""),
        "{so}"
    );
    assert!(
        lines[3].starts_with("cache/keep.log: untracked")
            && lines[3].contains("include_files \"keep.log:rec\"")
            && lines[3].contains("beats exclude_dirs \"cache\""),
        "{so}"
    );
    assert_eq!(lines[4], lines[0], "absolute path inside src");
    assert!(lines[5].contains("[not in src now]"), "{so}");
    assert!(!env.dist.exists(), "explain created dist");

    // The real run agrees with the explanation.
    env.backup_ok(&["-q"]);
    assert!(env.dist.join("mirror/projects/a.txt").exists());
    assert!(env.dist.join("mirror/cache/keep.log").exists());
    assert!(!env.dist.join("mirror/cache/b.txt").exists());
    assert!(!env.dist.join("mirror/notes/x.log").exists());

    // JSON, and a path outside src is refused.
    let out = env.backup(&["--explain", "cache/b.txt", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["paths"][0]["selected"], false);
    assert_eq!(doc["paths"][0]["excluded_by"]["key"], "exclude_dirs");
    let out = env.backup(&["--explain", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not inside src"), "{}", text(&out).1);
}

#[test]
fn verbose_names_config_src_and_dist() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"a");
    let out = env.backup(&["-v"]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    let src = env.src.canonicalize().unwrap();
    for want in [
        format!("config {}", env.config_path.display()),
        format!("src {}", src.display()),
        "dist ".to_owned(),
    ] {
        assert!(se.contains(&want), "-v lacks {want:?}: {se}");
    }
    // Without -v: silent.
    env.write("docs/b.txt", b"b");
    let out = env.backup(&[]);
    assert!(text(&out).1.is_empty(), "{}", text(&out).1);
}
