//! Refusals decided from /proc before the process is touched: what the engine does not support
//! yet. Each refusal is one sentence naming the thing.

use procfs::process::Process;

use super::error::{EngineError, Result};
use crate::sys::Pid;

pub fn preflight(pid: Pid) -> Result<()> {
    let proc_ = Process::new(pid.as_raw())
        .map_err(|_| EngineError::Refused(format!("there is no process with pid {pid}")))?;
    let status = proc_.status()?;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if me != 0 && (status.ruid != me || status.euid != me || status.suid != me) {
        return Err(EngineError::Refused(format!(
            "pid {pid} belongs to another user (uid {}); only its owner or root can checkpoint it",
            status.euid
        )));
    }
    if status.state.starts_with('Z') || status.state.starts_with('X') {
        return Err(EngineError::Refused(format!(
            "pid {pid} has already exited"
        )));
    }
    if status.threads > 1 {
        return Err(EngineError::Refused(format!(
            "pid {pid} has {} threads; multi-threaded processes cannot be checkpointed yet",
            status.threads
        )));
    }
    if status.tracerpid != 0 {
        return Err(EngineError::Refused(format!(
            "pid {pid} is already traced by pid {}; a traced process cannot be checkpointed",
            status.tracerpid
        )));
    }
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let n = children.split_whitespace().count();
    if n > 0 {
        return Err(EngineError::Refused(format!(
            "pid {pid} has {n} child process{}; processes with children cannot be checkpointed yet",
            if n == 1 { "" } else { "es" }
        )));
    }
    let timers = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    if timers.lines().any(|l| l.starts_with("ID:")) {
        return Err(EngineError::Refused(format!(
            "pid {pid} has an armed POSIX timer; processes with timers cannot be checkpointed yet"
        )));
    }
    Ok(())
}

/// The checks that could race with a running process, repeated once it is frozen.
pub fn preflight_frozen(pid: Pid) -> Result<()> {
    let status = Process::new(pid.as_raw())?.status()?;
    if status.threads > 1 {
        return Err(EngineError::Refused(format!(
            "pid {pid} has {} threads; multi-threaded processes cannot be checkpointed yet",
            status.threads
        )));
    }
    Ok(())
}
