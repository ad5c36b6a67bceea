//! `backup-tool`: explore, check, restore and mount a backup without changing it.

use std::path::PathBuf;
use std::process::ExitCode;

use backup_cli::{exit, tool};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "backup-tool",
    version,
    about = "Explore, check, restore, mount and serve a backup"
)]
struct Cli {
    /// The backup (its `dist` folder). Without it, the `dist` of --config is used.
    #[arg(value_name = "BACKUP")]
    backup: Option<PathBuf>,
    /// Profile whose `dist` to use (same lookup as `backup`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Increments with time, counts and sizes.
    List(tool::list::Args),
    /// One increment's metadata and files.
    Show(tool::show::Args),
    /// Find files across all increments and the mirror.
    Search(tool::search::Args),
    /// Every stored version of one file.
    Log(tool::log::Args),
    /// What changed between two points.
    Diff(tool::diff::Args),
    /// Restore files as they were at a point in time.
    Restore(tool::restore::Args),
    /// Consistency of mirror, index, increments and metadata.
    Check(tool::check::Args),
    /// Rebuild increment metadata from the files on disk.
    Recreate(tool::recreate::Args),
    /// Remove files matching masks from one increment.
    Delete(tool::delete::Args),
    /// Remove whole increments by a retention policy.
    Prune(tool::prune::Args),
    /// Expose the backup as a read-only filesystem.
    Mount(tool::mount::Args),
    /// Serve the backup read-only over WebDAV and HTTP (no FUSE or WinFsp needed).
    Serve(tool::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let repo = match tool::target::open(cli.backup.as_deref(), cli.config.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backup-tool: {e}");
            return ExitCode::from(exit::REFUSED as u8);
        }
    };
    let result = match &cli.command {
        Command::List(a) => tool::list::run(&repo, a),
        Command::Show(a) => tool::show::run(&repo, a),
        Command::Search(a) => tool::search::run(&repo, a),
        Command::Log(a) => tool::log::run(&repo, a),
        Command::Diff(a) => tool::diff::run(&repo, a),
        Command::Restore(a) => tool::restore::run(&repo, a),
        Command::Check(a) => tool::check::run(&repo, a),
        Command::Recreate(a) => tool::recreate::run(&repo, a),
        Command::Delete(a) => tool::delete::run(&repo, a),
        Command::Prune(a) => tool::prune::run(&repo, a),
        Command::Mount(a) => tool::mount::run(&repo, a),
        Command::Serve(a) => tool::serve::run(&repo, a),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // `backup-tool ... | head` closing the pipe early is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("backup-tool: {e:#}");
            ExitCode::from(tool::error_status(&e) as u8)
        }
    }
}
