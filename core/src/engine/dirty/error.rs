//! Errors of the dirty-page tracker.

use std::io;

use super::probe::Unsupported;
use crate::engine::error::EngineError;
use crate::sys::Pid;

#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    /// This kernel lacks what the tracker needs; pre-copy falls back to stop-and-copy.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// Freezing the process, or running a system call in it, failed; it runs on as before.
    #[error("cannot hand pid {pid} a userfaultfd")]
    Inject {
        pid: Pid,
        #[source]
        source: EngineError,
    },
    /// The process's own `userfaultfd()` call failed (a seccomp filter, a sysctl...).
    #[error("userfaultfd() in pid {pid} failed")]
    Refused {
        pid: Pid,
        #[source]
        source: io::Error,
    },
    /// The process uses a userfaultfd of its own: an area can belong to one userfaultfd only,
    /// so tracking would make the process's own registrations fail.
    #[error(
        "pid {pid} uses userfaultfd itself (fd {fd}); tracking its memory would get in its way"
    )]
    OwnUserfaultfd { pid: Pid, fd: i32 },
    /// A system call or /proc read failed.
    #[error("{what}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The process exited or executed another program: the memory tracked is gone.
    #[error("pid {pid} exited or executed another program; its memory is no longer tracked")]
    Gone { pid: Pid },
}

pub type Result<T, E = DirtyError> = std::result::Result<T, E>;

/// Attach a description to an `io::Result`.
pub(super) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| DirtyError::Os {
            what: what(),
            source,
        })
    }
}
