//! The HTML page a browser gets for a folder: name, size and time of each entry, links down
//! into folders and files and up to every ancestor. Plain HTML and a little CSS, no script, so
//! it works on any device.

use std::fmt::Write as _;
use std::time::SystemTime;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::davfs::{Entry, Served};

/// Everything but the unreserved characters of RFC 3986: a name's bytes (even non-UTF-8 ones)
/// always come back exactly, and `:` or `#` in a name can never read as a scheme or fragment.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode_segment(name: &[u8]) -> String {
    percent_encode(name, SEGMENT).to_string()
}

/// `/a/b c/` from decoded components, each percent-encoded, with `prefix` in front.
pub fn encode_path(segs: &[Vec<u8>], dir: bool) -> String {
    let mut s = String::from("/");
    for (i, seg) in segs.iter().enumerate() {
        s.push_str(&encode_segment(seg));
        if dir || i + 1 < segs.len() {
            s.push('/');
        }
    }
    s
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn shown(name: &[u8]) -> String {
    escape(&String::from_utf8_lossy(name))
}

fn time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}\
h1{font-size:1.2em;font-weight:normal;word-break:break-all}\
h1 a{text-decoration:none}\
table{border-collapse:collapse;min-width:60%}\
th,td{padding:.25em .9em;text-align:left;white-space:nowrap}\
td.n{white-space:normal;word-break:break-all}\
th{border-bottom:1px solid #ccc}\
td.s{text-align:right;font-variant-numeric:tabular-nums}\
td.t{font-variant-numeric:tabular-nums;color:#555}\
tr:hover{background:#f3f3f3}\
.note{color:#888}\
footer{margin-top:1.5em;color:#888;font-size:.85em}";

/// The page for the folder at `segs` (decoded components) with its `entries` in the order
/// given: folders first, then files, each by name (history versions are named by time, so
/// that order is their age).
pub fn render(segs: &[Vec<u8>], mut entries: Vec<Entry>) -> String {
    entries.sort_by(|a, b| {
        let ad = matches!(a.served, Served::Dir(_));
        let bd = matches!(b.served, Served::Dir(_));
        bd.cmp(&ad).then_with(|| a.name.cmp(&b.name))
    });
    let mut title = String::from("/");
    for s in segs {
        title.push_str(&String::from_utf8_lossy(s));
        title.push('/');
    }
    let mut h = String::with_capacity(4096 + entries.len() * 200);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>{} (backup, read-only)</title><style>{STYLE}</style></head><body>\n<h1>",
        escape(&title)
    );
    // Breadcrumbs: every ancestor is one click away.
    let _ = write!(h, "<a href=\"/\">backup</a> /");
    for i in 0..segs.len() {
        let _ = write!(
            h,
            " <a href=\"{}\">{}</a> /",
            encode_path(&segs[..=i], true),
            shown(&segs[i])
        );
    }
    h.push_str("</h1>\n<table><thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead><tbody>\n");
    if !segs.is_empty() {
        h.push_str("<tr><td class=\"n\"><a href=\"../\">../</a></td><td class=\"s\"></td><td class=\"t\"></td></tr>\n");
    }
    for e in &entries {
        let href = encode_segment(&e.name);
        let name = shown(&e.name);
        match &e.served {
            Served::Dir(a) => {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"n\"><a href=\"./{href}/\">{name}/</a></td><td class=\"s\"></td><td class=\"t\">{}</td></tr>",
                    time(a.mtime)
                );
            }
            Served::File(a) => {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"n\"><a href=\"./{href}\">{name}</a></td><td class=\"s\" title=\"{} bytes\">{}</td><td class=\"t\">{}</td></tr>",
                    a.size,
                    size(a.size),
                    time(a.mtime)
                );
            }
            Served::RefusedLink { link, target } => {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"n\">{name} <span class=\"note\">&rarr; {} (link not served)</span></td><td class=\"s\"></td><td class=\"t\">{}</td></tr>",
                    escape(&target.to_string_lossy()),
                    time(link.mtime)
                );
            }
        }
    }
    let _ = write!(
        h,
        "</tbody></table>\n<footer>{} entries &middot; read-only &middot; the same tree is a WebDAV share: connect a file manager or rclone to this address</footer>\n</body></html>\n",
        entries.len()
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_to_unreserved_ascii_and_back() {
        let names: [&[u8]; 5] = [
            b"a b#c%d?.txt",
            b"caf\xe9.txt",
            b"x:y",
            b"-_.~",
            b"\xff\x00/",
        ];
        for n in names {
            let e = encode_segment(n);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)),
                "{e}"
            );
            let back: Vec<u8> = percent_encoding::percent_decode(e.as_bytes()).collect();
            assert_eq!(back, n);
        }
        assert_eq!(encode_segment(b"caf\xe9.txt"), "caf%E9.txt");
        assert_eq!(
            encode_path(&[b"a b".to_vec(), b"c".to_vec()], true),
            "/a%20b/c/"
        );
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
