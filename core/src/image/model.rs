//! The typed content of a checkpoint image: what the engine captures and what a restore needs.
//!
//! These structs are serialized with postcard inside the image's framed records (see
//! `docs/image-format.md`). They never hold page data: pages travel as separate, compressed
//! page records after the [`JobState`] record.

use serde::{Deserialize, Serialize};

/// What a target machine must match before it may restore the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compat {
    /// `std::env::consts::ARCH` of the machine that wrote the image ("x86_64").
    pub arch: String,
    /// XCR0: the xsave feature mask the register image was saved with.
    pub xfeatures: u64,
    /// Size in bytes of the NT_X86_XSTATE register set.
    pub xstate_size: u32,
    /// `uname -r` of the source (informational; the vDSO bytes are what is compared).
    pub kernel_release: String,
    /// Sizes, in bytes, of the special mappings in their address order: `[vvar]`,
    /// `[vvar_vclock]`, `[vdso]` (names kept so a differently shaped kernel is refused).
    pub special_layout: Vec<(String, u64)>,
    /// The exact bytes of the source kernel's vDSO; a target with other bytes refuses the image.
    pub vdso: Vec<u8>,
}

/// First record of every image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub compat: Compat,
    /// Pid as the process itself sees it (innermost pid namespace).
    pub pid: i32,
    /// Command name (`/proc/PID/comm`).
    pub comm: String,
    /// Unix seconds when the checkpoint was taken.
    pub created_unix: u64,
    /// mrun version that wrote it.
    pub writer: String,
    /// `/proc/sys/kernel/random/boot_id` of the source: on the same boot, files must be the
    /// very same inodes; elsewhere they are matched by path, size and mtime.
    pub boot_id: String,
}

/// x86_64 general registers in the layout of `struct user_regs_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpRegs(pub [u64; 27]);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigAction {
    /// Signal number 1..=64.
    pub signo: u8,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
    pub flags: u32,
}

/// A queued signal. Which queue it sits in is told by where it is kept: the process-wide
/// queue (kill, sigqueue) in [`ProcessState`], a thread's own (tgkill, faults) in its
/// [`ThreadState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedSignal {
    pub signo: i32,
    /// The raw 128-byte `siginfo_t`.
    pub info: Vec<u8>,
}

/// The mm fields set with `prctl(PR_SET_MM, PR_SET_MM_MAP)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Raw `/proc/PID/auxv` (pairs of u64).
    pub auxv: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Identity of a file, compared before a file is reopened or re-mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

/// What backs a memory mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Backing {
    /// Anonymous private memory (heap, stack, anonymous mmap).
    Anonymous,
    /// A private or read-only shared mapping of a file; untouched pages come from the file.
    File {
        path: String,
        offset: u64,
        identity: FileIdentity,
    },
    /// A private file mapping whose file was deleted or replaced since it was mapped: every
    /// page is carried in the image and restored as anonymous memory.
    Carried { path: String },
    /// A kernel special mapping (`[vdso]`, `[vvar]`, `[vvar_vclock]`), moved not copied.
    Special { name: String },
    /// Shared memory whose contents live only in memory, held by one process or several:
    /// `MAP_SHARED|MAP_ANONYMOUS`, a memfd, a deleted file, a file in a memory file system
    /// (`/dev/shm`, POSIX shared memory and semaphores). `object` indexes
    /// [`JobState::shared`]; all its mappings are of one object again after restore.
    Shared { object: u32, offset: u64 },
}

/// A shared memory object of the job. Its contents travel as the pages of the mappings of the
/// first process that maps it (`owner`, an index into [`JobState::processes`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedObject {
    pub size: u64,
    pub owner: u32,
    /// The file that holds it, when it still has a name: a file in a memory file system
    /// (`/dev/shm/NAME`), found again at its path on the same machine or created there, with
    /// the carried contents, on another. `None` for memory with no name left (anonymous shared
    /// memory, a memfd, a deleted file), restored as a memfd.
    pub file: Option<SharedFile>,
}

