//! Message helpers shared by [`crate::config`] and [`crate::selection`], kept apart so that
//! selection does not depend on config.

/// Escapes control characters (a newline in a pattern or in a library's message), so a
/// refusal stays one line whatever the input.
pub(crate) fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
