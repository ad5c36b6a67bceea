//! The profile's `"hooks"`: commands run before and after a `backup` run, with the run's summary
//! in `BACKUP_*` environment variables, their output sent to the log, each killed (with its
//! process group) after the profile's timeout.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backup_core::config::{Config, HookCommand};

use crate::term;

/// Which hooks: the `"hooks"` key they come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Before,
    After,
    OnError,
}

impl Stage {
    pub fn key(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::After => "after",
            Stage::OnError => "on_error",
        }
    }
}

/// Runs the commands of `stage` one after the other with `env` added to the environment.
/// `before` stops at the first failure; the others run every command. Returns one message per
/// failed command.
pub fn run(config: &Config, stage: Stage, env: &[(&str, String)]) -> Vec<String> {
    let cmds = match stage {
        Stage::Before => &config.hooks.before,
        Stage::After => &config.hooks.after,
        Stage::OnError => &config.hooks.on_error,
    };
    let timeout = Duration::from_secs(config.hooks.timeout_secs);
    let mut failures = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let label = format!("hook {}[{}]", stage.key(), i + 1);
        tracing::info!("{label}: running {cmd}");
        if let Err(e) = run_one(cmd, &label, stage, env, timeout) {
            failures.push(format!("{label} ({cmd}): {e}"));
            if stage == Stage::Before {
                break;
            }
        }
    }
    failures
}

fn run_one(
    cmd: &HookCommand,
    label: &str,
    stage: Stage,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    let mut c = match cmd {
        HookCommand::Shell(s) => {
            let mut c = if cfg!(windows) {
                let mut c = Command::new("cmd");
                c.arg("/C");
                c
            } else {
                let mut c = Command::new("sh");
                c.arg("-c");
                c
            };
            c.arg(s);
            c
        }
        HookCommand::Argv(v) => {
            let mut c = Command::new(&v[0]);
            c.args(&v[1..]);
            c
        }
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("BACKUP_HOOK", stage.key());
    for (k, v) in env {
        c.env(k, v);
    }
    #[cfg(unix)]
    {
        // Its own process group, so a timeout kills what it started too.
        use std::os::unix::process::CommandExt;
        c.process_group(0);
    }
    let mut child = c.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let (tx, rx) = mpsc::channel::<()>();
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let label = label.to_owned();
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                term::hook_output(&format!("{label}: {}", line.trim_end_matches('\r')));
            }
            drop(tx);
        }));
    }
    drop(tx);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(&mut child);
                break Err(format!(
                    "killed after the hook timeout of {} s (\"hooks\": {{\"timeout\": ...}})",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for it: {e}")),
        }
    };
    // Its output may still be in the pipes; a background process it left running may hold them
    // open, so do not wait for that forever.
    let deadline = Instant::now() + Duration::from_secs(2);
    while rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
    {}
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => format!("ended by a signal ({status})"),
        })
    }
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        let pgid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) calls on the process group we created.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Hooks run arbitrary commands: as root, only from a profile that no other user could have
/// written (the file and its folder owned by root and not group- or world-writable).
pub fn check_owner(config: &Config) -> Result<(), String> {
    if config.hooks.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use backup_platform::meta::{mode_or_readonly, owner_of};
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(());
        }
        let dir = config.file.parent().unwrap_or(std::path::Path::new("/"));
        for (what, p) in [("the profile", config.file.as_path()), ("its folder", dir)] {
            let md =
                std::fs::metadata(p).map_err(|e| format!("cannot check {}: {e}", p.display()))?;
            let (uid, _) = owner_of(&md);
            let mode = mode_or_readonly(&md);
            let why = if uid != 0 {
                Some(format!("is owned by uid {uid}"))
            } else if mode & 0o022 != 0 {
                Some(format!("is writable by other users (mode {mode:o})"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!(
                    "{}: refusing to run its hooks as root: {what} {} {why}; make it root-owned and not group/other-writable (chown root; chmod go-w)",
                    config.file.display(),
                    p.display()
                ));
            }
        }
    }
    Ok(())
}
