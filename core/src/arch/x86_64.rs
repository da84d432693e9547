//! x86_64: general registers, the syscall restart rules and the xsave header.

use crate::image::model::GpRegs;

/// `syscall; int3; int3; ...` padded to a word: planted where the engine injects syscalls.
pub const SYSCALL_TRAP: u64 = u64::from_le_bytes([0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc]);
/// Length of the `syscall` instruction.
pub const SYSCALL_LEN: u64 = 2;

/// [`SYSCALL_TRAP`] followed by a loop that runs a table of syscalls and traps once, after the
/// last ([`batch_regs`]): planted where the engine injects many syscalls, so that a whole table
/// costs one stop instead of one per syscall. `rbx` points at the table, `r12` counts the
/// entries left; each entry is [`BATCH_ENTRY_LEN`] bytes: the number, six arguments and the
/// slot the result is stored in. Position independent; 7 words.
pub const INJECTED_CODE: [u8; 56] = [
    0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, // syscall; int3 x6 (SYSCALL_TRAP)
    0x4d, 0x85, 0xe4, // loop: test r12, r12
    0x74, 0x2a, //       jz done
    0x48, 0x8b, 0x03, // mov rax, [rbx]
    0x48, 0x8b, 0x7b, 0x08, // mov rdi, [rbx + 8]
    0x48, 0x8b, 0x73, 0x10, // mov rsi, [rbx + 16]
    0x48, 0x8b, 0x53, 0x18, // mov rdx, [rbx + 24]
    0x4c, 0x8b, 0x53, 0x20, // mov r10, [rbx + 32]
    0x4c, 0x8b, 0x43, 0x28, // mov r8, [rbx + 40]
    0x4c, 0x8b, 0x4b, 0x30, // mov r9, [rbx + 48]
    0x0f, 0x05, // syscall
    0x48, 0x89, 0x43, 0x38, // mov [rbx + 56], rax
    0x48, 0x83, 0xc3, 0x40, // add rbx, 64
    0x49, 0xff, 0xcc, // dec r12
    0xeb, 0xd1, // jmp loop
    0xcc, // done: int3
];
/// Where the loop of [`INJECTED_CODE`] starts.
pub const BATCH_OFFSET: u64 = 8;
/// Bytes of one table entry of the loop: number, six arguments, result (little-endian words).
pub const BATCH_ENTRY_LEN: usize = 64;

pub type Regs = libc::user_regs_struct;

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
const EINTR: i64 = -4;

pub fn to_image(r: &Regs) -> GpRegs {
    GpRegs([
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ])
}

pub fn from_image(g: &GpRegs) -> Regs {
    let v = g.0;
    Regs {
        r15: v[0],
        r14: v[1],
        r13: v[2],
        r12: v[3],
        rbp: v[4],
        rbx: v[5],
        r11: v[6],
        r10: v[7],
        r9: v[8],
        r8: v[9],
        rax: v[10],
        rcx: v[11],
        rdx: v[12],
        rsi: v[13],
        rdi: v[14],
        orig_rax: v[15],
        rip: v[16],
        cs: v[17],
        eflags: v[18],
        rsp: v[19],
        ss: v[20],
        fs_base: v[21],
        gs_base: v[22],
        ds: v[23],
        es: v[24],
        fs: v[25],
        gs: v[26],
    }
}

