//! Standing in for a process as its parent: pass on the signals sent to us, wait for its end,
//! and end the same way (exit code, or death by the same signal). Used by every command that
//! restores a process in the foreground.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::sys::{signals, Pid};
use crate::wire::Ended;

/// Signals passed on to the supervised process when someone sends them to the supervisor.
pub const FORWARDED: [Signal; 9] = [
    Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1,
    Signal::SIGUSR2, Signal::SIGWINCH, Signal::SIGCONT, Signal::SIGTSTP,
];

/// Block the forwarded signals and SIGCHLD in the calling thread (do it before starting any
/// thread, so they all inherit the mask) and return the set to wait on.
pub fn block_signals() -> std::io::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block().map_err(std::io::Error::from)?;
    Ok(set)
}

/// Forward signals until `child` ends; return how it ended.
pub fn supervise(child: Pid, waited: &SigSet) -> Ended {
    loop {
        loop {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ended::Exited(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ended::Signaled(sig as i32),
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Ended::Exited(1),
            }
        }
        let Ok(got) = signals::wait(waited) else { continue };
        if got.signal == Signal::SIGCHLD {
            continue;
        }
        // A terminal's signals already reached the whole foreground process group, the
        // supervised process included; pass on only those sent to the supervisor itself.
        if got.from_process {
            let _ = kill(child, got.signal);
        }
    }
}

/// End this process the way the supervised one ended (without a core dump of our own).
pub fn end_like(ended: Ended) -> ! {
    match ended {
        Ended::Exited(code) => std::process::exit(code),
        Ended::Signaled(signo) => {
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
                let _ = signals::set_default(sig);
                let mut only = SigSet::empty();
                only.add(sig);
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
                let _ = nix::sys::signal::raise(sig);
            }
            std::process::exit(128 + signo)
        }
    }
}
