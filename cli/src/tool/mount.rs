//! `backup-tool mount DIR`: the backup as a read-only file system, in the foreground until
//! Ctrl-C, SIGTERM or an outside unmount.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use backup_core::Repository;
use backup_mountfs::BackupFs;

use crate::exit;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Layout under DIR:
  mirror/                 the current mirror
  increments/<name>/      each increment as stored (track/, deleted/, its .json)
  snapshots/<name>/       every tracked file as it was right after that increment
  snapshots/latest/       the newest snapshot
  history/<dir>/<file>.versions/
                          every stored version of one file, named YYYY-MM-DD_HHMMSS_<file>

Examples:
  backup-tool /media/usb/backup mount /mnt/past
  cp -a /mnt/past/snapshots/latest/projects ~/restored")]
pub struct Args {
    /// Empty directory to mount on (Windows: a drive letter like `X:` or a folder that does
    /// not exist yet).
    pub dir: PathBuf,
    /// Let other users read the mount (FUSE `allow_other`; needs `user_allow_other` in
    /// /etc/fuse.conf unless run as root).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve every read through this process instead of kernel FUSE passthrough.
    #[arg(long)]
    pub no_passthrough: bool,
}

/// `-v`: say how long loading the metadata took and, at exit, how many opens went through
/// passthrough and how many reads this process served.
fn verbose() -> bool {
    crate::term::verbose() > 0
}

pub fn run(repo: &Repository, args: &Args) -> anyhow::Result<i32> {
    super::one_malloc_arena();
    if let Err(e) = check_mountpoint(repo, &args.dir) {
        eprintln!("backup-tool: {e:#}");
        return Ok(exit::REFUSED);
    }
    let started = std::time::Instant::now();
    let fs = Arc::new(BackupFs::open(repo.clone())?);
    fs.start_prefetch();
    for note in fs.index_notes() {
        eprintln!("backup-tool: {note}");
    }
    if verbose() {
        eprintln!(
            "backup-tool: index opened in {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }
    // Every request is answered from the index: mount at once; the hard-link groups (for
    // st_nlink) and the metadata problems are read in the background.
    let loader = Arc::clone(&fs);
    std::thread::spawn(move || {
        for p in &loader.load_metadata() {
            eprintln!("backup-tool: warning: {}: {}", p.file, p.message);
        }
    });
    serve(fs, args)
}

#[cfg(unix)]
fn serve(fs: Arc<BackupFs>, args: &Args) -> anyhow::Result<i32> {
    use backup_platform::fuse::{mount, MountConfig};

    let cfg = MountConfig {
        fs_name: format!("backup:{}", fs.repository().root().display()),
        allow_other: args.allow_other,
        passthrough: !args.no_passthrough,
        ..MountConfig::default()
    };
    // Signal handlers exist before the mount does: a SIGTERM sent as soon as the mount
    // appears must unmount, not kill the process with the mount left dead.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    let signals = {
        let _guard = rt.enter();
        Signals::install().context("cannot install the signal handlers")?
    };
    let mounted = mount(Arc::clone(&fs), &args.dir, &cfg)
        .with_context(|| format!("cannot mount on {}", args.dir.display()))?;
    println!(
        "Mounted {} read-only on {}",
        fs.repository().root().display(),
        args.dir.display()
    );
    println!(
        "Reads: {}",
        if mounted.stats().passthrough() {
            "kernel FUSE passthrough"
        } else {
            "served by this process"
        }
    );
    println!(
        "Press Ctrl-C (or run `fusermount3 -u {}`) to unmount.",
        args.dir.display()
    );
    let reason = rt.block_on(wait_for_end(&fs, &mounted, signals));
    if verbose() {
        eprintln!(
            "backup-tool: {} opens through kernel passthrough, {} reads served by this process",
            mounted.stats().passthrough_opens(),
            mounted.stats().daemon_reads()
        );
        let (with_attributes, bare) = mounted.stats().listed();
        eprintln!(
            "backup-tool: {} lookups answered, {with_attributes} listed entries sent with attributes, {bare} as names only",
            mounted.stats().lookups()
        );
        eprintln!(
            "backup-tool: {} listings computed ahead of a walk were used",
            fs.prefetched_listings_used()
        );
        let (held, cached) = fs.inode_counts();
        eprintln!("backup-tool: {held} inodes held by the kernel at exit, {cached} cached");
    }
    match reason {
        End::Signal(name) => {
            eprintln!("backup-tool: {name}: unmounting {}", args.dir.display());
            mounted
                .unmount()
                .with_context(|| format!("cannot unmount {}", args.dir.display()))?;
        }
        End::Unmounted => {
            eprintln!("backup-tool: {} was unmounted", args.dir.display());
            drop(mounted);
        }
    }
    Ok(exit::SUCCESS)
}

#[cfg(windows)]
fn serve(fs: Arc<BackupFs>, args: &Args) -> anyhow::Result<i32> {
    use backup_platform::winfsp::{mount, MountConfig};

    let cfg = MountConfig {
        volume_label: "backup".into(),
    };
    let mounted = mount(Arc::clone(&fs), &args.dir, &cfg)
        .with_context(|| format!("cannot mount on {}", args.dir.display()))?;
    println!(
        "Mounted {} read-only on {}. Press Ctrl-C to unmount.",
        fs.repository().root().display(),
        args.dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let fs = Arc::clone(&fs);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || watch(&fs, &stop))
    };
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(watcher);
    drop(mounted);
    Ok(exit::SUCCESS)
}

