//! `backup`: mirror the selected source files and keep hard-linked increments of tracked ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backup_cli::{exit, hooks, json_error, progress, term, JSON_SCHEMA};
use backup_core::config::Config;
use backup_core::pipeline::{self, EngineError, Preview, RunOptions, RunSummary};
use backup_core::progress::{Event, RunNote};
use backup_core::scan::ScanNote;
use backup_core::Op;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};

const EXAMPLES: &str = "\
Examples:
  backup init                       write a commented starter profile, then edit it
  backup --config usb.json          back up the profile in usb.json
  backup -n                         show what ./config.json would do, change nothing
  backup --check-config             validate the profile and print what it resolves to
  backup --explain projects/a.txt   which rule selects (or leaves out) that file
  backup -c usb.json --json         machine-readable summary on stdout
  backup -c usb.json --prune -q --log-file ~/.local/state/backup.log   for cron/systemd

Config lookup: --config FILE, else ./config.json, else ~/.config/backup/config.json.
Exit status: 0 done, 1 finished with per-file errors (each named), a full disk, a failed
hook after the run, or warnings under --strict; 2 refused (bad config, another run holds the
lock, dist unusable, a `before` hook failed).";

#[derive(Debug, Parser)]
#[command(
    name = "backup",
    version,
    about = "Mirror the selected files and keep every version of tracked ones in hard-linked increments",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Profile to run (JSON). Default: ./config.json, then the platform config dir.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print the plan and change nothing (not even create dist); no hooks run.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the summary (or the plan, with --dry-run) as JSON on stdout; a refused or failed
    /// run prints {"error", "exit", "schema"}.
    #[arg(long)]
    json: bool,
    /// Compare file contents (blake3) too, not only size, mtime and permissions.
    #[arg(long)]
    checksum: bool,
    /// Validate the profile and print the effective configuration; scan nothing.
    #[arg(long, conflicts_with_all = ["dry_run", "explain", "prune"])]
    check_config: bool,
    /// Say for each path (relative to src, or absolute inside it) whether it is backed up,
    /// tracked or untracked, and which rule decided; scan nothing.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with_all = ["dry_run", "prune"])]
    explain: Vec<PathBuf>,
    /// After a successful run, apply the profile's "retention" (like `backup-tool prune`).
    #[arg(long)]
    prune: bool,
    /// Warnings (a rule matching nothing, unreadable folders kept) make the exit status 1.
    #[arg(long)]
    strict: bool,
    /// Append the run's messages to FILE (plain text, local time with UTC offset).
    #[arg(long, value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
    /// More output on stderr (-v: config, src, dist and stages; -vv: debug). RUST_LOG
    /// overrides.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet", global = true)]
    verbose: u8,
    /// No progress, notes or summary; errors and warnings that mean data is not being backed
    /// up still print.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a commented starter profile (to --config FILE, or ~/.config/backup/config.json).
    #[command(after_help = "\
Examples:
  backup init                                  ~/.config/backup/config.json
  backup init -c usb.json --src ~/Documents --dist /media/usb/backup
  backup --check-config -c usb.json            then check what it resolves to

Refuses (exit 2) to overwrite an existing file. Keys starting with `_` are comments.")]
    Init {
        /// The folder to back up.
        #[arg(long, value_name = "DIR", default_value = "~/Documents")]
        src: String,
        /// Where the backup goes (created by the first run).
        #[arg(long, value_name = "DIR", default_value = "~/Backups/Documents")]
        dist: String,
    },
    /// Print shell completions (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "\
Examples:
  source <(backup completions bash)
  backup completions zsh > ~/.zfunc/_backup
  backup completions fish > ~/.config/fish/completions/backup.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write all of them into DIR.
    #[command(after_help = "\
