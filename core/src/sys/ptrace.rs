//! ptrace requests that nix does not wrap (xstate, signal mask, rseq configuration) and the
//! stop/resume primitives the engine uses.

use std::io;

use nix::sys::ptrace;
use nix::sys::signal::Signal;

use super::{last_err, Pid};

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Large enough for any xsave layout the kernel reports today (AMX is ~11 KiB).
const XSTATE_BUF: usize = 16 * 1024;

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

fn raw(req: libc::c_uint, pid: Pid, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: the callers pass addr/data that point to live buffers of the size the request
    // expects (or plain integers for requests that take integers).
    let r = unsafe { libc::ptrace(req, pid.as_raw(), addr, data) };
    if r == -1 {
        Err(last_err())
    } else {
        Ok(r)
    }
}

/// The full NT_X86_XSTATE register set of a stopped tracee.
pub fn get_xstate(pid: Pid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_BUF];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    raw(
        libc::PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        std::ptr::addr_of_mut!(iov) as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(pid: Pid, xstate: &[u8]) -> io::Result<()> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    raw(
        libc::PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        std::ptr::addr_of_mut!(iov) as usize,
    )?;
    Ok(())
}

pub fn get_sigmask(pid: Pid) -> io::Result<u64> {
    let mut mask: u64 = 0;
    raw(
        PTRACE_GETSIGMASK,
        pid,
        8,
        std::ptr::addr_of_mut!(mask) as usize,
    )?;
    Ok(mask)
}

pub fn set_sigmask(pid: Pid, mask: u64) -> io::Result<()> {
    let mut m = mask;
    raw(
        PTRACE_SETSIGMASK,
        pid,
        8,
        std::ptr::addr_of_mut!(m) as usize,
    )?;
    Ok(())
}

pub fn get_rseq(pid: Pid) -> io::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<RseqConfig>(),
        std::ptr::addr_of_mut!(conf) as usize,
    )?;
    Ok(conf)
}

const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Size of a `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// The queued (pending) signals of a stopped tracee, as raw `siginfo_t`s, without dequeuing
/// them: the thread's own queue, or the process-wide one when `shared`.
pub fn peek_siginfo(pid: Pid, shared: bool) -> io::Result<Vec<[u8; SIGINFO_SIZE]>> {
    let mut out = Vec::new();
    loop {
        let mut batch = [[0u8; SIGINFO_SIZE]; 16];
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: batch.len() as i32,
        };
        let n = raw(
            PTRACE_PEEKSIGINFO,
            pid,
            std::ptr::addr_of!(args) as usize,
            batch.as_mut_ptr() as usize,
        )?;
        if n <= 0 {
            return Ok(out);
        }
        out.extend(batch.iter().take(n as usize));
    }
}

pub fn get_regs(pid: Pid) -> io::Result<libc::user_regs_struct> {
    ptrace::getregs(pid).map_err(io::Error::from)
}

pub fn set_regs(pid: Pid, regs: libc::user_regs_struct) -> io::Result<()> {
    ptrace::setregs(pid, regs).map_err(io::Error::from)
}

pub fn peek(pid: Pid, addr: u64) -> io::Result<u64> {
    ptrace::read(pid, addr as ptrace::AddressType)
        .map(|v| v as u64)
        .map_err(io::Error::from)
}

pub fn poke(pid: Pid, addr: u64, word: u64) -> io::Result<()> {
    ptrace::write(pid, addr as ptrace::AddressType, word as libc::c_long).map_err(io::Error::from)
}

/// `PTRACE_EVENT_CLONE`, as reported in [`Stop::Event`].
pub const EVENT_CLONE: i32 = libc::PTRACE_EVENT_CLONE;
/// `PTRACE_EVENT_EXEC`: the tracee finished an execve (PTRACE_O_TRACEEXEC).
pub const EVENT_EXEC: i32 = libc::PTRACE_EVENT_EXEC;
/// `PTRACE_EVENT_STOP`: a stop requested by PTRACE_INTERRUPT, a group stop, or the first stop
/// of an automatically attached thread.
pub const EVENT_STOP: i32 = 128;

/// How a waited-for tracee stopped or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Signal-delivery stop with this signal.
    Signal(i32),
    /// PTRACE_EVENT_STOP (group stop or interrupt under SEIZE).
    Event(i32),
    /// Syscall entry/exit stop (PTRACE_O_TRACESYSGOOD).
    Syscall,
    Exited(i32),
    Killed(i32),
}

/// Wait for the next state change of `pid` (a tracee or a child). Decoded here rather than by
/// nix, whose `Signal` has no real-time signals: a SIGRTMIN arriving during a freeze made the
/// wait fail with EINVAL.
pub fn wait(pid: Pid) -> io::Result<Stop> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local and nothing else.
        let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::__WALL) };
        if r < 0 {
            let e = last_err();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(Stop::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Stop::Killed(libc::WTERMSIG(status)));
        }
        if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            return Ok(if sig == libc::SIGTRAP | 0x80 {
                Stop::Syscall
            } else if event != 0 {
                Stop::Event(event)
            } else {
                Stop::Signal(sig)
            });
        }
    }
}

/// Attach to one thread without stopping it. Threads it creates from now on are attached
/// too (PTRACE_O_TRACECLONE), so none escapes a freeze.
pub fn seize(tid: Pid) -> io::Result<()> {
    ptrace::seize(
        tid,
        ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_TRACECLONE,
    )
    .map_err(io::Error::from)
}

/// Attach to a process the restore created (not our child): killed if we die, its threads
/// and its exec reported.
pub fn seize_for_restore(pid: Pid) -> io::Result<()> {
    ptrace::seize(
        pid,
        ptrace::Options::PTRACE_O_TRACESYSGOOD
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_EXITKILL,
    )
    .map_err(io::Error::from)
}

/// The message of the last ptrace event stop: for PTRACE_EVENT_CLONE, the new thread's id in
/// the tracer's pid namespace.
pub fn event_message(tid: Pid) -> io::Result<i64> {
    ptrace::getevent(tid).map_err(io::Error::from)
}

pub fn interrupt(pid: Pid) -> io::Result<()> {
    ptrace::interrupt(pid).map_err(io::Error::from)
}

pub fn cont(pid: Pid, sig: Option<Signal>) -> io::Result<()> {
    ptrace::cont(pid, sig).map_err(io::Error::from)
}

pub fn syscall_step(pid: Pid) -> io::Result<()> {
    ptrace::syscall(pid, None).map_err(io::Error::from)
}

pub fn detach(pid: Pid, sig: Option<Signal>) -> io::Result<()> {
    ptrace::detach(pid, sig).map_err(io::Error::from)
}

/// Options for a tracee the engine creates: syscall stops marked, killed if the tracer dies,
/// and the threads it clones attached.
pub fn set_options(pid: Pid, exitkill: bool) -> io::Result<()> {
    let mut o = ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_TRACECLONE;
    if exitkill {
        o |= ptrace::Options::PTRACE_O_EXITKILL;
    }
    ptrace::setoptions(pid, o).map_err(io::Error::from)
}

/// Make the calling (forked) process a tracee of its parent.
pub fn traceme() -> io::Result<()> {
    ptrace::traceme().map_err(io::Error::from)
}
