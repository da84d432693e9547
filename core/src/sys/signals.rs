//! Signal plumbing for supervisors: wait for a blocked signal with its sender's code, and put
//! a signal back to its default disposition.

use std::io;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

/// A received signal and whether it was sent by a process (kill, sigqueue, tgkill) rather
/// than by the kernel (a terminal's ^C, a child's exit).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signal: Signal,
    pub from_process: bool,
}

/// The (blocked) signals of a set, taken as they arrive by a task of an async runtime (a
/// signalfd it polls) instead of a thread waiting in `sigwaitinfo`: a supervisor that starts
/// no thread for them starts faster, and ends faster. The signals must stay blocked in every
/// thread of the process (block them before any thread starts: threads inherit the mask).
pub struct AsyncSignals {
    fd: tokio::io::unix::AsyncFd<nix::sys::signalfd::SignalFd>,
}

impl AsyncSignals {
    /// Inside a tokio runtime with its I/O driver enabled.
    pub fn new(set: &SigSet) -> io::Result<AsyncSignals> {
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let fd = SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let interest = tokio::io::Interest::READABLE;
        // SAFETY: the SignalFd is moved in and owns its descriptor, which stays open and
        // unchanged until the AsyncFd is dropped; its as_raw_fd always returns that descriptor.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(AsyncSignals { fd })
    }

    /// The next signal; cancel-safe (a signal is taken only when it is returned).
    pub async fn recv(&mut self) -> io::Result<Received> {
        loop {
            let mut ready = self.fd.readable_mut().await?;
            match ready.get_inner_mut().read_signal() {
                Ok(Some(info)) => {
                    let signal =
                        Signal::try_from(info.ssi_signo as i32).map_err(io::Error::from)?;
                    return Ok(Received {
                        signal,
                        // As sigwaitinfo's si_code: SI_USER, SI_QUEUE, SI_TKILL... are <= 0.
                        from_process: info.ssi_code <= 0,
                    });
                }
                Ok(None) => ready.clear_ready(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Wait for one of the (blocked) signals in `set`.
pub fn wait(set: &SigSet) -> io::Result<Received> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset and `info` a valid out-pointer.
        let r = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let signal = Signal::try_from(r).map_err(io::Error::from)?;
        return Ok(Received {
            signal,
            from_process: info.si_code <= 0,
        });
    }
}

/// Wait up to `timeout` for one of the (blocked) signals in `set`; `None` if none came.
pub fn wait_for(set: &SigSet, timeout: std::time::Duration) -> io::Result<Option<Received>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset, `info` a valid out-pointer, `ts` a valid timespec.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, &ts) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    let signal = Signal::try_from(r).map_err(io::Error::from)?;
    Ok(Some(Received {
        signal,
        from_process: info.si_code <= 0,
    }))
}

/// Reset `sig` to SIG_DFL.
pub fn set_default(sig: Signal) -> io::Result<()> {
    let act = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigDfl,
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: installing SIG_DFL runs no handler code.
    unsafe { nix::sys::signal::sigaction(sig, &act) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Send `sig` to thread `tid` of process `pid` (tgkill(2)).
pub fn tgkill(pid: Pid, tid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid.as_raw(), tid.as_raw(), sig) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