Examples:
  backup man | man -l -
  backup man target/man    writes backup.1, backup-init.1, ...")]
    Man {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Copies run on several threads; glibc would give each its own malloc arena and keep their
    // freed pages, which shows up as peak RSS on 100k-file runs.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    if let Err(e) = term::init(cli.verbose, cli.quiet, cli.log_file.as_deref()) {
        return refuse(&cli, &format!("backup: {e:#}"));
    }
    let code = match &cli.command {
        Some(Cmd::Init { src, dist }) => init(&cli, src, dist),
        Some(Cmd::Completions { shell }) => backup_cli::gen::completions(Cli::command(), *shell)
            .unwrap_or_else(|e| report_failure(&cli, &format!("backup: {e:#}"))),
        Some(Cmd::Man { dir }) => backup_cli::gen::man(Cli::command(), dir.as_deref())
            .unwrap_or_else(|e| report_failure(&cli, &format!("backup: {e:#}"))),
        None => main_run(&cli),
    };
    ExitCode::from(code as u8)
}

/// Says why nothing was done (stderr, and the JSON error document with `--json`); exit 2.
fn refuse(cli: &Cli, line: &str) -> ExitCode {
    ExitCode::from(report(cli, line, exit::REFUSED) as u8)
}

fn report_failure(cli: &Cli, line: &str) -> i32 {
    report(cli, line, exit::PARTIAL)
}

fn report(cli: &Cli, line: &str, code: i32) -> i32 {
    term::error(line);
    if cli.json {
        let msg = line.strip_prefix("backup: ").unwrap_or(line);
        println!("{}", json_error(msg, code));
    }
    code
}

fn main_run(cli: &Cli) -> i32 {
    let config = match Config::locate(cli.config.as_deref()).and_then(|p| Config::load(&p)) {
        Ok(c) => c,
        Err(e) => return report(cli, &format!("backup: {e}"), exit::REFUSED),
    };
    tracing::info!("config {}", config.file.display());
    tracing::info!("src {}", config.src.display());
    tracing::info!("dist {}", config.dist.display());
    if cli.check_config {
        return check_config(cli, &config);
    }
    if !cli.explain.is_empty() {
        return explain(cli, &config);
    }
    if !cli.dry_run {
        if let Err(e) = hooks::check_owner(&config) {
            return report(cli, &format!("backup: {e}"), exit::REFUSED);
        }
    }
    if cli.prune && config.retention.is_none() {
        return report(
            cli,
            &format!(
                "backup: --prune needs a \"retention\" in {} (e.g. \"retention\": {{\"keep_daily\": 7, \"keep_weekly\": 4}})",
                config.file.display()
            ),
            exit::REFUSED,
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.max_workers + 4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return report(
                cli,
                &format!("backup: cannot start the runtime: {e}"),
                exit::REFUSED,
            )
        }
    };
    runtime.block_on(async {
        if cli.dry_run {
            dry_run(cli, &config).await
        } else {
            run(cli, &config).await
        }
    })
}

/// Notes of the scan and run: the ones that mean data is not being backed up are warnings.
fn say_note(n: &RunNote) {
    match n {
        RunNote::Scan(ScanNote::UnmatchedRule { .. }) | RunNote::KeptUnreadable { .. } => {
            term::warn(&n.to_string())
        }
        _ => term::note(&n.to_string()),
    }
}

/// The counts every `--json` run document has, dry run or not (the dry run's are what would
/// happen).
#[allow(clippy::too_many_arguments)]
fn run_json(
    dry_run: bool,
    status: &str,
    code: i32,
    s: &RunSummary,
    plan: Value,
    prune: Value,
) -> Value {
    json!({
        "schema": JSON_SCHEMA,
        "dry_run": dry_run,
        "status": status,
        "exit": code,
        "increment": s.increment,
        "new": s.new,
        "changed": s.changed,
        "deleted": s.deleted,
        "copied": s.copied,
        "copied_bytes": s.copied_bytes,
        "repaired": s.repaired,
        "removed": s.removed,
        "unchanged": s.unchanged,
        "selected": s.selected,
        "errors": s.errors,
        "notes": s.notes,
        "warnings": term::warnings(),
        "link_fallback": s.link_fallback,
        "disk_full": s.disk_full,
        "recovered": s.recovered,
        "plan": plan,
        "prune": prune,
    })
}

