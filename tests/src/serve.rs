//! Harness of the `serve` tests: run `backup-tool BACKUP serve` for real, learn its address
//! from what it prints, talk to it with real clients (curl, rclone, davfs2, Chromium, raw
//! sockets), and always stop it afterwards, even when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A generous bound for things that normally take milliseconds; never a timing assertion.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// True when the program `name` is installed. Without it a test is skipped, except under
/// `CI=true`, where a missing client fails the test (`.ci/run` installs them all).
pub fn have(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            !crate::capability::under_ci(),
            "{name} is not installed (add its Debian package to .ci/run)"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

/// A running `backup-tool serve`. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (no trailing slash), or https.
    pub base: String,
    pub port: u16,
    /// Everything the server printed on stdout up to and including its URL line.
    pub banner: String,
}

impl Server {
    /// Serves `dist` on an ephemeral loopback port.
    pub fn start(dist: &Path) -> Server {
        Self::start_with(dist, &["--listen", "127.0.0.1:0"], &[])
    }

    pub fn start_with(dist: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(crate::bin("backup-tool"));
        cmd.arg(dist)
            .arg("serve")
            .args(args)
            .env_remove("BACKUP_SERVE_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn backup-tool serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut banner = String::new();
            let mut line = String::new();
            let mut sent = false;
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                banner.push_str(&line);
                if !sent && line.starts_with("Press Ctrl-C") {
                    let _ = tx.send(banner.clone());
                    sent = true;
                }
                line.clear();
            }
            if !sent {
                let _ = tx.send(banner);
            }
        });
        let banner = match rx.recv_timeout(DEADLINE) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("backup-tool serve printed no address");
            }
        };
        let url = banner
            .lines()
            .find_map(|l| {
                l.strip_prefix("Serving ")
                    .and_then(|r| r.rsplit(" at ").next())
            })
            .map(str::to_owned);
        let Some(url) = url else {
            let st = child.wait();
            panic!("backup-tool serve did not start ({st:?}); it printed:\n{banner}");
        };
        let base = url.trim_end_matches('/').to_owned();
        let port = base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the URL");
        Server {
            child: Some(child),
            base,
            port,
            banner,
        }
    }

    /// The URL of a path below the root (`rel` already percent-encoded, no leading slash).
    pub fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("backup-tool serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs curl with `args` (silent, no progress, path sent as is).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--path-as-is", "--max-time", "60"])
        .args(args)
        .output()
        .expect("run curl")
}

/// The HTTP status curl saw for `args`.
pub fn status(args: &[&str]) -> u16 {
    let out = curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat());
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Body of a successful GET (panics on any other status).
pub fn get(url: &str) -> Vec<u8> {
    let out = curl(&["-f", url]);
    assert!(
        out.status.success(),
        "GET {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends raw bytes on a fresh connection to `port` and returns what came back until the
/// server closed or `wait` passed.
pub fn raw_request(port: u16, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    while start.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A signal is not the end of the answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    out
}

/// The status code of a raw HTTP response.
pub fn raw_status(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Pseudo-random bytes (xorshift), so ranges and copies are checked on data that is not all
/// one byte.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A backup of `docs/` with two increments: awkward names (space, `#`, `%`, `?`, a dot-file,
/// a non-UTF-8 name), a 300 KB file, a subfolder and, with `links`, four symlinks (one to a
/// file in the tree, one absolute out of it, one climbing out of it, one to a folder).
pub fn fixture(links: bool) -> crate::TestEnv {
    fixture_with(links, true)
}

/// [`fixture`], optionally without the non-UTF-8 name (for clients that cannot keep one).
pub fn fixture_with(links: bool, latin1: bool) -> crate::TestEnv {
    let env = crate::TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"]}));
    env.write("docs/plain.txt", b"plain v1\n");
    env.write("docs/a b#c%d?.txt", b"awkward name\n");
    env.write("docs/.hidden", b"dot-file\n");
    env.write("docs/big.bin", &noise(7, 300_000));
    env.write("docs/sub/deep.txt", b"deep\n");
    if latin1 {
        env.write_raw("docs", b"caf\xe9.txt", b"latin-1 name\n");
    }
    if links {
        let d = env.src.join("docs");
        std::os::unix::fs::symlink("big.bin", d.join("inlink")).expect("symlink");
        std::os::unix::fs::symlink("/etc/passwd", d.join("outlink")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../../etc/passwd", d.join("uplink"))
            .expect("symlink");
        std::os::unix::fs::symlink("sub", d.join("dirlink")).expect("symlink");
    }
    env.backup_ok(&["-q"]);
    env.write("docs/plain.txt", b"plain v2, longer\n");
    env.backup_ok(&["-q"]);
    env
}
