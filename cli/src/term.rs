//! Where the binaries' messages go: stderr (above a progress bar, never glued to it; coloured
//! only on a terminal without `NO_COLOR`), the `--log-file` (plain text, local time with its
//! UTC offset), and `tracing` (`RUST_LOG`, with `-v`/`-q` as the default level).
//!
//! Kinds of message:
//! - info: only with `-v` (a `tracing` event, so `RUST_LOG` decides too);
//! - note: something to hear about once; hidden by `-q`;
//! - warning: something is not being backed up (a rule matches nothing, unreadable files);
//!   never hidden, counted for `--strict`;
//! - error: always shown.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use indicatif::ProgressBar;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
static LOG: OnceLock<Mutex<File>> = OnceLock::new();
static QUIET: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicU8 = AtomicU8::new(0);
static WARNINGS: AtomicUsize = AtomicUsize::new(0);

/// Whether stderr may carry ANSI codes: a terminal, and `NO_COLOR` unset or empty.
pub fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// The number of `-v`.
pub fn verbose() -> u8 {
    VERBOSE.load(Ordering::Relaxed)
}

/// Warnings printed so far (for `--strict`).
pub fn warnings() -> usize {
    WARNINGS.load(Ordering::Relaxed)
}

/// The progress bar messages are printed above (`None` when it is finished).
pub fn set_bar(pb: Option<ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = pb;
    }
}

/// Runs `f` with the progress bar (if any) cleared, so what `f` prints stands above it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    // Clone out of the lock: `f` may print through here again.
    let pb = BAR.lock().ok().and_then(|b| b.clone());
    match pb {
        Some(pb) => pb.suspend(f),
        None => f(),
    }
}

/// Sets up `tracing` and the log file. `-v` means info, `-vv` debug, `-q` errors only;
/// `RUST_LOG` (an `EnvFilter`) overrides that. The log file gets info and up unless
/// `RUST_LOG` says otherwise.
pub fn init(verbose: u8, quiet: bool, log_file: Option<&Path>) -> anyhow::Result<()> {
    QUIET.store(quiet, Ordering::Relaxed);
    VERBOSE.store(verbose, Ordering::Relaxed);
    if let Some(path) = log_file {
        // A first run under a timer: ~/.local/state may not exist yet.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
        let _ = LOG.set(Mutex::new(f));
    }
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let env = |default: &str| {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .and_then(|v| EnvFilter::try_new(v).ok())
            .unwrap_or_else(|| EnvFilter::new(default))
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(|| StderrAboveBar)
        .with_ansi(color_stderr())
        .with_target(false)
        .without_time()
        .with_filter(env(level));
    let file_layer = LOG.get().map(|_| {
        tracing_subscriber::fmt::layer()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_target(false)
            .with_timer(LocalWithOffset)
            .with_filter(env(if verbose >= 2 { "debug" } else { "info" }))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Ok(())
}

/// A line for the log file only (the caller printed it elsewhere, or it is not for the
/// terminal).
pub fn log_only(level: &str, msg: &str) {
    if let Some(f) = LOG.get() {
        if let Ok(mut f) = f.lock() {
            let _ = writeln!(f, "{} {level:>5} {}", now(), msg);
        }
    }
}

fn now() -> String {
    chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn eprint_line(line: &str) {
    suspend(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
}

/// A note (`note: ...`), hidden by `-q`.
pub fn note(msg: &str) {
    log_only("NOTE", msg);
    if !quiet() {
        eprint_line(&format!("note: {msg}"));
    }
}

/// A warning (`warning: ...`): something is not being backed up. Never hidden.
pub fn warn(msg: &str) {
    WARNINGS.fetch_add(1, Ordering::Relaxed);
    log_only("WARN", msg);
    eprint_line(&format!("warning: {msg}"));
}

/// An error line as written (`error: ...` or `backup: ...`). Never hidden.
pub fn error(line: &str) {
    log_only("ERROR", line);
    eprint_line(line);
}

/// A line of a hook's output: on stderr unless `-q`, and in the log file.
pub fn hook_output(line: &str) {
    log_only("HOOK", line);
    if !quiet() {
        eprint_line(line);
    }
}

/// Writes tracing's lines to stderr above the progress bar.
struct StderrAboveBar;

impl Write for StderrAboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = LOG.get() {
            if let Ok(mut f) = f.lock() {
                f.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `2024-01-05T10:00:00.123+01:00`: local time, and the offset that makes it unambiguous.
struct LocalWithOffset;

impl FormatTime for LocalWithOffset {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", now())
    }
}

/// `1 file`, `2 files`.
pub fn plural(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}