async fn dry_run(cli: &Cli, config: &Config) -> i32 {
    let opts = RunOptions {
        checksum: cli.checksum,
    };
    let preview = match pipeline::preview(config, opts).await {
        Ok(p) => p,
        Err(e) => return report(cli, &format!("backup: {e}"), exit::REFUSED),
    };
    for n in &preview.scan.notes {
        say_note(&RunNote::Scan(n.clone()));
    }
    for e in &preview.scan.errors {
        let rel = e.rel.as_ref().map(|r| r.display().into_owned());
        term::error(&format!(
            "error: {}: cannot read: {}",
            rel.as_deref().unwrap_or("source"),
            e.error
        ));
    }
    let mut code = if preview.scan.errors.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    };
    if cli.strict && code == exit::SUCCESS && term::warnings() > 0 {
        code = exit::PARTIAL;
    }
    if cli.json {
        let p = &preview.plan;
        let summary = RunSummary {
            increment: preview.increment.clone(),
            new: p.count(Op::New) as u64,
            changed: p.count(Op::Changed) as u64,
            deleted: p.count(Op::Deleted) as u64,
            copied: p.copies.len() as u64,
            copied_bytes: p.copy_bytes(),
            removed: p.deletes.len() as u64,
            unchanged: p.unchanged as u64,
            selected: (p.copies.len() + p.unchanged as usize) as u64,
            notes: preview
                .scan
                .notes
                .iter()
                .map(|n| RunNote::Scan(n.clone()).to_string())
                .collect(),
            ..RunSummary::default()
        };
        let status = if code == exit::SUCCESS {
            "success"
        } else {
            "partial"
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&run_json(
                true,
                status,
                code,
                &summary,
                plan_json(&preview),
                Value::Null
            ))
            .unwrap_or_default()
        );
    } else if !cli.quiet {
        print_plan(&preview);
    }
    code
}

fn copy_label(c: &backup_core::plan::CopyItem) -> &'static str {
    match (c.increment_op(), &c.previous) {
        (Some(Op::New), _) => "new",
        (Some(_), _) => "changed",
        (None, None) => "copy",
        (None, Some(_)) => "update",
    }
}

fn print_plan(p: &Preview) {
    for c in &p.plan.copies {
        let tracked = if c.entry.tracked {
            "tracked"
        } else {
            "untracked"
        };
        println!(
            "{:<8} {:<9} {}",
            copy_label(c),
            tracked,
            c.entry.rel.display()
        );
    }
    for d in &p.plan.deletes {
        let what = if d.is_tracked() { "deleted" } else { "remove" };
        let tracked = if d.is_tracked() {
            "tracked"
        } else {
            "untracked"
        };
        println!("{what:<8} {tracked:<9} {}", d.rel.display());
    }
    println!(
        "plan: {} to copy ({}), {} to remove, {} unchanged; {}",
        term::plural(p.plan.copies.len(), "file", "files"),
        humansize::format_size(p.plan.copy_bytes(), humansize::BINARY),
        p.plan.deletes.len(),
        p.plan.unchanged,
        match &p.increment {
            Some(n) => format!("would create increment {n}"),
            None => "no tracked change, no increment".to_owned(),
        }
    );
}

fn plan_json(p: &Preview) -> Value {
    let copies: Vec<_> = p
        .plan
        .copies
        .iter()
        .map(|c| {
            json!({
                "path": c.entry.rel.encode(),
                "action": copy_label(c),
                "tracked": c.entry.tracked,
                "size": c.entry.size,
            })
        })
        .collect();
    let deletes: Vec<_> = p
        .plan
        .deletes
        .iter()
        .map(|d| {
            json!({
                "path": d.rel.encode(),
                "action": if d.is_tracked() { "deleted" } else { "remove" },
                "tracked": d.is_tracked(),
            })
        })
        .collect();
    json!({"copies": copies, "deletes": deletes})
}

