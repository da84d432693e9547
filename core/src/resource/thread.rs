//! Per-thread state: registers and xstate, signal mask and the thread's own signal queue,
//! sigaltstack, rseq area, robust list, clear_child_tid, name and CPU affinity. Captured from
//! each frozen thread; applied to each thread of the fresh process, which the restore creates
//! with clone3 (CLONE_THREAD, `set_tid` = the original tid) from inside the leader.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};

use super::signals;
use crate::arch;
use crate::engine::error::{Context, EngineError, Result};
use crate::engine::inject::{u64_at, Call, Injector, Scratch};
use crate::engine::Refusal;
use crate::image::model::{Rseq, ThreadState};
use crate::sys::{memory, ptrace, ptrace::Stop, Pid};

const PR_GET_TID_ADDRESS: u64 = 40;
/// Where in the scratch area the getters' batch table goes: after what they write.
const GETTERS_TABLE_AT: u64 = 256;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `struct rseq` field `rseq_cs` (after cpu_id_start and cpu_id).
const RSEQ_CS_OFFSET: u64 = 8;
/// `struct rseq_cs`: version, flags, start_ip, post_commit_offset, abort_ip.
const RSEQ_CS_SIZE: usize = 32;
/// What a restored thread shares with its leader: everything a pthread shares.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;
/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
const CLONE_ARGS_SIZE: usize = 80;

/// What `/proc/PID/task/TID/status` tells about one thread.
pub struct TaskStatus {
    /// The thread's id in its own (innermost) pid namespace.
    pub inner_tid: i32,
    /// A shadow stack is enabled (`x86_Thread_features: shstk`).
    pub shadow_stack: bool,
}

pub fn task_status(pid: Pid, tid: Pid) -> Result<TaskStatus> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    let mut st = TaskStatus {
        inner_tid: tid.as_raw(),
        shadow_stack: false,
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("NSpid:") {
            if let Some(last) = v.split_whitespace().last().and_then(|t| t.parse().ok()) {
                st.inner_tid = last;
            }
        } else if let Some(v) = line.strip_prefix("x86_Thread_features:") {
            st.shadow_stack = v.split_whitespace().any(|f| f == "shstk");
        }
    }
    Ok(st)
}

/// Everything about one frozen thread. `inj` runs syscalls in that very thread (the trap must
/// be planted); `regs` are the registers it was frozen with. Its pending signals are the
/// freeze's to tell (see `Frozen::pending_signals`).
pub fn capture(
    pid: Pid,
    inj: &Injector,
    scratch: &Scratch,
    regs: &arch::Regs,
    unpinned: &UnpinnedSets,
) -> Result<ThreadState> {
    let tid = inj.pid();
    let status = task_status(pid, tid)?;
    if status.shadow_stack {
        return Err(Refusal::ShadowStack {
            pid,
            tid: status.inner_tid,
        }
        .into());
    }
    let xstate =
        ptrace::get_xstate(tid).ctx(|| format!("reading the FPU/AVX state of thread {tid}"))?;
    let sigmask =
        ptrace::get_sigmask(tid).ctx(|| format!("reading the signal mask of thread {tid}"))?;
    let rseq = capture_rseq(tid)?;
    let mut regs = arch::rewind_interrupted_syscall(*regs);
    if let Some(r) = &rseq {
        abort_rseq_critical_section(pid, r, &mut regs)?;
    }

    // Both in one stop: the alternate stack at the scratch area's start, the tid address after.
    let tid_address_at = signals::STACK_T as u64;
    let calls = [
        Call::new(libc::SYS_sigaltstack, [0, scratch.addr, 0, 0, 0, 0]),
        Call::new(
            libc::SYS_prctl,
            [
                PR_GET_TID_ADDRESS,
                scratch.addr + tid_address_at,
                0,
                0,
                0,
                0,
            ],
        ),
    ];
    let what = |i: usize| ["sigaltstack", "prctl(PR_GET_TID_ADDRESS)"][i.min(1)].to_string();
    inj.batch_call_each(what, scratch, GETTERS_TABLE_AT, &calls)?;
    let got = scratch.read(pid, 0, signals::STACK_T + 8)?;
    let altstack = signals::decode_altstack(&got[..signals::STACK_T]);
    let clear_child_tid = u64_at(&got, signals::STACK_T);
    let robust_list = crate::sys::process::robust_list(tid)
        .ctx(|| format!("reading the robust futex list of thread {tid}"))?;
    let attrs = super::attrs::capture_thread(inj, scratch)?;

    let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    Ok(ThreadState {
        tid: status.inner_tid,
        regs: arch::to_image(&regs),
        xstate,
        sigmask,
        queued_signals: signals::capture_queued(tid, false)?,
        pending_signals: Vec::new(),
        altstack,
        rseq,
        robust_list,
        clear_child_tid,
        name,
        affinity: capture_affinity(tid, unpinned),
        attrs,
    })
}

