//! What a test needs from the machine (root, FUSE, a loop device, a tmpfs, `setpriv`,
//! `script`), and the one rule for when it is missing: under `CI=true` the test fails naming
//! the capability; elsewhere it says so in one line on stderr and returns without testing.
//!
//! ```no_run
//! use backup_tests::capability::{require, Tmpfs};
//! # let dir = std::path::Path::new("/tmp/x");
//! let Some(tmpfs) = require("tmpfs mount (mount -t tmpfs)", Tmpfs::mount(dir, "8m")) else {
//!     return;
//! };
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the tests run in CI: `CI` is set to anything but empty, `0` or `false`.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
        .unwrap_or(false)
}

/// `Some(value)` when `probe` found the capability. When it is missing: under CI a panic
/// naming `capability` and why; elsewhere one `SKIPPED:` line on stderr and `None` (the test
/// then returns, having tested nothing).
pub fn require<T>(capability: &str, probe: Result<T, String>) -> Option<T> {
    match decide(under_ci(), capability, probe) {
        Decision::Present(v) => Some(v),
        Decision::Skip(line) => {
            eprintln!("{line}");
            None
        }
        Decision::Fail(msg) => panic!("{msg}"),
    }
}

/// What [`require`] does, without the environment: separated so its rule can be unit-tested.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T> {
    Present(T),
    Skip(String),
    Fail(String),
}

pub fn decide<T>(ci: bool, capability: &str, probe: Result<T, String>) -> Decision<T> {
    match probe {
        Ok(v) => Decision::Present(v),
        Err(why) => {
            let why = why.trim().replace('\n', " | ");
            if ci {
                Decision::Fail(format!(
                    "missing capability: {capability}: {why} (CI=true: a test that needs it \
                     must not pass without it)"
                ))
            } else {
                Decision::Skip(format!(
                    "SKIPPED: missing capability: {capability}: {why} (under CI=true this fails)"
                ))
            }
        }
    }
}

/// Runs `cmd`; `Ok(stdout)` on success, else `Err` with the program, exit status and stderr.
pub fn run_probe(cmd: &mut Command) -> Result<String, String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{prog} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `Ok` when this process runs as root.
pub fn root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    match unsafe { libc::geteuid() } {
        0 => Ok(()),
        uid => Err(format!("running as uid {uid}, not root")),
    }
}

/// A tmpfs of `size` (mount's `size=` syntax) on `dir`, lazily unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        run_probe(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        )?;
        Ok(Tmpfs(dir.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_capabilities_pass_their_value_through() {
        assert_eq!(decide(true, "x", Ok(7)), Decision::Present(7));
        assert_eq!(decide(false, "x", Ok(7)), Decision::Present(7));
    }

    #[test]
    fn missing_under_ci_fails_naming_the_capability_and_why() {
        match decide::<()>(
            true,
            "loop device (losetup)",
            Err("losetup failed\nno".into()),
        ) {
            Decision::Fail(m) => {
                assert!(m.contains("loop device (losetup)"), "{m}");
                assert!(m.contains("losetup failed | no"), "one line: {m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_outside_ci_is_one_loud_line() {
        match decide::<()>(false, "FUSE", Err("no /dev/fuse".into())) {
            Decision::Skip(m) => {
                assert!(m.starts_with("SKIPPED: missing capability: FUSE"), "{m}");
                assert!(!m.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failing_commands_are_reported_with_their_stderr() {
        let e = run_probe(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(e.contains("nope") && e.contains('3'), "{e}");
        assert!(run_probe(&mut Command::new("/nonexistent/program")).is_err());
        assert_eq!(run_probe(Command::new("echo").arg("hi")).unwrap(), "hi");
    }
}
