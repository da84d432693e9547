//! Blocking reads from a descriptor that other processes share (our stdin), without changing
//! its flags: wait for readiness with poll, then read.

use std::io;
use std::os::fd::RawFd;

use super::last_err;

/// True when `fd` has data (or EOF) within `timeout_ms`.
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    match r {
        -1 => {
            let e = last_err();
            if e.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0),
    }
}

/// One read(2) from `fd` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(last_err())
    } else {
        Ok(n as usize)
    }
}