fn capture_rseq(tid: Pid) -> Result<Option<Rseq>> {
    let c =
        ptrace::get_rseq(tid).ctx(|| format!("reading the rseq registration of thread {tid}"))?;
    Ok((c.rseq_abi_pointer != 0).then_some(Rseq {
        addr: c.rseq_abi_pointer,
        len: c.rseq_abi_size,
        sig: c.signature,
        flags: c.flags,
    }))
}

/// A thread frozen inside an rseq critical section would resume, after restore, in the middle
/// of a sequence the kernel no longer protects: send it to the section's abort handler, as the
/// kernel itself does when it preempts such a thread.
fn abort_rseq_critical_section(pid: Pid, r: &Rseq, regs: &mut arch::Regs) -> Result<()> {
    let mut word = [0u8; 8];
    memory::read(pid, r.addr + RSEQ_CS_OFFSET, &mut word)
        .ctx(|| format!("reading the rseq area of pid {pid}"))?;
    let cs = u64::from_le_bytes(word);
    if cs == 0 {
        return Ok(());
    }
    let mut desc = [0u8; RSEQ_CS_SIZE];
    if memory::read(pid, cs, &mut desc).is_err() {
        // A stale pointer the kernel would clear on the next preemption.
        return Ok(());
    }
    let (start, len, abort) = (u64_at(&desc, 8), u64_at(&desc, 16), u64_at(&desc, 24));
    let ip = arch::instruction_pointer(regs);
    if ip >= start && ip < start.saturating_add(len) {
        arch::set_instruction_pointer(regs, abort);
    }
    Ok(())
}

/// The CPU sets a thread counts as unpinned in: the tracer's own and all online CPUs. Read once
/// per checkpoint, not once per thread inside the freeze.
pub struct UnpinnedSets(Vec<Vec<u64>>);

impl UnpinnedSets {
    pub fn read() -> UnpinnedSets {
        let ours = sched_getaffinity(Pid::from_raw(0))
            .ok()
            .map(|m| to_words(&m));
        UnpinnedSets(ours.into_iter().chain(online_cpus()).collect())
    }
}

/// `None` when the thread may run on every CPU of one of the `unpinned` sets, so that a target
/// with more CPUs lets it use them all.
fn capture_affinity(tid: Pid, unpinned: &UnpinnedSets) -> Option<Vec<u64>> {
    let words = to_words(&sched_getaffinity(tid).ok()?);
    let covers = |other: &Vec<u64>| other.iter().zip(&words).all(|(o, w)| o & !w == 0);
    if unpinned.0.iter().any(covers) {
        return None;
    }
    Some(words)
}

