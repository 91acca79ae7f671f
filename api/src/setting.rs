//! A setting (environment variable or flag) that is wrong.

/// A configuration problem, naming the setting at fault. `problem` never contains the
/// value of a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingError {
    /// The environment variable (or flag) at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingError {
    /// A problem with `setting`.
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}
