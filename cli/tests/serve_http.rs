//! `backup-tool serve` speaks WebDAV and HTTP as clients expect: the mount's layout, sizes,
//! times, ranges, validators, HTML pages, names that round-trip, the link policy, nothing
//! writable, and a tree that follows the backup on disk. The client is curl.

use std::fs;
use std::os::unix::fs::MetadataExt;

use backup_tests::mount::wait_until;
use backup_tests::serve::{curl, fixture, get, have, status, Server};
use backup_tests::{text, Tree};

fn http_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The value of `name` in curl's `-i` output (first match, case-insensitive).
fn header(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn propfind(url: &str, depth: &str) -> (u16, String) {
    let out = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        &format!("Depth: {depth}"),
        "-w",
        "\n%{http_code}",
        url,
    ]);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let (xml, code) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), xml.to_owned())
}

fn hrefs(xml: &str) -> Vec<String> {
    xml.split("<D:href>")
        .skip(1)
        .filter_map(|s| s.split("</D:href>").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_mount_layout_with_correct_sizes_and_times_over_propfind_and_get() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let incs = env.increments();
    let s = Server::start(&env.dist);

    let (code, xml) = propfind(&s.url(""), "1");
    assert_eq!(code, 207);
    let mut top = hrefs(&xml);
    top.sort();
    assert_eq!(
        top,
        ["/", "/history/", "/increments/", "/mirror/", "/snapshots/"]
    );

    let (code, xml) = propfind(&s.url("snapshots/"), "1");
    assert_eq!(code, 207);
    let h = hrefs(&xml);
    for n in incs.iter().map(String::as_str).chain(["latest"]) {
        assert!(
            h.contains(&format!("/snapshots/{n}/")),
            "{n} missing from {h:?}"
        );
    }

    // Depth 0: the folder alone.
    let (code, xml) = propfind(&s.url("mirror/docs/"), "0");
    assert_eq!((code, hrefs(&xml)), (207, vec!["/mirror/docs/".to_owned()]));

    // Depth 1: each entry with its real size and time.
    let (code, xml) = propfind(&s.url("mirror/docs/"), "1");
    assert_eq!(code, 207);
    let big = env.mirror().join("docs/big.bin");
    let m = fs::metadata(&big).unwrap();
    let entry = xml
        .split("<D:response>")
        .find(|r| r.contains("<D:href>/mirror/docs/big.bin</D:href>"))
        .expect("big.bin listed");
    assert!(entry.contains(&format!(
        "<D:getcontentlength>{}</D:getcontentlength>",
        m.len()
    )));
    assert!(entry.contains(&format!(
        "<D:getlastmodified>{}</D:getlastmodified>",
        http_date(m.mtime())
    )));
    for name in [
        "plain.txt",
        ".hidden",
        "sub/",
        "a%20b%23c%25d%3F.txt",
        "caf%E9.txt",
    ] {
        assert!(
            xml.contains(&format!("<D:href>/mirror/docs/{name}</D:href>")),
            "{name} missing"
        );
    }

    // Depth infinity is refused, as RFC 4918 allows.
    let (code, xml) = propfind(&s.url(""), "infinity");
    assert_eq!(code, 403);
    assert!(xml.contains("propfind-finite-depth"));

    // GET and HEAD: bytes, length, validators.
    assert_eq!(get(&s.url("mirror/docs/big.bin")), fs::read(&big).unwrap());
    let out = curl(&["-I", &s.url("mirror/docs/big.bin")]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(header(&head, "content-length"), Some(m.len().to_string()));
    assert_eq!(header(&head, "last-modified"), Some(http_date(m.mtime())));
    assert!(header(&head, "etag").is_some());

    // Snapshots and history serve the stored versions.
    assert_eq!(
        get(&s.url(&format!("snapshots/{}/docs/plain.txt", incs[0]))),
        b"plain v1\n"
    );
    assert_eq!(
        get(&s.url("snapshots/latest/docs/plain.txt")),
        b"plain v2, longer\n"
    );
    assert_eq!(get(&s.url("mirror/docs/plain.txt")), b"plain v2, longer\n");
    let (code, xml) = propfind(&s.url("history/docs/plain.txt.versions/"), "1");
    assert_eq!(code, 207);
    assert_eq!(hrefs(&xml).len(), 3, "the folder and two versions: {xml}");

    assert_eq!(status(&[&s.url("mirror/docs/nope.txt")]), 404);
    assert!(
        s.stop().success(),
        "SIGTERM must stop the server with status 0"
    );
}

#[test]
fn ranges_validators_and_conditional_requests() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let s = Server::start(&env.dist);
    let url = s.url("mirror/docs/big.bin");
    let data = fs::read(env.mirror().join("docs/big.bin")).unwrap();

    let out = curl(&["-i", "-H", "Range: bytes=1000-1999", &url]);
    let resp = out.stdout;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(
        header(&head, "content-range").as_deref(),
        Some("bytes 1000-1999/300000")
    );
    assert_eq!(&resp[split..], &data[1000..2000]);

    // A suffix range.
    let out = curl(&["-H", "Range: bytes=-10", &url]);
    assert_eq!(out.stdout, &data[data.len() - 10..]);

    // Two ranges: a multipart answer holding both.
    let out = curl(&["-i", "-H", "Range: bytes=0-9,200000-200009", &url]);
    let body = out.stdout;
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 206"));
    assert!(text.contains("multipart/byteranges"));
    assert!(text.contains("Content-Range: bytes 200000-200009/300000"));
    assert!(body.windows(10).any(|w| w == &data[200000..200010]));

    // Too many ranges, and a range past the end, are refused.
    let many: Vec<String> = (0..200)
        .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
        .collect();
    let many = format!("Range: bytes={}", many.join(","));
    assert_eq!(status(&["-H", &many, &url]), 416);
    assert_eq!(status(&["-H", "Range: bytes=999999999-", &url]), 416);

    // Validators.
    let out = curl(&["-I", &url]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let etag = header(&head, "etag").unwrap();
    let modified = header(&head, "last-modified").unwrap();
    assert_eq!(
        status(&["-H", &format!("If-None-Match: {etag}"), &url]),
        304
    );
    assert_eq!(status(&["-H", "If-None-Match: \"other\"", &url]), 200);
    assert_eq!(
        status(&["-H", &format!("If-Modified-Since: {modified}"), &url]),
        304
    );
    assert_eq!(
        status(&[
            "-H",
            &format!("If-Modified-Since: {}", http_date(1_000_000_000)),
            &url
        ]),
        200
    );
    // Another file has another tag.
    let out = curl(&["-I", &s.url("mirror/docs/plain.txt")]);
    let other = header(&String::from_utf8_lossy(&out.stdout), "etag").unwrap();
    assert_ne!(etag, other);
}

#[test]
fn every_write_method_is_refused_and_changes_nothing() {
    if !have("curl") {
        return;
    }
    let env = fixture(true);
    let before = Tree::dist(&env.dist);
    let s = Server::start(&env.dist);
    let file = s.url("mirror/docs/plain.txt");
    let new = s.url("mirror/docs/new.txt");
    let folder = s.url("mirror/docs/");
    let newdir = s.url("mirror/docs/newdir");
    let dest = format!("Destination: {}", s.url("mirror/docs/moved.txt"));
    let lock = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>x</D:displayname></D:prop></D:set></D:propertyupdate>"#;
    let cases: Vec<Vec<&str>> = vec![
        vec!["-X", "PUT", "--data-binary", "overwritten", &file],
        vec!["-X", "PUT", "--data-binary", "created", &new],
        vec!["-X", "DELETE", &file],
        vec!["-X", "DELETE", &folder],
        vec!["-X", "MKCOL", &newdir],
        vec!["-X", "MOVE", "-H", &dest, &file],
        vec!["-X", "COPY", "-H", &dest, &file],
        vec!["-X", "PROPPATCH", "--data-binary", patch, &file],
        vec!["-X", "LOCK", "--data-binary", lock, &file],
        vec!["-X", "UNLOCK", "-H", "Lock-Token: <urn:uuid:x>", &file],
        vec!["-X", "POST", "--data-binary", "x", &file],
        vec!["-X", "PATCH", "--data-binary", "x", &file],
    ];
    for c in &cases {
        let code = status(c);
        assert!(code == 405 || code == 403, "{c:?} answered {code}");
    }
    // OPTIONS tells clients what they may do: nothing that writes.
    let out = curl(&["-i", "-X", "OPTIONS", &s.url("mirror/docs/")]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let allow = header(&head, "allow").unwrap_or_default();
    for m in ["GET", "PROPFIND"] {
        assert!(allow.contains(m), "{allow}");
    }
    for m in [
        "PUT",
        "DELETE",
        "MKCOL",
        "MOVE",
        "COPY",
        "PROPPATCH",
        "LOCK",
    ] {
        assert!(!allow.contains(m), "{m} offered in {allow}");
    }
    drop(s);
    assert_eq!(before, Tree::dist(&env.dist), "the backup changed");
}

#[test]
fn folders_are_html_pages_and_every_name_round_trips() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let s = Server::start(&env.dist);
    // Without the slash: redirected to the folder, so relative links work.
    let out = curl(&["-i", &s.url("mirror/docs")]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert_eq!(header(&head, "location").as_deref(), Some("/mirror/docs/"));

    let out = curl(&["-i", "-H", "Accept: text/html", &s.url("mirror/docs/")]);
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(page.starts_with("HTTP/1.1 200"));
    assert!(header(&page, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("href=\"../\""), "no link up");
    assert!(page.contains("href=\"/mirror/\""), "no breadcrumb");
    // Every link on the page fetches exactly the bytes of the file it names.
    let links: Vec<&str> = page
        .split("href=\"./")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    let mut expected: Vec<&str> = vec![
        ".hidden",
        "a%20b%23c%25d%3F.txt",
        "big.bin",
        "caf%E9.txt",
        "plain.txt",
        "sub/",
    ];
    expected.sort();
    let mut got = links.clone();
    got.sort();
    assert_eq!(got, expected);
    for l in links.iter().filter(|l| !l.ends_with('/')) {
        let raw: Vec<u8> = percent_decode(l);
        let on_disk = fs::read(
            env.mirror()
                .join("docs")
                .join(std::ffi::OsStr::from_bytes(&raw)),
        )
        .unwrap();
        assert_eq!(get(&s.url(&format!("mirror/docs/{l}"))), on_disk, "{l}");
    }
    // Sizes and times are on the page.
    assert!(page.contains("title=\"300000 bytes\""));
    // The non-UTF-8 name is shown readable and served under its raw bytes.
    assert!(page.contains("caf\u{fffd}.txt"));
    assert_eq!(get(&s.url("mirror/docs/caf%E9.txt")), b"latin-1 name\n");
    assert_eq!(status(&[&s.url("mirror/docs/caf%C3%A9.txt")]), 404);

    // History versions are listed oldest first (their names start with the time).
    let page =
        String::from_utf8_lossy(&get(&s.url("history/docs/plain.txt.versions/"))).into_owned();
    let versions: Vec<&str> = page
        .split("href=\"./")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(versions.len(), 2);
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted);
    assert_eq!(
        get(&s.url(&format!("history/docs/plain.txt.versions/{}", versions[0]))),
        b"plain v1\n"
    );
}

use std::os::unix::ffi::OsStrExt;

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn links_inside_a_view_are_served_and_others_are_listed_but_refused() {
    if !have("curl") {
        return;
    }
    let env = fixture(true);
    let s = Server::start(&env.dist);
    let big = fs::read(env.mirror().join("docs/big.bin")).unwrap();
    for view in ["mirror/docs", "snapshots/latest/docs"] {
        assert_eq!(get(&s.url(&format!("{view}/inlink"))), big, "{view}/inlink");
        for refused in ["outlink", "uplink", "dirlink", "dirlink/"] {
            assert_eq!(
                status(&[&s.url(&format!("{view}/{refused}"))]),
                403,
                "{view}/{refused}"
            );
        }
        // Never walked through, even to a file that exists behind it.
        assert_eq!(status(&[&s.url(&format!("{view}/dirlink/deep.txt"))]), 404);
        let (code, xml) = propfind(&s.url(&format!("{view}/")), "1");
        assert_eq!(code, 207);
        for l in ["inlink", "outlink", "uplink", "dirlink"] {
            assert!(
                xml.contains(&format!("{view}/{l}</D:href>")),
                "{l} not listed in {view}"
            );
        }
        let page = String::from_utf8_lossy(&get(&s.url(&format!("{view}/")))).into_owned();
        assert!(page.contains("/etc/passwd (link not served)"));
    }
    let out = curl(&[&s.url("mirror/docs/outlink")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root:"));
}

#[test]
fn a_backup_that_lands_while_serving_appears_and_a_pruned_one_vanishes() {
    if !have("curl") {
        return;
    }
    let env = fixture(false);
    let first = env.increments();
    let s = Server::start(&env.dist);
    assert_eq!(
        get(&s.url("snapshots/latest/docs/plain.txt")),
        b"plain v2, longer\n"
    );

    env.write("docs/plain.txt", b"v3 landed while serving\n");
    env.backup_ok(&["-q"]);
    let third = env.increments().last().unwrap().clone();
    wait_until("the new increment to appear", || {
        status(&[&s.url(&format!("snapshots/{third}/"))]) == 200
    });
    assert_eq!(
        get(&s.url("snapshots/latest/docs/plain.txt")),
        b"v3 landed while serving\n"
    );
    let (_, xml) = propfind(&s.url("history/docs/plain.txt.versions/"), "1");
    assert_eq!(hrefs(&xml).len(), 4, "the folder and three versions");

    let out = env.tool(&[env.dist.to_str().unwrap(), "prune", "--keep-last", "2"]);
    assert!(out.status.success(), "prune: {}", text(&out).1);
    wait_until("the pruned increment to vanish", || {
        status(&[&s.url(&format!("snapshots/{}/", first[0]))]) == 404
            && status(&[&s.url(&format!("increments/{}/", first[0]))]) == 404
    });
    assert_eq!(
        get(&s.url(&format!("snapshots/{}/docs/plain.txt", first[1]))),
        b"plain v2, longer\n"
    );
}
