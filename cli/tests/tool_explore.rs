//! `backup-tool` list, show, search, log, diff through the real binary.

use backup_tests::{scenario, TestEnv, Tree};

#[test]
fn not_a_backup_is_refused_with_status_2() {
    let env = TestEnv::new();
    std::fs::create_dir_all(&env.dist).unwrap();
    let out = env.tool_dist(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a backup"), "{err}");
    let missing = std::process::Command::new(backup_tests::bin("backup-tool"))
        .args(["/nonexistent/backup", "search", "--mask", "x"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn list_counts_sizes_and_exclusive_bytes() {
    let s = scenario();
    let v = s.env.tool_json(&["list", "--detailed"], 0);
    let incs = v["increments"].as_array().unwrap();
    assert_eq!(incs.len(), 4);
    let counts: Vec<(u64, u64, u64)> = incs
        .iter()
        .map(|i| {
            (
                i["new"].as_u64().unwrap(),
                i["changed"].as_u64().unwrap(),
                i["deleted"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![(3, 0, 0), (1, 1, 0), (0, 1, 1), (0, 1, 0)]);
    // Increment 1 alone holds a.py v1 and readme v1; b.pdf is shared with increment 3's
    // deleted/ link.
    let a1 = b"print('v1')\n".len() as u64;
    let r1 = b"# readme v1\n".len() as u64;
    assert_eq!(incs[0]["exclusive_bytes"].as_u64(), Some(a1 + r1));
    assert_eq!(incs[0]["bytes"].as_u64(), Some(a1 + r1 + 2048));
    // b.pdf's deleted/ link shares the inode with increment 1's track/ link.
    assert_eq!(incs[2]["exclusive_bytes"].as_u64(), Some(0));
    // Increment 4's a.py is also the mirror's file.
    assert_eq!(incs[3]["exclusive_bytes"].as_u64(), Some(0));
    assert_eq!(v["mirror"]["files"].as_u64(), Some(4));
    assert_eq!(v["mirror"]["tracked"].as_u64(), Some(3));
    let human = s.env.tool_ok(&["list"], 0);
    for n in &s.incs {
        assert!(human.contains(n.as_str()), "{human}");
    }
    assert!(human.contains("mirror: 4 files (3 tracked)"), "{human}");
}

#[test]
fn show_lists_one_increment() {
    let s = scenario();
    let v = s.env.tool_json(&["show", &s.incs[2]], 0);
    let files = field_pairs(&v["files"], "path", "op");
    assert_eq!(
        files,
        vec![
            ("docs/readme.md".into(), "changed".into()),
            ("projects/b.pdf".into(), "deleted".into())
        ]
    );
    let human = s.env.tool_ok(&["show", &s.incs[2]], 0);
    assert!(human.contains("projects/") && human.contains("b.pdf") && human.contains("deleted"));
    let out = s.env.tool_dist(&["show", "backup_19990101_000000"]);
    assert_eq!(out.status.code(), Some(2));
}

fn hits(v: &serde_json::Value) -> Vec<(String, String)> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let loc = match h["location"]["type"].as_str().unwrap() {
                "mirror" => "mirror".to_owned(),
                _ => h["location"]["name"].as_str().unwrap().to_owned(),
            };
            (loc, h["path"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn search_masks_filters_and_mirror() {
    let s = scenario();
    let i = &s.incs;
    let e = &s.env;
    let py = hits(&e.tool_json(&["search", "--mask", "*.py"], 0));
    assert_eq!(
        py,
        vec![
            (i[0].clone(), "projects/a.py".into()),
            (i[1].clone(), "projects/a.py".into()),
            (i[1].clone(), "projects/sub/c.py".into()),
            (i[3].clone(), "projects/a.py".into()),
            ("mirror".into(), "projects/a.py".into()),
            ("mirror".into(), "projects/sub/c.py".into()),
        ]
    );
    // Several masks; a mask without wildcards is a substring.
    let two = hits(&e.tool_json(&["search", "--mask", "*.pdf", "--mask", "read"], 0));
    assert_eq!(
        two,
        vec![
            (i[0].clone(), "docs/readme.md".into()),
            (i[0].clone(), "projects/b.pdf".into()),
            (i[2].clone(), "docs/readme.md".into()),
            (i[2].clone(), "projects/b.pdf".into()),
            ("mirror".into(), "docs/readme.md".into()),
        ]
    );
    let big = hits(&e.tool_json(&["search", "--size", ">1K"], 0));
    assert_eq!(big.len(), 2, "{big:?}");
    assert!(big.iter().all(|(_, p)| p == "projects/b.pdf"));
    let mid = hits(&e.tool_json(&["search", "--size", "10-13"], 0));
    assert!(!mid.is_empty() && mid.iter().all(|(_, p)| p != "projects/b.pdf"));
    let under = hits(&e.tool_json(&["search", "--path", "projects/sub"], 0));
    assert_eq!(under.len(), 2);
    let last = hits(&e.tool_json(
        &[
            "search",
            "--mask",
            "*.py",
            "--last-backups",
            "1",
            "--no-mirror",
        ],
        0,
    ));
    assert_eq!(last, vec![(i[3].clone(), "projects/a.py".into())]);
    // The fixture's files are modified on 2024-01-05 (local time), nothing before.
    let day = hits(&e.tool_json(&["search", "--time", "2024-01-05"], 0));
    let all = hits(&e.tool_json(&["search"], 0));
    assert_eq!(day, all);
    assert!(hits(&e.tool_json(&["search", "--time", "<2024-01-05"], 0)).is_empty());
    assert_eq!(
        hits(&e.tool_json(&["search", "--time", "2024-01-01..2024-01-31"], 0)),
        all
    );
    assert!(hits(&e.tool_json(&["search", "--time", ">2024-01-05"], 0)).is_empty());
    // Human output: grouped per increment and folder, with status.
    let human = e.tool_ok(&["search", "--mask", "*.pdf"], 0);
    assert!(
        human.contains(&i[0]) && human.contains("projects/"),
        "{human}"
    );
    assert!(
        human.contains("tracked") && human.contains("deleted"),
        "{human}"
    );
    assert!(!human.contains('\x1b'), "no colour in a pipe: {human}");
    let full = e.tool_ok(&["search", "--mask", "*.pdf", "--full-paths"], 0);
    assert!(
        full.contains(&format!("{}/track/projects/b.pdf", i[0])),
        "{full}"
    );
    // Bad filters are refused.
    assert_eq!(
        e.tool_dist(&["search", "--size", "huge"]).status.code(),
        Some(2)
    );
    assert_eq!(
        e.tool_dist(&["search", "--time", "yesterday"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        e.tool_dist(&["search", "--mask", "[oops"]).status.code(),
        Some(2)
    );
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let s = scenario();
    let probe = backup_tests::capability::run_probe(std::process::Command::new("script").args([
        "-qec",
        "true",
        "/dev/null",
    ]));
    if backup_tests::capability::require("a terminal through `script` (util-linux)", probe)
        .is_none()
    {
        return;
    }
    let bin = backup_tests::bin("backup-tool");
    let cmd = format!(
        "{} {} search --mask '*.py'",
        bin.display(),
        s.env.dist.display()
    );
    let run = |no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let tty = run(false);
    assert!(tty.contains("\x1b["), "colour on a terminal: {tty:?}");
    let plain = run(true);
    assert!(
        plain.contains("a.py") && !plain.contains("\x1b["),
        "{plain:?}"
    );
}

#[test]
fn log_and_diff() {
    let s = scenario();
    let i = &s.incs;
    let v = s.env.tool_json(&["log", "projects/a.py"], 0);
    let ev = field_pairs(&v["events"], "increment", "event");
    assert_eq!(
        ev,
        vec![
            (i[0].clone(), "stored".into()),
            (i[1].clone(), "stored".into()),
            (i[3].clone(), "stored".into())
        ]
    );
    let b = s.env.tool_json(&["log", "projects/b.pdf"], 0);
    assert_eq!(b["events"][1]["event"], "deleted");
    assert!(b["mirror"].is_null());
    assert_eq!(
        s.env.tool_dist(&["log", "no/such/file"]).status.code(),
        Some(1)
    );
    let human = s.env.tool_ok(&["log", "untracked/u.txt"], 0);
    assert!(human.contains("untracked"), "{human}");

    let d = s.env.tool_json(&["diff", &i[0], &i[2]], 0);
    let ch = field_pairs(&d["changes"], "path", "change");
    assert_eq!(
        ch,
        vec![
            ("docs/readme.md".into(), "changed".into()),
            ("projects/a.py".into(), "changed".into()),
            ("projects/b.pdf".into(), "deleted".into()),
            ("projects/sub/c.py".into(), "added".into()),
        ]
    );
    let none = s.env.tool_json(&["diff", &i[3], "mirror"], 0);
    assert_eq!(none["changes"].as_array().unwrap().len(), 0, "{none}");
    let human = s.env.tool_ok(&["diff", "mirror", &i[0]], 0);
    assert!(human.contains("+ projects/b.pdf"), "{human}");
}

#[test]
fn read_only_commands_change_nothing() {
    let s = scenario();
    let e = &s.env;
    let before = Tree::exact(&e.dist).without_derived();
    let out_dir = e.dir.path().join("restored");
    let script = e.dir.path().join("r.sh");
    let cmds: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["list", "--detailed", "--json"],
        vec!["show", &s.incs[1]],
        vec!["search", "--mask", "*.py"],
        vec![
            "search",
            "--json",
            "--generate-script",
            script.to_str().unwrap(),
        ],
        vec!["log", "projects/a.py"],
        vec!["diff", &s.incs[0], "mirror"],
        vec!["check"],
        vec!["check", "--verify", "--json"],
        vec![
            "restore",
            "--at",
            &s.incs[1],
            "--to",
            out_dir.to_str().unwrap(),
        ],
        vec![
            "restore",
            "--to",
            out_dir.to_str().unwrap(),
            "--overwrite",
            "always",
        ],
        vec!["recreate"],
        vec!["delete", &s.incs[0], "--mask", "*.py", "--dry-run"],
        vec!["prune", "--keep-last", "1", "--dry-run"],
    ];
    for c in cmds {
        let out = e.tool_dist(&c);
        assert!(
            out.status.code() == Some(0),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            Tree::exact(&e.dist).without_derived(),
            before,
            "{c:?} changed the backup"
        );
    }
}

#[test]
fn backup_named_by_a_config_profile() {
    let s = scenario();
    let e = &s.env;
    let config = e.dir.path().join("config.json");
    let run = |args: &[&str], cwd: &std::path::Path| {
        std::process::Command::new(backup_tests::bin("backup-tool"))
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let out = run(
        &["--config", config.to_str().unwrap(), "list", "--json"],
        e.dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["increments"].as_array().unwrap().len(), 4);
    // ./config.json is found without --config.
    let out = run(&["search", "--mask", "c.py", "--json"], e.dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The source disk is gone: the profile still names its backup.
    std::fs::remove_dir_all(&e.src).unwrap();
    let out = run(
        &["--config", config.to_str().unwrap(), "list"],
        e.dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing profile is refused.
    let out = run(&["--config", "/nonexistent.json", "list"], e.dir.path());
    assert_eq!(out.status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(backup_tests::bin("backup-tool"))
        .arg("list")
        .current_dir(empty.path())
        .env("HOME", empty.path())
        .env("XDG_CONFIG_HOME", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name a backup folder"));
}

/// `(item[a], item[b])` for each item of a JSON array of objects with string fields.
fn field_pairs(items: &serde_json::Value, a: &str, b: &str) -> Vec<(String, String)> {
    items
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| {
            let field = |k: &str| o[k].as_str().expect("a string field").to_owned();
            (field(a), field(b))
        })
        .collect()
}
