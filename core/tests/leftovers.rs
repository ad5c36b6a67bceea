//! A process killed inside an atomic write leaves its temporary file (`.<name>.tmp-<pid>`):
//! the next run removes those of dead writers, so `check` is clean again (found by the crash
//! campaign: `.mirror.json.tmp-N` stayed for ever).

use std::path::Path;
use std::sync::Arc;

use backup_core::config::Config;
use backup_core::explore::{check, Backup};
use backup_core::pipeline::{self, RunOptions, RunSummary};
use backup_core::Repository;

fn run(config: &Config) -> RunSummary {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(pipeline::run(
            config,
            RunOptions::default(),
            Arc::new(|_| {}),
        ))
        .expect("run")
}

fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn problems(dist: &Path) -> Vec<String> {
    let b = Backup::open(&Repository::at(dist), None).unwrap();
    check::check(&b, true)
        .unwrap()
        .problems
        .iter()
        .map(|p| format!("{p:?}"))
        .collect()
}

#[test]
fn temp_files_of_killed_atomic_writes_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/a.txt"), "a").unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"src": src, "dist": dist, "track_dirs": ["docs"]}).to_string(),
    )
    .unwrap();
    let config = Config::load(&cfg).unwrap();
    let first = run(&config);
    let name = first.increment.expect("an increment");

    // Killed while writing the increment metadata (journal still there) ...
    let pid = dead_pid();
    let inc = dist.join(name.as_str());
    std::fs::rename(
        inc.join(format!("{name}.json")),
        inc.join(format!(".{name}.json.tmp-{pid}")),
    )
    .unwrap();
    std::fs::write(
        dist.join(".backup-journal.json"),
        serde_json::json!({"increment": name, "started": "2026-01-01T00:00:00+00:00", "pid": pid})
            .to_string(),
    )
    .unwrap();
    // ... and earlier ones killed while writing mirror.json and the journal.
    std::fs::write(dist.join(format!(".mirror.json.tmp-{pid}")), "{").unwrap();
    std::fs::write(dist.join(format!(".backup-journal.json.tmp-{pid}")), "{").unwrap();
    // A live writer's file is not ours to remove.
    let live = dist.join(".mirror.json.tmp-1");
    std::fs::write(&live, "{").unwrap();
    assert!(problems(&dist).len() >= 4, "{:?}", problems(&dist));

    let second = run(&config);
    assert!(second.recovered, "the interrupted run is recovered");
    assert!(live.exists(), "a live writer's temporary file was removed");
    std::fs::remove_file(&live).unwrap();
    assert_eq!(problems(&dist), Vec::<String>::new());
    assert!(inc.join(format!("{name}.json")).is_file());
}
