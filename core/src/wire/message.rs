//! Control messages, and the version handshake that opens every session.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to frames or control messages.
pub const PROTOCOL_VERSION: u32 = 10;

/// First message in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// `mrun x.y.z` of the sender.
    pub software: String,
    /// `std::env::consts::ARCH` of the sender's machine.
    pub arch: String,
}

impl Hello {
    pub fn ours() -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            software: format!("mrun {}", env!("CARGO_PKG_VERSION")),
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// A sentence for a peer that speaks another protocol version, or None if compatible.
    pub fn mismatch(&self, peer: &Hello, peer_name: &str) -> Option<String> {
        (self.protocol != peer.protocol).then(|| {
            format!(
                "{peer_name} speaks mrun protocol {} ({}) but this side speaks {} ({}); install the same mrun version on both",
                peer.protocol, peer.software, self.protocol, self.software
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Terminal modes (termios flags and control characters), carried so that the node's pty
/// behaves as the terminal the process had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermModes {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub cc: Vec<u8>,
}

/// The terminal a process had at home, to be reproduced as a pty on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    pub size: WinSize,
    pub modes: TermModes,
}

/// What a machine tells about itself (measured by [`crate::load::Meter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub arch: String,
    pub kernel: String,
    /// CPU capacity (affinity and cgroup quota taken into account).
    pub cpus: u32,
    /// Speed of one CPU: loop iterations per CPU-microsecond on a fixed integer loop.
    pub speed: f64,
    /// Runnable tasks (the run queue), averaged over the last second.
    pub runnable: f64,
    /// `runnable / cpus`.
    pub load_per_cpu: f64,
    pub mem_available: u64,
    /// mrun jobs of this user restored on this machine.
    pub jobs: u32,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl From<std::process::ExitStatus> for Ended {
    fn from(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Exited(code),
            (None, Some(sig)) => Ended::Signaled(sig),
            _ => Ended::Exited(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Control {
    Hello(Hello),
    /// home -> agent: restore the image that follows as `Image` frames up to `ImageEnd`.
    /// `stdin` tells whether the process has an open stdin to be fed with `Stdin` frames.
    /// `terminal`: the process had a terminal at home; give it a pty with these settings.
    /// `files`: the files the job uses as home sees them, and `home_boot` home's boot id: a
    /// node that does not have the very same files gives the job home's (served over this
    /// session, see `docs/served-files.md`).
    Restore {
        job: u64,
        stdin: bool,
        terminal: Option<Terminal>,
        files: Vec<crate::files::seen::SeenFile>,
        home_boot: String,
    },
    /// agent -> home, right after `Restore`: this node takes the job (it has the job's files
    /// or can serve home's); send the image. Nothing is frozen before it (else `Refused` or
    /// `Error` comes instead, and the job was never touched).
    Ready,
    /// Either direction: the image stream is complete.
    ImageEnd,
    /// agent -> home: the restored process runs (its pid on the node). Only now may the
    /// source copy be killed.
    Running {
        pid: i32,
    },
    /// home -> agent: no more stdin.
    StdinEof,
    /// home -> agent: deliver this signal to the process.
    Signal {
        signo: i32,
    },
    /// home -> agent: the terminal changed size.
    Resize(WinSize),
    /// home -> agent: checkpoint the process and send its image back (`Image` frames, then
    /// `ImageEnd`); it stays frozen until `Commit` (it lives on elsewhere: end it) or `Abort`
    /// (let it run on here).
    Checkpoint,
    Commit,
    Abort,
    /// home -> agent, instead of `Restore`: describe this node (answered with `Facts`).
    Describe,
    Facts(NodeFacts),
    /// agent -> home: the process ended.
    Exited(Ended),
    /// Either direction: something failed; one sentence for the user.
    Error {
        message: String,
    },
    /// home -> agent, instead of `Restore`: send `Facts` every `interval_ms` until home
    /// closes the session (the balancer's view of this node).
    Watch {
        interval_ms: u32,
    },
    /// agent -> home: the process (which has a pty here) was stopped by job control, e.g. the
    /// ^Z typed at home reached its pty. Home stops too, so the user's shell gets the terminal
    /// back; its `fg` reaches the process as a `Signal` of SIGCONT.
    Stopped,
    /// agent -> home: the process's stdin took `bytes` more bytes of the input home sent (or
    /// they were dropped because it closed its stdin). Home keeps at most
    /// `feed::STDIN_WINDOW` bytes of input on their way, so input waits at home, not here.
    StdinRead {
        bytes: u64,
    },
    /// agent -> home: the CPU seconds (user + system, its processes and the children they
    /// waited for) the job has used on this node so far; sent every second while it runs,
    /// and once more when it is frozen to leave (before `ImageEnd`), so home can show the
    /// job's total CPU time wherever it ran.
    Usage {
        cpu_seconds: f64,
    },
    /// agent -> home, instead of the image after `Checkpoint`: the engine refused (the
    /// process holds something it cannot checkpoint yet); one sentence for the user. The
    /// process runs on here, untouched.
    Refused {
        message: String,
    },
    /// home -> agent, after each pre-copy round: answer `Synced` once every Image frame
    /// before this one has reached the restore helper. The next round, or the freeze, comes
    /// only then: a round is measured over the time its bytes took to cross, and the downtime
    /// does not include pre-copy data still on its way.
    Sync,
    /// agent -> home: the answer to `Sync`.
    Synced,
}
