//! kcmp(2): whether two processes' descriptors are the very same open file description.

use super::Pid;

const KCMP_FILE: libc::c_int = 0;

/// True when `fd1` of `pid1` and `fd2` of `pid2` refer to one open file (shared offset and
/// flags), as after fork or dup. False on any error.
pub fn same_open_file(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> bool {
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    r == 0
}
