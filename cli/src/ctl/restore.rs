//! `mrunctl restore FILE`: bring an image back to life in the foreground. The restored process
//! gets this command's stdio in place of its pipes and terminals; signals sent to this command
//! reach it; this command ends the way it ends (same exit code, or death by the same signal).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use clap::Args;
use mrun_core::engine::{self, RestoreOptions};
use mrun_core::sys::{ns, signals};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exit;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The image to restore; `-` reads it from standard input (the process then gets
    /// /dev/null as its standard input).
    pub image: PathBuf,
    /// Do not give the process its original pid (no new pid namespace). glibc's cached
    /// thread id is then stale; use only where user namespaces are disabled.
    #[arg(long)]
    pub new_pid: bool,
}

/// Signals passed on to the restored process when someone sends them to this command.
const FORWARDED: [Signal; 9] = [
    Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1,
    Signal::SIGUSR2, Signal::SIGWINCH, Signal::SIGCONT, Signal::SIGTSTP,
];

pub fn run(args: RestoreArgs) -> ! {
    // Must happen while this process is still single-threaded.
    if !args.new_pid {
        if let Err(e) = ns::enter_user_namespace() {
            exit::fail("mrunctl", format!(
                "cannot create a pid namespace to give the process its original pid ({e}); \
                 enable user namespaces or pass --new-pid"), exit::FAILURE);
        }
    }
    let mut waited = SigSet::empty();
    for s in FORWARDED {
        waited.add(s);
    }
    waited.add(Signal::SIGCHLD);
    if let Err(e) = waited.thread_block() {
        exit::fail("mrunctl", format!("cannot block signals: {e}"), exit::FAILURE);
    }

    let from_stdin = args.image.as_os_str() == "-";
    let devnull;
    let (input, stdin_fd): (Box<dyn Read>, i32) = if from_stdin {
        devnull = File::open("/dev/null").unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot open /dev/null: {e}"), exit::FAILURE));
        (Box::new(std::io::stdin().lock()), devnull.as_raw_fd())
    } else {
        let f = File::open(&args.image).unwrap_or_else(|e| {
            exit::fail("mrunctl", format!("cannot open image {}: {e}", args.image.display()), exit::FAILURE)
        });
        (Box::new(f), 0)
    };
    let opts = RestoreOptions { stdio: [stdin_fd, 1, 2], original_pid: !args.new_pid };
    let restored = match engine::restore(BufReader::with_capacity(1 << 20, input), &opts) {
        Ok(r) => r,
        Err(e) => exit::fail("mrunctl", format!("cannot restore {}: {}", args.image.display(), exit::chain(&e)), exit::code_for(&e)),
    };
    let status = supervise(restored.pid, &waited);
    if let Some(r) = restored.reaper {
        let _ = kill(r, Signal::SIGKILL);
        let _ = waitpid(r, None);
    }
    end_like(status)
}

/// Forward signals until the process ends; return how it ended.
fn supervise(child: Pid, waited: &SigSet) -> WaitStatus {
    loop {
        loop {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return st,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return WaitStatus::Exited(child, exit::FAILURE),
            }
        }
        let Ok(got) = signals::wait(waited) else { continue };
        if got.signal == Signal::SIGCHLD {
            continue;
        }
        // A terminal's signals already reached the whole foreground process group, the
        // restored process included; pass on only those sent to this command.
        if got.from_process {
            let _ = kill(child, got.signal);
        }
    }
}

fn end_like(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, sig, _) => {
            crate::exit::die_of(sig)
        }
        _ => std::process::exit(exit::FAILURE),
    }
}
