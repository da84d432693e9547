//! The bench's only unsafe code: waiting for a child process with a deadline through a pidfd,
//! so that a hung `mrunctl` fails the row instead of the whole run, and the wait itself adds no
//! polling delay to the time measured; reaping with `wait4` for the CPU time a child used;
//! keeping inherited fds from the processes the bench starts; tying a server's life to the
//! bench's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Waits for `child` to end. `Ok(None)` when `timeout` passed first (the child is left running).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    if !wait_exit(child, timeout)? {
        return Ok(None);
    }
    child.wait().map(Some).context("waitpid")
}

/// As `wait_timeout`, and also the CPU time (user + system) that the child and every
/// descendant it waited for used, from the kernel's `wait4` rusage. The child is reaped by
/// `wait4`, not by `Child::wait`: do not wait for it again.
pub fn wait_timeout_cpu(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<Option<(ExitStatus, Duration)>> {
    if !wait_exit(child, timeout)? {
        return Ok(None);
    }
    wait4_cpu(child.id()).map(Some)
}

/// Reaps the child `pid` (waiting for it if it still runs) with `wait4`: its exit status and its
/// CPU time, user + system, its waited-for descendants included.
pub fn wait4_cpu(pid: u32) -> anyhow::Result<(ExitStatus, Duration)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid rusage (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes one int and one rusage, both ours and alive for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e).with_context(|| format!("wait4 on {pid}"));
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok((
        ExitStatus::from_raw(status),
        tv(ru.ru_utime) + tv(ru.ru_stime),
    ))
}

/// Waits until `child` has ended (true; it is not reaped) or `timeout` passed (false).
fn wait_exit(child: &Child, timeout: Duration) -> anyhow::Result<bool> {
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
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
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
            return Ok(true);
        }
        if left.is_zero() {
            return Ok(false);
        }
    }
}

/// Marks every fd from 3 up close-on-exec, so that nothing this process inherited reaches the
/// processes it starts (a job holding a stray fd, e.g. a socket, cannot be checkpointed).
/// Call it first thing in `main`, before any thread starts.
pub fn cloexec_inherited_fds() -> anyhow::Result<()> {
    // SAFETY: close_range takes two fd numbers and a flags word; with CLOSE_RANGE_CLOEXEC it
    // only sets a flag on open fds and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fd at a time (collected first: the listing holds an fd itself).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .context("listing /proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on an fd number only changes its flags; a closed fd gives EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Has `cmd`'s process get SIGTERM when this one ends, however it ends (a server the bench
/// started must not outlive a killed bench).
pub fn terminate_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl and getppid, both
    // async-signal-safe.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                return Err(io::Error::other("the bench ended while starting a child"));
            }
            Ok(())
        });
    }
}
