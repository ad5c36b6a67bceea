//! Copying a file while keeping its holes.
//!
//! The data extents of the source are found with `SEEK_DATA`/`SEEK_HOLE` and only they are
//! read and written; the holes stay holes in the destination (written at offsets past the end,
//! then `ftruncate` to the final length). The caller often hashes what it copies, so every
//! byte of the file is handed to `observe` in order — holes as zeros from a static buffer,
//! without reading or writing them.
//!
//! [`Holes::DetectZeros`] also skips writing blocks that are all zeros in the data (like
//! `cp --sparse=always`): for a source that cannot hold holes (a backup on exFAT) of a file
//! that was sparse.

use std::fs::File;
use std::io;

/// How holes are made in the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holes {
    /// Where the source has holes.
    Keep,
    /// Where the source has holes, and for every all-zero block of its data.
    DetectZeros,
}

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// The destination's length.
    pub len: u64,
    /// Bytes actually written (the rest is holes).
    pub written: u64,
}

/// Block granularity of zero detection: file systems allocate in units of at least this.
const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

fn at(op: &str, offset: u64, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} at offset {offset}: {e}"))
}

/// The data extents of `f` below `len`: `[start, end)` pairs. A file system that cannot
/// tell (no `SEEK_DATA`) is one extent.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn extents(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    use rustix::io::Errno;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data at or after pos: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if pos == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(at("seek data", pos, e.into())),
        };
        if start >= len {
            break;
        }
        let end = match seek(f, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(e) => return Err(at("seek hole", start, e.into())),
        };
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn extents(_f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    Ok(if len == 0 { Vec::new() } else { vec![(0, len)] })
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, off)
}
#[cfg(unix)]
fn write_all_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}
#[cfg(windows)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, off)
}
#[cfg(windows)]
fn write_all_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(f, buf, off)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

/// Sees every byte copied, in order (a hasher).
pub type Observer<'a> = &'a mut dyn FnMut(&[u8]);

