//! Signal state: the process's 64 dispositions and its shared queue; per thread, the
//! alternate signal stack and the thread's own queue (the blocked mask travels with the
//! registers, see [`super::thread`]). Dispositions and altstacks are read and set by syscalls
//! run inside the process.

use crate::engine::error::{Context, Result};
use crate::engine::inject::{u64_at, Call, Injector, Scratch};
use crate::image::model::{AltStack, QueuedSignal, SigAction};
use crate::sys::{ptrace, Pid};

/// `struct kernel_sigaction` on x86_64: handler, flags, restorer, mask.
const KSIGACTION: usize = 32;
/// The scratch bytes the 64 dispositions take, each at its signal number's slot (rounded to
/// a page); the table of the batch that reads or sets them follows.
const ACTIONS_LEN: u64 = 4096;
/// `stack_t`: sp, flags (int, padded), size.
pub const STACK_T: usize = 24;

fn settable(sig: u8) -> bool {
    sig as i32 != libc::SIGKILL && sig as i32 != libc::SIGSTOP
}

/// All dispositions, read inside the process.
pub fn capture_actions(inj: &Injector, scratch: &Scratch) -> Result<Vec<SigAction>> {
    let pid = inj.pid();
    let signals: Vec<u8> = (1..=64u8).filter(|s| settable(*s)).collect();
    // Each signal's old action at its own slot; all read in one batch, whose table follows.
    let calls: Vec<Call> = signals
        .iter()
        .map(|&signo| {
            let out = scratch.addr + signo as u64 * KSIGACTION as u64;
            Call::new(libc::SYS_rt_sigaction, [signo as u64, 0, out, 8, 0, 0])
        })
        .collect();
    inj.batch_call("rt_sigaction", scratch, ACTIONS_LEN, &calls)?;
    let b = scratch.read(pid, 0, ACTIONS_LEN as usize)?;
    let mut actions = Vec::with_capacity(signals.len());
    for signo in signals {
        let at = signo as usize * KSIGACTION;
        actions.push(SigAction {
            signo,
            handler: u64_at(&b, at),
            flags: u64_at(&b, at + 8),
            restorer: u64_at(&b, at + 16),
            mask: u64_at(&b, at + 24),
        });
    }
    Ok(actions)
}

/// A `stack_t` as sigaltstack(2) returns it.
pub fn decode_altstack(b: &[u8]) -> AltStack {
    AltStack {
        sp: u64_at(b, 0),
        flags: u64_at(b, 8) as u32 as i32,
        size: u64_at(b, 16),
    }
}

/// Set every disposition (SIG_DFL included: the fresh process may have inherited others).
pub fn apply_actions(inj: &Injector, scratch: &Scratch, actions: &[SigAction]) -> Result<()> {
    let pid = inj.pid();
    let mut table = vec![0u8; 65 * KSIGACTION];
    for a in actions {
        let off = a.signo as usize * KSIGACTION;
        if let Some(slot) = table.get_mut(off..off + KSIGACTION) {
            slot[0..8].copy_from_slice(&a.handler.to_le_bytes());
            slot[8..16].copy_from_slice(&a.flags.to_le_bytes());
            slot[16..24].copy_from_slice(&a.restorer.to_le_bytes());
            slot[24..32].copy_from_slice(&a.mask.to_le_bytes());
        }
    }
    let base = scratch.write(pid, 0, &table)?;
    let calls: Vec<Call> = (1..=64u8)
        .filter(|s| settable(*s))
        .map(|signo| {
            let act = base + signo as u64 * KSIGACTION as u64;
            Call::new(libc::SYS_rt_sigaction, [signo as u64, act, 0, 8, 0, 0])
        })
        .collect();
    inj.batch_call("rt_sigaction", scratch, ACTIONS_LEN, &calls)?;
    Ok(())
}

/// The alternate stack of the thread `inj` drives.
pub fn apply_altstack(inj: &Injector, scratch: &Scratch, alt: &AltStack) -> Result<()> {
    let mut st = [0u8; STACK_T];
    st[0..8].copy_from_slice(&alt.sp.to_le_bytes());
    // SS_ONSTACK only reports that the stack was in use; it is not a setting.
    let flags = alt.flags & !libc::SS_ONSTACK;
    st[8..12].copy_from_slice(&flags.to_le_bytes());
    st[16..24].copy_from_slice(&alt.size.to_le_bytes());
    let p = scratch.write(inj.pid(), 0, &st)?;
    inj.call("sigaltstack", libc::SYS_sigaltstack, [p, 0, 0, 0, 0, 0])?;
    Ok(())
}

/// The queued signals of a frozen thread, oldest first: its own queue, or the process-wide one
/// when `shared`.
pub fn capture_queued(tid: Pid, shared: bool) -> Result<Vec<QueuedSignal>> {
    let infos = ptrace::peek_siginfo(tid, shared)
        .ctx(|| format!("reading the queued signals of thread {tid}"))?;
    Ok(infos
        .iter()
        .map(|info| QueuedSignal {
            signo: i32::from_le_bytes([info[0], info[1], info[2], info[3]]),
            info: info.to_vec(),
        })
        .collect())
}

/// Queue the signals again, from inside the leader (whose tid is the process id, which lets it
/// queue any siginfo to its own process): to the process when `to_thread` is `None`, else to
/// that thread. All signals must be blocked meanwhile so none is delivered during the restore.
pub fn apply_queued(
    leader: &Injector,
    scratch: &Scratch,
    own_pid: i32,
    to_thread: Option<i32>,
    queued: &[QueuedSignal],
) -> Result<()> {
    for q in queued {
        let info = scratch.write(leader.pid(), 0, &q.info)?;
        let pid = own_pid as u64;
        match to_thread {
            None => leader.call(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                [pid, q.signo as u64, info, 0, 0, 0],
            )?,
            Some(tid) => leader.call(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                [pid, tid as u64, q.signo as u64, info, 0, 0],
            )?,
        };
    }
    Ok(())
}
