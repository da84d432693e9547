//! Refusals decided from /proc before the process is touched: what the engine does not support
//! yet, each a [`Refusal`].

use procfs::process::Process;

use super::error::Result;
use super::refusal::Refusal;
use crate::resource::thread;
use crate::sys::Pid;

pub fn preflight(pid: Pid) -> Result<()> {
    let proc_ = Process::new(pid.as_raw()).map_err(|_| Refusal::NoSuchProcess { pid })?;
    let status = proc_.status()?;
    if status.tgid != pid.as_raw() {
        return Err(Refusal::NotAProcess {
            pid,
            tgid: status.tgid,
        }
        .into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && (status.ruid != me || status.euid != me || status.suid != me) {
        return Err(Refusal::OtherUser {
            pid,
            uid: status.euid,
        }
        .into());
    }
    if status.state.starts_with('Z') || status.state.starts_with('X') {
        return Err(if status.threads > 1 {
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
    refuse_children(pid)?;
    refuse_shadow_stacks(pid)?;
    let timers = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    if timers.lines().any(|l| l.starts_with("ID:")) {
        return Err(Refusal::PosixTimer { pid }.into());
    }
    Ok(())
}

/// The checks that could race with a running process, repeated once it is frozen.
pub fn preflight_frozen(pid: Pid) -> Result<()> {
    refuse_children(pid)
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

/// Children of any thread of `pid` (each thread has its own `children` list).
fn refuse_children(pid: Pid) -> Result<()> {
    let mut count = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            count += list.split_whitespace().count();
        }
    }
    if count > 0 {
        return Err(Refusal::Children { pid, count }.into());
    }
    Ok(())
}
