//! Random rules and a random path: compiling never panics, and the pruned walk decision
//! always equals classifying the path without any pruning — the scan can never skip a
//! directory that holds a selected file.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::RulesInput| checks::selection_rules(input));
