//! Freezing a running process, every thread of it, with PTRACE_SEIZE + PTRACE_INTERRUPT;
//! planting the syscall trap; and letting it go again exactly as it was (or ending it once its
//! image is complete).
//!
//! Threads created while the freeze runs are caught: every seized thread has
//! PTRACE_O_TRACECLONE, so its new threads start attached and stopped, and the task list is
//! read again until a pass finds no thread that is not frozen. Threads that exit meanwhile are
//! simply not part of the image.

use std::collections::BTreeSet;

use nix::sys::signal::{kill, Signal};

use super::error::{Context, EngineError, Result};
use super::inject::{Injector, Scratch};
use super::refusal::Refusal;
use crate::arch::{self, Regs};
use crate::sys::{ptrace, ptrace::Stop, signals, Pid};

/// How many times the task list is read before giving up on a process whose threads keep
/// appearing (each pass freezes every thread it found).
const MAX_PASSES: usize = 100;

/// One thread held in a ptrace stop.
pub struct FrozenThread {
    /// Thread id in the tracer's pid namespace.
    pub tid: Pid,
    /// Registers at the stop as the kernel reported them, except that a poll(2) being
    /// restarted is named poll ([`arch::name_restarted_poll`]).
    pub regs: Regs,
    pub injector: Injector,
    /// Signals that were about to be delivered to this thread when it stopped.
    pending: Vec<i32>,
}

/// A process held in ptrace stops, every thread of it. Dropping it without [`Frozen::kill`]
/// resumes the process untouched: registers and the planted bytes are put back and signals
/// that arrived meanwhile are sent again.
pub struct Frozen {
    pid: Pid,
    /// The leader first, then the other threads in ascending tid order.
    threads: Vec<FrozenThread>,
    /// Where the injected code was planted and the words it replaced.
    planted: Option<(u64, Vec<u64>)>,
    done: bool,
}

