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

const KCMP_EPOLL_TFD: libc::c_int = 7;

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// True when `fd1` of `pid1` is the open file registered in epoll `epfd` of `pid2` under the
/// number `tfd` (the `toff`-th registration under that number, in the order its fdinfo lists
/// them). False on any error.
pub fn is_epoll_target(pid1: Pid, fd1: i32, pid2: Pid, epfd: i32, tfd: i32, toff: u32) -> bool {
    let slot = EpollSlot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: kcmp reads one kcmp_epoll_slot from a valid pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_EPOLL_TFD,
            fd1 as libc::c_ulong,
            &slot as *const EpollSlot as libc::c_ulong,
        )
    };
    r == 0
}
