//! `mrunctl restore FILE`: bring an image back to life in the foreground. The restored process
//! gets this command's stdio in place of its pipes and terminals; signals sent to this command
//! reach it; this command ends the way it ends (same exit code, or death by the same signal).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use clap::Args;
use mrun_core::engine::{self, RestoreOptions};
use mrun_core::supervise;
use mrun_core::sys::ns;

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

pub fn run(args: RestoreArgs) -> ! {
    // Must happen while this process is still single-threaded.
    if !args.new_pid {
        if let Err(e) = ns::enter_user_namespace() {
            exit::fail(
                "mrunctl",
                format!(
                    "cannot create a pid namespace to give the process its original pid ({e}); \
                 enable user namespaces or pass --new-pid"
                ),
                exit::FAILURE,
            );
        }
    }
    let waited = supervise::block_signals().unwrap_or_else(|e| {
        exit::fail(
            "mrunctl",
            format!("cannot block signals: {e}"),
            exit::FAILURE,
        )
    });

    let from_stdin = args.image.as_os_str() == "-";
    let devnull;
    let (input, stdin_fd): (Box<dyn Read>, i32) = if from_stdin {
        devnull = File::open("/dev/null").unwrap_or_else(|e| {
            exit::fail(
                "mrunctl",
                format!("cannot open /dev/null: {e}"),
                exit::FAILURE,
            )
        });
        (Box::new(std::io::stdin().lock()), devnull.as_raw_fd())
    } else {
        let f = File::open(&args.image).unwrap_or_else(|e| {
            exit::fail(
                "mrunctl",
                format!("cannot open image {}: {e}", args.image.display()),
                exit::FAILURE,
            )
        });
        (Box::new(f), 0)
    };
    let opts = RestoreOptions {
        stdio: [stdin_fd, 1, 2],
        original_pid: !args.new_pid,
        own_process_group: false,
    };
    let restored =
        match engine::restore(BufReader::with_capacity(engine::READ_BUFFER, input), &opts) {
            Ok(r) => r,
            Err(e) => exit::fail(
                "mrunctl",
                format!(
                    "cannot restore {}: {}",
                    args.image.display(),
                    exit::chain(&e)
                ),
                exit::code_for(&e),
            ),
        };
    // What pre-copy sent ahead is shared with the job until freed here: each page it then
    // writes would be copied first.
    drop(restored.sent_ahead);
    supervise::end_like(supervise::supervise_job(
        restored.pid,
        restored.reaper,
        &waited,
    ))
}
