//! Compares ways to stat-walk a source tree, to choose the scan's walker by measurement.
//!
//! `cargo run --release -p backup-core --example scan_walkers -- DIR [ROUNDS]`
//! (driven by `bench/scan_walkers.sh`). Each walker visits every entry below DIR and `lstat`s
//! every non-directory, counting files and bytes; the best of ROUNDS runs is printed, with its
//! ratio to the plain `walkdir` walk. The last lines run the real scan with a selection of
//! everything (`include_dirs: ["."]`), which also matches globs and builds the entries.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backup_core::config::Config;

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Count {
    files: u64,
    bytes: u64,
}

fn walkdir_serial(root: &Path) -> Count {
    let mut c = Count::default();
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        if !e.file_type().is_dir() {
            if let Ok(m) = e.metadata() {
                c.files += 1;
                c.bytes += m.len();
            }
        }
    }
    c
}

fn std_recursive(root: &Path) -> Count {
    fn go(dir: &Path, c: &mut Count) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                go(&p, c);
            } else if let Ok(m) = std::fs::symlink_metadata(&p) {
                c.files += 1;
                c.bytes += m.len();
            }
        }
    }
    let mut c = Count::default();
    go(root, &mut c);
    c
}

/// Directory fds and `fstatat` by name: the kernel resolves one component per `lstat` instead
/// of the whole path.
#[cfg(unix)]
fn openat_serial(root: &Path) -> Count {
    use rustix::fs::{openat, statat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
    fn go(dir: rustix::fd::OwnedFd, c: &mut Count) {
        let Ok(entries) = Dir::read_from(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if e.file_type() == FileType::Directory {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                if let Ok(fd) = openat(&dir, name, flags, Mode::empty()) {
                    go(fd, c);
                }
            } else if let Ok(st) = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                c.files += 1;
                c.bytes += st.st_size as u64;
            }
        }
    }
    let mut c = Count::default();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if let Ok(fd) = openat(CWD, root, flags, Mode::empty()) {
        go(fd, &mut c);
    }
    c
}

/// jwalk with the `lstat`s done inside `process_read_dir`, i.e. on the rayon workers.
fn jwalk_parallel(root: &Path, threads: usize) -> Count {
    let walk = jwalk::WalkDirGeneric::<((), Option<u64>)>::new(root)
        .skip_hidden(false)
        .follow_links(false)
        .parallelism(jwalk::Parallelism::RayonNewPool(threads))
        .process_read_dir(|_, _, _, children| {
            for child in children.iter_mut().flatten() {
                if !child.file_type.is_dir() {
                    child.client_state = child.metadata().ok().map(|m| m.len());
                }
            }
        });
    let mut c = Count::default();
    for e in walk.into_iter().flatten() {
        if let Some(len) = e.client_state {
            c.files += 1;
            c.bytes += len;
        }
    }
    c
}

fn our_scan(config: &Config, threads: usize) -> Count {
    let _ = threads;
    let out = backup_core::scan::scan(config);
    Count {
        files: out.entries.len() as u64,
        bytes: out.entries.iter().map(|e| e.size).sum(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let root = PathBuf::from(args.next().ok_or("usage: scan_walkers DIR [ROUNDS]")?);
    let rounds: usize = args
        .next()
        .map(|s| s.to_string_lossy().parse())
        .transpose()?
        .unwrap_or(3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let tmp = tempfile::tempdir()?;
    let cfg_path = tmp.path().join("config.json");
    std::fs::write(
        &cfg_path,
        serde_json::json!({
            "src": root,
            "dist": tmp.path().join("dist"),
            "include_dirs": ["."],
        })
        .to_string(),
    )?;
    let config = Config::load(&cfg_path)?;

    // Warm the dentry/inode caches once so every walker sees the same state.
    let reference = walkdir_serial(&root);
    type Walker<'a> = Box<dyn Fn() -> Count + 'a>;
    let mut walkers: Vec<(String, Walker)> = vec![
        (
            "walkdir (serial)".into(),
            Box::new(|| walkdir_serial(&root)),
        ),
        (
            "std::fs recursive (serial)".into(),
            Box::new(|| std_recursive(&root)),
        ),
    ];
    #[cfg(unix)]
    walkers.push((
        "openat+fstatat (serial)".into(),
        Box::new(|| openat_serial(&root)),
    ));
    walkers.push((
        format!("jwalk, lstat on {threads} rayon threads"),
        Box::new(|| jwalk_parallel(&root, threads)),
    ));
    walkers.push((
        "jwalk, 1 thread".into(),
        Box::new(|| jwalk_parallel(&root, 1)),
    ));
    walkers.push((
        "backup_core::scan, 1 thread".into(),
        Box::new(|| our_scan(&config, 1)),
    ));
    walkers.push((
        format!("backup_core::scan, {threads} threads"),
        Box::new(|| our_scan(&config, threads)),
    ));

    // `ONLY=substring` keeps only matching walkers (for profiling one of them).
    if let Ok(only) = std::env::var("ONLY") {
        walkers.retain(|(name, _)| name.contains(&only));
    }
    // Rounds interleave the walkers, so load from other processes hits them alike; the best
    // time of each is the least disturbed one.
    let mut best = vec![(Duration::MAX, Count::default()); walkers.len()];
    for _ in 0..rounds {
        for (i, (_, walk)) in walkers.iter().enumerate() {
            let t = Instant::now();
            let c = walk();
            let d = t.elapsed();
            if d < best[i].0 {
                best[i] = (d, c);
            }
        }
    }
    println!(
        "{} files, {} bytes, best of {rounds} interleaved rounds (warm cache)",
        reference.files, reference.bytes
    );
    println!("{:<38} {:>9} {:>7}", "walker", "seconds", "ratio");
    let Some(&(first, _)) = best.first() else {
        return Ok(());
    };
    let base = first.as_secs_f64();
    for ((name, _), (d, c)) in walkers.iter().zip(&best) {
        let note = if c.files == reference.files {
            ""
        } else {
            "  (count differs)"
        };
        println!(
            "{name:<38} {:>9.3} {:>6.2}x{note}",
            d.as_secs_f64(),
            d.as_secs_f64() / base
        );
    }
    Ok(())
}