/// The outcome of a real run, as hooks and `--json` see it.
struct Outcome {
    status: &'static str,
    code: i32,
    summary: RunSummary,
    prune: Value,
}

async fn run(cli: &Cli, config: &Config) -> i32 {
    let base_env = |status: &str, code: i32, s: &RunSummary| -> Vec<(&'static str, String)> {
        vec![
            ("BACKUP_STATUS", status.to_owned()),
            ("BACKUP_EXIT", code.to_string()),
            (
                "BACKUP_INCREMENT",
                s.increment
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            ),
            ("BACKUP_NEW", s.new.to_string()),
            ("BACKUP_CHANGED", s.changed.to_string()),
            ("BACKUP_DELETED", s.deleted.to_string()),
            ("BACKUP_COPIED", s.copied.to_string()),
            ("BACKUP_ERRORS", s.errors.len().to_string()),
            ("BACKUP_CONFIG", config.file.display().to_string()),
            ("BACKUP_SRC", config.src.display().to_string()),
            ("BACKUP_DIST", config.dist.display().to_string()),
        ]
    };
    let before_env = vec![
        ("BACKUP_CONFIG", config.file.display().to_string()),
        ("BACKUP_SRC", config.src.display().to_string()),
        ("BACKUP_DIST", config.dist.display().to_string()),
    ];
    let failures =
        tokio::task::block_in_place(|| hooks::run(config, hooks::Stage::Before, &before_env));
    if let Some(f) = failures.first() {
        let line = format!("backup: {f}; nothing was backed up");
        term::error(&line);
        let empty = RunSummary::default();
        let env = base_env("refused", exit::REFUSED, &empty);
        let mut code = exit::REFUSED;
        for f in tokio::task::block_in_place(|| hooks::run(config, hooks::Stage::OnError, &env)) {
            term::error(&format!("backup: {f}"));
            code = code.max(exit::PARTIAL);
        }
        if cli.json {
            println!("{}", json_error(&line["backup: ".len()..], code));
        }
        return code;
    }

    let outcome = engine_run(cli, config).await;
    let Outcome {
        status,
        mut code,
        summary,
        prune,
    } = outcome;
    let env = base_env(status, code, &summary);
    let mut hook_failures = Vec::new();
    if status != "refused" {
        hook_failures.extend(tokio::task::block_in_place(|| {
            hooks::run(config, hooks::Stage::After, &env)
        }));
    }
    if status != "success" {
        hook_failures.extend(tokio::task::block_in_place(|| {
            hooks::run(config, hooks::Stage::OnError, &env)
        }));
    }
    for f in &hook_failures {
        term::error(&format!("backup: {f}"));
    }
    if !hook_failures.is_empty() && code == exit::SUCCESS {
        code = exit::PARTIAL;
    }
    if cli.json && (status == "success" || status == "partial") {
        let status = if code == exit::SUCCESS {
            "success"
        } else {
            "partial"
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&run_json(
                false,
                status,
                code,
                &summary,
                Value::Null,
                prune
            ))
            .unwrap_or_default()
        );
    }
    code
}

/// The run's events on the progress bar: files selected, then "done/total files" and bytes.
fn bar_sink(pb: &indicatif::ProgressBar) -> backup_core::progress::EventSink {
    let pb = pb.clone();
    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    Arc::new(move |ev: Event| match ev {
        Event::Scanned { files } => pb.set_message(format!("{files} files selected")),
        // The plan streams: copies may finish before the totals are known.
        Event::Planned { copies, bytes, .. } => {
            total.store(copies as u64, Ordering::Relaxed);
            pb.set_length(bytes);
            let d = done.load(Ordering::Relaxed);
            pb.set_message(format!("{d}/{copies} files"));
        }
        Event::Copying { bytes } => pb.inc(bytes),
        Event::FileDone { .. } => {
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            pb.set_message(files_message(d, total.load(Ordering::Relaxed)));
        }
        Event::Note(n) => say_note(&n),
        Event::Error(e) => term::error(&format!("error: {e}")),
        Event::Committed => pb.set_message(format!(
            "{}, committed",
            files_message(done.load(Ordering::Relaxed), total.load(Ordering::Relaxed))
        )),
    })
}

