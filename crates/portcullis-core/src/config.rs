//! The configuration error every component reports: which key, what was wrong.

/// A configuration problem. The caller prefixes the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {problem}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `routes[2].upstream`.
    pub key: String,
    /// What is wrong or expected.
    pub problem: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
