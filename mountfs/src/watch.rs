//! Following the backup while mounted: `dist` is watched (inotify and the like, through the
//! `notify` crate) and the tree reloads when an increment lands, is pruned or rewritten, or
//! the index changes; a slow poll catches what a watch can miss (network shares, a full
//! inotify table).
//!
//! What is watched is `dist` itself, not its subtree: an increment folder appearing,
//! vanishing or renamed, and the files a run or a command writes last at the top (the index
//! and its WAL, `mirror.json`, the journal's removal). A run's metadata lands in its folder
//! before those, so the reload that follows sees it complete.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::{BackupFs, MountFsError, Reload};

/// How often the backup is compared even without an event.
pub const SAFETY_POLL: Duration = Duration::from_secs(10);
/// Without a working watch, the poll is all there is.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Events come in bursts (a run writes its index many times): wait for this much quiet,
/// but never longer than [`MAX_SETTLE`] after the first event.
const QUIET: Duration = Duration::from_millis(60);
const MAX_SETTLE: Duration = Duration::from_millis(300);

/// What the watcher tells its caller.
#[derive(Debug)]
pub enum WatchReport<'a> {
    /// Watching `dist` for changes (else polling every [`FALLBACK_POLL`], with the reason).
    Watching(Result<(), String>),
    Reloaded(&'a Reload),
    Failed(&'a MountFsError),
}

/// Whether a change to `name`, directly in `dist`, may change what the tree shows.
fn relevant(name: &Path) -> bool {
    let Some(n) = name.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    n.starts_with("backup_")
        || n.starts_with(".backup-index")
        || n.starts_with("mirror.json")
        || n.starts_with(".backup-journal")
}

/// Follows the backup until `stop`: reloads on changes at `dist` and every
/// [`SAFETY_POLL`] regardless.
pub fn follow(fs: &BackupFs, stop: &AtomicBool, report: &mut dyn FnMut(WatchReport<'_>)) {
    let (tx, rx) = channel::<notify::Result<notify::Event>>();
    let dist = fs.repository().root().to_path_buf();
    let watcher = notify::recommended_watcher(tx).and_then(|mut w| {
        w.watch(&dist, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let poll = match &watcher {
        Ok(_) => {
            report(WatchReport::Watching(Ok(())));
            SAFETY_POLL
        }
        Err(e) => {
            report(WatchReport::Watching(Err(e.to_string())));
            FALLBACK_POLL
        }
    };
    let reload = |report: &mut dyn FnMut(WatchReport<'_>)| match fs.refresh() {
        Ok(Some(r)) => report(WatchReport::Reloaded(&r)),
        Ok(None) => {}
        Err(e) => report(WatchReport::Failed(&e)),
    };
    // Short waits, so `stop` is seen promptly.
    let tick = Duration::from_millis(100);
    let mut last_poll = Instant::now();
    let mut pending: Option<(Instant, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(tick) {
            Ok(Ok(ev)) => {
                let wanted = !matches!(ev.kind, EventKind::Access(_))
                    && ev.paths.iter().any(|p| relevant(p));
                if wanted {
                    let now = Instant::now();
                    pending = Some(match pending {
                        Some((first, _)) => (first, now),
                        None => (now, now),
                    });
                }
            }
            Ok(Err(e)) => tracing::debug!("watch of {}: {e}", dist.display()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if last_poll.elapsed() < poll {
                    std::thread::sleep(tick);
                }
            }
        }
        let now = Instant::now();
        let due = match pending {
            Some((first, last)) => {
                now.duration_since(last) >= QUIET || now.duration_since(first) >= MAX_SETTLE
            }
            None => now.duration_since(last_poll) >= poll,
        };
        if due {
            pending = None;
            last_poll = now;
            reload(report);
        }
    }
    drop(watcher);
}