/// Registers of a task frozen inside a syscall, rewritten so that it runs correctly in a
/// fresh process: restartable syscalls are rewound to run again, a syscall whose restart state
/// lives in the kernel (`-ERESTART_RESTARTBLOCK`, e.g. a relative nanosleep) returns EINTR,
/// as after a signal. `orig_rax` is cleared so no restart logic applies twice.
///
/// poll(2) is the exception: the kernel always restarts poll through the restart block, and a
/// stopped-and-continued process never sees it fail, so programs without signal handlers (GNU
/// `tail -f`, `tail -f --pid`) treat EINTR from it as fatal. Its arguments are still in their
/// registers (a syscall leaves them untouched), so it is rewound like the others: with no
/// timeout that is its exact restart; with one, it waits its whole timeout again (the time
/// left lives in the kernel), so it may return up to one timeout late, which a poll loop
/// cannot tell from a slow wake-up, where an EINTR it never expects would end it.
pub fn rewind_interrupted_syscall(mut r: Regs) -> Regs {
    if (r.orig_rax as i64) >= 0 {
        match r.rax as i64 {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => rewind(&mut r),
            ERESTART_RESTARTBLOCK if r.orig_rax == libc::SYS_poll as u64 => rewind(&mut r),
            ERESTART_RESTARTBLOCK => r.rax = EINTR as u64,
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Registers of a task frozen in `restart_syscall(2)` that the kernel restarts as a poll(2)
/// (`blocked_in_poll` says so: the task slept in poll before the freeze), rewritten to name
/// poll itself. A poll interrupted by any stop is restarted through the kernel's restart
/// block, so a task stopped twice (by the user's ^Z, by a dirty-page tracker's start, by a
/// move that gave up) is caught in `restart_syscall`, whose meaning dies with the process;
/// poll's arguments are still in their registers, so naming poll lets a restore run it
/// again ([`rewind_interrupted_syscall`]) instead of failing it with EINTR.
pub fn name_restarted_poll(mut r: Regs, blocked_in_poll: bool) -> Regs {
    if blocked_in_poll
        && r.orig_rax == libc::SYS_restart_syscall as u64
        && r.rax as i64 == ERESTART_RESTARTBLOCK
    {
        r.orig_rax = libc::SYS_poll as u64;
    }
    r
}

/// Registers to resume a frozen task with at home: as they were, except that a poll(2)
/// without a timeout, which the kernel would restart through its restart block, runs again
/// from the `syscall` instruction (its exact restart), so the next freeze finds it in poll
/// itself, not in `restart_syscall` or about to enter it (see [`name_restarted_poll`]). A
/// timed poll keeps the kernel's restart, which knows the time left.
pub fn resumable(mut r: Regs) -> Regs {
    let untimed = (r.rdx as u32 as i32) < 0;
    if r.orig_rax == libc::SYS_poll as u64 && r.rax as i64 == ERESTART_RESTARTBLOCK && untimed {
        rewind(&mut r);
        r.orig_rax = u64::MAX;
    }
    r
}

/// Make the task run its interrupted syscall again, from the `syscall` instruction.
fn rewind(r: &mut Regs) {
    r.rax = r.orig_rax;
    r.rip -= SYSCALL_LEN;
}

/// Registers that make the task execute one syscall at `at` (where [`SYSCALL_TRAP`] lies).
pub fn syscall_regs(base: &Regs, at: u64, nr: i64, args: [u64; 6]) -> Regs {
    let mut r = *base;
    r.rax = nr as u64;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
    r.rip = at;
    r.orig_rax = u64::MAX;
    r
}

/// Registers that make the task run the `count` syscalls of the table at `table` with the loop
/// of [`INJECTED_CODE`] planted at `code`.
pub fn batch_regs(base: &Regs, code: u64, table: u64, count: u64) -> Regs {
    let mut r = *base;
    r.rbx = table;
    r.r12 = count;
    r.rip = code + BATCH_OFFSET;
    r.orig_rax = u64::MAX;
    r
}

/// How many syscalls of a batch were not run when the task stopped (0 once the loop is done).
pub fn batch_left(r: &Regs) -> u64 {
    r.r12
}

pub fn syscall_result(r: &Regs) -> i64 {
    r.rax as i64
}

pub fn instruction_pointer(r: &Regs) -> u64 {
    r.rip
}

pub fn set_instruction_pointer(r: &mut Regs, at: u64) {
    r.rip = at;
}

/// XCR0 as saved in the xsave area's software-reserved bytes (offset 464: `fx_sw_bytes`:
/// magic1 u32, extended_size u32, xfeatures u64, xstate_size u32).
pub fn xsave_features(xstate: &[u8]) -> u64 {
    xstate
        .get(472..480)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// XCR0 of this CPU: the xsave features the kernel enabled.
pub fn local_xfeatures() -> u64 {
    // cpuid is always available on x86_64.
    let leaf1 = std::arch::x86_64::__cpuid(1);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if !osxsave {
        return 0;
    }
    // SAFETY: OSXSAVE is set, so xgetbv is enabled; XCR0 (index 0) always exists.
    unsafe { xgetbv0() }
}

#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    std::arch::x86_64::_xgetbv(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interrupted(nr: i64, ret: i64, rdx: u64) -> Regs {
        let mut r = from_image(&GpRegs([0; 27]));
        r.orig_rax = nr as u64;
        r.rax = ret as u64;
        r.rdx = rdx;
        r.rip = 0x1000;
        r
    }

    #[test]
    fn injected_code_starts_with_the_trap_and_its_loop_jumps_where_it_should() {
        let code = INJECTED_CODE;
        assert_eq!(code[..8], SYSCALL_TRAP.to_le_bytes());
        assert_eq!(code.len() % 8, 0, "planted in whole words");
        // `jz done` (2 bytes at 11): to the final int3.
        assert_eq!(code[11], 0x74);
        assert_eq!(13 + code[12] as usize, code.len() - 1);
        assert_eq!(code[code.len() - 1], 0xcc);
        // `jmp loop` (2 bytes at the end, before the int3): back to BATCH_OFFSET.
        let jmp = code.len() - 3;
        assert_eq!(code[jmp], 0xeb);
        let back = (jmp + 2) as i64 + code[jmp + 1] as i8 as i64;
        assert_eq!(back, BATCH_OFFSET as i64);
        // Each entry: the loop reads offsets 0..48 and stores the result at 56.
        assert_eq!(BATCH_ENTRY_LEN, 64);
        assert_eq!(&code[42..46], &[0x48, 0x89, 0x43, 0x38]);
        assert_eq!(&code[46..50], &[0x48, 0x83, 0xc3, 0x40]);
    }

    #[test]
    fn batch_registers_point_at_the_loop_and_the_table() {
        let base = from_image(&GpRegs([0; 27]));
        let r = batch_regs(&base, 0x1000, 0x2000, 5);
        assert_eq!((r.rip, r.rbx, r.r12), (0x1000 + BATCH_OFFSET, 0x2000, 5));
        assert_eq!(r.orig_rax, u64::MAX);
        assert_eq!(batch_left(&r), 5);
    }

    #[test]
    fn untimed_poll_runs_again() {
        let r = rewind_interrupted_syscall(interrupted(
            libc::SYS_poll,
            ERESTART_RESTARTBLOCK,
            u32::MAX as u64,
        ));
        assert_eq!(r.rax, libc::SYS_poll as u64);
        assert_eq!(r.rip, 0x1000 - SYSCALL_LEN);
        assert_eq!(r.rdx, u32::MAX as u64);
        assert_eq!(r.orig_rax, u64::MAX);
    }

    #[test]
    fn timed_poll_runs_again_with_its_timeout() {
        let r =
            rewind_interrupted_syscall(interrupted(libc::SYS_poll, ERESTART_RESTARTBLOCK, 1000));
        assert_eq!(r.rax, libc::SYS_poll as u64);
        assert_eq!(r.rip, 0x1000 - SYSCALL_LEN);
        assert_eq!(r.rdx, 1000);
    }

    #[test]
    fn nanosleep_sees_eintr() {
        let r =
            rewind_interrupted_syscall(interrupted(libc::SYS_nanosleep, ERESTART_RESTARTBLOCK, 0));
        assert_eq!(r.rax as i64, EINTR);
        assert_eq!(r.rip, 0x1000);
    }

    #[test]
    fn a_restarted_poll_is_named_poll_only_when_it_sleeps_in_poll() {
        let restarted = interrupted(libc::SYS_restart_syscall, ERESTART_RESTARTBLOCK, 7);
        let r = name_restarted_poll(restarted, true);
        assert_eq!(r.orig_rax, libc::SYS_poll as u64);
        let r = rewind_interrupted_syscall(r);
        assert_eq!(r.rax, libc::SYS_poll as u64);
        assert_eq!(r.rip, 0x1000 - SYSCALL_LEN);
        assert_eq!(r.rdx, 7);
        let r = name_restarted_poll(restarted, false);
        assert_eq!(r.orig_rax, libc::SYS_restart_syscall as u64);
        assert_eq!(rewind_interrupted_syscall(r).rax as i64, EINTR);
    }

    #[test]
    fn a_resumed_poll_runs_again_from_its_syscall() {
        let r = resumable(interrupted(
            libc::SYS_poll,
            ERESTART_RESTARTBLOCK,
            u32::MAX as u64,
        ));
        assert_eq!(r.rax, libc::SYS_poll as u64);
        assert_eq!(r.rip, 0x1000 - SYSCALL_LEN);
        assert_eq!(r.orig_rax, u64::MAX);
        // A timed poll and every other syscall are left to the kernel's own restart.
        let timed = interrupted(libc::SYS_poll, ERESTART_RESTARTBLOCK, 1000);
        assert_eq!(resumable(timed).rip, timed.rip);
        let read = interrupted(libc::SYS_read, ERESTARTSYS, 0);
        assert_eq!(resumable(read).rip, read.rip);
        let sleep = interrupted(libc::SYS_nanosleep, ERESTART_RESTARTBLOCK, 0);
        assert_eq!(resumable(sleep).rax, sleep.rax);
    }

    #[test]
    fn restartable_syscalls_run_again() {
        let r = rewind_interrupted_syscall(interrupted(libc::SYS_read, ERESTARTSYS, 0));
        assert_eq!(r.rax, libc::SYS_read as u64);
        assert_eq!(r.rip, 0x1000 - SYSCALL_LEN);
    }
}
