//! `${VAR}` and `${VAR:-default}` expansion of config text, before TOML parsing.
//!
//! Expansion happens line by line so that line numbers in later parse errors still match the
//! file. Lines that are comments (first non-blank character `#`) are left alone, so the
//! example config can document the syntax. `$${` yields a literal `${`.

use std::collections::HashMap;

/// An expansion failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${VAR}` with VAR unset and no default.
    #[error("line {line}: environment variable {var} is not set and has no default (write ${{{var}:-default}})")]
    Unset {
        /// Line number.
        line: usize,
        /// Variable name.
        var: String,
    },
    /// `${` without a closing brace, or an empty or invalid name.
    #[error("line {line}: malformed variable reference: {text}")]
    Malformed {
        /// Line number.
        line: usize,
        /// The offending text.
        text: String,
    },
}

/// Where variable values come from; the process environment in production, a map in tests.
pub trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Expands variable references in `text`.
pub fn expand(text: &str, env: &dyn Env) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, i + 1, env, &mut out)?;
        }
    }
    Ok(out)
}

fn expand_line(line: &str, lineno: usize, env: &dyn Env, out: &mut String) -> Result<(), ExpandError> {
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(ExpandError::Malformed {
                    line: lineno,
                    text: after.trim_end().to_string(),
                });
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(ExpandError::Malformed {
                    line: lineno,
                    text: format!("${{{inner}}}"),
                });
            }
            // Like the shell's `:-`: an empty value also takes the default.
            match (env.get(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(ExpandError::Unset {
                        line: lineno,
                        var: name.to_string(),
                    });
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expands_values_and_defaults() {
        let e = env(&[("HOST", "10.0.0.1"), ("EMPTY", "")]);
        assert_eq!(
            expand("a = \"${HOST}:7946\"\nb = \"${PORT:-80}\"\nc = \"${EMPTY:-x}\"\n", &e).unwrap(),
            "a = \"10.0.0.1:7946\"\nb = \"80\"\nc = \"x\"\n"
        );
    }

    #[test]
    fn leaves_comments_dollars_and_escapes() {
        let e = env(&[]);
        assert_eq!(
            expand("# ${NOPE}\nx = \"$5 $${LIT}\"", &e).unwrap(),
            "# ${NOPE}\nx = \"$5 ${LIT}\""
        );
    }

    #[test]
    fn reports_unset_and_malformed_with_line() {
        let e = env(&[]);
        assert_eq!(
            expand("a = 1\nb = \"${MISSING}\"\n", &e),
            Err(ExpandError::Unset {
                line: 2,
                var: "MISSING".into()
            })
        );
        assert!(matches!(
            expand("x = \"${OPEN\"", &e),
            Err(ExpandError::Malformed { line: 1, .. })
        ));
        assert!(matches!(expand("x = \"${}\"", &e), Err(ExpandError::Malformed { .. })));
        assert!(matches!(
            expand("x = \"${A B}\"", &e),
            Err(ExpandError::Malformed { .. })
        ));
    }
}
