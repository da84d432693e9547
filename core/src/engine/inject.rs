//! Running system calls inside a stopped tracee: set registers so that it executes a planted
//! `syscall; int3` and let it run until the trap.

use std::cell::RefCell;

use nix::sys::signal::Signal;

use super::error::{Context, EngineError, Result};
use crate::arch::{self, Regs};
use crate::sys::{memory, ptrace, ptrace::Stop, Pid};

pub struct Injector {
    pid: Pid,
    /// Address of a `syscall; int3` sequence in the tracee.
    at: u64,
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
            base,
            stray: RefCell::new(Vec::new()),
            cloned: RefCell::new(Vec::new()),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn set_site(&mut self, at: u64) {
        self.at = at;
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
        let after =
            ptrace::get_regs(self.pid).ctx(|| format!("reading registers of pid {}", self.pid))?;
        Ok(arch::syscall_result(&after))
    }

    /// Run one syscall; a negative result becomes an error naming `what`.
    pub fn call(&self, what: &str, nr: i64, args: [u64; 6]) -> Result<u64> {
        let r = self.raw(nr, args)?;
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
