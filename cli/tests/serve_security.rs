//! `backup-tool serve` is safe by default: loopback unless told otherwise, credentials on any
//! other address, TLS on request, no path out of the backup, and hostile requests (traversal,
//! huge range lists and bodies, thousands of idle connections) answered or refused while the
//! server stays alive and small.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use backup_tests::serve::{curl, fixture, get, have, raw_request, raw_status, status, Server};
use backup_tests::{bin, text, Tree};

#[test]
fn a_non_loopback_address_without_credentials_is_refused() {
    let env = fixture(false);
    for args in [
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["serve", "--listen", "[::]:0"],
        vec!["serve", "--listen", "0.0.0.0:0", "--user", "ann"],
    ] {
        let out = Command::new(bin("backup-tool"))
            .arg(&env.dist)
            .args(&args)
            .env_remove("BACKUP_SERVE_PASSWORD")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        assert!(stdout.is_empty(), "nothing served: {stdout}");
    }
}

#[test]
fn credentials_are_required_and_checked_on_a_non_loopback_bind() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let pw = env.dir.path().join("pw");
    std::fs::write(&pw, "s3cret pass\n").unwrap();
    // Every address of the machine; the test connects over loopback only.
    let s = Server::start_with(
        &env.dist,
        &[
            "--listen",
            "0.0.0.0:0",
            "--user",
            "ann",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        s.banner.contains("net use"),
        "no Windows hint:\n{}",
        s.banner
    );
    assert!(s.banner.contains("Connect to Server"), "no macOS hint");
    assert!(s.banner.contains("dav://"), "no GNOME hint");
    let url = format!("http://127.0.0.1:{}/mirror/docs/plain.txt", s.port);
    let out = curl(&["-i", &url]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    assert!(!head.contains("plain v2"));
    assert_eq!(status(&["-u", "ann:wrong", &url]), 401);
    assert_eq!(status(&["-u", "bob:s3cret pass", &url]), 401);
    assert_eq!(status(&["-u", "ann:s3cret pass", &url]), 200);
    assert_eq!(
        curl(&["-u", "ann:s3cret pass", &url]).stdout,
        b"plain v2, longer\n"
    );
    // Even PROPFIND and OPTIONS need them.
    assert_eq!(status(&["-X", "PROPFIND", "-H", "Depth: 1", &url]), 401);
}

#[test]
fn https_with_a_self_signed_certificate() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let env = fixture(false);
    let dir = env.dir.path();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(st.status.success(), "openssl: {}", text(&st).1);
    let s = Server::start_with(
        &env.dist,
        &[
            "--listen",
            "0.0.0.0:0",
            "--user",
            "ann",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("BACKUP_SERVE_PASSWORD", "from the environment")],
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let url = format!("https://127.0.0.1:{}/mirror/docs/big.bin", s.port);
    let ca = cert.to_str().unwrap();
    let out = curl(&["--cacert", ca, "-u", "ann:from the environment", "-f", &url]);
    assert!(out.status.success(), "https GET: {}", text(&out).1);
    assert_eq!(
        out.stdout,
        std::fs::read(env.mirror().join("docs/big.bin")).unwrap()
    );
    assert_eq!(status(&["--cacert", ca, &url]), 401);
    // The handshake really verifies against the test's own certificate...
    let out = curl(&["-u", "ann:from the environment", "-f", &url]);
    assert!(!out.status.success(), "an unknown CA must not verify");
    // ...and plain HTTP on the TLS port gets nothing.
    let out = curl(&[
        "-u",
        "ann:from the environment",
        "-f",
        &format!("http://127.0.0.1:{}/", s.port),
    ]);
    assert!(!out.status.success());
}

#[test]
fn paths_never_resolve_outside_the_backup() {
    let env = fixture(true);
    let before = Tree::dist(&env.dist);
    let s = Server::start(&env.dist);
    let attempts: &[&str] = &[
        "/../../../../etc/passwd",
        "/mirror/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/mirror/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/mirror/docs%2f..%2f..%2f..%2fetc%2fpasswd",
        "/mirror/%252e%252e/%252e%252e/etc/passwd",
        "/mirror/..%5c..%5c..%5cetc%5cpasswd",
        "/mirror/..\\..\\..\\etc\\passwd",
        "/mirror/docs/plain.txt%00.html",
        "/mirror/docs/./../../../etc/passwd",
        "//etc/passwd",
        "/snapshots/latest/docs/outlink",
        "/snapshots/latest/docs/uplink",
        "/mirror/docs/dirlink/../../../../etc/passwd",
    ];
    for path in attempts {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw_request(s.port, req.as_bytes(), Duration::from_secs(10));
        let code = raw_status(&resp);
        assert!(
            matches!(code, 400 | 403 | 404),
            "{path} answered {code}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(
            !String::from_utf8_lossy(&resp).contains("root:"),
            "{path} leaked /etc/passwd"
        );
    }
    // An absolute-form request line cannot name another host's path either.
    let resp = raw_request(
        s.port,
        b"GET http://x/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(!String::from_utf8_lossy(&resp).contains("root:"));
    drop(s);
    assert_eq!(before, Tree::dist(&env.dist));
}

fn propfind_raw(port: u16, headers: &str, body: &[u8]) -> u16 {
    let mut req = format!("PROPFIND /mirror/docs/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\nConnection: close\r\n{headers}\r\n").into_bytes();
    req.extend_from_slice(body);
    raw_status(&raw_request(port, &req, Duration::from_secs(20)))
}

#[test]
fn hostile_requests_are_refused_and_the_server_stays_alive_and_small() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let mut s = Server::start(&env.dist);
    let port = s.port;

    // PROPFIND bodies: huge (declared), huge (chunked, undeclared), malformed.
    let huge = format!("Content-Length: {}\r\n", 50 * 1024 * 1024);
    let code = propfind_raw(port, &huge, b"<?xml");
    assert!(
        matches!(code, 413 | 0),
        "50 MiB PROPFIND body answered {code}"
    );
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", 16384).as_bytes());
        chunked.extend_from_slice(&[b'<'; 16384]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // The server answers 413 (after 64 KiB here) and closes with the rest unread, so the
    // kernel may reset the connection before this client reads the answer: 413 or nothing,
    // never 207 (above too).
    let code = propfind_raw(port, "Transfer-Encoding: chunked\r\n", &chunked);
    assert!(
        matches!(code, 413 | 0),
        "1 MiB chunked PROPFIND body answered {code}"
    );
    let bad =
        b"<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop><unclosed></D:propfind>";
    let cl = format!("Content-Length: {}\r\n", bad.len());
    assert_eq!(propfind_raw(port, &cl, bad), 400);
    // Depth infinity, at the root.
    assert_eq!(
        status(&["-X", "PROPFIND", "-H", "Depth: infinity", &s.url("")]),
        403
    );
    // A range list of thousands of entries, and an absurd header.
    let ranges: Vec<String> = (0..5000).map(|i| format!("{i}-{i}")).collect();
    let req = format!(
        "GET /mirror/docs/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={}\r\nConnection: close\r\n\r\n",
        ranges.join(",")
    );
    let code = raw_status(&raw_request(port, req.as_bytes(), Duration::from_secs(10)));
    // 431 comes with the rest of the header unread, so as with the bodies above the kernel
    // may reset the connection before the answer is read (seen once on a fresh-clone CI run):
    // an answer or nothing, never the ranges; the server is shown alive further down.
    assert!(
        matches!(code, 416 | 431 | 0),
        "huge range list answered {code}"
    );
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let code = raw_status(&raw_request(port, req.as_bytes(), Duration::from_secs(10)));
    assert!(
        matches!(code, 0 | 400 | 431),
        "1 MiB header answered {code}"
    );
    // Garbage instead of HTTP.
    let _ = raw_request(port, &[0xffu8; 4096], Duration::from_secs(5));

    // Two thousand idle connections (more than the connection limit) must not lock out a
    // real client: the idlest ones are closed to make room. This process needs the
    // descriptors for them too.
    raise_fd_limit(4096);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connect #{}: {e}", idle.len()),
        }
    }
    // Half of them start a request and stall in the middle of its head.
    for c in idle.iter_mut().step_by(2) {
        use std::io::Write;
        let _ = c.write_all(b"GET /mirror/docs/plain.txt HTTP/1.1\r\nHost: x\r\n");
    }
    let out = curl(&["--max-time", "30", "-f", &s.url("mirror/docs/plain.txt")]);
    assert!(
        out.status.success(),
        "a real request was locked out: {}",
        text(&out).1
    );
    assert_eq!(out.stdout, b"plain v2, longer\n");
    assert_eq!(get(&s.url("mirror/docs/plain.txt")), b"plain v2, longer\n");
    let rss = s.rss_kib();
    eprintln!("server RSS with 2000 idle sockets: {rss} KiB");
    assert!(
        rss > 0 && rss < 256 * 1024,
        "server RSS {rss} KiB with 2000 idle sockets"
    );
    drop(idle);

    assert!(s.alive(), "the server died");
    assert_eq!(get(&s.url("mirror/docs/plain.txt")), b"plain v2, longer\n");
    assert!(s.stop().success());
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit).
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < want {
            rl.rlim_cur = want.min(rl.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
