//! Replicated files on disk: which names are acceptable, and writing the current version of
//! each file under `<state_dir>/files/` so that a reader never sees a torn file.

pub mod envelope;
mod materialize;

pub use materialize::Materializer;

/// Longest file name, in bytes.
pub const MAX_FILE_NAME: usize = 128;

/// A name that cannot be a replicated file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid file name {0:?}: use 1-128 characters from A-Z a-z 0-9 . _ - : @ +, not starting with '.' or '-', without '..'"
)]
pub struct BadFileName(pub String);

/// Checks a file name. Names become paths under `<state_dir>/files/`, so anything that could
/// leave that directory or hide in it is refused: separators, `..`, leading dots, control
/// characters.
pub fn validate_file_name(name: &str) -> Result<(), BadFileName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && !name.starts_with('-')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@' | b'+'));
    if ok { Ok(()) } else { Err(BadFileName(name.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["config:app", "shared:data", "a", "v1.2_final-x+y@z", &"n".repeat(128)] {
            assert!(validate_file_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "-rf",
            "a..b",
            "x\0",
            "é",
            "a b",
            &"n".repeat(129),
            "/etc/passwd",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
