//! `backup`: mirror the selected source files and keep hard-linked increments of tracked ones.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use backup_cli::exit;
use backup_core::config::Config;
use backup_core::pipeline::{self, EngineError, Preview, RunOptions, RunSummary};
use backup_core::progress::{Event, RunNote};
use backup_core::Op;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const EXAMPLES: &str = "\
Examples:
  backup --config usb.json          back up the profile in usb.json
  backup --dry-run                  show what ./config.json would do, change nothing
  backup --config usb.json --json  machine-readable summary on stdout
  backup --checksum                 also compare file contents, not only size and mtime

Config lookup: --config FILE, else ./config.json, else ~/.config/backup/config.json.
Exit status: 0 done, 1 finished with per-file errors (each named) or a full disk,
2 refused (bad config, another run holds the lock, dist unusable).";

#[derive(Debug, Parser)]
#[command(
    name = "backup",
    version,
    about = "Mirror the selected files and keep every version of tracked ones in hard-linked increments",
    after_help = EXAMPLES
)]
struct Cli {
    /// Profile to run (JSON). Default: ./config.json, then the platform config dir.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the plan and change nothing (not even create dist).
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the summary (or the plan, with --dry-run) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Compare file contents (blake3) too, not only size, mtime and permissions.
    #[arg(long)]
    checksum: bool,
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Only errors on stderr; no progress, notes or summary.
    #[arg(short, long)]
    quiet: bool,
}

fn init_tracing(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let config = match Config::locate(cli.config.as_deref()).and_then(|p| Config::load(&p)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backup: {e}");
            return ExitCode::from(exit::REFUSED as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.max_workers + 4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backup: cannot start the runtime: {e}");
            return ExitCode::from(exit::REFUSED as u8);
        }
    };
    let code = runtime.block_on(async {
        if cli.dry_run {
            dry_run(&cli, &config).await
        } else {
            run(&cli, &config).await
        }
    });
    match code {
        Ok(c) => ExitCode::from(c as u8),
        Err(e) => {
            eprintln!("backup: {e:#}");
            ExitCode::from(exit::PARTIAL as u8)
        }
    }
}

async fn dry_run(cli: &Cli, config: &Config) -> anyhow::Result<i32> {
    let opts = RunOptions {
        checksum: cli.checksum,
    };
    let preview = match pipeline::preview(config, opts).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("backup: {e}");
            return Ok(exit::REFUSED);
        }
    };
    if !cli.quiet {
        for n in &preview.scan.notes {
            eprintln!("note: {}", RunNote::Scan(n.clone()));
        }
    }
    for e in &preview.scan.errors {
        let rel = e.rel.as_ref().map(|r| r.display().into_owned());
        eprintln!(
            "error: {}: cannot read: {}",
            rel.as_deref().unwrap_or("source"),
            e.error
        );
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&plan_json(&preview))?);
    } else if !cli.quiet {
        print_plan(&preview);
    }
    Ok(if preview.scan.errors.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    })
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
        p.plan.copies.len(),
        humansize::format_size(p.plan.copy_bytes(), humansize::BINARY),
        p.plan.deletes.len(),
        p.plan.unchanged,
        match &p.increment {
            Some(n) => format!("would create increment {n}"),
            None => "no tracked change, no increment".to_owned(),
        }
    );
}

fn plan_json(p: &Preview) -> serde_json::Value {
    let copies: Vec<_> = p
        .plan
        .copies
        .iter()
        .map(|c| {
            serde_json::json!({
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
            serde_json::json!({
                "path": d.rel.encode(),
                "action": if d.is_tracked() { "deleted" } else { "remove" },
                "tracked": d.is_tracked(),
            })
        })
        .collect();
    serde_json::json!({
        "dry_run": true,
        "increment": p.increment.as_ref().map(|n| n.as_str().to_owned()),
        "copies": copies,
        "deletes": deletes,
        "unchanged": p.plan.unchanged,
        "copy_bytes": p.plan.copy_bytes(),
        "new": p.plan.count(Op::New),
        "changed": p.plan.count(Op::Changed),
        "deleted": p.plan.count(Op::Deleted),
    })
}

fn progress_bar(cli: &Cli) -> ProgressBar {
    if cli.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb.set_message("scanning");
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

async fn run(cli: &Cli, config: &Config) -> anyhow::Result<i32> {
    let pb = progress_bar(cli);
    let files_done = Arc::new(AtomicU64::new(0));
    let files_total = Arc::new(AtomicU64::new(0));
    let quiet = cli.quiet;
    let sink = {
        let pb = pb.clone();
        let done = files_done.clone();
        let total = files_total.clone();
        Arc::new(move |ev: Event| match ev {
            Event::Scanned { files } => pb.set_message(format!("{files} files selected")),
            Event::Planned { copies, bytes, .. } => {
                total.store(copies as u64, Ordering::Relaxed);
                pb.set_length(bytes);
                pb.set_message(format!("0/{copies} files"));
            }
            Event::FileDone { bytes, .. } => {
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                pb.inc(bytes);
                pb.set_message(format!("{d}/{} files", total.load(Ordering::Relaxed)));
            }
            Event::Note(n) => {
                if !quiet {
                    pb.suspend(|| eprintln!("note: {n}"));
                }
            }
            Event::Error(e) => pb.suspend(|| eprintln!("error: {e}")),
            Event::Committed => pb.set_message("committed"),
        })
    };
    let opts = RunOptions {
        checksum: cli.checksum,
    };
    let result = pipeline::run(config, opts, sink).await;
    pb.finish_and_clear();
    match result {
        Ok(summary) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).context("summary to JSON")?
                );
            } else if !cli.quiet {
                print_summary(&summary);
            }
            if summary.disk_full {
                eprintln!(
                    "backup: the disk holding {} is full; the run stopped early (everything stored earlier is intact; free space and run again)",
                    config.dist.display()
                );
            }
            if !summary.errors.is_empty() && !cli.json {
                eprintln!(
                    "backup: {} file(s) failed (named above)",
                    summary.errors.len()
                );
            }
            Ok(if summary.errors.is_empty() && !summary.disk_full {
                exit::SUCCESS
            } else {
                exit::PARTIAL
            })
        }
        Err(e) => Ok(report_engine_error(&e, config)),
    }
}

fn report_engine_error(e: &EngineError, config: &Config) -> i32 {
    if e.is_disk_full() {
        eprintln!(
            "backup: the disk holding {} is full: {e} (everything stored earlier is intact; free space and run again)",
            config.dist.display()
        );
        return exit::PARTIAL;
    }
    eprintln!("backup: {e}");
    if e.is_refusal() {
        exit::REFUSED
    } else {
        exit::PARTIAL
    }
}

fn print_summary(s: &RunSummary) {
    let inc = match &s.increment {
        Some(n) => format!(
            "increment {n}: {} new, {} changed, {} deleted",
            s.new, s.changed, s.deleted
        ),
        None => "no tracked change, no increment".to_owned(),
    };
    println!(
        "{inc}; mirror: {} copied ({}), {} removed, {} unchanged",
        s.copied,
        humansize::format_size(s.copied_bytes, humansize::BINARY),
        s.removed,
        s.unchanged
    );
}
