//! Invariant 5 of `docs/format.md` on a real exFAT file system (FUSE driver on a loop device): a `dist`
//! that cannot hard-link gets copies in its increments, and the run says so once.

use backup_tests::capability::require;
use backup_tests::exfat::mount_exfat;
use backup_tests::{set_mtime, text, tree, TestEnv};
use serde_json::json;

#[test]
fn exfat_dist_falls_back_to_copies_and_says_so_once() {
    let env = TestEnv::new();
    let Some(fs) = require(
        "loop device (losetup -f)",
        mount_exfat(env.dir.path(), 64 << 20),
    ) else {
        return;
    };
    let mut env = env;
    env.dist = fs.mnt.join("dist");
    env.config(json!({"track_dirs": ["docs"], "include_dirs": ["data"]}));
    for i in 0..5 {
        let f = env.write(
            format!("docs/sub/f{i}.txt"),
            format!("first {i}").as_bytes(),
        );
        set_mtime(&f, 1_600_000_000 + i, 0);
    }
    env.write("data/u.bin", &[7u8; 100_000]);

    let out = env.backup(&[]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_eq!(
        se.matches("cannot hard-link").count(),
        1,
        "said exactly once: {se}"
    );
    let first = env.increments();
    assert_eq!(first.len(), 1);

    for i in 0..3 {
        let f = env.write(
            format!("docs/sub/f{i}.txt"),
            format!("second {i}!").as_bytes(),
        );
        set_mtime(&f, 1_700_000_000 + i, 0);
    }
    env.remove("docs/sub/f4.txt");
    let out = env.backup(&["--json"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    let s: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(s["link_fallback"], true);
    assert_eq!(se.matches("cannot hard-link").count(), 1, "{se}");

    let incs = env.increments();
    assert_eq!(incs.len(), 2);
    for i in 0..5 {
        let p = env
            .dist
            .join(&incs[0])
            .join(format!("track/docs/sub/f{i}.txt"));
        assert_eq!(std::fs::read(p).unwrap(), format!("first {i}").as_bytes());
    }
    for i in 0..3 {
        let p = env
            .dist
            .join(&incs[1])
            .join(format!("track/docs/sub/f{i}.txt"));
        assert_eq!(std::fs::read(p).unwrap(), format!("second {i}!").as_bytes());
    }
    let p = env.dist.join(&incs[1]).join("deleted/docs/sub/f4.txt");
    assert_eq!(std::fs::read(p).unwrap(), b"first 4");
    assert_eq!(tree(&env.src).contents(), tree(&env.mirror()).contents());
    // Deleting the first increment (copies, not links) leaves the second whole.
    std::fs::remove_dir_all(env.dist.join(&incs[0])).unwrap();
    let p = env.dist.join(&incs[1]).join("track/docs/sub/f0.txt");
    assert_eq!(std::fs::read(p).unwrap(), b"second 0!");
    drop(fs);
}