fn feed_zeros(observe: &mut Option<Observer<'_>>, mut n: u64) {
    if let Some(o) = observe {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            o(&ZEROS[..k]);
            n -= k as u64;
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    // Word-wise: a few GB/s, far below the cost of the write it saves.
    let (words, tail) = b.split_at(b.len() / 16 * 16);
    words
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && tail.iter().all(|&x| x == 0)
}

/// Copies `src` into `dst` (a new, empty file), keeping holes, handing every byte to
/// `observe` in order. `dst` ends exactly as long as `src` was when the copy started (a
/// source that shrinks meanwhile ends the copy at its new end).
pub fn copy_sparse(
    src: &File,
    dst: &File,
    holes: Holes,
    observe: Option<Observer<'_>>,
) -> io::Result<Copied> {
    BUF.with(|buf| copy_with(src, dst, holes, observe, &mut buf.borrow_mut()))
}

thread_local! {
    // One buffer per thread: zeroing a fresh 1 MiB per file would cost more than copying a
    // small file.
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
}

fn copy_with(
    src: &File,
    dst: &File,
    holes: Holes,
    mut observe: Option<Observer<'_>>,
    buf: &mut [u8],
) -> io::Result<Copied> {
    let len = src.metadata().map_err(|e| at("stat", 0, e))?.len();
    let mut pos = 0u64;
    let mut written = 0u64;
    // The source ended before its recorded length (it shrank while copying).
    let mut short = false;
    'extents: for (start, end) in extents(src, len)? {
        feed_zeros(&mut observe, start - pos);
        pos = start;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if observe.is_none() && holes == Holes::Keep {
            // Nobody needs the bytes: let the kernel copy (or share) the extent.
            let mut off_in = start;
            let mut off_out = start;
            let mut ok = true;
            while off_in < end {
                let n = (end - off_in).min(1 << 30) as usize;
                match rustix::fs::copy_file_range(
                    src,
                    Some(&mut off_in),
                    dst,
                    Some(&mut off_out),
                    n,
                ) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) if off_in == start => {
                        ok = false;
                        break;
                    }
                    Err(e) => return Err(at("copy", off_in, e.into())),
                }
            }
            if ok {
                written += off_in - start;
                pos = off_in;
                if off_in < end {
                    short = true;
                    break 'extents;
                }
                continue;
            }
        }
        while pos < end {
            let want = ((end - pos) as usize).min(CHUNK);
            let n = match read_at(src, &mut buf[..want], pos) {
                Ok(0) => {
                    short = true;
                    break 'extents;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(at("read", pos, e)),
            };
            let data = &buf[..n];
            if let Some(o) = &mut observe {
                o(data);
            }
            match holes {
                Holes::Keep => {
                    write_all_at(dst, data, pos).map_err(|e| at("write", pos, e))?;
                    written += n as u64;
                }
                Holes::DetectZeros => {
                    // Write runs of non-zero blocks; all-zero blocks become holes.
                    let mut i = 0;
                    while i < n {
                        let j = (i + BLOCK).min(n);
                        if is_zero(&data[i..j]) {
                            i = j;
                            continue;
                        }
                        let mut k = j;
                        while k < n && !is_zero(&data[k..(k + BLOCK).min(n)]) {
                            k = (k + BLOCK).min(n);
                        }
                        let off = pos + i as u64;
                        write_all_at(dst, &data[i..k], off).map_err(|e| at("write", off, e))?;
                        written += (k - i) as u64;
                        i = k;
                    }
                }
            }
            pos += n as u64;
        }
    }
    // A trailing hole: zeros to the observer, and the length by truncation.
    let final_len = if short {
        pos
    } else {
        feed_zeros(&mut observe, len - pos);
        len
    };
    dst.set_len(final_len)
        .map_err(|e| at("truncate", final_len, e))?;
    Ok(Copied {
        len: final_len,
        written,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(path: &std::path::Path, len: u64, data: &[(u64, Vec<u8>)]) -> File {
        let f = File::create(path).unwrap();
        for (off, bytes) in data {
            write_all_at(&f, bytes, *off).unwrap();
        }
        f.set_len(len).unwrap();
        drop(f);
        File::open(path).unwrap()
    }

    fn hash_plain(path: &std::path::Path) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update_reader(File::open(path).unwrap()).unwrap();
        h.finalize()
    }

    #[test]
    fn a_2_gib_sparse_file_copies_as_holes_with_every_byte_observed() {
        let t = tempfile::tempdir().unwrap();
        let len = 2u64 << 30;
        let mb = |n: u64, b: u8| vec![b; (n << 20) as usize];
        let src_path = t.path().join("src");
        let src = sparse_file(
            &src_path,
            len,
            &[
                (0, mb(1, 1)),
                (700 << 20, mb(2, 2)),
                (len - (3 << 20), mb(1, 3)),
            ],
        );
        let src_blocks = src.metadata().unwrap().blocks();
        if src_blocks * 512 >= len {
            assert!(!crate::under_ci(), "{:?} keeps no holes", t.path());
            return;
        }
        let dst_path = t.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        let mut h = blake3::Hasher::new();
        let mut seen = 0u64;
        let c = copy_sparse(
            &src,
            &dst,
            Holes::Keep,
            Some(&mut |b: &[u8]| {
                seen += b.len() as u64;
                h.update(b);
            }),
        )
        .unwrap();
        assert_eq!((c.len, c.written, seen), (len, 4 << 20, len));
        let m = std::fs::metadata(&dst_path).unwrap();
        assert_eq!(m.len(), len);
        // Only the data blocks (4 MiB, plus a little file-system slack).
        assert!(
            m.blocks() * 512 <= (4 << 20) + (1 << 20),
            "{} blocks",
            m.blocks()
        );
        assert_eq!(h.finalize(), hash_plain(&src_path));
        assert_eq!(hash_plain(&dst_path), hash_plain(&src_path));
        // Without an observer the kernel copies the extents.
        let dst2_path = t.path().join("dst2");
        let dst2 = File::create(&dst2_path).unwrap();
        copy_sparse(&src, &dst2, Holes::Keep, None).unwrap();
        let m2 = std::fs::metadata(&dst2_path).unwrap();
        assert_eq!(m2.len(), len);
        assert!(
            m2.blocks() * 512 <= (4 << 20) + (1 << 20),
            "{} blocks",
            m2.blocks()
        );
        assert_eq!(hash_plain(&dst2_path), hash_plain(&src_path));
    }

    #[test]
    fn zero_detection_makes_holes_from_a_dense_source() {
        let t = tempfile::tempdir().unwrap();
        // Dense on disk: zeros written out, as an exFAT copy of a sparse file would be.
        let len = 64u64 << 20;
        let mut content = vec![0u8; len as usize];
        content[5000..9000].fill(7);
        content[(len - 10) as usize..].fill(9);
        let src_path = t.path().join("dense");
        std::fs::write(&src_path, &content).unwrap();
        let src = File::open(&src_path).unwrap();
        assert!(src.metadata().unwrap().blocks() * 512 >= len);
        let dst_path = t.path().join("sparse");
        let dst = File::create(&dst_path).unwrap();
        let mut h = blake3::Hasher::new();
        let c = copy_sparse(
            &src,
            &dst,
            Holes::DetectZeros,
            Some(&mut |b: &[u8]| {
                h.update(b);
            }),
        )
        .unwrap();
        assert_eq!(c.len, len);
        // Blocks 1 and 2 (bytes 4096..12288) and the last block.
        assert_eq!(c.written, 2 * 4096 + 4096);
        assert_eq!(h.finalize(), blake3::hash(&content));
        assert_eq!(std::fs::read(&dst_path).unwrap(), content);
        let m = std::fs::metadata(&dst_path).unwrap();
        assert!(m.blocks() * 512 <= 1 << 20, "{} blocks", m.blocks());
        // Keep mode on the same source writes everything.
        let dense_path = t.path().join("dense2");
        let d = File::create(&dense_path).unwrap();
        assert_eq!(
            copy_sparse(&src, &d, Holes::Keep, None).unwrap().written,
            len
        );
    }

    #[test]
    fn empty_and_all_hole_files() {
        let t = tempfile::tempdir().unwrap();
        let e = sparse_file(&t.path().join("e"), 0, &[]);
        let d = File::create(t.path().join("e2")).unwrap();
        assert_eq!(
            copy_sparse(&e, &d, Holes::Keep, None).unwrap(),
            Copied::default()
        );
        let h = sparse_file(&t.path().join("h"), 10 << 20, &[]);
        let d = File::create(t.path().join("h2")).unwrap();
        let mut n = 0;
        let c = copy_sparse(
            &h,
            &d,
            Holes::DetectZeros,
            Some(&mut |b: &[u8]| n += b.len()),
        )
        .unwrap();
        assert_eq!((c.len, c.written, n), (10 << 20, 0, 10 << 20));
        assert_eq!(
            std::fs::metadata(t.path().join("h2")).unwrap().len(),
            10 << 20
        );
    }
}
