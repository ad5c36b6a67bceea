//! A real exFAT file system for tests: an image on a loop device, mounted with the FUSE
//! driver (packages exfatprogs and exfat-fuse).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount point, loop device and image, undone in reverse order whatever happens.
pub struct ExFat {
    pub mnt: PathBuf,
    loopdev: Option<String>,
    mounted: bool,
}

impl Drop for ExFat {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
            if Path::new(&self.mnt).join("dist").exists() {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(dev) = &self.loopdev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An exFAT file system of `bytes` (an image under `dir`, on a loop device, through the FUSE
/// driver) mounted at `dir/usb`.
/// `Err` only when no loop device can be set up; panics on any later failure.
pub fn mount_exfat(dir: &Path, bytes: u64) -> Result<ExFat, String> {
    let img = dir.join("exfat.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(bytes))
        .expect("image file");
    let mnt = dir.join("usb");
    std::fs::create_dir(&mnt).expect("mount point");
    let mut guard = ExFat {
        mnt: mnt.clone(),
        loopdev: None,
        mounted: false,
    };
    // Only a missing loop device is a capability (see `require`); every other failure fails
    // the test.
    let dev = run(
        "losetup",
        &["-f".as_ref(), "--show".as_ref(), img.as_os_str()],
    )?;
    guard.loopdev = Some(dev.clone());
    run("mkfs.exfat", &[dev.as_ref()]).expect("mkfs.exfat (package exfatprogs)");
    run("mount.exfat-fuse", &[dev.as_ref(), mnt.as_os_str()])
        .expect("mount.exfat-fuse (package exfat-fuse)");
    guard.mounted = true;
    Ok(guard)
}