impl Frozen {
    /// Freeze every thread of `pid`. On error, the threads frozen so far are let go.
    pub fn seize(pid: Pid) -> Result<Frozen> {
        let mut frozen = Frozen {
            pid,
            threads: Vec::new(),
            planted: None,
            done: false,
        };
        freeze_leader(pid).map(|t| frozen.threads.push(t))?;
        let mut gone = BTreeSet::new();
        for _ in 0..MAX_PASSES {
            let listed = list_threads(pid)?;
            let new: Vec<Pid> = listed
                .into_iter()
                .filter(|t| !gone.contains(t) && !frozen.threads.iter().any(|f| f.tid == *t))
                .collect();
            if new.is_empty() {
                frozen.threads[1..].sort_by_key(|t| t.tid);
                return Ok(frozen);
            }
            // Ask every new thread to stop first, then collect the stops.
            let mut asked = Vec::with_capacity(new.len());
            for tid in new {
                let in_poll = blocked_in_poll(pid, tid);
                match attach(tid)? {
                    true => asked.push((tid, in_poll)),
                    false => {
                        gone.insert(tid);
                    }
                }
            }
            for (i, &(tid, in_poll)) in asked.iter().enumerate() {
                match wait_stopped(tid, in_poll) {
                    Ok(Some(t)) => frozen.threads.push(t),
                    Ok(None) => {
                        gone.insert(tid);
                    }
                    Err(e) => {
                        // Not ours yet to resume: let the rest go before the others are.
                        for (rest, _) in asked.iter().skip(i) {
                            let _ = ptrace::detach(*rest, None);
                        }
                        return Err(e);
                    }
                }
            }
        }
        Err(Refusal::ThreadChurn { pid }.into())
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn threads(&self) -> &[FrozenThread] {
        &self.threads
    }

    /// The leader's injector: syscalls that act on the whole process run here.
    pub fn leader(&self) -> &Injector {
        &self.threads[0].injector
    }

    /// Plant [`arch::INJECTED_CODE`] (`syscall; int3`, then the batch loop) at `site` (an
    /// executable address with that many bytes after it) for every thread's injector.
    pub fn plant(&mut self, site: u64) -> Result<()> {
        if self.planted.is_none() {
            let pid = self.pid;
            let mut old = Vec::with_capacity(arch::INJECTED_CODE.len() / 8);
            for (i, word) in arch::INJECTED_CODE.chunks_exact(8).enumerate() {
                let at = site + 8 * i as u64;
                old.push(ptrace::peek(pid, at).ctx(|| format!("reading code of pid {pid}"))?);
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                let new = u64::from_le_bytes(bytes);
                if let Err(e) = ptrace::poke(pid, at, new) {
                    // Put back what was already replaced.
                    for (j, w) in old.iter().enumerate().take(i) {
                        let _ = ptrace::poke(pid, site + 8 * j as u64, *w);
                    }
                    return Err(e).ctx(|| format!("writing code of pid {pid}"));
                }
            }
            self.planted = Some((site, old));
            for t in &mut self.threads {
                t.injector.set_code(site);
            }
        }
        Ok(())
    }

    /// Map a private scratch area in the tracee (needs [`Frozen::plant`] first).
    pub fn map_scratch(&self, len: u64) -> Result<Scratch> {
        let addr = self.leader().call(
            "mmap of a scratch area",
            libc::SYS_mmap,
            [
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        Ok(Scratch { addr, len })
    }

    pub fn unmap_scratch(&self, s: Scratch) -> Result<()> {
        self.leader().call(
            "munmap of the scratch area",
            libc::SYS_munmap,
            [s.addr, s.len, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// Put the planted bytes and every thread's registers back (the process stays frozen).
    pub fn unplant(&mut self) -> Result<()> {
        if let Some((site, old)) = self.planted.take() {
            for (i, word) in old.into_iter().enumerate() {
                ptrace::poke(self.pid, site + 8 * i as u64, word)
                    .ctx(|| format!("restoring code of pid {}", self.pid))?;
            }
        }
        for t in &self.threads {
            ptrace::set_regs(t.tid, arch::resumable(t.regs))
                .ctx(|| format!("restoring registers of thread {}", t.tid))?;
        }
        Ok(())
    }

    /// Signals that were pending delivery to thread `index` when it was frozen or arrived
    /// since.
    pub fn pending_signals(&mut self, index: usize) -> Vec<i32> {
        match self.threads.get_mut(index) {
            Some(t) => {
                let stray = t.injector.take_stray_signals();
                t.pending.extend(stray);
                t.pending.clone()
            }
            None => Vec::new(),
        }
    }

    /// Let the process run on as if nothing happened.
    pub fn resume(mut self) -> Result<()> {
        self.resume_inner()
    }

    fn resume_inner(&mut self) -> Result<()> {
        self.done = true;
        let unplanted = self.unplant();
        let mut detached = Ok(());
        let mut resend = Vec::new();
        for i in 0..self.threads.len() {
            let signals = self.pending_signals(i);
            let tid = self.threads[i].tid;
            let r = ptrace::detach(tid, None).ctx(|| format!("detaching from thread {tid}"));
            detached = detached.and(r);
            resend.extend(signals.into_iter().map(|s| (tid, s)));
        }
        for (tid, s) in resend {
            let _ = signals::tgkill(self.pid, tid, s);
        }
        unplanted.and(detached)
    }

    /// End the process: its image is complete and it now lives on elsewhere.
    pub fn kill(mut self) -> Result<()> {
        self.done = true;
        kill(self.pid, Signal::SIGKILL).ctx(|| format!("killing pid {}", self.pid))?;
        // Reap the ptrace side so the kernel can finish it (it is not our child): the other
        // threads first, whose exits a tracer must collect before the leader's.
        for t in self.threads.iter().skip(1) {
            let _ = ptrace::wait(t.tid);
        }
        let _ = ptrace::wait(self.pid);
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.resume_inner();
        }
    }
}

/// Seize and stop the leader, turning the kernel's answer into a refusal a user can act on.
fn freeze_leader(pid: Pid) -> Result<FrozenThread> {
    let in_poll = blocked_in_poll(pid, pid);
    ptrace::seize(pid).map_err(|e| -> EngineError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::ESRCH) if has_exited(pid) => {
                Refusal::Exited { pid }.into()
            }
            Some(libc::EPERM) => Refusal::NotTraceable { pid }.into(),
            Some(libc::ESRCH) => Refusal::NoSuchProcess { pid }.into(),
            _ => EngineError::Os {
                what: format!("PTRACE_SEIZE of pid {pid}"),
                source: e,
            },
        }
    })?;
    let stopped = ptrace::interrupt(pid)
        .ctx(|| format!("PTRACE_INTERRUPT of pid {pid}"))
        .and_then(|()| wait_stopped(pid, in_poll));
    match stopped {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(EngineError::Died {
            pid: pid.as_raw(),
            stage: "freeze",
        }),
        Err(e) => {
            let _ = ptrace::detach(pid, None);
            Err(e)
        }
    }
}

/// Attach to a thread found in the task list and ask it to stop. `false` when it has exited
/// meanwhile. A thread created by an already seized one is attached by the kernel
/// (PTRACE_O_TRACECLONE) and stops by itself.
fn attach(tid: Pid) -> Result<bool> {
    match ptrace::seize(tid) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && traced_by_us(tid) => return Ok(true),
        Err(e) => {
            return Err(EngineError::Os {
                what: format!("PTRACE_SEIZE of thread {tid}"),
                source: e,
            })
        }
    }
    match ptrace::interrupt(tid) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(true),
        Err(e) => Err(EngineError::Os {
            what: format!("PTRACE_INTERRUPT of thread {tid}"),
            source: e,
        }),
    }
}

