//! Attributes the kernel keeps for a process or a thread and that a program sets with prctl,
//! membarrier or `/proc`: THP-disable, child-subreaper, dumpable, oom_score_adj, membarrier
//! registrations (per process); no_new_privs, parent-death signal, timer slack (per thread).
//! Captured by asking the frozen process itself (injected getters); applied to the fresh one
//! by injected setters, `oom_score_adj` from outside.
//!
//! Decisions (see `docs/image-format.md`): the parent-death signal is kept for every process,
//! the root's included, whose parent after restore is the restorer that stands for the one it
//! had (the deputy's side); a dumpable value of 2 (suid_dumpable "root only") comes back as 0,
//! the nearest value prctl can set and no less private; an `oom_score_adj` lower than an
//! unprivileged restorer may set stays at the lowest it may (the target's floor for this user).

use crate::engine::error::{EngineError, Result};
use crate::engine::inject::{Call, Injector, Scratch};
use crate::image::model::{ProcessAttrs, ThreadAttrs};
use crate::sys::Pid;

const PR_SET_PDEATHSIG: u64 = 1;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_GET_NO_NEW_PRIVS: u64 = 39;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;
/// PR_SET_THP_DISABLE flag (Linux 6.18+): THP stays on where MADV_HUGEPAGE asks for it.
const PR_THP_DISABLE_EXCEPT_ADVISED: u64 = 1 << 1;

/// Where in the scratch area a getter batch's table goes: after the values the getters
/// write (at its start).
const BATCH_AT: u64 = 256;

