//! Running system calls inside a stopped tracee: set registers so that it executes a planted
//! `syscall; int3` and let it run until the trap.

use std::cell::RefCell;

use nix::sys::signal::Signal;

use super::error::{Context, EngineError, Result};
use crate::arch::{self, Regs};
use crate::sys::{memory, ptrace, ptrace::Stop, Pid};

/// One syscall of a batch ([`Injector::batch`]).
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub nr: i64,
    pub args: [u64; 6],
}

impl Call {
    pub fn new(nr: i64, args: [u64; 6]) -> Call {
        Call { nr, args }
    }
}

pub struct Injector {
    pid: Pid,
    /// Address of a `syscall; int3` sequence in the tracee.
    at: u64,
    /// Whether the whole [`arch::INJECTED_CODE`] lies at `at` (its batch loop with it).
    batch: bool,
    /// Registers every injected call starts from (segment registers and flags stay valid).
    base: Regs,
    /// Signals that arrived while injecting; they are delivered again when the tracee runs.
    stray: RefCell<Vec<i32>>,
    /// Threads an injected clone created (tids in the tracer's pid namespace).
    cloned: RefCell<Vec<Pid>>,
}

impl Injector {
    pub fn new(pid: Pid, at: u64, base: Regs) -> Self {
        Injector {
            pid,
            at,
            batch: false,
            base,
            stray: RefCell::new(Vec::new()),
            cloned: RefCell::new(Vec::new()),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The whole [`arch::INJECTED_CODE`] lies at `at`: a batch of syscalls costs one stop.
    pub fn set_code(&mut self, at: u64) {
        self.at = at;
        self.batch = true;
    }

    /// The threads created by the injected syscalls since the last call.
    pub fn take_cloned(&self) -> Vec<Pid> {
        std::mem::take(&mut self.cloned.borrow_mut())
    }

    pub fn take_stray_signals(&self) -> Vec<i32> {
        std::mem::take(&mut self.stray.borrow_mut())
    }

    /// Run one syscall and return the raw result (negative errno on failure).
    pub fn raw(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        let regs = arch::syscall_regs(&self.base, self.at, nr, args);
        let after = self.run_to_trap(regs)?;
        Ok(arch::syscall_result(&after))
    }

    /// Run `calls` in order inside the tracee and return their raw results in order (negative
    /// errno on failure); every call runs, even after one that failed. With the planted loop
    /// ([`Injector::set_code`]) the whole batch costs one stop: its table takes
    /// [`arch::BATCH_ENTRY_LEN`] bytes per call of `scratch`, from `offset` on, which the
    /// calls' own arguments must leave alone; more calls than fit there take one stop per
    /// tableful. Without it, one stop per call.
    pub fn batch(&self, scratch: &Scratch, offset: u64, calls: &[Call]) -> Result<Vec<i64>> {
        if !self.batch || calls.len() < 2 {
            return calls.iter().map(|c| self.raw(c.nr, c.args)).collect();
        }
        let room = (scratch.len.saturating_sub(offset) / arch::BATCH_ENTRY_LEN as u64) as usize;
        if room == 0 {
            return Err(EngineError::Unrestorable(format!(
                "no room for a batch of syscalls at offset {offset} of a {}-byte scratch area",
                scratch.len
            )));
        }
        let mut out = Vec::with_capacity(calls.len());
        for tableful in calls.chunks(room) {
            out.extend(self.batch_once(scratch, offset, tableful)?);
        }
        Ok(out)
    }

    /// One stop: `calls`' table at `offset` of `scratch`, which it fits.
    fn batch_once(&self, scratch: &Scratch, offset: u64, calls: &[Call]) -> Result<Vec<i64>> {
        let mut table = Vec::with_capacity(calls.len() * arch::BATCH_ENTRY_LEN);
        for c in calls {
            table.extend_from_slice(&c.nr.to_le_bytes());
            for a in c.args {
                table.extend_from_slice(&a.to_le_bytes());
            }
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        let at = scratch.write(self.pid, offset, &table)?;
        let regs = arch::batch_regs(&self.base, self.at, at, calls.len() as u64);
        let after = self.run_to_trap(regs)?;
        if arch::batch_left(&after) != 0 {
            // It trapped for another reason than the end of the loop.
            return Err(EngineError::Os {
                what: format!(
                    "pid {} stopped with {} of {} injected syscalls not run",
                    self.pid,
                    arch::batch_left(&after),
                    calls.len()
                ),
                source: std::io::ErrorKind::Interrupted.into(),
            });
        }
        let done = scratch.read(self.pid, offset, table.len())?;
        Ok(done
            .chunks_exact(arch::BATCH_ENTRY_LEN)
            .map(|e| u64_at(e, arch::BATCH_ENTRY_LEN - 8) as i64)
            .collect())
    }

    /// As [`Injector::batch`]; a negative result becomes an error naming `what` (the first
    /// one that failed, as [`Injector::call`] would have stopped there).
    pub fn batch_call(
        &self,
        what: &str,
        scratch: &Scratch,
        offset: u64,
        calls: &[Call],
    ) -> Result<Vec<u64>> {
        self.batch_call_each(|_| what.to_owned(), scratch, offset, calls)
    }

    /// As [`Injector::batch_call`], naming a failed call by its index in `calls`.
    pub fn batch_call_each(
        &self,
        what: impl Fn(usize) -> String,
        scratch: &Scratch,
        offset: u64,
        calls: &[Call],
    ) -> Result<Vec<u64>> {
        self.batch(scratch, offset, calls)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.checked(&what(i), r))
            .collect()
    }

    /// Set `regs` and let the tracee run until it reaches the trap; its registers there.
    fn run_to_trap(&self, regs: arch::Regs) -> Result<arch::Regs> {
        crate::trace::count_stop();
        ptrace::set_regs(self.pid, regs)
            .ctx(|| format!("setting registers of pid {}", self.pid))?;
        let mut sig: Option<Signal> = None;
        loop {
            ptrace::cont(self.pid, sig.take()).ctx(|| format!("resuming pid {}", self.pid))?;
            match ptrace::wait(self.pid).ctx(|| format!("waiting for pid {}", self.pid))? {
                Stop::Signal(s) if s == libc::SIGTRAP => break,
                Stop::Signal(s)
                    if s == libc::SIGSTOP
                        || s == libc::SIGTSTP
                        || s == libc::SIGTTIN
                        || s == libc::SIGTTOU => {}
                Stop::Signal(s) => self.stray.borrow_mut().push(s),
                Stop::Event(ptrace::EVENT_CLONE) => {
                    let tid = ptrace::event_message(self.pid)
                        .ctx(|| format!("reading the new thread's id from pid {}", self.pid))?;
                    self.cloned.borrow_mut().push(Pid::from_raw(tid as i32));
                }
                Stop::Event(_) | Stop::Syscall => {}
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(EngineError::Died {
                        pid: self.pid.as_raw(),
                        stage: "syscall injection",
                    })
                }
            }
        }
        ptrace::get_regs(self.pid).ctx(|| format!("reading registers of pid {}", self.pid))
    }

    /// Run one syscall; a negative result becomes an error naming `what`.
    pub fn call(&self, what: &str, nr: i64, args: [u64; 6]) -> Result<u64> {
        let r = self.raw(nr, args)?;
        self.checked(what, r)
    }

    fn checked(&self, what: &str, r: i64) -> Result<u64> {
        if (-4095..0).contains(&r) {
            return Err(EngineError::Os {
                what: format!("{what} in pid {}", self.pid),
                source: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Run the last syscall of a restore (which may unmap the trap itself): stop at syscall
    /// exit instead of at the `int3`.
    pub fn call_last(&self, what: &str, nr: i64, args: [u64; 6]) -> Result<()> {
        let regs = arch::syscall_regs(&self.base, self.at, nr, args);
        ptrace::set_regs(self.pid, regs)
            .ctx(|| format!("setting registers of pid {}", self.pid))?;
        let mut stops = 0;
        while stops < 2 {
            ptrace::syscall_step(self.pid).ctx(|| format!("resuming pid {}", self.pid))?;
            match ptrace::wait(self.pid).ctx(|| format!("waiting for pid {}", self.pid))? {
                Stop::Syscall => stops += 1,
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(EngineError::Died {
                        pid: self.pid.as_raw(),
                        stage: "final syscall",
                    })
                }
                Stop::Signal(s) if s != libc::SIGTRAP && s != libc::SIGSTOP => {
                    self.stray.borrow_mut().push(s)
                }
                _ => {}
            }
        }
        let after =
            ptrace::get_regs(self.pid).ctx(|| format!("reading registers of pid {}", self.pid))?;
        let r = arch::syscall_result(&after);
        if (-4095..0).contains(&r) {
            return Err(EngineError::Os {
                what: format!("{what} in pid {}", self.pid),
                source: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(())
    }
}

/// A writable area inside the tracee for syscall arguments and results.
pub struct Scratch {
    pub addr: u64,
    pub len: u64,
}

impl Scratch {
    pub fn write(&self, pid: Pid, offset: u64, data: &[u8]) -> Result<u64> {
        if offset + data.len() as u64 > self.len {
            return Err(EngineError::Unrestorable(format!(
                "{} bytes of syscall arguments do not fit the {}-byte scratch area",
                data.len(),
                self.len
            )));
        }
        memory::write(pid, self.addr + offset, data).ctx(|| format!("writing into pid {pid}"))?;
        Ok(self.addr + offset)
    }

    /// A NUL-terminated copy of `s` at `offset`; returns its address.
    pub fn write_cstr(&self, pid: Pid, offset: u64, s: &str) -> Result<u64> {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.write(pid, offset, &bytes)
    }

    pub fn read(&self, pid: Pid, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        memory::read(pid, self.addr + offset, &mut buf)
            .ctx(|| format!("reading from pid {pid}"))?;
        Ok(buf)
    }
}

/// Little-endian u64 at `i` of `b` (0 when out of range: only used on buffers we sized).
pub fn u64_at(b: &[u8], i: usize) -> u64 {
    b.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}
