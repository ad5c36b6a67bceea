//! Unattended output: progress bars on a terminal (a real pty through `script`) and silence in
//! pipes, no ANSI codes when stderr is redirected, `RUST_LOG`, `--log-file`, warnings that
//! survive `-q`, `--strict`, and JSON documents for failures.

use std::process::Command;

use backup_tests::{bin, text, TestEnv};
use serde_json::{json, Value};

/// Runs `cmd` (a shell command line) under a pseudo-terminal with `script`; returns what the
/// terminal showed (stdout and stderr together).
fn on_a_terminal(cmd: &str) -> (Option<i32>, String) {
    let out = Command::new("script")
        .args(["-qfec", cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .expect("run script (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn sh_quote(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A source with one big file (so byte progress has something to show) and small ones.
fn big_env() -> TestEnv {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    env.write("docs/big.bin", &big);
    for i in 0..20 {
        env.write(format!("docs/small{i}.txt"), format!("{i}").as_bytes());
    }
    env
}

#[test]
fn progress_on_a_terminal_silence_in_a_pipe() {
    let env = big_env();
    let backup = bin("backup");
    let tool = bin("backup-tool");
    let cfg = sh_quote(&env.config_path);
    let (code, screen) = on_a_terminal(&format!("{} -c {cfg}", sh_quote(&backup)));
    assert_eq!(code, Some(0), "{screen}");
    // Files, bytes, rate and ETA on the bar.
    assert!(
        screen.contains("ETA"),
        "no progress bar on a terminal: {screen:?}"
    );
    assert!(screen.contains("MiB"), "no byte counts: {screen:?}");
    assert!(screen.contains("/21 files"), "no file counts: {screen:?}");
    // The summary stands on its own line after the bar was cleared, not glued to it.
    let summary = screen
        .split(['\r', '\n'])
        .find(|l| l.contains("increment backup_"))
        .expect("summary line");
    assert!(
        strip_ansi(summary).trim_start().starts_with("increment"),
        "{summary:?}"
    );

    // restore, check --verify: bars on a terminal.
    let to = env.dir.path().join("restored");
    let (code, screen) = on_a_terminal(&format!(
        "{} -c {cfg} restore --to {}",
        sh_quote(&tool),
        sh_quote(&to)
    ));
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("ETA") && screen.contains("/21 files"),
        "{screen:?}"
    );
    let (code, screen) = on_a_terminal(&format!("{} -c {cfg} check --verify", sh_quote(&tool)));
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("ETA"), "{screen:?}");

    // The same commands in a pipe: no bar, no control characters at all on stderr.
    env.write("docs/small0.txt", b"changed");
    let out = env.backup(&[]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(se.is_empty(), "stderr in a pipe: {se:?}");
    let out = env.tool(&[
        "-c",
        env.config_path.to_str().unwrap(),
        "restore",
        "--to",
        env.dir.path().join("r2").to_str().unwrap(),
    ]);
    // Nothing but the index's notes (the run added an increment the index had not seen:
    // said once, in plain lines, until `backup` records it in the index itself).
    let err = text(&out).1;
    assert!(
        err.lines().all(|l| l.starts_with("backup-tool: note: ")),
        "{err:?}"
    );
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}

#[test]
fn verbose_lines_stand_above_the_bar() {
    let env = big_env();
    let (code, screen) = on_a_terminal(&format!(
        "{} -c {} -v",
        sh_quote(&bin("backup")),
        sh_quote(&env.config_path)
    ));
    assert_eq!(code, Some(0), "{screen}");
    // Every -v line starts a line of its own: after a newline, or after the bar was cleared
    // (carriage return + erase line), never right after bar text.
    for (i, _) in screen.match_indices("INFO") {
        let before = &screen[..i];
        let line_start = before.rfind(['\n', '\r']).map(|p| p + 1).unwrap_or(0);
        let prefix = &before[line_start..];
        let stripped: String = strip_ansi(prefix);
        assert!(
            stripped.trim().is_empty(),
            "a -v line glued to other output: {:?}",
            &screen[line_start..(i + 30).min(screen.len())]
        );
    }
    assert!(screen.contains("INFO"), "{screen:?}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn redirected_stderr_has_no_ansi_and_rust_log_is_honoured() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs", "misspelt"]}));
    env.write("docs/a.txt", b"a");
    // -vv and a warning: plenty of stderr, none of it coloured.
    let out = env.backup(&["-vv"]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(se.contains("DEBUG") || se.contains("INFO"), "{se}");
    assert!(!se.contains('\x1b'), "ANSI in redirected stderr: {se:?}");

    // RUST_LOG overrides -v: with RUST_LOG=error, -v says nothing of its info lines...
    env.write("docs/b.txt", b"b");
    let out = Command::new(bin("backup"))
        .args(["-c", env.config_path.to_str().unwrap(), "-v"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(!se.contains("INFO"), "RUST_LOG=error ignored: {se}");
    // ...and RUST_LOG=debug without -v shows debug-level detail.
    env.write("docs/c.txt", b"c");
    let out = Command::new(bin("backup"))
        .args(["-c", env.config_path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(
        se.contains("INFO") && se.contains("config "),
        "RUST_LOG=info ignored: {se}"
    );
    // The warning about the misspelt rule prints whatever the log level.
    assert!(se.contains("\"misspelt\" matches nothing"), "{se}");
}

#[test]
fn quiet_keeps_warnings_and_strict_fails_on_them() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs", "Documnets"]}));
    env.write("docs/a.txt", b"a");
    let out = env.backup(&["-q"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(so.is_empty(), "{so}");
    assert!(
        se.contains("warning:") && se.contains("\"Documnets\" matches nothing"),
        "-q hid a warning that data is not being backed up: {se:?}"
    );
    env.write("docs/b.txt", b"b");
    let out = env.backup(&["-q", "--strict"]);
    let (_, se) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--strict ignored the warning: {se}"
    );
    assert!(se.contains("--strict"), "{se}");
    // --strict on a clean profile: 0.
    env.config(json!({"track_dirs": ["docs"]}));
    let out = env.backup(&["-q", "--strict"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
}

#[test]
fn log_file_appends_plain_timestamped_lines() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs", "nothere"]}));
    env.write("docs/a.txt", b"a");
    let log = env.dir.path().join("backup.log");
    let log_s = log.to_str().unwrap();
    let out = env.backup(&["-q", "--log-file", log_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    env.write("docs/b.txt", b"b");
    let out = env.backup(&["-q", "--log-file", log_s]);
    assert_eq!(out.status.code(), Some(0));
    let content = std::fs::read_to_string(&log).unwrap();
    assert!(!content.contains('\x1b'), "ANSI in the log: {content}");
    let lines: Vec<&str> = content.lines().collect();
    // Appended: two runs, each naming its config and its summary.
    assert_eq!(
        lines.iter().filter(|l| l.contains("INFO config ")).count(),
        2,
        "{content}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("increment backup_"))
            .count(),
        2,
        "{content}"
    );
    assert!(content.contains("\"nothere\" matches nothing"), "{content}");
    // Every line starts with a local timestamp with its UTC offset.
    for l in &lines {
        let ts = l.split(' ').next().unwrap();
        assert!(
            chrono::DateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.3f%:z").is_ok(),
            "no timestamp with offset: {l:?}"
        );
    }
}

#[test]
fn json_failures_are_one_object() {
    let env = TestEnv::new();
    // A refused run (bad profile).
    std::fs::write(&env.config_path, "{\"src\": 1}").unwrap();
    let out = env.backup(&["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(doc["exit"], 2);
    assert_eq!(doc["schema"], 1);
    assert!(doc["error"].as_str().unwrap().contains("\"src\""), "{doc}");

    // A run's summary has the same field names in --dry-run and real runs.
    env.config(json!({"track_dirs": ["docs"]}));
    env.write("docs/a.txt", b"a");
    let real = env.backup(&["--json"]);
    let dry = {
        env.write("docs/b.txt", b"b");
        env.backup(&["--json", "-n"])
    };
    let real: Value = serde_json::from_slice(&real.stdout).unwrap();
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&real),
        keys(&dry),
        "dry run and real run differ in field names"
    );
    assert_eq!(real["schema"], 1);
    assert_eq!(
        (&real["status"], &real["exit"]),
        (&json!("success"), &json!(0))
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["new"], 1);

    // backup-tool: a refused command prints the error object too.
    let out = env.tool(&[
        env.dist.to_str().unwrap(),
        "show",
        "backup_20000101_000000",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON error object");
    assert_eq!(
        (doc["exit"].as_i64(), doc["schema"].as_i64()),
        (Some(2), Some(1))
    );
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("backup_20000101_000000"));
    let out = env.tool(&["/nonexistent/backup", "list", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON error object");
    assert_eq!(doc["exit"], 2);
}

/// `recreate` and `prune` show their bars on a terminal too, and nothing in a pipe.
#[test]
fn recreate_and_prune_bars_on_a_terminal() {
    let env = TestEnv::new();
    env.config(json!({"track_dirs": ["docs"]}));
    for i in 0..3 {
        env.write("docs/a.txt", format!("version {i}").as_bytes());
        env.backup_ok(&[]);
    }
    assert_eq!(env.increments().len(), 3);
    let tool = sh_quote(&bin("backup-tool"));
    let cfg = sh_quote(&env.config_path);
    let (code, screen) = on_a_terminal(&format!("{tool} -c {cfg} recreate --force"));
    assert_eq!(code, Some(0), "{screen}");
    let plain = strip_ansi(&screen);
    assert!(
        plain.contains("/3 increments") && plain.contains("ETA"),
        "no recreate bar on a terminal: {plain:?}"
    );
    let (code, screen) = on_a_terminal(&format!("{tool} -c {cfg} prune --keep-last 1"));
    assert_eq!(code, Some(0), "{screen}");
    let plain = strip_ansi(&screen);
    assert!(
        plain.contains("/2 increments") && plain.contains("ETA"),
        "no prune bar on a terminal: {plain:?}"
    );
    assert_eq!(env.increments().len(), 1);
    let out = env.tool(&[
        "-c",
        env.config_path.to_str().unwrap(),
        "recreate",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out).1;
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
}
