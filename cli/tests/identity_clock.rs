//! Increment identity whatever the clock does (issue: "History that no clock, crash or second
//! command can lose"): names stay unique and ordered across time-zone changes, clocks stepped
//! back and same-second bursts; an increment's time is the one it recorded; a run never
//! touches a folder it did not create. Each test runs the real binaries.

use std::collections::BTreeMap;
use std::process::Output;

use backup_tests::{clock_at, serde_json, text, TestEnv};

fn env_tz(tz: &str) -> Vec<(String, String)> {
    vec![("TZ".into(), tz.into())]
}

fn ok(out: Output, what: &str) -> String {
    let (o, e) = text(&out);
    assert!(
        out.status.success(),
        "{what} failed ({:?})\n{o}\n{e}",
        out.status.code()
    );
    o
}

fn json(out: Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn setup() -> TestEnv {
    let env = TestEnv::new();
    env.write("docs/a.txt", b"version 1\n");
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env
}

/// Every version of docs/a.txt `log --json` lists, by the increment that stored it.
fn logged(env: &TestEnv, envs: &[(String, String)]) -> BTreeMap<String, String> {
    let log = json(env.tool_env(envs, &["log", "docs/a.txt", "--json"]), "log");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "stored")
        .map(|e| {
            (
                e["increment"].as_str().unwrap_or("?").to_owned(),
                e["hash"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The increments `list --json` shows, in its order.
fn listed(env: &TestEnv, envs: &[(String, String)]) -> Vec<String> {
    let list = json(env.tool_env(envs, &["list", "--json"]), "list");
    list["increments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

#[test]
fn a_time_zone_moving_west_loses_no_version() {
    // The reported bug: run 1 in Tokyo, runs 2-5 in UTC (the clock "goes back" 9 h), each after
    // a one-line edit. Every version must stay listed, restorable and logged.
    let env = setup();
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    for run in 1..=5 {
        let content = format!("version {run}\n").into_bytes();
        env.write("docs/a.txt", &content);
        let tz = if run == 1 { "Asia/Tokyo" } else { "UTC" };
        let summary = json(env.backup_env(&env_tz(tz), &["--json", "-q"]), "backup");
        let name = summary["increment"]
            .as_str()
            .unwrap_or_else(|| panic!("run {run} stored nothing: {summary}"))
            .to_owned();
        stored.push((name, content));
    }
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| backup_core::IncrementName::parse(n).expect("name parses"));
    assert_eq!(names, sorted, "names sort in run order");
    assert_eq!(env.increments().len(), 5, "{:?}", env.increments());
    let listed = listed(&env, &env_tz("UTC"));
    assert_eq!(listed, names, "list shows every increment in order");
    let log = logged(&env, &[]);
    for (name, content) in &stored {
        assert_eq!(log.get(name), Some(&hash(content)), "log lists {name}");
        let to = env.dir.path().join(format!("r-{name}"));
        ok(
            env.tool_env(
                &[],
                &["restore", "--at", name, "--to", to.to_str().unwrap()],
            ),
            "restore",
        );
        assert_eq!(
            std::fs::read(to.join("docs/a.txt")).unwrap(),
            *content,
            "at {name}"
        );
    }
    ok(env.tool_env(&[], &["check", "--verify"]), "check");
}

#[test]
fn list_shows_the_recorded_instant_whatever_the_viewer_zone() {
    let env = setup();
    let summary = json(
        env.backup_env(&env_tz("Asia/Tokyo"), &["--json", "-q"]),
        "backup",
    );
    let name = summary["increment"].as_str().unwrap().to_owned();
    let recorded = env.increment_meta(&name)["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let recorded = chrono::DateTime::parse_from_rfc3339(&recorded).expect("offset recorded");
    assert_eq!(
        recorded.offset().local_minus_utc(),
        9 * 3600,
        "Tokyo offset kept"
    );
    for viewer in ["UTC", "America/New_York", "Asia/Tokyo"] {
        let list = json(env.tool_env(&env_tz(viewer), &["list", "--json"]), "list");
        let shown = list["increments"][0]["time"].as_str().unwrap();
        let shown = chrono::DateTime::parse_from_rfc3339(shown).unwrap();
        assert_eq!(shown, recorded, "same instant for a viewer in {viewer}");
    }
}

#[test]
fn restore_at_a_time_uses_recorded_times_not_names() {
    // Two runs: the first at 10:00 Tokyo time (01:00 UTC), the second at 02:00 UTC. Named in
    // their own zones, the first name (..._100000) sorts *after* a UTC reading of the second
    // (..._020000) would; by recorded instants the first came first.
    let env = setup();
    let a = json(
        env.backup_env(
            &clock_at("2024-01-05 10:00:00", "Asia/Tokyo"),
            &["--json", "-q"],
        ),
        "backup 1",
    );
    env.write("docs/a.txt", b"version 2\n");
    let b = json(
        env.backup_env(&clock_at("2024-01-05 02:00:00", "UTC"), &["--json", "-q"]),
        "backup 2",
    );
    let (a, b) = (
        a["increment"].as_str().unwrap(),
        b["increment"].as_str().unwrap(),
    );
    assert!(
        backup_core::IncrementName::parse(b) > backup_core::IncrementName::parse(a),
        "{b} sorts after {a}"
    );
    // 01:30 UTC lies between the two runs: the state after the first.
    let to = env.dir.path().join("r");
    ok(
        env.tool_env(
            &env_tz("UTC"),
            &[
                "restore",
                "--at",
                "2024-01-05T01:30:00+00:00",
                "--to",
                to.to_str().unwrap(),
            ],
        ),
        "restore --at",
    );
    assert_eq!(
        std::fs::read(to.join("docs/a.txt")).unwrap(),
        b"version 1\n"
    );
    // Before the first run there is nothing to restore.
    let out = env.tool_env(
        &env_tz("UTC"),
        &["restore", "--at", "2024-01-05T00:30:00+00:00", "--to", "x"],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

#[test]
fn same_second_bursts_and_clock_steps_keep_names_unique_and_ordered() {
    let env = setup();
    let mut names = Vec::new();
    // Five runs in the same faked second, then the clock stepped back a day, then forward.
    let clocks = [
        "2024-03-10 12:00:00",
        "2024-03-10 12:00:00",
        "2024-03-10 12:00:00",
        "2024-03-10 12:00:00",
        "2024-03-10 12:00:00",
        "2024-03-09 12:00:00",
        "2024-03-09 11:59:59",
        "2030-01-01 00:00:00",
        "2024-03-10 12:00:00",
    ];
    for (i, at) in clocks.iter().enumerate() {
        env.write("docs/a.txt", format!("version {i}\n").as_bytes());
        let s = json(
            env.backup_env(&clock_at(at, "Europe/Berlin"), &["--json", "-q"]),
            "backup",
        );
        names.push(s["increment"].as_str().unwrap().to_owned());
    }
    let parsed: Vec<backup_core::IncrementName> = names
        .iter()
        .map(|n| backup_core::IncrementName::parse(n).expect("every name parses"))
        .collect();
    for w in parsed.windows(2) {
        assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
    }
    assert_eq!(
        logged(&env, &[]).len(),
        clocks.len(),
        "every version logged"
    );
    ok(env.tool_env(&[], &["check"]), "check");
}

#[test]
fn a_run_never_touches_a_folder_or_file_it_did_not_create() {
    let env = setup();
    std::fs::create_dir_all(&env.dist).unwrap();
    // A file squatting on the name the next run would take, and a renamed increment.
    let squat = env.dist.join("backup_20240105_100000");
    std::fs::write(&squat, b"not ours").unwrap();
    let s = json(
        env.backup_env(&clock_at("2024-01-05 10:00:00", "UTC"), &["--json", "-q"]),
        "backup",
    );
    let name = s["increment"].as_str().unwrap();
    assert_ne!(name, "backup_20240105_100000");
    assert_eq!(std::fs::read(&squat).unwrap(), b"not ours");
    assert!(env.dist.join(name).join(format!("{name}.json")).is_file());
}

#[test]
fn a_run_after_a_same_second_prune_is_still_the_newest() {
    // Runs in one faked second (each process reads 12:00:00 plus the few milliseconds it has
    // run), a prune that removes the oldest of them, then one more run: the new increment must
    // sort after those left, be the latest, and be what the next prune keeps.
    let env = setup();
    let clock = clock_at("2024-03-10 12:00:00", "UTC");
    let run = |i: usize| {
        env.write("docs/a.txt", format!("version {i}\n").as_bytes());
        let s = json(env.backup_env(&clock, &["--json", "-q"]), "backup");
        backup_core::IncrementName::parse(s["increment"].as_str().unwrap()).unwrap()
    };
    let first: Vec<_> = (1..=4).map(run).collect();
    ok(
        env.tool_env(&clock, &["prune", "--keep-last", "2"]),
        "prune",
    );
    let fifth = run(5);
    assert!(
        fifth > first[3],
        "{fifth} must sort after {} (the newest before it)",
        first[3]
    );
    assert!(!first.contains(&fifth), "{fifth} reuses a pruned name");
    let names = listed(&env, &[]);
    assert_eq!(
        names.last().map(String::as_str),
        Some(fifth.as_str()),
        "latest is the last run"
    );
    ok(
        env.tool_env(&clock, &["prune", "--keep-last", "2"]),
        "prune",
    );
    let kept: Vec<String> = logged(&env, &[]).into_values().collect();
    let want = [hash(b"version 4\n"), hash(b"version 5\n")];
    for w in &want {
        assert!(
            kept.contains(w),
            "the two newest versions are kept: {kept:?}"
        );
    }
    assert_eq!(kept.len(), 2, "{kept:?}");
    ok(env.tool_env(&[], &["check"]), "check");
}
