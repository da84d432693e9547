//! The bench's only unsafe code: waiting for a child process with a deadline through a pidfd,
//! so that a hung `mrunctl` fails the row instead of the whole run, and the wait itself adds no
//! polling delay to the time measured.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Waits for `child` to end. `Ok(None)` when `timeout` passed first (the child is left running).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; it touches no
    // memory of ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error()).context("pidfd_open");
    }
    let raw = i32::try_from(raw).context("pidfd_open returned an out-of-range fd")?;
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };

    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, and its count.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll on a pidfd");
        }
        if n > 0 {
            return child.wait().map(Some).context("waitpid");
        }
        if left.is_zero() {
            return Ok(None);
        }
    }
}