/// The file behind a named shared memory object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedFile {
    pub path: String,
    /// Permission bits, for the file created on a machine that does not have it.
    pub mode: u32,
    pub identity: FileIdentity,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    /// True for MAP_SHARED: of a [`Backing::Shared`] object, or of a file (made again on the
    /// same file; a writable one's dirty pages were written back at checkpoint).
    pub shared: bool,
    /// True for a stack that grows down (`[stack]`, `gd` in VmFlags).
    pub grows_down: bool,
    pub backing: Backing,
    /// The madvise advice the area carries ([`Advice`] bits, from `VmFlags` in
    /// `/proc/PID/smaps`), given again at restore.
    pub advice: u32,
    /// Guard regions inside the area (`madvise(MADV_GUARD_INSTALL)`), `(start, end)`: no page
    /// of them is read or carried; they are installed again at restore.
    pub guards: Vec<(u64, u64)>,
}

/// Bits of [`Vma::advice`]: the `madvise` advice that shows in `VmFlags` (two-letter code).
pub struct Advice;

impl Advice {
    /// `dc` (VM_DONTCOPY): MADV_DONTFORK.
    pub const DONTFORK: u32 = 1 << 0;
    /// `wf`: MADV_WIPEONFORK.
    pub const WIPEONFORK: u32 = 1 << 1;
    /// `hg`: MADV_HUGEPAGE.
    pub const HUGEPAGE: u32 = 1 << 2;
    /// `nh`: MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: u32 = 1 << 3;
    /// `dd` (VM_DONTDUMP): MADV_DONTDUMP.
    pub const DONTDUMP: u32 = 1 << 4;
    /// `mg`: MADV_MERGEABLE (KSM).
    pub const MERGEABLE: u32 = 1 << 5;
    /// `sr`: MADV_SEQUENTIAL.
    pub const SEQUENTIAL: u32 = 1 << 6;
    /// `rr`: MADV_RANDOM.
    pub const RANDOM: u32 = 1 << 7;
}

