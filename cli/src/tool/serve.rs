//! `backup-tool serve`: the mount's tree as a read-only WebDAV share (and HTML pages for
//! browsers), for machines without FUSE or WinFsp, in the foreground until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backup_core::Repository;
use backup_mountfs::{BackupFs, INCREMENTS, MIRROR, SNAPSHOTS};
use backup_webdav::{BasicAuth, Config, LinkScope, Server};

use crate::exit;

/// How often the backup is checked for new or removed increments (as the mount does).
const POLL: Duration = Duration::from_secs(1);

/// Where the password may come from instead of --password-file.
pub const PASSWORD_ENV: &str = "BACKUP_SERVE_PASSWORD";

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Layout (the same as `mount`):
  mirror/  increments/<name>/  snapshots/<name>/  snapshots/latest/  history/<path>/

Everything is read-only: every write method is refused. Symbolic links are served as the file
they point to when that file lies in the same view (mirror/, one snapshot, one increment);
any other link is listed but refused.

Examples:
  backup-tool /media/usb/backup serve
  backup-tool /media/usb/backup serve --listen 0.0.0.0:8443 --user me \\
      --password-file ~/.backup-pass --tls-cert cert.pem --tls-key key.pem")]
pub struct Args {
    /// Address and port to listen on. Anything but a loopback address needs --user and a
    /// password.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// User name clients must give (HTTP basic authentication).
    #[arg(long)]
    pub user: Option<String>,
    /// File whose first line is the password (or set BACKUP_SERVE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// PEM certificate (chain) to serve HTTPS with; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most connections open at once; when full, the longest-idle one is closed.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_connections: usize,
}

/// The address to bind: `ADDR:PORT`, `[V6]:PORT`, or a bare port on 127.0.0.1.
fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().with_context(|| {
        format!("--listen {s}: expected ADDR:PORT, like 127.0.0.1:8080 or [::1]:8080")
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The credentials asked for on the command line, or a one-line reason to refuse.
fn credentials(args: &Args) -> Result<Option<BasicAuth>, String> {
    let from_env = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let password = match (&args.password_file, from_env) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read password file {}: {e}", f.display()))?;
            let line = text.lines().next().unwrap_or("").to_owned();
            if line.is_empty() {
                return Err(format!("password file {} is empty", f.display()));
            }
            Some(line)
        }
        (None, env) => env,
    };
    match (&args.user, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(BasicAuth::new(u, &p))),
        (Some(_), Some(_)) => Err("--user must not be empty".into()),
        (Some(_), None) => Err(format!(
            "--user needs a password: --password-file FILE or {PASSWORD_ENV}"
        )),
        (None, Some(_)) if args.password_file.is_some() => {
            Err("--password-file needs --user".into())
        }
        (None, _) => Ok(None),
    }
}

/// How far a link at `segs` may point: within `mirror/`, one increment or one snapshot.
/// Links in `history/` are never followed (a version's folder is not where it lived).
fn link_scope() -> LinkScope {
    Arc::new(|segs: &[Vec<u8>]| {
        let top = segs.first().map(Vec::as_slice)?;
        if top == MIRROR.as_bytes() {
            Some(1)
        } else if (top == SNAPSHOTS.as_bytes() || top == INCREMENTS.as_bytes()) && segs.len() > 2 {
            Some(2)
        } else {
            None
        }
    })
}

/// Raises the open-file limit to what the system allows (each connection is one descriptor)
/// and returns the connection limit that fits under it.
fn fit_connections(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
            let target = rl.rlim_max.min(65_536);
            if rl.rlim_cur < target {
                let raised = libc::rlimit {
                    rlim_cur: target,
                    rlim_max: rl.rlim_max,
                };
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                    rl.rlim_cur = target;
                }
            }
            // Leave room for the backing files being read and the metadata.
            let room = (rl.rlim_cur as usize).saturating_sub(128).max(16);
            return wanted.min(room);
        }
        wanted
    }
    #[cfg(not(unix))]
    {
        wanted
    }
}

