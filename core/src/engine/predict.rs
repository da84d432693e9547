//! A forecast of a checkpoint's refusal, read from /proc without stopping the job: the
//! checks every checkpoint starts with (owner, tracer, shadow stacks, timers), each
//! descriptor's kind and peer as the capture classifies it (`fds::predict`), and System V
//! shared memory in the mappings. Nothing is frozen, traced or read from the processes'
//! memory, so a balancer may ask every round. It never refuses what a checkpoint carries;
//! what only a real attempt finds (a queue or a file with no name too large, a listener's
//! waiting connections, unread inotify events, groups led from outside, thread churn) it
//! misses, and the caller remembers such a refusal itself.

use procfs::process::{MMapPath, Process};

use super::checks;
use super::error::{EngineError, Result};
use super::refusal::Refusal;
use crate::resource::fds;
use crate::sys::Pid;

/// What a checkpoint of the job rooted at `root` would refuse now, if /proc tells; `None` when
/// nothing it can see stands in the way (or the job is gone). `share_stdio_with` as in
/// [`super::DumpOptions`].
pub fn refusal(root: Pid, share_stdio_with: Option<Pid>) -> Option<Refusal> {
    match forecast(root, share_stdio_with) {
        // A job that just ended holds nothing: it is not kept anywhere.
        Err(EngineError::Refused(Refusal::NoSuchProcess { .. } | Refusal::Exited { .. })) => None,
        Err(EngineError::Refused(why)) => Some(why),
        _ => None,
    }
}

fn forecast(root: Pid, share_stdio_with: Option<Pid>) -> Result<()> {
    checks::preflight(root)?;
    let mut members = vec![root];
    members.extend(crate::sys::process::descendants(root));
    let mut held = fds::Held::default();
    let mut tables = Vec::with_capacity(members.len());
    for pid in members {
        let listed = checks::preflight_member(pid)
            .and_then(|()| sysv_shm(pid))
            .and_then(|()| fds::list(pid, &mut held));
        match listed {
            Ok(links) => tables.push((pid, links)),
            // A descendant that ended meanwhile is no longer the job's.
            Err(EngineError::Refused(Refusal::NoSuchProcess { .. } | Refusal::Exited { .. }))
                if pid != root => {}
            Err(e @ EngineError::Refused(_)) => return Err(e),
            Err(_) if pid != root => {}
            Err(e) => return Err(e),
        }
    }
    for (pid, links) in &tables {
        fds::predict(*pid, links, &held, share_stdio_with)?;
    }
    Ok(())
}

/// System V shared memory attached by `pid`.
fn sysv_shm(pid: Pid) -> Result<()> {
    let maps = Process::new(pid.as_raw())?.maps()?;
    match maps.iter().find_map(|m| match m.pathname {
        MMapPath::Vsys(key) => Some(key),
        _ => None,
    }) {
        Some(key) => Err(Refusal::SysvShm {
            pid,
            key: key as u64,
        }
        .into()),
        None => Ok(()),
    }
}
