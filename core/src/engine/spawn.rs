//! The fresh process a restore fills: created with the image's pid in a new pid namespace,
//! given the image's fds, cwd, umask and personality, then stopped at the exec of the image's
//! own executable (so `/proc/PID/exe` is right) before it runs a single instruction.

use std::ffi::CString;
use std::os::fd::RawFd;

use nix::sys::signal::{kill, Signal};

use super::error::{Context, EngineError, Result};
use crate::sys::{caps, ns, ptrace, ptrace::Stop, Pid};

/// Everything the child needs, prepared before it is created (the child only makes syscalls).
pub struct ChildPlan {
    pub exe: CString,
    pub cwd: CString,
    pub umask: u32,
    pub personality: u32,
    /// `(target fd, source fd in the restorer)`.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Put the process in a process group of its own (see [`super::RestoreOptions`]).
    pub own_process_group: bool,
    /// Mount a `/proc` of the new pid namespace in a mount namespace of its own (best
    /// effort; see [`ns::mount_own_proc`]).
    pub own_proc: bool,
    /// Keep the capability that clone3's `set_tid` needs across the exec (an unprivileged
    /// restore of a threaded process into a pid namespace; see [`crate::sys::caps`]).
    pub lend_checkpoint_capability: bool,
}

/// The fresh process and its namespace's init. Dropping it kills both, unless released.
pub struct Spawned {
    pub pid: Pid,
    pub reaper: Option<Pid>,
    /// Threads created in it so far (ids in our pid namespace): traced, so their exits must
    /// be collected before the leader's can be.
    pub threads: Vec<Pid>,
    released: bool,
}

impl Spawned {
    /// Hand the processes over to the caller (who now waits for them).
    pub fn release(mut self) -> (Pid, Option<Pid>) {
        self.released = true;
        (self.pid, self.reaper)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.released {
            let _ = kill(self.pid, Signal::SIGKILL);
            for t in &self.threads {
                let _ = ptrace::wait(*t);
            }
            let _ = nix::sys::wait::waitpid(self.pid, None);
            if let Some(r) = self.reaper {
                let _ = kill(r, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(r, None);
            }
        }
    }
}

/// Create the child with `pid` (when `pid_ns` is true, the caller has already called
/// [`ns::unshare_pid_namespace`]) and wait until it is stopped at its exec.
pub fn spawn(plan: &ChildPlan, pid: i32, pid_ns: bool) -> Result<Spawned> {
    let reaper = if pid_ns {
        Some(ns::spawn_reaper().ctx(|| "starting the pid namespace's init".into())?)
    } else {
        None
    };
    let forked = if pid_ns {
        ns::fork_with_pid(pid)
    } else {
        fork()
    };
    let child = match forked {
        Ok(Some(child)) => child,
        Ok(None) => child_main(plan),
        Err(e) => {
            if let Some(r) = reaper {
                let _ = kill(r, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(r, None);
            }
            return Err(EngineError::Os {
                what: format!("creating a process with pid {pid}"),
                source: e,
            });
        }
    };
    let spawned = Spawned {
        pid: child,
        reaper,
        threads: Vec::new(),
        released: false,
    };
    match ptrace::wait(child).ctx(|| "waiting for the fresh process".into())? {
        Stop::Signal(s) if s == libc::SIGTRAP => {}
        Stop::Exited(code) => {
            return Err(EngineError::Unrestorable(format!(
                "the fresh process could not start {} (exit code {code}: {})",
                plan.exe.to_string_lossy(),
                std::io::Error::from_raw_os_error(code)
            )))
        }
        other => {
            return Err(EngineError::Unrestorable(format!(
                "the fresh process stopped unexpectedly ({other:?})"
            )))
        }
    }
    ptrace::set_options(child, true).ctx(|| "setting ptrace options".into())?;
    Ok(spawned)
}

fn fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: the child only runs `child_main`, which makes async-signal-safe syscalls.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        c => Ok(Some(Pid::from_raw(c))),
    }
}

/// Runs in the forked child: install fds, cwd, umask, personality, process group, then exec
/// stopped.
/// Exits with the errno of the step that failed.
fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: only async-signal-safe syscalls on values prepared before the fork.
    unsafe {
        let fail = |_: &str| -> ! { libc::_exit(*libc::__errno_location()) };
        let top = plan
            .fds
            .iter()
            .map(|(t, s)| (*t).max(*s))
            .max()
            .unwrap_or(2)
            .max(2)
            + 1;
        let mut moved = [0 as RawFd; 1024];
        for (i, (_, src)) in plan.fds.iter().enumerate().take(1024) {
            let m = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, top);
            if m < 0 {
                fail("dup");
            }
            moved[i] = m;
        }
        for (i, (target, _)) in plan.fds.iter().enumerate().take(1024) {
            if libc::dup2(moved[i], *target) < 0 {
                fail("dup2");
            }
        }
        for fd in 0..top {
            if !plan.fds.iter().any(|(t, _)| *t == fd) {
                libc::close(fd);
            }
        }
        libc::syscall(libc::SYS_close_range, top as u32, u32::MAX, 0u32);
        if plan.own_proc {
            ns::mount_own_proc();
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail("chdir");
        }
        libc::umask(plan.umask as libc::mode_t);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::personality(plan.personality as libc::c_ulong);
        if plan.own_process_group && libc::setpgid(0, 0) != 0 {
            fail("setpgid");
        }
        if plan.lend_checkpoint_capability
            && caps::keep_checkpoint_capability_across_exec().is_err()
        {
            fail("capabilities");
        }
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
            fail("traceme");
        }
        let argv = [plan.exe.as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail("execve")
    }
}