#[cfg(not(any(unix, windows)))]
fn serve(_fs: Arc<BackupFs>, _args: &Args) -> anyhow::Result<i32> {
    bail!("mounting is not supported on this platform")
}

#[cfg(unix)]
enum End {
    Signal(&'static str),
    Unmounted,
}

#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Needs a tokio runtime context.
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

#[cfg(unix)]
async fn wait_for_end(
    fs: &Arc<BackupFs>,
    mounted: &backup_platform::fuse::Mounted,
    mut signals: Signals,
) -> End {
    // Reloads run on their own thread, so a long one never delays a signal.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let fs = Arc::clone(fs);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || watch(&fs, &stop))
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let end = loop {
        tokio::select! {
            Some(_) = signals.int.recv() => break End::Signal("interrupted"),
            Some(_) = signals.term.recv() => break End::Signal("terminated"),
            Some(_) = signals.hup.recv() => break End::Signal("hangup"),
            _ = tick.tick() => {
                if mounted.is_finished() {
                    break End::Unmounted;
                }
            }
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(watcher);
    end
}

/// Follows the backup (a watch on `dist`, and a slow poll) until `stop`, saying what landed
/// or went.
#[cfg(any(unix, windows))]
fn watch(fs: &BackupFs, stop: &std::sync::atomic::AtomicBool) {
    use backup_mountfs::watch::{follow, WatchReport, FALLBACK_POLL};
    let verbose = verbose();
    follow(fs, stop, &mut |r| match r {
        WatchReport::Watching(Ok(())) => {}
        WatchReport::Watching(Err(e)) => eprintln!(
            "backup-tool: cannot watch {} for changes ({e}); checking every {} s instead",
            fs.repository().root().display(),
            FALLBACK_POLL.as_secs()
        ),
        WatchReport::Reloaded(r) => {
            for n in &r.added {
                eprintln!("backup-tool: new increment {n}");
            }
            for n in &r.removed {
                eprintln!("backup-tool: increment {n} is gone");
            }
            if verbose && r.added.is_empty() && r.removed.is_empty() {
                eprintln!("backup-tool: the catalog changed; reloaded");
            }
        }
        WatchReport::Failed(e) => {
            eprintln!("backup-tool: warning: cannot reload the backup: {e}")
        }
    });
}

/// Refuses a mount point that would surprise: missing, not a directory, already a mount,
/// not empty (its files would be hidden), or inside the backup itself (the tree would read
/// through its own mount).
fn check_mountpoint(repo: &Repository, dir: &Path) -> anyhow::Result<()> {
    if cfg!(windows) {
        // WinFsp wants a drive letter or a folder that does not exist yet.
        if dir.exists() && dir.as_os_str().len() > 2 {
            bail!(
                "mount point {} already exists: name a drive letter (X:) or a new folder",
                dir.display()
            );
        }
        return Ok(());
    }
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            clean_dead_mount(dir)?;
            std::fs::metadata(dir)
                .with_context(|| format!("cannot use mount point {}", dir.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mount point {} does not exist (create an empty directory first)",
                dir.display()
            )
        }
        Err(e) => bail!("cannot use mount point {}: {e}", dir.display()),
    };
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    let canon = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve mount point {}", dir.display()))?;
    // A dead mount's root attributes may still be cached for a moment; listing it must
    // reach the (dead) daemon.
    #[cfg(unix)]
    if is_mount_point(&canon)
        && std::fs::read_dir(&canon)
            .err()
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
    {
        clean_dead_mount(dir)?;
    }
    if is_mount_point(&canon) {
        bail!(
            "mount point {} is busy: something is already mounted there (unmount it with `fusermount3 -u {}`)",
            dir.display(),
            dir.display()
        );
    }
    let mut rd = std::fs::read_dir(&canon)
        .with_context(|| format!("cannot list mount point {}", dir.display()))?;
    if rd.next().is_some() {
        bail!(
            "mount point {} is not empty: use an empty directory",
            dir.display()
        );
    }
    if let Ok(root) = std::fs::canonicalize(repo.root()) {
        if canon.starts_with(&root) {
            bail!(
                "mount point {} lies inside the backup {}: choose a directory outside it",
                dir.display(),
                repo.root().display()
            );
        }
    }
    Ok(())
}

/// A mount whose process died (killed, crashed) answers every access with ENOTCONN until it
/// is unmounted. When it is one of ours (a FUSE mount named `backup:...`), a lazy unmount is
/// safe — nothing can be read through it anyway — so do it and say so; otherwise say how.
#[cfg(unix)]
fn clean_dead_mount(dir: &Path) -> anyhow::Result<()> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let ours = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines().any(|l| {
                let mut halves = l.split(" - ");
                let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
                    return false;
                };
                let at = a.split(' ').nth(4).map(unescape_mountinfo);
                let mut rest = b.split(' ');
                let fstype = rest.next().unwrap_or("");
                let source = rest.next().map(unescape_mountinfo).unwrap_or_default();
                at.as_deref().map(Path::new) == Some(abs.as_path())
                    && fstype.starts_with("fuse")
                    && source.starts_with("backup:")
            })
        })
        .unwrap_or(false);
    if !ours {
        bail!(
            "mount point {} is a dead mount (its process died: \"transport endpoint is not connected\"); run `fusermount3 -u {}` and try again",
            dir.display(),
            dir.display()
        );
    }
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&abs)
        .status();
    match status {
        Ok(s) if s.success() => {
            eprintln!(
                "backup-tool: a previous mount on {} died; cleaned it up (fusermount3 -u -z {})",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        _ => bail!(
            "a previous mount on {} died and could not be cleaned up; run `fusermount3 -u {}` and try again",
            dir.display(),
            dir.display()
        ),
    }
}

/// True when `dir` (canonical) is listed as a mount point in `/proc/self/mountinfo`, or sits
/// on another device than its parent where that file is missing.
fn is_mount_point(dir: &Path) -> bool {
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        return info.lines().any(|l| {
            l.split(' ')
                .nth(4)
                .map(|m| Path::new(&unescape_mountinfo(m)) == dir)
                .unwrap_or(false)
        });
    }
    if let (Ok(a), Some(Ok(b))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        use backup_platform::fs::file_id;
        if let (Some((da, _)), Some((db, _))) = (file_id(&a), file_id(&b)) {
            return da != db;
        }
    }
    false
}

/// Mount paths in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/mnt/plain"), "/mnt/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }
}
