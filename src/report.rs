//! How an error reaches a user: its whole chain of causes on one line
//! (a leaf module, so that every module may report errors without
//! depending on the runner's error types).

/// The whole chain of `error` on one line for users: each level's message
/// once, joined by ": ", trailing white space trimmed, ending in a newline.
/// A cause whose text the message before it already ends with (an error that
/// prints its source itself, as some outside our crate do) is not repeated.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        let text = text.trim_end();
        if !text.is_empty() && !out.ends_with(text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(text);
        }
        current = e.source();
    }
    out.push('\n');
    out
}