/// True when thread `tid` of `pid` sleeps in poll(2) (its wait channel, read before the
/// freeze: once stopped it sleeps in the stop). Only the kernel knows what a
/// `restart_syscall` restarts; for poll this tells it.
fn blocked_in_poll(pid: Pid, tid: Pid) -> bool {
    let Ok(w) = std::fs::read(format!("/proc/{pid}/task/{tid}/wchan")) else {
        return false;
    };
    // The name, less a compiler suffix such as `.constprop.0`.
    let name = w
        .split(|&b| b == b'.' || b == b'\n')
        .next()
        .unwrap_or_default();
    [&b"do_poll"[..], b"do_sys_poll", b"poll_schedule_timeout"].contains(&name)
}

/// Wait until `tid` sits in a ptrace stop; `None` if it exited instead. `in_poll`: it slept
/// in poll(2) just before ([`blocked_in_poll`]).
fn wait_stopped(tid: Pid, in_poll: bool) -> Result<Option<FrozenThread>> {
    let mut pending = Vec::new();
    loop {
        match ptrace::wait(tid).ctx(|| format!("waiting for thread {tid} to stop"))? {
            Stop::Event(ptrace::EVENT_CLONE) => {
                // It was creating a thread (attached for us, found by the next pass). Let it
                // finish the clone; the interrupt still pending stops it right after.
                ptrace::cont(tid, None).ctx(|| format!("resuming thread {tid}"))?;
                let _ = ptrace::interrupt(tid);
            }
            Stop::Event(_) | Stop::Syscall => break,
            // A signal was about to be delivered: keep it for later; it is stopped here.
            Stop::Signal(s) => {
                pending.push(s);
                break;
            }
            Stop::Exited(_) | Stop::Killed(_) => return Ok(None),
        }
    }
    let regs = ptrace::get_regs(tid).ctx(|| format!("reading registers of thread {tid}"))?;
    let regs = arch::name_restarted_poll(regs, in_poll);
    Ok(Some(FrozenThread {
        tid,
        regs,
        injector: Injector::new(tid, 0, regs),
        pending,
    }))
}

/// The thread ids of `pid` (`/proc/PID/task`), in the tracer's pid namespace.
fn list_threads(pid: Pid) -> Result<Vec<Pid>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {dir}"))? {
        let entry = entry.ctx(|| format!("listing {dir}"))?;
        if let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(Pid::from_raw(tid));
        }
    }
    Ok(out)
}

/// True when this process is already the tracer of `tid` (it was attached automatically).
fn traced_by_us(tid: Pid) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .is_some_and(|v| v.trim() == me)
        })
        .unwrap_or(false)
}

/// True when `pid` is gone or a zombie.
fn has_exited(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => true,
    }
}
