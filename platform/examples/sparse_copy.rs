//! `sparse_copy SRC DST [keep|zeros] [hash]`: copies SRC into a new DST with
//! `backup_platform::sparse::copy_sparse` and prints the time, the bytes written and (with
//! `hash`) the blake3 of the content. Used by bench/sparse_hardlinks.sh.

use std::time::Instant;

use backup_platform::sparse::{copy_sparse, Holes};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: sparse_copy SRC DST [keep|zeros] [hash]");
        std::process::exit(2);
    }
    let holes = match args.get(3).map(String::as_str) {
        Some("zeros") => Holes::DetectZeros,
        _ => Holes::Keep,
    };
    let hash = args.get(4).is_some_and(|a| a == "hash");
    let src = std::fs::File::open(&args[1])?;
    let dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&args[2])?;
    let mut hasher = blake3::Hasher::new();
    let t = Instant::now();
    let copied = if hash {
        copy_sparse(
            &src,
            &dst,
            holes,
            Some(&mut |b: &[u8]| {
                hasher.update(b);
            }),
        )?
    } else {
        copy_sparse(&src, &dst, holes, None)?
    };
    let secs = t.elapsed().as_secs_f64();
    print!(
        "seconds={secs:.3} len={} written={}",
        copied.len, copied.written
    );
    if hash {
        print!(" blake3={}", hasher.finalize());
    }
    println!();
    Ok(())
}
