//! Freezing a running process with PTRACE_SEIZE + PTRACE_INTERRUPT, planting the syscall trap,
//! and letting it go again exactly as it was (or ending it once its image is complete).

use nix::sys::signal::{kill, Signal};

use super::error::{Context, EngineError, Result};
use super::inject::{Injector, Scratch};
use crate::arch::{self, Regs};
use crate::sys::{ptrace, ptrace::Stop, Pid};

/// A process held in a ptrace stop. Dropping it without [`Frozen::kill`] resumes the process
/// untouched: registers and the planted bytes are put back and signals that arrived meanwhile
/// are sent again.
pub struct Frozen {
    pid: Pid,
    /// Registers at the stop, exactly as the kernel reported them.
    pub regs: Regs,
    injector: Injector,
    /// Where the trap was planted and the word it replaced.
    planted: Option<(u64, u64)>,
    pending: Vec<i32>,
    done: bool,
}

impl Frozen {
    pub fn seize(pid: Pid) -> Result<Frozen> {
        ptrace::seize(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::ESRCH) if has_exited(pid) => {
                EngineError::Refused(format!("pid {pid} has exited"))
            }
            Some(libc::EPERM) => EngineError::Refused(format!(
                "pid {pid} cannot be traced by this user (another user's process, or a \
                 non-dumpable one); run mrunctl as its owner"
            )),
            Some(libc::ESRCH) => {
                EngineError::Refused(format!("there is no process with pid {pid}"))
            }
            _ => EngineError::Os {
                what: format!("PTRACE_SEIZE of pid {pid}"),
                source: e,
            },
        })?;
        let mut pending = Vec::new();
        let frozen = (|| {
            ptrace::interrupt(pid).ctx(|| format!("PTRACE_INTERRUPT of pid {pid}"))?;
            match ptrace::wait(pid).ctx(|| format!("waiting for pid {pid} to stop"))? {
                Stop::Event(_) | Stop::Syscall => {}
                // A signal was about to be delivered: keep it for later; it is stopped here.
                Stop::Signal(s) => pending.push(s),
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(EngineError::Died {
                        pid: pid.as_raw(),
                        stage: "freeze",
                    })
                }
            }
            ptrace::get_regs(pid).ctx(|| format!("reading registers of pid {pid}"))
        })();
        let regs = match frozen {
            Ok(r) => r,
            Err(e) => {
                let _ = ptrace::detach(pid, None);
                return Err(e);
            }
        };
        Ok(Frozen {
            pid,
            regs,
            injector: Injector::new(pid, 0, regs),
            planted: None,
            pending,
            done: false,
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Plant `syscall; int3` at `site` (an executable address) and return an injector for it.
    pub fn plant(&mut self, site: u64) -> Result<&Injector> {
        if self.planted.is_none() {
            let old =
                ptrace::peek(self.pid, site).ctx(|| format!("reading code of pid {}", self.pid))?;
            ptrace::poke(self.pid, site, arch::SYSCALL_TRAP)
                .ctx(|| format!("writing code of pid {}", self.pid))?;
            self.planted = Some((site, old));
            self.injector.set_site(site);
        }
        Ok(&self.injector)
    }

    /// Map a private scratch page in the tracee (needs [`Frozen::plant`] first).
    pub fn map_scratch(&self, len: u64) -> Result<Scratch> {
        let addr = self.injector.call(
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
        self.injector.call(
            "munmap of the scratch area",
            libc::SYS_munmap,
            [s.addr, s.len, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// Put the planted bytes and registers back (the process is still frozen).
    pub fn unplant(&mut self) -> Result<()> {
        if let Some((site, old)) = self.planted.take() {
            ptrace::poke(self.pid, site, old)
                .ctx(|| format!("restoring code of pid {}", self.pid))?;
        }
        ptrace::set_regs(self.pid, self.regs)
            .ctx(|| format!("restoring registers of pid {}", self.pid))?;
        Ok(())
    }

    /// Signals that were pending delivery when the process was frozen or arrived since.
    pub fn pending_signals(&mut self) -> Vec<i32> {
        let stray = self.injector.take_stray_signals();
        self.pending.extend(stray);
        self.pending.clone()
    }

    /// Let the process run on as if nothing happened.
    pub fn resume(mut self) -> Result<()> {
        self.resume_inner()
    }

    fn resume_inner(&mut self) -> Result<()> {
        self.done = true;
        let unplanted = self.unplant();
        let signals = self.pending_signals();
        self.pending.clear();
        let detached =
            ptrace::detach(self.pid, None).ctx(|| format!("detaching from pid {}", self.pid));
        for s in signals {
            if let Ok(sig) = Signal::try_from(s) {
                let _ = kill(self.pid, sig);
            }
        }
        unplanted.and(detached)
    }

    /// End the process: its image is complete and it now lives on elsewhere.
    pub fn kill(mut self) -> Result<()> {
        self.done = true;
        kill(self.pid, Signal::SIGKILL).ctx(|| format!("killing pid {}", self.pid))?;
        // Reap the ptrace side so the kernel can finish it; it is not our child.
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
