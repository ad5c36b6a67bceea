//! Every refusal of `docs/config.md` through the real `backup` binary: exit status 2, exactly one line
//! on stderr naming what is wrong, and nothing created at `dist` (nor anywhere else).

use std::ffi::OsString;
use std::process::Output;

use backup_tests::TestEnv;

/// The kit's environment with `src/a.txt`; `HOME` (and so the platform config) is `home/` in it.
fn case() -> TestEnv {
    let env = TestEnv::new();
    env.write("a.txt", b"a");
    env
}

trait Refusals {
    fn run(&self, text: &str, extra: &[&str]) -> Output;
    fn backup_args(&self, args: &[OsString]) -> Output;
    fn refused(&self, text: &str, needles: &[&str]) -> String;
}

impl Refusals for TestEnv {
    /// Runs `backup --config config.json [extra]` on `text`, with HOME inside the case dir.
    fn run(&self, text: &str, extra: &[&str]) -> Output {
        std::fs::write(self.path("config.json"), text).unwrap();
        let mut args = vec![OsString::from("--config"), self.path("config.json").into()];
        args.extend(extra.iter().map(Into::into));
        self.backup_args(&args)
    }

    /// Runs `backup ARGS` isolated in the case dir.
    fn backup_args(&self, args: &[OsString]) -> Output {
        std::fs::create_dir_all(self.path("home")).unwrap();
        self.command("backup").args(args).output().unwrap()
    }

    /// Expects a refusal of `text` whose one stderr line contains every needle.
    fn refused(&self, text: &str, needles: &[&str]) -> String {
        std::fs::write(self.path("config.json"), text).unwrap();
        std::fs::create_dir_all(self.path("home")).unwrap();
        let before = self.listing();
        for extra in [&[][..], &["--dry-run"][..], &["--json"][..]] {
            let out = self.run(text, extra);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{text} {extra:?}: status {:?}, stderr {stderr}",
                out.status
            );
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{text}: not one line: {stderr:?}"
            );
            if extra.contains(&"--json") {
                // One JSON object naming the refusal, and nothing else.
                let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{text}: stdout not one JSON object: {e}"));
                assert_eq!(doc["exit"], 2, "{text}: {doc}");
                assert!(
                    doc["error"].is_string() && doc["schema"].is_number(),
                    "{doc}"
                );
            } else {
                assert!(out.stdout.is_empty(), "{text}: stdout {:?}", out.stdout);
            }
            for n in needles {
                assert!(stderr.contains(n), "{text}: {n:?} not in {stderr:?}");
            }
            assert!(!self.path("dist").exists(), "{text}: dist created");
            assert_eq!(self.listing(), before, "{text}: something was created");
        }
        String::from_utf8_lossy(&self.run(text, &[]).stderr).into_owned()
    }
}

#[test]
fn malformed_json_names_line_and_column() {
    let c = case();
    let msg = c.refused(
        "{\n  \"src\": \"src\",\n  \"dist\": \"dist\"\n  \"include_dirs\": [\"a\"]\n}",
        &["malformed JSON", "line 4 column 3", "config.json"],
    );
    assert!(msg.starts_with("backup: "), "{msg}");
    c.refused("", &["malformed JSON", "line 1"]);
    c.refused("[\"src\"]", &["JSON object"]);
}

#[test]
fn missing_required_key() {
    let c = case();
    c.refused(
        r#"{"dist": "dist", "include_dirs": ["src"]}"#,
        &["missing required key \"src\""],
    );
    c.refused(
        r#"{"src": "src", "include_dirs": ["x"]}"#,
        &["missing required key \"dist\""],
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "track_dir": ["x"]}"#,
        &["unknown key \"track_dir\"", "did you mean \"track_dirs\""],
    );
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_files": ["a"], "directory_priorty": "track"}"#,
        &["\"directory_priorty\"", "\"directory_priority\""],
    );
}

#[test]
fn dist_and_dst_together() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "dst": "dist", "include_files": ["a.txt"]}"#,
        &["\"dist\"", "\"dst\""],
    );
}

#[test]
fn wrong_types_name_the_key() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_dirs": "x"}"#,
        &["\"include_dirs\"", "list of strings"],
    );
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_dirs": ["x"], "directory_priority": 1}"#,
        &["\"directory_priority\""],
    );
}

#[test]
fn invalid_glob_names_pattern_and_key() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_dirs": ["ok", "docs/[a-"]}"#,
        &["invalid glob", "\"docs/[a-\"", "\"include_dirs\""],
    );
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_dirs": ["ok"], "exclude_files": ["*.log", "x\\"]}"#,
        &["\"exclude_files\"", "\"x\\\\\""],
    );
}

#[test]
fn src_missing_or_not_a_directory() {
    let c = case();
    c.refused(
        r#"{"src": "nope", "dist": "dist", "include_dirs": ["x"]}"#,
        &["src", "nope", "does not exist"],
    );
    c.refused(
        r#"{"src": "src/a.txt", "dist": "dist", "include_dirs": ["x"]}"#,
        &["a.txt", "is not a directory"],
    );
}

#[test]
fn src_inside_dist() {
    let c = case();
    // dist = the case dir itself, which holds src: refuse before touching it.
    c.refused(
        r#"{"src": "src", "dist": ".", "include_dirs": ["x"]}"#,
        &["lies inside dist"],
    );
    c.refused(
        r#"{"src": "src", "dist": "src", "include_dirs": ["x"]}"#,
        &["same directory"],
    );
}

#[test]
fn no_include_or_track_rule() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "exclude_dirs": ["tmp"]}"#,
        &["no include or track rule"],
    );
}

#[test]
fn max_workers_below_one() {
    let c = case();
    c.refused(
        r#"{"src": "src", "dist": "dist", "include_dirs": ["x"], "max_workers": 0}"#,
        &["\"max_workers\"", "at least 1"],
    );
}

/// The stderr of a run refused with exit 2 in one line.
fn refused_in_one_line(out: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    stderr
}

#[test]
fn missing_config_file() {
    let c = case();
    std::fs::create_dir_all(c.path("home")).unwrap();
    let before = c.listing();
    // Explicit path.
    let stderr =
        refused_in_one_line(c.backup_args(&["--config".into(), c.path("absent.json").into()]));
    assert!(stderr.contains("no config file") && stderr.contains("absent.json"));
    // No --config, no ./config.json, no platform config: both places are named.
    let stderr = refused_in_one_line(c.backup_args(&[]));
    assert!(
        stderr.contains("config.json") && stderr.contains("home/.config/backup/config.json"),
        "{stderr}"
    );
    assert_eq!(c.listing(), before);
}

#[test]
fn lookup_order_finds_local_then_platform_config() {
    // Positive control for the refusals above: the same setup with a valid profile runs.
    let c = case();
    std::fs::create_dir_all(c.path("home/.config/backup")).unwrap();
    std::fs::write(
        c.path("home/.config/backup/config.json"),
        format!(
            r#"{{"src": {:?}, "dist": {:?}, "include_files": ["a.txt"]}}"#,
            c.path("src"),
            c.path("dist-platform")
        ),
    )
    .unwrap();
    let out = c.backup_args(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.path("dist-platform/mirror/a.txt").is_file());

    // ./config.json wins over the platform one; relative paths resolve against its folder.
    std::fs::write(
        c.path("config.json"),
        r#"{"src": "src", "dist": "dist-local", "include_files": ["a.txt"]}"#,
    )
    .unwrap();
    let out = c.backup_args(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.path("dist-local/mirror/a.txt").is_file());
}
