//! Progress bars (indicatif) for the long commands, drawn on stderr only when it is a terminal
//! and `-q` is not given; silent in pipes. Core sends typed events; this renders them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_core::progress::Work;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::term;

/// Files, bytes, rate and ETA.
const BYTES: &str = "{spinner} {msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}";
/// For work whose bytes are unknown: items, rate and ETA.
const ITEMS: &str = "{spinner} {msg} [{wide_bar}] {pos}/{len} {per_sec} ETA {eta}";

/// A bar on a terminal, a hidden one elsewhere (or with `-q`). Messages printed through
/// [`term`] stand above it while it lives; call [`finish`] when done.
pub fn bar(label: &str) -> ProgressBar {
    if term::quiet() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    pb.set_style(style(BYTES));
    pb.set_message(label.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    term::set_bar(Some(pb.clone()));
    pb
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Clears the bar; later messages print plainly. The final state is drawn first, whatever
/// the redraw rate allowed, so a short run still shows its counts once.
pub fn finish(pb: &ProgressBar) {
    if !pb.is_hidden() {
        pb.abandon();
    }
    pb.finish_and_clear();
    term::set_bar(None);
}

/// Renders core's [`Work`] events on `pb`: "`done`/`total` `noun`" and bytes when known.
pub fn work_sink(pb: &ProgressBar, noun: &'static str) -> impl Fn(Work) + Sync {
    let pb = pb.clone();
    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let by_bytes = Arc::new(std::sync::atomic::AtomicBool::new(true));
    move |w| match w {
        Work::Start { items, bytes } => {
            total.store(items, Ordering::Relaxed);
            if bytes > 0 {
                pb.set_length(bytes);
            } else {
                by_bytes.store(false, Ordering::Relaxed);
                pb.set_style(style(ITEMS));
                pb.set_length(items);
            }
            pb.set_message(format!("0/{items} {noun}"));
            pb.tick();
        }
        Work::Bytes { bytes } => {
            if by_bytes.load(Ordering::Relaxed) {
                pb.inc(bytes);
            }
        }
        Work::Item { bytes } => {
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if by_bytes.load(Ordering::Relaxed) {
                pb.inc(bytes);
            } else {
                pb.inc(1);
            }
            pb.set_message(format!("{d}/{} {noun}", total.load(Ordering::Relaxed)));
        }
    }
}
