//! Every committed fuzz input — the hand-made seeds and the `regression-*` inputs that once
//! failed (`fuzz/seeds/<target>/`), plus any crash kept in `fuzz/artifacts/<target>/` — fed to
//! the very checks the cargo-fuzz targets run (`fuzz/checks.rs`), so a regression of a fuzz
//! finding fails `cargo test` without a fuzzer. (Fuzzing itself: `scripts/fuzz.sh`.)

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks.rs"]
mod checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The committed inputs of `target`, sorted (README files describe the folders, not inputs).
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["seeds", "artifacts"]
        .iter()
        .filter_map(|d| std::fs::read_dir(fuzz_dir().join(d).join(target)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let mut replayed = 0;
    for target in checks::TARGETS {
        let files = inputs(target);
        assert!(
            !files.is_empty(),
            "no committed input for fuzz target {target} under {}",
            fuzz_dir().display()
        );
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| checks::replay(target, &data));
            assert!(r.is_ok(), "{target}: {} fails again", f.display());
            replayed += 1;
        }
    }
    eprintln!("{replayed} committed fuzz inputs replayed");
}

#[test]
fn the_regression_inputs_still_reach_the_code_they_once_broke() {
    use arbitrary::Arbitrary;
    // selection_rules: the input that found a multi-line refusal message still compiles to a
    // refusal (so its one-line check runs), and that refusal is one line.
    let data =
        std::fs::read(fuzz_dir().join("seeds/selection_rules/regression-newline-in-glob-error"))
            .unwrap();
    let input = checks::RulesInput::arbitrary_take_rest(arbitrary::Unstructured::new(&data))
        .expect("the regression input decodes");
    match checks::compile(&input) {
        Err(msg) => assert!(!msg.contains('\n'), "{msg:?}"),
        Ok(_) => panic!("the regression input no longer reaches the refusal path"),
    }
    // increment_meta: the float summary that once failed the round trip still parses, so the
    // round trip runs on it.
    let data = std::fs::read(fuzz_dir().join("seeds/increment_meta/regression-float-summary.json"))
        .unwrap();
    assert!(backup_core::IncrementMeta::from_json("r.json", &data).is_ok());
}
