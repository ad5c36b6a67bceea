//! The scheduling recipes in contrib/: systemd units pass `systemd-analyze verify` (with the
//! real binary and its generated man page), the launchd plist parses with Python's plistlib,
//! the Task Scheduler XML is well-formed, and every recipe's command line is one `backup`
//! accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use backup_tests::{bin, text};

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(rel)
}

/// A copy of `files` in a temp dir with the binary path replaced by the built one, man pages
/// of both binaries in `man1/` (the units' `Documentation=man:backup(1)` is checked), and a
/// runtime dir for `--user`.
fn unit_dir(files: &[&str], binary_spelling: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in files {
        let text = std::fs::read_to_string(contrib(f)).unwrap();
        let text = text.replace(binary_spelling, bin("backup").to_str().unwrap());
        let name = Path::new(f).file_name().unwrap();
        std::fs::write(t.path().join(name), text).unwrap();
    }
    let man = t.path().join("man1");
    for b in ["backup", "backup-tool"] {
        let out = Command::new(bin(b)).arg("man").arg(&man).output().unwrap();
        assert!(out.status.success(), "{b} man: {}", text(&out).1);
    }
    std::fs::create_dir(t.path().join("run")).unwrap();
    t
}

fn verify(dir: &Path, user: bool, units: &[&str]) {
    let mut c = Command::new("systemd-analyze");
    c.arg("verify");
    if user {
        c.arg("--user");
    }
    for u in units {
        c.arg(dir.join(u));
    }
    let out = c
        .env("MANPATH", dir)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .current_dir(dir)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let (so, se) = text(&out);
    assert!(out.status.success(), "{units:?}: {so}{se}");
    // Warnings (an unknown key, a bad value) do not fail verify; they must not be there.
    assert!(se.trim().is_empty(), "{units:?}: {se}");
}

#[test]
fn systemd_units_verify() {
    let t = unit_dir(
        &[
            "systemd/system/backup@.service",
            "systemd/system/backup@.timer",
            "systemd/system/backup-failure@.service",
        ],
        "/usr/local/bin/backup",
    );
    verify(
        t.path(),
        false,
        &[
            "backup@usb.service",
            "backup@usb.timer",
            "backup-failure@backup@usb.service.service",
        ],
    );
    let t = unit_dir(
        &[
            "systemd/user/backup.service",
            "systemd/user/backup.timer",
            "systemd/user/backup-failure.service",
        ],
        "%h/.cargo/bin/backup",
    );
    verify(
        t.path(),
        true,
        &["backup.service", "backup.timer", "backup-failure.service"],
    );
    // What the brief of a nightly unit asks for.
    let svc = std::fs::read_to_string(contrib("systemd/system/backup@.service")).unwrap();
    for want in ["OnFailure=", "Nice=", "IOSchedulingClass=idle"] {
        assert!(svc.contains(want), "{want}");
    }
    for timer in ["systemd/system/backup@.timer", "systemd/user/backup.timer"] {
        let t = std::fs::read_to_string(contrib(timer)).unwrap();
        assert!(t.contains("Persistent=true"), "{timer}");
    }
}

/// The arguments after the binary in each recipe are accepted by `backup` (an unknown flag
/// before `--help` is an error).
#[test]
fn recipe_command_lines_are_valid() {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for unit in [
        "systemd/system/backup@.service",
        "systemd/user/backup.service",
    ] {
        let t = std::fs::read_to_string(contrib(unit)).unwrap();
        let exec = t
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        lines.push((
            unit.into(),
            exec.split_whitespace().skip(1).map(String::from).collect(),
        ));
    }
    let cron = std::fs::read_to_string(contrib("cron/backup.cron")).unwrap();
    let entry = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let fields: Vec<&str> = entry.split_whitespace().collect();
    assert!(fields[5].ends_with("/backup"), "{entry}");
    lines.push((
        "cron".into(),
        fields[6..].iter().map(|s| s.to_string()).collect(),
    ));
    for (what, args) in lines {
        let out = Command::new(bin("backup"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {args:?}: {}", text(&out).1);
    }
}

#[test]
fn launchd_plist_and_task_scheduler_xml_parse() {
    let plist = contrib("launchd/org.example.backup.plist");
    let xml = contrib("windows/backup-task.xml");
    let script = r#"
import plistlib, sys, xml.etree.ElementTree as ET
with open(sys.argv[1], 'rb') as f:
    p = plistlib.load(f)
args = p['ProgramArguments']
assert args[0].endswith('/backup'), args
assert '--config' in args and p['Label'] and p['StartCalendarInterval']['Hour'] == 2
ns = {'t': 'http://schemas.microsoft.com/windows/2004/02/mit/task'}
root = ET.parse(sys.argv[2]).getroot()
exe = root.find('t:Actions/t:Exec/t:Command', ns).text
assert exe.endswith('backup.exe'), exe
assert root.find('t:Settings/t:StartWhenAvailable', ns).text == 'true'
print(' '.join(args[1:]))
print(root.find('t:Actions/t:Exec/t:Arguments', ns).text)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&plist)
        .arg(&xml)
        .output()
        .expect("python3");
    let (so, se) = text(&out);
    assert!(out.status.success(), "{se}");
    // Both command lines are ones `backup` accepts.
    for line in so.lines() {
        let out = Command::new(bin("backup"))
            .args(line.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", text(&out).1);
    }
}