/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3+).
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
/// `(barrier command, its registration)`: on a kernel without GET_REGISTRATIONS, a barrier
/// command succeeds if and only if the process registered for it (EPERM otherwise).
const MEMBARRIER_PROBES: [(u64, u32); 3] = [
    (1 << 3, 1 << 4), // PRIVATE_EXPEDITED
    (1 << 5, 1 << 6), // PRIVATE_EXPEDITED_SYNC_CORE
    (1 << 7, 1 << 8), // PRIVATE_EXPEDITED_RSEQ
];
/// The MEMBARRIER_CMD_REGISTER_* commands, in the order they are registered again.
const MEMBARRIER_REGISTER: [u32; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// The process-wide attributes, asked through its leader (`inj`): the prctl getters in one
/// batch (one stop), then membarrier.
pub fn capture_process(inj: &Injector, scratch: &Scratch) -> Result<ProcessAttrs> {
    let getters = [
        ("PR_GET_THP_DISABLE", PR_GET_THP_DISABLE),
        ("PR_GET_CHILD_SUBREAPER", PR_GET_CHILD_SUBREAPER),
        ("PR_GET_DUMPABLE", PR_GET_DUMPABLE),
    ];
    let ([thp_disable, _, dumpable], child_subreaper) = prctl_getters(inj, scratch, getters, 1)?;
    Ok(ProcessAttrs {
        thp_disable: thp_disable as u32,
        child_subreaper: child_subreaper != 0,
        dumpable: dumpable as u32,
        oom_score_adj: read_oom_score_adj(inj.pid())?,
        membarrier: membarrier_registrations(inj)?,
    })
}

/// One thread's attributes, asked through that very thread (`inj`), in one batch.
pub fn capture_thread(inj: &Injector, scratch: &Scratch) -> Result<ThreadAttrs> {
    let getters = [
        ("PR_GET_NO_NEW_PRIVS", PR_GET_NO_NEW_PRIVS),
        ("PR_GET_PDEATHSIG", PR_GET_PDEATHSIG),
        ("PR_GET_TIMERSLACK", PR_GET_TIMERSLACK),
    ];
    let ([no_new_privs, _, timer_slack_ns], pdeathsig) = prctl_getters(inj, scratch, getters, 1)?;
    Ok(ThreadAttrs {
        no_new_privs: no_new_privs != 0,
        pdeathsig,
        timer_slack_ns,
    })
}

/// Three prctl getters in one stop: what each returns, and the int that getter `into`
/// writes (to the scratch area's start, the address it is given).
fn prctl_getters(
    inj: &Injector,
    scratch: &Scratch,
    getters: [(&str, u64); 3],
    into: usize,
) -> Result<([u64; 3], i32)> {
    let mut calls = getters.map(|(_, option)| Call::new(libc::SYS_prctl, [option, 0, 0, 0, 0, 0]));
    if let Some(c) = calls.get_mut(into) {
        c.args[1] = scratch.addr;
    }
    let what = |i: usize| format!("prctl({})", getters.get(i).map_or("?", |g| g.0));
    let got = inj.batch_call_each(what, scratch, BATCH_AT, &calls)?;
    let got = <[u64; 3]>::try_from(got).map_err(|r| {
        EngineError::Unrestorable(format!("3 prctl getters gave {} results", r.len()))
    })?;
    Ok((got, i32_at(&scratch.read(inj.pid(), 0, 4)?)))
}

/// The registrations of `MEMBARRIER_CMD_GET_REGISTRATIONS`; before Linux 6.3, those a barrier
/// command tells (the private expedited kinds; a GLOBAL_EXPEDITED registration cannot be
/// seen there and is not carried).
fn membarrier_registrations(inj: &Injector) -> Result<u32> {
    let r = inj.raw(
        libc::SYS_membarrier,
        [MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0],
    )?;
    if r >= 0 {
        return Ok(r as u32);
    }
    if r == -(libc::ENOSYS as i64) {
        return Ok(0);
    }
    let mut registered = 0;
    for (barrier, registration) in MEMBARRIER_PROBES {
        if inj.raw(libc::SYS_membarrier, [barrier, 0, 0, 0, 0, 0])? == 0 {
            registered |= registration;
        }
    }
    Ok(registered)
}

/// The process-wide attributes, set in the fresh process (`inj` its leader, `pid` its id
/// here). Dumpable last: a process that is not dumpable is still ours to finish (we trace it).
pub fn apply_process(inj: &Injector, pid: Pid, a: &ProcessAttrs) -> Result<()> {
    // Inherited from the restorer across fork and exec: set whatever the value.
    let disable = u64::from(a.thp_disable & 1);
    let flags = u64::from(a.thp_disable) & PR_THP_DISABLE_EXCEPT_ADVISED;
    match inj.raw(
        libc::SYS_prctl,
        [PR_SET_THP_DISABLE, disable, flags, 0, 0, 0],
    )? {
        r if r == -(libc::EINVAL as i64) && flags != 0 => {
            return Err(EngineError::Incompatible(format!(
                "the process disabled transparent huge pages except where advised \
                 (PR_THP_DISABLE_EXCEPT_ADVISED), which this kernel cannot do (Linux 6.18 or \
                 later is needed); pid {pid}"
            )))
        }
        r => check(r, "prctl(PR_SET_THP_DISABLE)", pid)?,
    }
    if a.child_subreaper {
        prctl(inj, "PR_SET_CHILD_SUBREAPER", PR_SET_CHILD_SUBREAPER, 1, 0)?;
    }
    for bit in MEMBARRIER_REGISTER
        .into_iter()
        .filter(|b| a.membarrier & b != 0)
    {
        inj.call(
            &format!("membarrier registration {bit:#x}"),
            libc::SYS_membarrier,
            [u64::from(bit), 0, 0, 0, 0, 0],
        )?;
    }
    apply_oom_score_adj(pid, a.oom_score_adj)?;
    let dumpable = u64::from(a.dumpable == 1);
    prctl(inj, "PR_SET_DUMPABLE", PR_SET_DUMPABLE, dumpable, 0)?;
    Ok(())
}

/// A thread's timer slack and parent-death signal, set from inside it (a new thread has the
/// slack of its creator and no parent-death signal).
pub fn apply_thread(inj: &Injector, a: &ThreadAttrs) -> Result<()> {
    if a.timer_slack_ns != 0 {
        prctl(
            inj,
            "PR_SET_TIMERSLACK",
            PR_SET_TIMERSLACK,
            a.timer_slack_ns,
            0,
        )?;
    }
    if a.pdeathsig != 0 {
        prctl(
            inj,
            "PR_SET_PDEATHSIG",
            PR_SET_PDEATHSIG,
            a.pdeathsig as u64,
            0,
        )?;
    }
    Ok(())
}

/// no_new_privs, set once every thread exists (a thread inherits it from the one that creates
/// it, and it can never be cleared).
pub fn apply_no_new_privs(inj: &Injector, a: &ThreadAttrs) -> Result<()> {
    if a.no_new_privs {
        prctl(inj, "PR_SET_NO_NEW_PRIVS", PR_SET_NO_NEW_PRIVS, 1, 0)?;
    }
    Ok(())
}

fn read_oom_score_adj(pid: Pid) -> Result<i32> {
    let path = format!("/proc/{pid}/oom_score_adj");
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::Os {
        what: format!("reading {path}"),
        source: e,
    })?;
    text.trim().parse().map_err(|_| EngineError::Os {
        what: format!("reading {path}"),
        source: std::io::Error::other(format!("not a number: {:?}", text.trim())),
    })
}

/// Written from outside. Lowering it below the fresh process's floor needs CAP_SYS_RESOURCE;
/// without it the process keeps the lowest value it may have here (EACCES is not an error).
fn apply_oom_score_adj(pid: Pid, value: i32) -> Result<()> {
    if read_oom_score_adj(pid)? == value {
        return Ok(());
    }
    let path = format!("/proc/{pid}/oom_score_adj");
    match std::fs::write(&path, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
        Err(e) => Err(EngineError::Os {
            what: format!("writing {value} to {path}"),
            source: e,
        }),
    }
}

fn prctl(inj: &Injector, name: &str, option: u64, arg2: u64, arg3: u64) -> Result<u64> {
    inj.call(
        &format!("prctl({name})"),
        libc::SYS_prctl,
        [option, arg2, arg3, 0, 0, 0],
    )
}

fn check(r: i64, what: &str, pid: Pid) -> Result<()> {
    if (-4095..0).contains(&r) {
        return Err(EngineError::Os {
            what: format!("{what} in pid {pid}"),
            source: std::io::Error::from_raw_os_error(-r as i32),
        });
    }
    Ok(())
}

fn i32_at(b: &[u8]) -> i32 {
    b.get(..4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_le_bytes)
        .unwrap_or(0)
}
