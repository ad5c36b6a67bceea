//! Shared code of the `backup` and `backup-tool` binaries.

pub mod exit;
pub mod gen;
pub mod hooks;
pub mod progress;
pub mod term;
pub mod tool;

/// Version of every `--json` document's shape (its `"schema"` key): raised when a field is
/// renamed, removed or changes type; new fields may appear without a raise.
pub const JSON_SCHEMA: u32 = 1;

/// The `--json` document of a command that failed or was refused as a whole.
pub fn json_error(message: &str, exit: i32) -> String {
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "status": if exit == exit::REFUSED { "refused" } else { "failed" },
        "error": message,
        "exit": exit,
    })
    .to_string()
}