/// How a file descriptor is brought back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FdKind {
    /// A file or directory reopened by path at the same offset.
    Path {
        path: String,
        flags: i32,
        offset: u64,
        identity: FileIdentity,
    },
    /// A character device reopened by path (`/dev/null`, `/dev/zero`, `/dev/urandom`...).
    Device { path: String, flags: i32 },
    /// A pipe or terminal that was on stdio: connected to the restorer's stdio `slot` (0, 1, 2).
    Stdio { slot: u8 },
    /// One end of a pipe whose both ends the process holds (a self-pipe). `data` is what was
    /// buffered in it (carried on the read end only); `size` its capacity.
    Pipe {
        id: u64,
        write_end: bool,
        flags: i32,
        size: u32,
        data: Vec<u8>,
    },
    /// One end (`end` 0 or 1) of a pair of connected unix sockets whose both ends the job
    /// holds (`socketpair(2)`); `id` names the pair (the inode of its end 0). `queued` is what
    /// waits in this end's receive queue, oldest first: one element per message of a datagram
    /// or seqpacket socket, the bytes in one element for a stream.
    SocketPair {
        id: u64,
        end: u8,
        kind: SocketKind,
        flags: i32,
        /// Shut down for receiving (`shutdown(SHUT_RD)`, or the peer's `SHUT_WR` on a
        /// connection) and for sending.
        shut_rd: bool,
        shut_wr: bool,
        options: SocketOptions,
        queued: Vec<Vec<u8>>,
        /// The other end was closed (a worker that wrote its result and exited): the restore
        /// makes it to refill this end's queue, then closes it again.
        peer_closed: bool,
        /// The name this end is bound to, as for [`FdKind::UnixListener`]: an accepted
        /// connection holds its listener's; the restore accepts it again from that listener
        /// when the job has it (else the name is not given back).
        name: Option<Vec<u8>>,
    },
    /// A listening unix socket (stream or seqpacket) of the job, made again, bound to `name`
    /// (as the kernel reports it: a path with its closing NUL byte, or a NUL byte and an
    /// abstract name), listening with `backlog`. `file` is where a path's socket file was.
    /// Nothing waited to be accepted.
    UnixListener {
        kind: SocketKind,
        flags: i32,
        name: Vec<u8>,
        file: Option<SocketFile>,
        backlog: u32,
        options: SocketOptions,
    },
    /// A file with no name left: a deleted file (`name` its old path) or a memfd (`name` its
    /// name). `dev` and `ino` tell when several open files are of one file; its `contents`
    /// (`size` bytes) travel with the first, empty in the others. `mode` its permission bits,
    /// `seals` a memfd's `F_SEAL_*` bits; `flags` and `offset` as for `Path`.
    Unlinked {
        dev: u64,
        ino: u64,
        memfd: bool,
        name: String,
        flags: i32,
        offset: u64,
        mode: u32,
        size: u64,
        seals: u32,
        contents: Vec<u8>,
    },
    /// A named pipe (FIFO) whose both ends the job holds, reopened at `path` (the same FIFO,
    /// by `identity`) with the access mode and status `flags` of this open file; `data` is
    /// what waited in it (carried with its first read end), `size` its capacity.
    Fifo {
        path: String,
        flags: i32,
        identity: FileIdentity,
        size: u32,
        data: Vec<u8>,
    },
    /// An eventfd: its counter, semaphore mode (`EFD_SEMAPHORE`) and status flags.
    EventFd {
        count: u64,
        semaphore: bool,
        flags: i32,
    },
    /// A timerfd on `clock` (a `CLOCK_*` id) with status flags `flags`. `remaining_ns` is the
    /// time that was left until its next expiry (0: disarmed), `interval_ns` its period (0: one
    /// shot), `ticks` the expirations not yet read. `deadline_ns` is set for a timer armed on
    /// an absolute `CLOCK_REALTIME` (or `CLOCK_REALTIME_ALARM`) time: that deadline, in ns
    /// since the epoch, which stays absolute; every other armed timer goes on with
    /// `remaining_ns` left. `settime_flags` are `TFD_TIMER_ABSTIME`/`TFD_TIMER_CANCEL_ON_SET`
    /// as last set.
    TimerFd {
        clock: i32,
        flags: i32,
        settime_flags: i32,
        remaining_ns: u64,
        interval_ns: u64,
        deadline_ns: Option<u64>,
        ticks: u64,
    },
    /// A signalfd for the signals in `mask` (bit n-1 for signal n).
    SignalFd { mask: u64, flags: i32 },
    /// An epoll instance and its interest list.
    Epoll { flags: i32, items: Vec<EpollItem> },
    /// An inotify instance and its watches, in watch descriptor order.
    Inotify {
        flags: i32,
        watches: Vec<InotifyWatch>,
    },
}

/// One registration of an epoll instance: the open file `file` (an index into
/// [`JobState::files`]) registered under descriptor number `fd`, with its `events` mask
/// (`EPOLLET`, `EPOLLONESHOT`, `EPOLLEXCLUSIVE` included; a oneshot item that fired holds only
/// those bits) and `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollItem {
    pub fd: i32,
    pub file: u32,
    pub events: u32,
    pub data: u64,
}

/// One watch of an inotify instance: its watch descriptor, the path it watches (found at
/// checkpoint) and its mask. `identity` is the watched inode as it was (device and inode
/// numbers are compared on the same machine only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub path: String,
    pub mask: u32,
    pub identity: FileIdentity,
}

/// The type of a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketKind {
    Stream,
    Datagram,
    SeqPacket,
}

/// The file a unix socket bound to a path made: where it is (absolute), its device and inode
/// numbers and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketFile {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
}

/// The options of a socket that a process may have set and that change how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOptions {
    /// `SO_SNDBUF`, `SO_RCVBUF` as getsockopt reports them (twice what was asked).
    pub sndbuf: u32,
    pub rcvbuf: u32,
    /// `SO_RCVTIMEO`, `SO_SNDTIMEO` in microseconds, 0 for none.
    pub rcvtimeo_us: u64,
    pub sndtimeo_us: u64,
    pub rcvlowat: i32,
    /// `SO_PEEK_OFF`, -1 when not in use.
    pub peek_off: i32,
}