/// "3/21 files", or "3 files" while the plan has not counted them all yet.
fn files_message(done: u64, total: u64) -> String {
    match total {
        0 => format!("{done} files"),
        t => format!("{done}/{t} files"),
    }
}

async fn engine_run(cli: &Cli, config: &Config) -> Outcome {
    let pb = progress::bar("scanning");
    let sink = bar_sink(&pb);
    let opts = RunOptions {
        checksum: cli.checksum,
    };
    let result = pipeline::run(config, opts, sink).await;
    progress::finish(&pb);
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let (status, code) = report_engine_error(&e, config);
            if cli.json {
                println!("{}", json_error(&e.to_string(), code));
            }
            return Outcome {
                status,
                code,
                summary: RunSummary::default(),
                prune: Value::Null,
            };
        }
    };
    if !cli.json {
        let line = summary_line(&summary);
        term::log_only("INFO", &line);
        if !cli.quiet {
            println!("{line}");
        }
    }
    if summary.disk_full {
        term::error(&format!(
            "backup: the disk holding {} is full; the run stopped early (everything stored earlier is intact; free space and run again)",
            config.dist.display()
        ));
    }
    if !summary.errors.is_empty() {
        term::error(&format!(
            "backup: {} failed (named above)",
            term::plural(summary.errors.len(), "file", "files")
        ));
    }
    let mut code = if summary.errors.is_empty() && !summary.disk_full {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    };
    if cli.strict && code == exit::SUCCESS && term::warnings() > 0 {
        term::error(&format!(
            "backup: --strict: {} (named above)",
            term::plural(term::warnings(), "warning", "warnings")
        ));
        code = exit::PARTIAL;
    }
    let mut prune = Value::Null;
    if cli.prune && code == exit::SUCCESS {
        match prune_after(cli, config) {
            Ok(v) => prune = v,
            Err(e) => {
                term::error(&format!("backup: prune: {e:#}"));
                code = exit::PARTIAL;
            }
        }
    }
    Outcome {
        status: if code == exit::SUCCESS {
            "success"
        } else {
            "partial"
        },
        code,
        summary,
        prune,
    }
}

/// `--prune`: the profile's retention over the backup just written.
fn prune_after(cli: &Cli, config: &Config) -> anyhow::Result<Value> {
    let Some(policy) = &config.retention else {
        return Ok(Value::Null);
    };
    let repo = backup_core::Repository::open(&config.dist)?;
    let lock = repo.lock_for_writing()?;
    let backup = backup_core::explore::Backup::open(&repo, Some(&lock))?;
    let pb = progress::bar("pruning");
    let sink = progress::work_sink(&pb, "increments");
    let report =
        backup_core::explore::prune::prune_with_progress(&backup, policy, Some(&lock), &sink);
    progress::finish(&pb);
    let report = report?;
    for (n, e) in &report.failed {
        term::error(&format!("backup: prune: {n}: {e}"));
    }
    let line = format!(
        "prune ({}): removed {}, kept {}",
        report.policy,
        term::plural(report.removed.len(), "increment", "increments"),
        report.decisions.iter().filter(|d| d.keep).count()
    );
    term::log_only("INFO", &line);
    for d in &report.decisions {
        let l = if d.keep {
            format!("keep   {}  ({})", d.name, d.reasons.join(", "))
        } else {
            format!("remove {}", d.name)
        };
        term::log_only("INFO", &l);
        tracing::info!("prune: {l}");
    }
    if !cli.json && !cli.quiet {
        println!("{line}");
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} could not be removed",
            term::plural(report.failed.len(), "increment", "increments")
        );
    }
    Ok(serde_json::to_value(&report)?)
}

