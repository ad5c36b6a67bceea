//! A restore that reports success has made durable what it wrote, replaced and (with
//! `--delete`) removed: the target on LazyFS (a FUSE file system that loses everything not
//! fsynced when the power goes, and that `syncfs` does not reach), the power cut right after
//! the restore exits 0.

use std::io::Write;

use backup_tests::lazyfs::{fsync_path, mount_for_test};
use backup_tests::{serde_json::json, text, TestEnv, Tree};

fn restore(env: &TestEnv, args: &[&str]) {
    let out = env.tool_dist(args);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "restore {args:?}:\n{so}\n{se}");
}

#[test]
fn a_power_cut_right_after_a_restore_keeps_what_it_reported() {
    let env = TestEnv::new();
    for i in 0..40 {
        let body = format!("file {i}\n").repeat(20 + i);
        env.write(format!("docs/d{}/f{i}.txt", i % 4), body.as_bytes());
    }
    std::os::unix::fs::symlink("d0/f0.txt", env.src.join("docs/link")).unwrap();
    env.config(json!({"track_dirs": ["docs"]}));
    env.backup_ok(&[]);
    let Some(m) = mount_for_test(&env.dir.path().join("lazy")) else {
        return;
    };
    // Made by the restore itself, two levels below the drive's root.
    let to = m.mountpoint.join("restores/today");
    let to_s = to.to_str().unwrap();

    restore(&env, &["restore", "--to", to_s]);
    m.power_cut();
    let want = Tree::files(&env.src);
    assert_eq!(
        want.differences(&Tree::files(&to)),
        Vec::<String>::new(),
        "a fresh restore, after the power cut"
    );

    // Extras made durable on the drive, one file changed there: `--delete` removes the
    // extras, the restore puts the file back, and both outlast the next cut.
    let extra_dir = to.join("docs/d1/old");
    std::fs::create_dir(&extra_dir).unwrap();
    for p in [to.join("docs/extra.txt"), extra_dir.join("x.txt")] {
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"not in the backup").unwrap();
        f.sync_all().unwrap();
    }
    std::fs::write(to.join("docs/d2/f2.txt"), b"edited on the drive").unwrap();
    fsync_path(&to.join("docs/d2/f2.txt")).unwrap();
    for d in [to.join("docs/d1"), to.join("docs"), extra_dir.clone()] {
        fsync_path(&d).unwrap();
    }
    m.power_cut();
    assert!(to.join("docs/extra.txt").exists() && extra_dir.join("x.txt").exists());

    restore(
        &env,
        &["restore", "--to", to_s, "--delete", "--overwrite", "always"],
    );
    m.power_cut();
    assert!(
        !to.join("docs/extra.txt").exists(),
        "--delete undone by the cut"
    );
    assert!(!extra_dir.exists(), "--delete undone by the cut");
    assert_eq!(
        want.differences(&Tree::files(&to)),
        Vec::<String>::new(),
        "restore --delete, after the power cut"
    );
}
