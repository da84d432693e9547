//! Errors of the checkpoint/restore engine.

use std::io;

use super::refusal::Refusal;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The process uses something the engine cannot checkpoint yet; it was left running,
    /// untouched.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The image was made on a machine this one cannot restore it on.
    #[error("{0}")]
    Incompatible(String),
    /// The image cannot be restored here (a file changed, a path is missing...).
    #[error("{0}")]
    Unrestorable(String),
    #[error("the image cannot be used")]
    Image(#[from] ImageError),
    /// A system call or /proc read failed.
    #[error("{what}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The traced process died while the engine worked on it.
    #[error("pid {pid} ended during the {stage}")]
    Died { pid: i32, stage: &'static str },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Attach a description to an `io::Result` (or anything convertible to `io::Error`).
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| EngineError::Os {
            what: what(),
            source: e.into(),
        })
    }
}

impl From<procfs::ProcError> for EngineError {
    fn from(e: procfs::ProcError) -> Self {
        let text = e.to_string();
        EngineError::Os {
            what: "reading /proc".into(),
            source: io::Error::other(text),
        }
    }
}
