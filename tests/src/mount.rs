//! Harness of the mount tests: run `backup-tool BACKUP mount DIR` for real, wait until the
//! kernel lists the mount, and always unmount afterwards, even when a test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A generous bound for things that normally take milliseconds; never a timing assertion.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// True when `dir` is a mount point according to the kernel.
pub fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(dir.as_str())))
        .unwrap_or(false)
}

/// Polls `cond` until it holds or [`DEADLINE`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `backup-tool mount`. Dropping it unmounts (SIGTERM, then `fusermount3 -u` /
/// `umount -l` if the process did not manage).
pub struct MountedBackup {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl MountedBackup {
    pub fn start(dist: &Path, dir: &Path) -> MountedBackup {
        Self::start_with(dist, dir, &[])
    }

    pub fn start_with(dist: &Path, dir: &Path, extra: &[&str]) -> MountedBackup {
        Self::spawn(dist, dir, extra, Stdio::inherit())
    }

    /// Like [`MountedBackup::start_with`], with the mount's stderr written to `log`.
    pub fn start_logged(dist: &Path, dir: &Path, extra: &[&str], log: &Path) -> MountedBackup {
        let f = fs::File::create(log).expect("mount log");
        Self::spawn(dist, dir, extra, Stdio::from(f))
    }

    fn spawn(dist: &Path, dir: &Path, extra: &[&str], stderr: Stdio) -> MountedBackup {
        fs::create_dir_all(dir).expect("mount dir");
        let dir = fs::canonicalize(dir).expect("canonical mount dir");
        let child = Command::new(crate::bin("backup-tool"))
            .arg(dist)
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn backup-tool mount");
        let mut m = MountedBackup {
            dir,
            child: Some(child),
        };
        let start = Instant::now();
        while !is_mounted(&m.dir) {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("backup-tool mount exited early: {status}");
            }
            assert!(start.elapsed() < DEADLINE, "mount never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the process to end.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MountedBackup {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .status();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