fn to_words(set: &CpuSet) -> Vec<u64> {
    let mut words = vec![0u64; CpuSet::count().div_ceil(64)];
    for cpu in 0..CpuSet::count() {
        if set.is_set(cpu).unwrap_or(false) {
            words[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    words
}

/// `/sys/devices/system/cpu/online` ("0-3,6") as mask words.
fn online_cpus() -> Option<Vec<u64>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut words = vec![0u64; CpuSet::count().div_ceil(64)];
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        for cpu in a..=b.min(CpuSet::count() - 1) {
            words[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    Some(words)
}

/// Create thread `tid` (its id inside the process's pid namespace) in the process `leader`
/// drives, stopped before its first instruction. Returns its id in our pid namespace. Without
/// `exact_tid` the kernel picks the id (a restore without a pid namespace).
/// Its clear_child_tid is set by the clone itself (CLONE_CHILD_CLEARTID).
pub fn create(
    leader: &Injector,
    scratch: &Scratch,
    t: &ThreadState,
    exact_tid: bool,
) -> Result<Pid> {
    let pid = leader.pid();
    let tid = t.tid;
    let tids = scratch.write(pid, 0, &tid.to_le_bytes())?;
    let mut args = [0u64; CLONE_ARGS_SIZE / 8];
    args[0] = THREAD_FLAGS | libc::CLONE_CHILD_CLEARTID as u64;
    args[2] = t.clear_child_tid; // child_tid
    if exact_tid {
        args[8] = tids; // set_tid
        args[9] = 1; // set_tid_size: the innermost namespace only
    }
    let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
    let at = scratch.write(pid, 8, &bytes)?;
    let made = leader
        .call(
            "clone3 of a thread",
            libc::SYS_clone3,
            [at, CLONE_ARGS_SIZE as u64, 0, 0, 0, 0],
        )
        .map_err(|e| match e {
            EngineError::Os { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                EngineError::Unrestorable(format!("thread id {tid} is already taken"))
            }
            other => other,
        })?;
    if exact_tid && made != tid as u64 {
        return Err(EngineError::Unrestorable(format!(
            "thread {tid} was created with id {made}"
        )));
    }
    let Some(&outer) = leader.take_cloned().last() else {
        return Err(EngineError::Unrestorable(format!(
            "thread {tid} was created but never reported to the restorer"
        )));
    };
    match ptrace::wait(outer).ctx(|| format!("waiting for the new thread {tid}"))? {
        Stop::Signal(libc::SIGSTOP) | Stop::Event(_) => Ok(outer),
        other => Err(EngineError::Unrestorable(format!(
            "the new thread {tid} stopped unexpectedly ({other:?})"
        ))),
    }
}

/// The leader's kernel-side thread state, set from inside it: clear_child_tid, then what
/// [`apply_injected`] sets.
pub fn apply_leader(inj: &Injector, scratch: &Scratch, t: &ThreadState) -> Result<()> {
    inj.call(
        "set_tid_address",
        libc::SYS_set_tid_address,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    )?;
    apply_injected(inj, scratch, t, "")
}

/// A thread's kernel-side state, set from inside it: robust list, rseq area, alternate signal
/// stack, name, timer slack and parent-death signal (no_new_privs comes later, see
/// [`super::attrs::apply_no_new_privs`]). What a thread fresh from [`create`] already has is skipped: no altstack
/// (the kernel gives a new thread none) and the name `inherited` from its creator.
pub fn apply_injected(
    inj: &Injector,
    scratch: &Scratch,
    t: &ThreadState,
    inherited: &str,
) -> Result<()> {
    let pid = inj.pid();
    inj.call(
        "set_robust_list",
        libc::SYS_set_robust_list,
        [t.robust_list.0, t.robust_list.1, 0, 0, 0, 0],
    )?;
    if let Some(r) = &t.rseq {
        inj.call(
            "rseq",
            libc::SYS_rseq,
            [r.addr, r.len as u64, 0, r.sig as u64, 0, 0],
        )?;
    }
    if inherited.is_empty() || t.altstack.flags & libc::SS_DISABLE == 0 {
        signals::apply_altstack(inj, scratch, &t.altstack)?;
    }
    if t.name != inherited {
        let name = scratch.write_cstr(pid, 0, &t.name)?;
        inj.call(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, name, 0, 0, 0, 0],
        )?;
    }
    super::attrs::apply_thread(inj, &t.attrs)
}

/// Drop the capabilities the restore lent the thread to create its siblings with their ids
/// (see [`crate::sys::caps`]): effective, permitted, inheritable and ambient.
pub fn drop_capabilities(inj: &Injector, scratch: &Scratch) -> Result<()> {
    let mut b = [0u8; 8 + 24];
    b[0..4].copy_from_slice(&CAPABILITY_VERSION_3.to_le_bytes());
    let header = scratch.write(inj.pid(), 0, &b)?;
    inj.call("capset", libc::SYS_capset, [header, header + 8, 0, 0, 0, 0])?;
    inj.call(
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
        libc::SYS_prctl,
        [PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// CPU affinity, set from outside; a thread that was not pinned gets `unpinned` (the
/// restorer's own set, when the restore pinned itself: see `sys::cpu`). A mask with none of
/// this machine's CPUs is not applied (the thread keeps every CPU).
pub fn apply_affinity(tid: Pid, t: &ThreadState, unpinned: Option<&CpuSet>) {
    let Some(words) = &t.affinity else {
        if let Some(set) = unpinned {
            let _ = sched_setaffinity(tid, set);
        }
        return;
    };
    let mut set = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        if words
            .get(cpu / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
        {
            let _ = set.set(cpu);
        }
    }
    if sched_setaffinity(tid, &set).is_err() {
        if let Some(set) = unpinned {
            let _ = sched_setaffinity(tid, set);
        }
    }
}

/// The last per-thread step before the thread runs: FPU/AVX state, registers, signal mask.
pub fn apply_registers(tid: Pid, t: &ThreadState) -> Result<()> {
    ptrace::set_xstate(tid, &t.xstate)
        .ctx(|| format!("setting the FPU/AVX state of thread {}", t.tid))?;
    ptrace::set_regs(tid, arch::from_image(&t.regs))
        .ctx(|| format!("setting the registers of thread {}", t.tid))?;
    ptrace::set_sigmask(tid, t.sigmask)
        .ctx(|| format!("setting the signal mask of thread {}", t.tid))?;
    Ok(())
}
