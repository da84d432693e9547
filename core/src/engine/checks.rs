//! Refusals decided from /proc before a process is touched: what the engine does not support
//! yet, each a [`Refusal`].

use procfs::process::Process;

use super::error::Result;
use super::refusal::Refusal;
use crate::resource::{thread, timers};
use crate::sys::Pid;

/// The process the user named: a whole process, not one of its threads, plus what
/// [`preflight_member`] checks.
pub fn preflight(pid: Pid) -> Result<()> {
    let status = Process::new(pid.as_raw())
        .map_err(|_| Refusal::NoSuchProcess { pid })?
        .status()?;
    if status.tgid != pid.as_raw() {
        return Err(Refusal::NotAProcess {
            pid,
            tgid: status.tgid,
        }
        .into());
    }
    preflight_member(pid)
}

/// Any process of the job, before it is frozen.
pub fn preflight_member(pid: Pid) -> Result<()> {
    let status = Process::new(pid.as_raw())
        .map_err(|_| Refusal::NoSuchProcess { pid })?
        .status()?;
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && (status.ruid != me || status.euid != me || status.suid != me) {
        return Err(Refusal::OtherUser {
            pid,
            uid: status.euid,
        }
        .into());
    }
    if status.state.starts_with('Z') || status.state.starts_with('X') {
        return Err(if status.threads > 1 && !exiting(pid) {
            Refusal::LeaderExited { pid }
        } else {
            Refusal::Exited { pid }
        }
        .into());
    }
    if status.tracerpid != 0 {
        return Err(Refusal::AlreadyTraced {
            pid,
            tracer: status.tracerpid,
        }
        .into());
    }
    refuse_shadow_stacks(pid)?;
    timers::refuse_unsupported(pid)
}

/// A process whose main thread is a zombie while others live is either one whose main thread
/// called pthread_exit (it stays so) or one in the middle of exiting (its threads are gone in
/// an instant): tell them apart by waiting a little.
fn exiting(pid: Pid) -> bool {
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let threads = Process::new(pid.as_raw())
            .and_then(|p| p.status())
            .map(|s| s.threads);
        if !matches!(threads, Ok(n) if n > 1) {
            return true;
        }
    }
    false
}

/// A thread with an x86 shadow stack (CET): its hidden stack is not captured yet. Checked
/// again per thread once frozen (a thread may enable it meanwhile).
fn refuse_shadow_stacks(pid: Pid) -> Result<()> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(st) = thread::task_status(pid, Pid::from_raw(tid)) {
                if st.shadow_stack {
                    return Err(Refusal::ShadowStack {
                        pid,
                        tid: st.inner_tid,
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}
