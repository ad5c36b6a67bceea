//! `backup-tool`: explore, check, restore and mount a backup without changing it.

use std::path::PathBuf;
use std::process::ExitCode;

use backup_cli::{exit, json_error, term, tool};
use clap::{CommandFactory, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  backup-tool /media/usb/backup list
  backup-tool -c usb.json search --mask '*.tex'       the backup of the profile usb.json
  backup-tool -c usb.json restore --to ~/restored     a full restore (the mirror, as of now)
  backup-tool -c usb.json mount /mnt/past             browse every snapshot read-only

Without a BACKUP folder, the dist of --config (or ./config.json, ~/.config/backup/config.json)
is used. Exit status: 0 done, 1 finished with problems (each named), 2 refused.";

#[derive(Debug, Parser)]
#[command(
    name = "backup-tool",
    version,
    about = "Explore, check, restore, mount and serve a backup",
    after_help = EXAMPLES
)]
struct Cli {
    /// The backup (its `dist` folder). Without it, the `dist` of --config is used.
    #[arg(value_name = "BACKUP")]
    backup: Option<PathBuf>,
    /// Profile whose `dist` to use (same lookup as `backup`).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// More output on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet", global = true)]
    verbose: u8,
    /// No progress bars; only results and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
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
    /// Write the mirror's state as a mirror.json (for the original tool).
    ExportMirrorJson(tool::export::Args),
    /// Print shell completions (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "\
Examples:
  source <(backup-tool completions bash)
  backup-tool completions zsh > ~/.zfunc/_backup-tool
  backup-tool completions fish > ~/.config/fish/completions/backup-tool.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write all of them (one per subcommand) into DIR.
    #[command(after_help = "\
Examples:
  backup-tool man | man -l -
  backup-tool man target/man    writes backup-tool.1, backup-tool-list.1, ...")]
    Man {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Command::List(a) => a.json,
            Command::Show(a) => a.json,
            Command::Search(a) => a.json,
            Command::Log(a) => a.json,
            Command::Diff(a) => a.json,
            Command::Restore(a) => a.json,
            Command::Check(a) => a.json,
            Command::Recreate(a) => a.json,
            Command::Delete(a) => a.json,
            Command::Prune(a) => a.json,
            Command::ExportMirrorJson(a) => a.json,
            Command::Mount(_)
            | Command::Serve(_)
            | Command::Completions { .. }
            | Command::Man { .. } => false,
        }
    }
}

/// The names clap knows as subcommands (for "did you mean").
fn subcommand_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect()
}

/// `backup-tool lst`: clap takes `lst` for the BACKUP folder and then misses a subcommand.
/// When that word is no folder and looks like a subcommand, say so.
fn mistyped_subcommand(err: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        err.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let word = loop {
        let a = args.get(i)?;
        if a == "-c" || a == "--config" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        break a.clone();
    };
    if std::path::Path::new(&word).exists() {
        return None;
    }
    let best = subcommand_names()
        .into_iter()
        .map(|n| (strsim::jaro(&word, &n), n))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Some(match best {
        Some((_, name)) => format!(
            "error: unrecognized subcommand '{word}'\n\n  tip: a similar subcommand exists: '{name}'\n\nUsage: backup-tool [BACKUP] <COMMAND>\n\nFor more information, try '--help'."
        ),
        None => format!(
            "error: '{word}' is neither a backup folder nor a subcommand\n\nUsage: backup-tool [BACKUP] <COMMAND>\n\nFor more information, try '--help'."
        ),
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if let Some(msg) = mistyped_subcommand(&e) {
                eprintln!("{msg}");
                return ExitCode::from(exit::REFUSED as u8);
            }
            e.exit();
        }
    };
    if let Err(e) = term::init(cli.verbose, cli.quiet, None) {
        eprintln!("backup-tool: {e:#}");
        return ExitCode::from(exit::REFUSED as u8);
    }
    let json = cli.command.json();
    let fail = |msg: String, code: i32| -> ExitCode {
        eprintln!("backup-tool: {msg}");
        if json {
            println!("{}", json_error(&msg, code));
        }
        ExitCode::from(code as u8)
    };
    let generated = match &cli.command {
        Command::Completions { shell } => {
            Some(backup_cli::gen::completions(Cli::command(), *shell))
        }
        Command::Man { dir } => Some(backup_cli::gen::man(Cli::command(), dir.as_deref())),
        _ => None,
    };
    if let Some(r) = generated {
        return match r {
            Ok(c) => ExitCode::from(c as u8),
            Err(e) => fail(format!("{e:#}"), exit::PARTIAL),
        };
    }
    let repo = match tool::target::open(cli.backup.as_deref(), cli.config.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(e, exit::REFUSED),
    };
    tracing::info!("backup {}", repo.root().display());
    let profile = tool::target::profile(cli.backup.as_deref(), cli.config.as_deref());
    if let Some(p) = &profile {
        tracing::info!("profile {} (src {})", p.file.display(), p.src.display());
    }
    let result = match &cli.command {
        Command::List(a) => tool::list::run(&repo, a),
        Command::Show(a) => tool::show::run(&repo, a),
        Command::Search(a) => tool::search::run(&repo, a),
        Command::Log(a) => tool::log::run(&repo, profile.as_ref(), a),
        Command::Diff(a) => tool::diff::run(&repo, a),
        Command::Restore(a) => tool::restore::run(&repo, profile.as_ref(), a),
        Command::Check(a) => tool::check::run(&repo, a),
        Command::Recreate(a) => tool::recreate::run(&repo, a),
        Command::Delete(a) => tool::delete::run(&repo, a),
        Command::Prune(a) => tool::prune::run(&repo, profile.as_ref(), a),
        Command::Mount(a) => tool::mount::run(&repo, a),
        Command::Serve(a) => tool::serve::run(&repo, a),
        Command::ExportMirrorJson(a) => tool::export::run(&repo, a),
        Command::Completions { .. } | Command::Man { .. } => Ok(exit::SUCCESS),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // `backup-tool ... | head` closing the pipe early is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            fail(format!("{e:#}"), tool::error_status(&e))
        }
    }
}
