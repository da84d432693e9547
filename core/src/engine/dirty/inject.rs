//! Getting a userfaultfd of another process: a userfaultfd belongs to the memory of the
//! process that creates it, so the process must create it. Freeze it (every thread), run
//! `userfaultfd()` in it, copy the new descriptor out (`pidfd_getfd`), close it there, and let
//! the process go exactly as it was: registers, signals and descriptor table.

use super::error::{DirtyError, Result};
use crate::engine::error::EngineError;
use crate::engine::freeze::Frozen;
use crate::sys::uffd::{Uffd, UFFD_USER_MODE_ONLY};
use crate::sys::{pidfd, Pid};

/// A userfaultfd for the memory of `pid`, held here only. The process is frozen for the few
/// injected system calls and resumed untouched, on error too.
pub(super) fn userfaultfd_of(pid: Pid) -> Result<Uffd> {
    let inject = |source: EngineError| DirtyError::Inject { pid, source };
    let mut frozen = Frozen::seize(pid).map_err(inject)?;
    let site = crate::engine::dump::trap_site(pid).map_err(inject)?;
    frozen.plant(site).map_err(inject)?;
    let got = make_and_copy(&frozen, pid);
    // Frozen puts the code and every thread's registers back and re-sends pending signals.
    let resumed = frozen.resume().map_err(inject);
    let uffd = got?;
    resumed?;
    Ok(uffd)
}

fn make_and_copy(frozen: &Frozen, pid: Pid) -> Result<Uffd> {
    let inject = |source: EngineError| DirtyError::Inject { pid, source };
    let leader = frozen.leader();
    let flags = UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = leader
        .raw(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])
        .map_err(inject)?;
    if fd < 0 {
        return Err(DirtyError::Refused {
            pid,
            source: std::io::Error::from_raw_os_error(-fd as i32),
        });
    }
    let copy = pidfd::get_fd(pid, fd as i32);
    // Its descriptor table as it was, whether or not the copy worked.
    leader
        .call(
            "close of the userfaultfd just made",
            libc::SYS_close,
            [fd as u64, 0, 0, 0, 0, 0],
        )
        .map_err(inject)?;
    let copy = copy.map_err(|source| DirtyError::Os {
        what: format!("copying the userfaultfd of pid {pid} (pidfd_getfd)"),
        source,
    })?;
    Ok(Uffd::from_fd(copy))
}
