//! Standing in for a process as its parent: pass on the signals sent to us, wait for its end,
//! and end the same way (exit code, or death by the same signal). Used by every command that
//! restores a process in the foreground.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::sys::{signals, Pid};
use crate::wire::Ended;

/// Signals passed on to the supervised process when someone sends them to the supervisor.
pub const FORWARDED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
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
        let Ok(got) = signals::wait(waited) else {
            continue;
        };
        if got.signal == Signal::SIGCHLD {
            continue;
        }
        // A terminal's signals already reached the whole foreground process group, the
        // supervised process included; pass on only those sent to the supervisor itself.
        if got.from_process {
            signal_job(child, got.signal);
        }
    }
}

/// Supervise a restored job to its end: its root (as [`supervise`]), then, in its own pid
/// namespace (`reaper` its init), whatever the root left running (a background subshell, a
/// grandchild) until none is left, as a reader of the job's output at home would wait for them;
/// signals sent to us reach them meanwhile. Then the namespace's init goes. The job ends as its
/// root did.
pub fn supervise_job(root: Pid, reaper: Option<Pid>, waited: &SigSet) -> Ended {
    let ended = supervise(root, waited);
    if let Some(reaper) = reaper {
        outlive(reaper, waited);
        let _ = kill(reaper, Signal::SIGKILL);
        let _ = waitpid(reaper, None);
    }
    ended
}

/// Wait until the pid namespace whose init is `reaper` holds no process but it (once the root
/// is gone, whatever is left is the init's), passing on the signals sent to us.
fn outlive(reaper: Pid, waited: &SigSet) {
    let tick = std::time::Duration::from_millis(100);
    loop {
        let left = crate::sys::process::descendants(reaper);
        if left.is_empty() {
            return;
        }
        // The init reaps them, so no SIGCHLD reaches us: look again every tick.
        if let Ok(Some(got)) = signals::wait_for(waited, tick) {
            if got.from_process && got.signal != Signal::SIGCHLD {
                for p in left {
                    let _ = kill(p, got.signal);
                }
            }
        }
    }
}

/// Send `sig` to a job as a terminal would to its foreground group: the root and every
/// descendant still in the root's process group (a pipeline's members, a script's commands;
/// not a daemon that left for a group of its own).
pub fn signal_job(root: Pid, sig: Signal) {
    let group = nix::unistd::getpgid(Some(root)).ok();
    let _ = kill(root, sig);
    for p in crate::sys::process::descendants(root) {
        if group.is_some() && nix::unistd::getpgid(Some(p)).ok() == group {
            let _ = kill(p, sig);
        }
    }
}

/// End this process the way the supervised one ended (without a core dump of our own).
pub fn end_like(ended: Ended) -> ! {
    match ended {
        Ended::Exited(code) => std::process::exit(code),
        Ended::Signaled(signo) => {
            if let Ok(sig) = Signal::try_from(signo) {
                let _ =
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
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

/// The body of a restore helper process (a hidden subcommand of `mrun` and `mrun-agent`):
/// restore the image read from `image_fd` with this process's stdio in place of the
/// original's, report `running PID` (or `error MESSAGE`) as one line on `status_fd` (after a
/// `precopied N` line for each pre-copy stream taken in, if any), then
/// supervise the process and end like it. Call it first thing in `main`, while the process is
/// single-threaded. It dies with its parent (and the restored process with it, as the pid
/// namespace's init goes): a copy nobody answers for must not run on.
///
/// With `own_terminal`, stdin is a fresh pty: the helper starts a session with it as the
/// controlling terminal, so the process gets its job control signals and SIGWINCH.
///
/// `home_files`: the job gets home's files as its root, served on descriptor
/// [`crate::transfer::HOME_FILES_FD`] (see [`crate::files::mount`]).
pub fn restore_helper(image_fd: i32, status_fd: i32, own_terminal: bool, home_files: bool) -> ! {
    if crate::sys::process::die_with_parent().is_err() {
        std::process::exit(crate::engine::HELPER_USAGE);
    }
    if own_terminal {
        let _ = crate::sys::tty::take_as_controlling(0);
    }
    use std::io::Write;
    let mut status = match crate::sys::process::inherited_fd(status_fd) {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => std::process::exit(crate::engine::HELPER_USAGE),
    };
    // Each pre-copy round, once all in: its sender waits for that before the next.
    let mut report = status.try_clone().ok();
    let mut fail = |msg: String| -> ! {
        let _ = writeln!(status, "error {}", msg.replace('\n', " "));
        std::process::exit(1)
    };
    if let Err(e) = crate::sys::ns::enter_user_namespace() {
        fail(format!(
            "cannot create a user namespace to restore with the original pid: {e}"
        ));
    }
    if home_files {
        let fuse = crate::sys::process::inherited_fd(crate::transfer::HOME_FILES_FD)
            .unwrap_or_else(|e| fail(format!("no descriptor for home's files: {e}")));
        match crate::files::mount::enter_home_root(fuse) {
            Ok(dev) => crate::resource::files_served_on(dev),
            Err(e) => fail(format!(
                "cannot give the job home's files on this node: {e}"
            )),
        }
    }
    let waited = block_signals().unwrap_or_else(|e| fail(format!("cannot block signals: {e}")));
    let image = match crate::sys::process::inherited_fd(image_fd) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => fail(format!("no image descriptor: {e}")),
    };
    let opts = crate::engine::RestoreOptions {
        stdio: [0, 1, 2],
        original_pid: true,
        own_process_group: own_terminal,
    };
    let image = std::io::BufReader::with_capacity(crate::engine::READ_BUFFER, image);
    let mut taken = |n: u32| {
        if let Some(r) = report.as_mut() {
            let _ = writeln!(r, "precopied {n}");
        }
    };
    let restored = match crate::engine::restore_reporting(image, &opts, &mut taken) {
        Ok(r) => r,
        Err(e) => fail(crate::engine::error_chain(&e)),
    };
    // Its terminal's keys (^C, ^Z) go to it, as they did at home.
    if own_terminal {
        if let Err(e) = crate::sys::tty::set_foreground(0, restored.pid) {
            fail(format!("cannot give the process its terminal: {e}"));
        }
    }
    let _ = writeln!(status, "running {}", restored.pid);
    drop(status);
    // Only now: freeing what pre-copy sent takes a while, and the job runs meanwhile.
    drop(restored.sent_ahead);
    end_like(supervise_job(restored.pid, restored.reaper, &waited))
}