pub fn run(repo: &Repository, args: &Args) -> anyhow::Result<i32> {
    super::one_malloc_arena();
    let addr = match parse_listen(&args.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backup-tool: {e:#}");
            return Ok(exit::REFUSED);
        }
    };
    let auth = match credentials(args) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("backup-tool: {msg}");
            return Ok(exit::REFUSED);
        }
    };
    if !is_loopback(addr.ip()) && auth.is_none() {
        eprintln!(
            "backup-tool: refusing to serve on {addr} without credentials: give --user and --password-file (or {PASSWORD_ENV}), or listen on 127.0.0.1"
        );
        return Ok(exit::REFUSED);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => match backup_webdav::server_config(c, k) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("backup-tool: {e}");
                return Ok(exit::REFUSED);
            }
        },
        _ => None,
    };
    let cfg = Config {
        auth,
        tls,
        max_connections: fit_connections(args.max_connections),
        ..Config::default()
    };

    let fs = Arc::new(BackupFs::open(repo.clone())?);
    fs.start_prefetch();
    let loader = Arc::clone(&fs);
    // The global -v (log each reload).
    let verbose = crate::term::verbose() > 0;
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let problems = loader.load_metadata();
        if verbose {
            eprintln!(
                "backup-tool: metadata loaded in {:.3} s",
                started.elapsed().as_secs_f64()
            );
        }
        for p in &problems {
            eprintln!("backup-tool: warning: {}: {}", p.file, p.message);
        }
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    let https = cfg.tls.is_some();
    let has_auth = cfg.auth.is_some();
    let server = Server::new(Arc::clone(&fs), link_scope(), cfg);
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("backup-tool: cannot listen on {addr}: {e}");
                return Ok(exit::REFUSED);
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let fs = Arc::clone(&fs);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || watch(&fs, &stop))
        };
        let end = shutdown_signal().await?;
        print_howto(repo, bound, https, has_auth);
        let result = server.run(listener, end).await;
        stop.store(true, Ordering::Relaxed);
        drop(watcher);
        result.context("server failed")?;
        Ok(exit::SUCCESS)
    })
}

/// Resolves at the first Ctrl-C or SIGTERM (SIGHUP too on Unix). The handlers are installed
/// before this returns, so a signal sent as soon as the address is printed is not lost.
async fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        Ok(async move {
            let name = tokio::select! {
                _ = int.recv() => "interrupted",
                _ = term.recv() => "terminated",
                _ = hup.recv() => "hangup",
            };
            eprintln!("backup-tool: {name}: stopping the server");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("backup-tool: interrupted: stopping the server");
        })
    }
}

fn print_howto(repo: &Repository, bound: SocketAddr, https: bool, auth: bool) {
    let scheme = if https { "https" } else { "http" };
    let host = match bound.ip() {
        ip if ip.is_unspecified() => "THIS-MACHINE".to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let port = bound.port();
    let url = format!("{scheme}://{host}:{port}/");
    println!("Serving {} read-only at {url}", repo.root().display());
    if bound.ip().is_unspecified() {
        println!("  (listening on every address; THIS-MACHINE is this computer's name or address)");
    }
    let dav = if https { "davs" } else { "dav" };
    println!("Connect with:");
    println!("  a browser   {url}");
    println!("  Windows     Explorer > This PC > Map network drive > {url}");
    println!(
        "              or: net use Z: {url}{}",
        if auth { " /user:NAME" } else { "" }
    );
    if auth && !https {
        println!(
            "              (Windows sends a password only over HTTPS: add --tls-cert/--tls-key)"
        );
    }
    println!("  macOS       Finder > Go > Connect to Server (Cmd-K) > {url}");
    println!("  Linux       GNOME Files > Other Locations > {dav}://{host}:{port}/");
    println!("              rclone lsf :webdav: --webdav-url {url}");
    println!("              mount -t davfs {url} /mnt/backup   (davfs2)");
    if auth && !https {
        println!("Warning: the password travels unencrypted without --tls-cert/--tls-key.");
    }
    println!("Press Ctrl-C to stop.");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Polls the backup for new or removed increments until `stop`, as the mount does; there is
/// no kernel cache to invalidate, so the next request sees the new tree.
fn watch(fs: &BackupFs, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        match fs.refresh() {
            Ok(Some(r)) => {
                for n in &r.added {
                    eprintln!("backup-tool: new increment {n}");
                }
                for n in &r.removed {
                    eprintln!("backup-tool: increment {n} is gone");
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("backup-tool: warning: cannot reload the backup: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn loopback_is_only_127_and_1() {
        assert!(is_loopback("127.0.0.2".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
        assert!(!is_loopback("192.168.1.2".parse().unwrap()));
    }

    #[test]
    fn links_follow_only_within_a_view() {
        let s = link_scope();
        let p = |v: &[&str]| v.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(s(&p(&["mirror", "a"])), Some(1));
        assert_eq!(s(&p(&["snapshots", "latest", "a"])), Some(2));
        assert_eq!(s(&p(&["increments", "x", "track", "a"])), Some(2));
        assert_eq!(s(&p(&["history", "a", "v"])), None);
    }
}
