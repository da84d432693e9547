//! Why a process cannot be checkpointed: one variant per thing the engine does not (or cannot)
//! carry. A refused process is left running, untouched; the text is one sentence naming the
//! thing. Supporting a feature deletes its variant.

use crate::sys::Pid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("there is no process with pid {pid}")]
    NoSuchProcess { pid: Pid },
    #[error("pid {pid} has already exited")]
    Exited { pid: Pid },
    #[error(
        "pid {pid} cannot be traced by this user (another user's process, or a non-dumpable \
         one); run mrunctl as its owner"
    )]
    NotTraceable { pid: Pid },
    #[error(
        "pid {pid} belongs to another user (uid {uid}); only its owner or root can checkpoint it"
    )]
    OtherUser { pid: Pid, uid: u32 },
    #[error(
        "pid {pid} is already traced by pid {tracer}; a traced process cannot be checkpointed"
    )]
    AlreadyTraced { pid: Pid, tracer: i32 },
    #[error("{pid} is a thread of process {tgid}; checkpoint the process, pid {tgid}")]
    NotAProcess { pid: Pid, tgid: i32 },
    #[error(
        "the main thread of pid {pid} has exited while its other threads run; such a process \
         cannot be checkpointed"
    )]
    LeaderExited { pid: Pid },
    #[error(
        "pid {pid} keeps creating threads faster than they can be frozen; try again when it is \
         calmer"
    )]
    ThreadChurn { pid: Pid },
    #[error(
        "thread {tid} of pid {pid} has a shadow stack enabled (x86 CET); shadow stacks cannot be \
         checkpointed yet"
    )]
    ShadowStack { pid: Pid, tid: i32 },
    #[error(
        "the processes of job {pid} keep creating children faster than they can be frozen; try \
         again when it is calmer"
    )]
    ProcessChurn { pid: Pid },
    #[error(
        "pid {pid} of the job is in a {what} led by pid {leader}, which is outside the job; it \
         cannot be checkpointed"
    )]
    LedFromOutside {
        pid: Pid,
        what: &'static str,
        leader: i32,
    },
    #[error(
        "pid {pid} of the job is in a {what} whose leader, pid {leader}, has exited{}; it \
         cannot be checkpointed yet",
        if *what == "process group" { " (in a session of the job's own)" } else { "" }
    )]
    ExitedLeader {
        pid: Pid,
        what: &'static str,
        leader: i32,
    },
    #[error(
        "pid {pid} has POSIX timer {id} on {what} (clock {clock}), which cannot be restored \
         faithfully"
    )]
    TimerClock {
        pid: Pid,
        id: i32,
        clock: i32,
        what: &'static str,
    },
    #[error(
        "POSIX timer {id} of pid {pid} signals thread {tid}, which has exited; such a timer \
         cannot be restored"
    )]
    TimerThreadGone { pid: Pid, id: i32, tid: i32 },
    #[error("pid {pid} has no executable mapping to work with")]
    NoExecutableMapping { pid: Pid },
    #[error("pid {pid} has {what} open on fd {fd}; it cannot be checkpointed yet")]
    Descriptor { pid: Pid, fd: i32, what: String },
    #[error(
        "pid {pid} has shared anonymous memory at {at:#x}; shared memory cannot be checkpointed yet"
    )]
    SharedAnonymous { pid: Pid, at: u64 },
    #[error(
        "pid {pid} has System V shared memory attached (key {key:#x}); SysV shm cannot be \
         checkpointed yet"
    )]
    SysvShm { pid: Pid, key: u64 },
    #[error(
        "pid {pid} has a shared mapping at {at:#x} of {path} which was replaced on disk; it \
         cannot be checkpointed"
    )]
    SharedReplacedFile { pid: Pid, at: u64, path: String },
    #[error("pid {pid} has a mapping of an unsupported kind ({kind}) at {at:#x}")]
    UnsupportedMapping { pid: Pid, kind: String, at: u64 },
    #[error(
        "pid {pid} has guard pages (MADV_GUARD_INSTALL) in its shared memory mapping at {at:#x}; \
         they cannot be checkpointed yet"
    )]
    GuardInSharedMemory { pid: Pid, at: u64 },
}

impl Refusal {
    /// A few words for a crowded line (`mrun --each`'s progress, a status column): what the
    /// job holds or is, without pids and numbers, so that jobs refused for the same kind of
    /// thing read the same ("holds a TCP socket").
    pub fn brief(&self) -> String {
        match self {
            Refusal::NoSuchProcess { .. } | Refusal::Exited { .. } => "has exited".into(),
            Refusal::NotTraceable { .. } | Refusal::OtherUser { .. } => {
                "belongs to another user".into()
            }
            Refusal::AlreadyTraced { .. } => "is traced (a debugger)".into(),
            Refusal::NotAProcess { .. } => "is a thread".into(),
            Refusal::LeaderExited { .. } => "has a main thread that exited".into(),
            Refusal::ThreadChurn { .. } | Refusal::ProcessChurn { .. } => {
                "creates threads or processes too fast".into()
            }
            Refusal::ShadowStack { .. } => "has a shadow stack".into(),
            Refusal::LedFromOutside { what, .. } => format!("is in a {what} led from outside"),
            Refusal::ExitedLeader { what, .. } => format!("is in a {what} whose leader exited"),
            Refusal::TimerClock { .. } | Refusal::TimerThreadGone { .. } => {
                "has a POSIX timer that cannot be restored".into()
            }
            Refusal::NoExecutableMapping { .. } => "has no executable mapping".into(),
            Refusal::Descriptor { what, .. } => format!("holds {}", without_detail(what)),
            Refusal::SharedAnonymous { .. } | Refusal::GuardInSharedMemory { .. } => {
                "has shared memory that cannot be carried".into()
            }
            Refusal::SysvShm { .. } => "has System V shared memory".into(),
            Refusal::SharedReplacedFile { .. } => "maps a file replaced on disk".into(),
            Refusal::UnsupportedMapping { kind, .. } => format!("has a {kind} mapping"),
        }
    }
}

/// `a device (/dev/sda)` -> `a device`, `a deleted file of 9437184 bytes (...); ...` -> `a
/// deleted file`: the kind of thing, not which one nor how large.
fn without_detail(what: &str) -> &str {
    let mut end = [" (", ";"]
        .iter()
        .filter_map(|cut| what.find(cut))
        .min()
        .unwrap_or(what.len());
    if let Some(at) = what.find(" of ") {
        if what[at + 4..].starts_with(|c: char| c.is_ascii_digit()) {
            end = end.min(at);
        }
    }
    &what[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brief_names_the_kind_of_thing_without_numbers() {
        let pid = Pid::from_raw(7);
        let tcp = Refusal::Descriptor {
            pid,
            fd: 3,
            what: "a TCP socket".into(),
        };
        assert_eq!(tcp.brief(), "holds a TCP socket");
        let device = Refusal::Descriptor {
            pid,
            fd: 4,
            what: "a device (/dev/sda)".into(),
        };
        assert_eq!(device.brief(), "holds a device");
        let big = Refusal::Descriptor {
            pid,
            fd: 5,
            what: "a deleted file of 9437184 bytes (/tmp/#12 (deleted)); mrun carries files".into(),
        };
        assert_eq!(big.brief(), "holds a deleted file");
        assert_eq!(
            Refusal::SysvShm { pid, key: 5 }.brief(),
            "has System V shared memory"
        );
    }
}
