//! The one error type for a file read at the edge (`warden.ini`, a vassal file): which
//! file, which line when one is to blame, and what is wrong and what to do, as one
//! sentence. Whether it stops the program (a bad `warden.ini`) or only the one vassal (a
//! bad vassal file) is the caller's to decide.

use std::path::PathBuf;

/// `path:line: message`, or `path: message` when no line is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct FileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl FileError {
    pub fn new(path: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        FileError {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
