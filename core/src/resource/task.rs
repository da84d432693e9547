//! Per-process state that is not memory, files or signals: mm fields and auxv, brk, umask,
//! rlimits. (Per-thread state lives in [`super::thread`], timers in [`super::timers`].)

use procfs::process::Process;

use crate::engine::error::{Context, EngineError, Result};
use crate::engine::inject::{u64_at, Call, Injector, Scratch};
use crate::image::model::{MmFields, ProcessAttrs, Rlimit};
use crate::sys::Pid;

const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
/// `struct prctl_mm_map`.
const MM_MAP_SIZE: usize = 104;
const RLIMIT_NLIMITS: u32 = 16;

/// State read by running syscalls inside the frozen process.
pub struct Injected {
    pub brk: u64,
    pub umask: u32,
    pub attrs: ProcessAttrs,
}

pub fn capture_injected(inj: &Injector, scratch: &Scratch) -> Result<Injected> {
    // umask only tells by setting: set, then put back (two stops, not three).
    let calls = [
        Call::new(libc::SYS_brk, [0; 6]),
        Call::new(libc::SYS_umask, [0o22, 0, 0, 0, 0, 0]),
    ];
    let what = |i: usize| if i == 0 { "brk" } else { "umask" }.to_string();
    let got = inj.batch_call_each(what, scratch, 0, &calls)?;
    let (brk, umask) = match got[..] {
        [brk, umask] => (brk, umask as u32),
        _ => {
            return Err(EngineError::Unrestorable(
                "brk and umask gave no answer".into(),
            ))
        }
    };
    inj.call("umask", libc::SYS_umask, [umask as u64, 0, 0, 0, 0, 0])?;
    let attrs = super::attrs::capture_process(inj, scratch)?;
    Ok(Injected { brk, umask, attrs })
}

pub fn capture_mm(pid: Pid, brk: u64) -> Result<MmFields> {
    let stat = Process::new(pid.as_raw())?.stat()?;
    let raw =
        std::fs::read(format!("/proc/{pid}/auxv")).ctx(|| format!("reading /proc/{pid}/auxv"))?;
    let auxv = raw.chunks_exact(8).map(|c| u64_at(c, 0)).collect();
    Ok(MmFields {
        start_code: stat.startcode,
        end_code: stat.endcode,
        start_data: stat.start_data.unwrap_or(0),
        end_data: stat.end_data.unwrap_or(0),
        start_brk: stat.start_brk.unwrap_or(0),
        brk,
        start_stack: stat.startstack,
        arg_start: stat.arg_start.unwrap_or(0),
        arg_end: stat.arg_end.unwrap_or(0),
        env_start: stat.env_start.unwrap_or(0),
        env_end: stat.env_end.unwrap_or(0),
        auxv,
    })
}

pub fn capture_rlimits(pid: Pid) -> Result<Vec<Rlimit>> {
    let mut out = Vec::new();
    for resource in 0..RLIMIT_NLIMITS {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is a valid out-pointer; a null new-limit pointer only reads.
        let r = unsafe { libc::prlimit64(pid.as_raw(), resource as _, std::ptr::null(), &mut old) };
        if r != 0 {
            return Err(EngineError::Os {
                what: format!("prlimit of pid {pid}"),
                source: std::io::Error::last_os_error(),
            });
        }
        out.push(Rlimit {
            resource,
            soft: old.rlim_cur,
            hard: old.rlim_max,
        });
    }
    Ok(out)
}

/// Set the rlimits of the restored process from outside. A hard limit above what this user may
/// set is kept at the current maximum.
pub fn apply_rlimits(pid: Pid, limits: &[Rlimit]) -> Result<()> {
    for l in limits {
        let new = libc::rlimit64 {
            rlim_cur: l.soft,
            rlim_max: l.hard,
        };
        // SAFETY: `new` is a valid in-pointer; the old-limit pointer may be null.
        let r =
            unsafe { libc::prlimit64(pid.as_raw(), l.resource as _, &new, std::ptr::null_mut()) };
        if r != 0 {
            let mut cur = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: as above, reading only.
            unsafe { libc::prlimit64(pid.as_raw(), l.resource as _, std::ptr::null(), &mut cur) };
            let capped = libc::rlimit64 {
                rlim_cur: l.soft.min(cur.rlim_max),
                rlim_max: cur.rlim_max,
            };
            // SAFETY: as above.
            unsafe {
                libc::prlimit64(pid.as_raw(), l.resource as _, &capped, std::ptr::null_mut())
            };
        }
    }
    Ok(())
}

/// The mm fields, auxv and brk (`prctl(PR_SET_MM_MAP)`); with `exe_fd` (a descriptor of the
/// process), its executable too, for a process that did not get it by exec.
pub fn apply_mm(
    inj: &Injector,
    scratch: &Scratch,
    mm: &MmFields,
    exe_fd: Option<i32>,
) -> Result<()> {
    let pid = inj.pid();
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|v| v.to_le_bytes()).collect();
    let auxv_at = scratch.write(pid, 2048, &auxv)?;
    let fields = [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_at,
    ];
    let mut map = Vec::with_capacity(MM_MAP_SIZE);
    for f in fields {
        map.extend_from_slice(&f.to_le_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&exe_fd.unwrap_or(-1).to_le_bytes());
    let map_at = scratch.write(pid, 0, &map)?;
    inj.call(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, map_at, MM_MAP_SIZE as u64, 0, 0],
    )?;
    Ok(())
}