/// One descriptor of a process: its number, its close-on-exec flag and the open file it
/// refers to (an index into [`JobState::files`]; descriptors that shared one open file, after
/// a fork or a dup, share one entry, so they share its offset and flags again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fd {
    pub fd: i32,
    pub cloexec: bool,
    pub file: u32,
}

/// One thread (task) of the process: what the kernel keeps per thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadState {
    /// Thread id as the process sees it (innermost pid namespace); the leader's equals the
    /// process's pid.
    pub tid: i32,
    /// General registers, already rewound so an interrupted syscall runs again (or returns
    /// EINTR when its restart state lived in the kernel).
    pub regs: GpRegs,
    /// The NT_X86_XSTATE register set, as the kernel returned it.
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    /// Signals queued to this thread alone, oldest first, with their siginfo.
    pub queued_signals: Vec<QueuedSignal>,
    /// Signals that arrived at this thread while the checkpoint ran, siginfo unknown; sent
    /// again with tgkill(2).
    pub pending_signals: Vec<i32>,
    pub altstack: AltStack,
    pub rseq: Option<Rseq>,
    /// `(head, len)` of the robust futex list (`get_robust_list`).
    pub robust_list: (u64, u64),
    /// The address the kernel clears and wakes at thread exit (`set_tid_address`).
    pub clear_child_tid: u64,
    /// The thread's name (`/proc/PID/task/TID/comm`).
    pub name: String,
    /// CPU affinity as a bit mask (64 CPUs per word), or `None` when the thread may run on
    /// every CPU the checkpointed machine offered it (then it may on the target's too).
    pub affinity: Option<Vec<u64>>,
    /// Attributes the kernel keeps per thread (prctl).
    pub attrs: ThreadAttrs,
}

/// Per-thread attributes set with prctl(2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadAttrs {
    /// PR_GET_NO_NEW_PRIVS; it can be set but never cleared.
    pub no_new_privs: bool,
    /// PR_GET_PDEATHSIG: the signal the thread gets when its parent dies (0: none).
    pub pdeathsig: i32,
    /// PR_GET_TIMERSLACK, in nanoseconds.
    pub timer_slack_ns: u64,
}

/// Process-wide attributes set with prctl(2), membarrier(2) and /proc.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessAttrs {
    /// PR_GET_THP_DISABLE: 0, 1 (THP disabled), or 3 (disabled except where advised,
    /// PR_THP_DISABLE_EXCEPT_ADVISED).
    pub thp_disable: u32,
    /// PR_GET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
    /// PR_GET_DUMPABLE: 0, 1, or 2 (suid_dumpable's "root only").
    pub dumpable: u32,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: i32,
    /// The MEMBARRIER_CMD_REGISTER_* commands the process registered.
    pub membarrier: u32,
}

/// Everything about the job except its page contents: its processes, parents before their
/// children (the first is the root, the process the user started), and the open files their
/// descriptors refer to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    pub processes: Vec<ProcessState>,
    pub files: Vec<FdKind>,
    /// Shared memory objects the processes map (see [`Backing::Shared`]).
    pub shared: Vec<SharedObject>,
    /// Children that exited and were not waited for yet: restored as such, so that their
    /// parent's wait still finds them, with the same status.
    pub zombies: Vec<Zombie>,
    /// Process groups of the job whose leader has exited (a pipeline's first command that
    /// ended before the others): their ids, which members use as `pgid`. All are in the root's
    /// session.
    pub leaderless_groups: Vec<i32>,
}

/// A child that exited and was not waited for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Zombie {
    pub pid: i32,
    /// Its parent's pid (a process of the job).
    pub ppid: i32,
    /// As in [`ProcessState`]: a member's pid, or 0 for the root's own.
    pub pgid: i32,
    pub sid: i32,
    /// The wait status its parent will get (`exit_code` of `/proc/PID/stat`).
    pub status: i32,
}

impl JobState {
    pub fn root(&self) -> Option<&ProcessState> {
        self.processes.first()
    }
}

