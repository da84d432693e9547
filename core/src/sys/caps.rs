//! Lending the restored process the one capability it needs to create its threads with their
//! original ids: clone3's `set_tid` asks for CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) in the
//! user namespace that owns the pid namespace. An unprivileged restorer holds it in the user
//! namespace it created, but a process exec'd by a non-root user loses it, unless it is
//! ambient. The restore drops it again (in every thread) before the process runs.

use std::io;

const CAP_SYS_ADMIN: u32 = 21;
/// Linux 5.9 and later.
const CAP_CHECKPOINT_RESTORE: u32 = 40;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_RAISE: libc::c_ulong = 2;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Make CAP_CHECKPOINT_RESTORE (CAP_SYS_ADMIN on kernels before 5.9) ambient, so it survives
/// the coming execve. Async-signal-safe: called in a forked child.
pub fn keep_checkpoint_capability_across_exec() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid for the kernel's v3 layout (two data words).
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for cap in [CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN] {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        let mut wanted = data;
        wanted[word].inheritable |= bit;
        // SAFETY: as above; capset only reads the structures.
        if unsafe { libc::syscall(libc::SYS_capset, &mut header, wanted.as_ptr()) } != 0 {
            last = io::Error::last_os_error();
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe {
            libc::prctl(
                PR_CAP_AMBIENT,
                PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if r == 0 {
            return Ok(());
        }
        last = io::Error::last_os_error();
    }
    Err(last)
}