fn report_engine_error(e: &EngineError, config: &Config) -> (&'static str, i32) {
    if e.is_disk_full() {
        term::error(&format!(
            "backup: the disk holding {} is full: {e} (everything stored earlier is intact; free space and run again)",
            config.dist.display()
        ));
        return ("failed", exit::PARTIAL);
    }
    term::error(&format!("backup: {e}"));
    if e.is_refusal() {
        ("refused", exit::REFUSED)
    } else {
        ("failed", exit::PARTIAL)
    }
}

fn summary_line(s: &RunSummary) -> String {
    let inc = match &s.increment {
        Some(n) => format!(
            "increment {n}: {} new, {} changed, {} deleted",
            s.new, s.changed, s.deleted
        ),
        None => "no tracked change, no increment".to_owned(),
    };
    let repaired = match s.repaired {
        0 => String::new(),
        n => format!(", {n} repaired (damaged mirror copies, copied again from the source)"),
    };
    format!(
        "{inc}; mirror: {} copied ({}), {} removed, {} unchanged{repaired}",
        s.copied,
        humansize::format_size(s.copied_bytes, humansize::BINARY),
        s.removed,
        s.unchanged
    )
}

/// `backup init`: a starter profile whose `_`-keys explain every key (JSON has no comments;
/// the loader ignores keys starting with `_`).
fn init(cli: &Cli, src: &str, dist: &str) -> i32 {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None => match dirs::config_dir() {
            Some(d) => d.join("backup").join("config.json"),
            None => {
                return report(
                    cli,
                    "backup: no config dir on this system; name the file with --config",
                    exit::REFUSED,
                )
            }
        },
    };
    let text = starter_profile(src, dist);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return report(
                cli,
                &format!("backup: cannot create {}: {e}", parent.display()),
                exit::REFUSED,
            );
        }
    }
    // create_new: never overwrite, not even a file that appeared meanwhile.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    match written {
        Ok(()) => {
            if cli.json {
                println!(
                    "{}",
                    json!({"schema": JSON_SCHEMA, "written": path.display().to_string()})
                );
            } else if !cli.quiet {
                println!(
                    "wrote {}\nnext: edit it, then `backup -c {} --check-config` and `backup -c {} -n`",
                    path.display(),
                    shell_word(&path),
                    shell_word(&path)
                );
            }
            exit::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => report(
            cli,
            &format!(
                "backup: {} already exists; not overwriting it (remove it first, or name another file with --config)",
                path.display()
            ),
            exit::REFUSED,
        ),
        Err(e) => report(
            cli,
            &format!("backup: cannot write {}: {e}", path.display()),
            exit::REFUSED,
        ),
    }
}

fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-~+".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn starter_profile(src: &str, dist: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        r#"{{
  "_comment": "backup profile. Keys starting with _ are comments and ignored. Reference: docs/config.md. Check with: backup --check-config; try with: backup --dry-run",

  "_src": "The folder to back up (~ expands; relative paths are relative to this file).",
  "src": {src},
  "_dist": "Where the backup goes: a mirror/ and one backup_YYYYMMDD_HHMMSS/ increment per run that changed tracked files. Created by the first run. Must not contain src.",
  "dist": {dist},

  "_rules": "Only what a rule names is backed up. Globs relative to src: * and ? within a name, ** across folders; a trailing :rec means at any depth.",
  "_track_dirs": "Folders backed up recursively and tracked: every version that changes is kept in increments. \".\" is src itself.",
  "track_dirs": ["."],
  "_include_dirs": "Folders backed up recursively, untracked: the mirror keeps their current state only (no history).",
  "include_dirs": [],
  "_exclude_dirs": "Folders left out (a name without / matches at any depth).",
  "exclude_dirs": [".cache", "node_modules", "target", ".Trash-*"],
  "_include_files": "Single files (or globs) backed up untracked, even inside an excluded folder.",
  "include_files": [],
  "_track_files": "Single files (or globs) tracked: *.tex:rec tracks every .tex file at any depth.",
  "track_files": [],
  "_exclude_files": "Files left out of what the folder rules selected (a name matches at any depth).",
  "exclude_files": ["*.tmp", "*.swp", "~$*"],

  "_hooks": "Commands run around a backup run: a string runs with sh -c, a list [program, args...] runs directly. They see BACKUP_STATUS, BACKUP_EXIT, BACKUP_INCREMENT, BACKUP_NEW, BACKUP_CHANGED, BACKUP_DELETED, BACKUP_COPIED, BACKUP_ERRORS, BACKUP_SRC, BACKUP_DIST, BACKUP_CONFIG. A failing before hook cancels the run (exit 2). Example on_error: [\"curl -fsS -m 10 --retry 3 https://hc-ping.com/UUID/fail\"]",
  "hooks": {{
    "before": [],
    "after": [],
    "on_error": [],
    "timeout": 600
  }},

  "_retention": "What `backup-tool prune` (no flags) and `backup --prune` keep: the newest increment of each of the last N hours/days/weeks/months/years, the last N, and all within a span of the newest (7d, 2w, 1y2m).",
  "retention": {{
    "keep_last": 10,
    "keep_daily": 7,
    "keep_weekly": 4,
    "keep_monthly": 12
  }}
}}
"#,
        src = q(src),
        dist = q(dist)
    )
}