/// Everything about one process except its page contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    /// The pid the process knows itself by (innermost pid namespace); equals its leader
    /// thread's tid.
    pub pid: i32,
    /// The parent's pid; 0 for the root (its parent is whoever restores the job).
    pub ppid: i32,
    /// The process group: the pid of a member of the job that leads it, or 0 for the group
    /// the root was in (outside the job; the restore decides it).
    pub pgid: i32,
    /// The session, likewise: a member's pid, or 0 for the root's session.
    pub sid: i32,
    /// Path of the executable (`/proc/PID/exe`), exec'd again on restore so `/proc/self/exe`
    /// is right.
    pub exe: String,
    pub exe_identity: FileIdentity,
    /// Every thread, the leader first, the others in ascending tid order.
    pub threads: Vec<ThreadState>,
    pub sigactions: Vec<SigAction>,
    pub personality: u32,
    pub mm: MmFields,
    pub cwd: String,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    pub vmas: Vec<Vma>,
    pub fds: Vec<Fd>,
    /// Signals in the process-wide queue, oldest first, with their siginfo; queued again in
    /// the same order after restore.
    pub queued_signals: Vec<QueuedSignal>,
    /// Attributes the kernel keeps per process (prctl, membarrier, oom_score_adj).
    pub attrs: ProcessAttrs,
    /// Armed interval timers (`setitimer`), re-armed relative: each fires the same distance
    /// (of its clock) after the restore as it would have after the checkpoint.
    pub itimers: Vec<IntervalTimer>,
    /// POSIX timers (`timer_create`), armed or not, in ascending id order; each gets its id
    /// back.
    pub posix_timers: Vec<PosixTimer>,
}

/// An armed interval timer of the process (`setitimer(2)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalTimer {
    /// `ITIMER_REAL` 0, `ITIMER_VIRTUAL` 1, `ITIMER_PROF` 2.
    pub which: u32,
    /// Time left until it fires, in microseconds of its clock (never 0: only armed timers are
    /// kept).
    pub value_us: u64,
    /// Its period, 0 for a one-shot timer.
    pub interval_us: u64,
}

/// A POSIX timer of the process (`timer_create(2)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    /// The id the process holds as its `timer_t`.
    pub id: i32,
    /// The clock as the kernel keeps it (`CLOCK_MONOTONIC` 1, `CLOCK_PROCESS_CPUTIME_ID` as
    /// -6...).
    pub clock: i32,
    /// `sigev_notify` as the kernel keeps it: `SIGEV_SIGNAL` 0, `SIGEV_NONE` 1, `SIGEV_THREAD`
    /// 2, with `SIGEV_THREAD_ID` (4) added when it signals one thread.
    pub notify: i32,
    pub signo: i32,
    /// `sigev_value`, as a pointer-sized word.
    pub value: u64,
    /// The thread it signals (`SIGEV_THREAD_ID`), as the process knows it; 0 otherwise.
    pub tid: i32,
    /// Time left until it fires, in nanoseconds of its clock; 0 when disarmed.
    pub value_ns: u64,
    /// Its period in nanoseconds, 0 for a one-shot timer.
    pub interval_ns: u64,
    /// For a wall clock (`CLOCK_REALTIME`, `_ALARM`, `CLOCK_TAI`), armed: the deadline in that
    /// clock's time (nanoseconds since its epoch), which the restore arms absolutely.
    pub deadline_ns: Option<u64>,
    /// `timer_getoverrun` at the checkpoint (kept for the record: no kernel call sets it).
    pub overrun: i32,
    /// A periodic timer whose signal waited in a queue at the checkpoint (the kernel queues no
    /// other until that one is taken). The signal is not in the queues of the image: the
    /// restore arms the timer to have expired one period before its next expiry, so that the
    /// timer queues it itself, once, and goes on from there.
    pub signal_queued: bool,
}

impl ProcessState {
    /// The thread group leader (the first thread).
    pub fn leader(&self) -> Option<&ThreadState> {
        self.threads.first()
    }
}
