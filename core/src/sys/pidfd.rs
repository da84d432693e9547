//! pidfd_open + pidfd_getfd (Linux 5.6): a copy of another process's descriptor, the very same
//! open file description, without disturbing it (needs ptrace access to the process).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::{last_err, Pid};

/// A duplicate of descriptor `fd` of process `pid`, close-on-exec.
pub fn get_fd(pid: Pid, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if pidfd < 0 {
        return Err(last_err());
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
    // SAFETY: pidfd_getfd takes integers; flags must be 0.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, raw, fd, 0) };
    if copy < 0 {
        return Err(last_err());
    }
    // SAFETY: pidfd_getfd returned a new descriptor (close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

/// Whether the other side of a pipe end is gone everywhere: for a read end, no writer is left
/// (POLLHUP); for a write end, no reader (POLLERR).
pub fn pipe_peer_gone(end: &OwnedFd, write_end: bool) -> bool {
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(end),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    let flag = if write_end {
        libc::POLLERR
    } else {
        libc::POLLHUP
    };
    r > 0 && p.revents & flag != 0
}