fn check_config(cli: &Cli, config: &Config) -> i32 {
    let hooks = |v: &[backup_core::config::HookCommand]| -> Vec<Value> {
        v.iter()
            .map(|c| match c {
                backup_core::config::HookCommand::Shell(s) => json!(s),
                backup_core::config::HookCommand::Argv(a) => json!(a),
            })
            .collect()
    };
    let r = &config.rules;
    let doc = json!({
        "schema": JSON_SCHEMA,
        "config": config.file.display().to_string(),
        "src": config.src.display().to_string(),
        "dist": config.dist.display().to_string(),
        "dist_exists": config.dist.is_dir(),
        "include_dirs": r.include_dirs,
        "track_dirs": r.track_dirs,
        "exclude_dirs": r.exclude_dirs,
        "include_files": r.include_files,
        "track_files": r.track_files,
        "exclude_files": r.exclude_files,
        "directory_priority": match r.directory_priority {
            backup_core::selection::DirectoryPriority::Track => "track",
            backup_core::selection::DirectoryPriority::Include => "include",
        },
        "preserved_dirs": r.preserved_dirs,
        "max_workers": config.max_workers,
        "hooks": {
            "before": hooks(&config.hooks.before),
            "after": hooks(&config.hooks.after),
            "on_error": hooks(&config.hooks.on_error),
            "timeout": config.hooks.timeout_secs,
        },
        "retention": config.retention.as_ref().map(|p| p.describe()),
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return exit::SUCCESS;
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    println!("config: {} (valid)", config.file.display());
    println!("src:    {}", config.src.display());
    println!(
        "dist:   {}{}",
        config.dist.display(),
        if config.dist.is_dir() {
            ""
        } else {
            " (created by the first run)"
        }
    );
    if let Some(inside) = config.dist_inside_src() {
        println!("        (inside src: the scan skips {})", inside.display());
    }
    println!("rules:");
    for (k, v) in r.pairs() {
        println!("  {:<14} {}", k.name(), list(v));
    }
    println!(
        "  {:<14} {}",
        "directory_priority",
        doc["directory_priority"].as_str().unwrap_or("track")
    );
    println!("  {:<14} {}", "preserved_dirs", list(&r.preserved_dirs));
    println!("max_workers: {}", config.max_workers);
    let h = &config.hooks;
    if h.is_empty() {
        println!("hooks: none");
    } else {
        println!("hooks (timeout {} s):", h.timeout_secs);
        for (k, v) in [
            ("before", &h.before),
            ("after", &h.after),
            ("on_error", &h.on_error),
        ] {
            for c in v {
                println!("  {k:<8} {c}");
            }
        }
    }
    println!(
        "retention: {}",
        config
            .retention
            .as_ref()
            .map(|p| p.describe())
            .unwrap_or_else(|| "none (backup-tool prune needs --keep-... flags)".to_owned())
    );
    exit::SUCCESS
}

/// `--explain`: the verdict of the selection rules for each path, with the rule that decided.
fn explain(cli: &Cli, config: &Config) -> i32 {
    let selection = config.selection();
    let mut docs = Vec::new();
    let mut code = exit::SUCCESS;
    for p in &cli.explain {
        let rel = match rel_to_src(p, &config.src) {
            Ok(r) => r,
            Err(e) => {
                code = exit::REFUSED;
                term::error(&format!("backup: {e}"));
                continue;
            }
        };
        let shown = rel.to_string_lossy().into_owned();
        let on_disk = std::fs::symlink_metadata(config.src.join(&rel)).ok();
        if on_disk.as_ref().is_some_and(|m| m.is_dir()) {
            code = exit::REFUSED;
            term::error(&format!(
                "backup: {shown} is a directory: the rules decide per file; explain a file in it ({shown}/NAME)"
            ));
            continue;
        }
        let comps: Vec<&[u8]> = rel.iter().map(|c| c.as_encoded_bytes()).collect();
        let why = selection.explain_path(&comps);
        let verdict = match why.selected {
            Some(true) => "tracked",
            Some(false) => "untracked",
            None => "not backed up",
        };
        let rule = |r: &backup_core::selection::RuleMatch| json!({"key": r.key.name(), "pattern": r.pattern, "dir": r.dir});
        docs.push(json!({
            "path": shown,
            "exists": on_disk.is_some(),
            "selected": why.selected.is_some(),
            "tracked": why.selected == Some(true),
            "decided_by": why.decided_by.as_ref().map(rule),
            "excluded_by": why.excluded_by.as_ref().map(rule),
            "overruled": why.overruled.iter().map(rule).collect::<Vec<_>>(),
        }));
        if cli.json {
            continue;
        }
        let mut reason = Vec::new();
        match (&why.decided_by, &why.excluded_by) {
            (Some(d), Some(x)) => {
                reason.push(format!("selected by {d}"));
                reason.push(format!("which beats {x}"));
            }
            (Some(d), None) => reason.push(format!("selected by {d}")),
            (None, Some(x)) => reason.push(format!("excluded by {x}")),
            (None, None) => reason.push("no rule names it".to_owned()),
        }
        for o in &why.overruled {
            reason.push(format!(
                "{} {o}",
                if why.selected.is_some() {
                    "overrules"
                } else {
                    "cancels"
                }
            ));
        }
        println!(
            "{shown}: {verdict} ({}){}",
            reason.join("; "),
            if on_disk.is_some() {
                ""
            } else {
                " [not in src now]"
            }
        );
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"schema": JSON_SCHEMA, "paths": docs}))
                .unwrap_or_default()
        );
    }
    code
}

/// A path for `--explain`: relative ones are relative to `src` (like the rules); absolute ones
/// must lie inside it.
fn rel_to_src(p: &Path, src: &Path) -> Result<PathBuf, String> {
    let rel = if p.is_absolute() {
        let resolved = p
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .and_then(|d| p.file_name().map(|n| d.join(n)))
            .unwrap_or_else(|| p.to_path_buf());
        resolved
            .strip_prefix(src)
            .or_else(|_| p.strip_prefix(src))
            .map(Path::to_path_buf)
            .map_err(|_| format!("{} is not inside src {}", p.display(), src.display()))?
    } else {
        p.to_path_buf()
    };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            _ => return Err(format!("{}: use a path inside src without ..", p.display())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{}: name a file inside src", p.display()));
    }
    Ok(out)
}
