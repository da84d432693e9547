//! One job of `mrun --each`: an ordinary `mrun` deputy (`mrun --batch-job [--home]
//! [--keep-fd FDS] -- COMMAND ARG`) run as our child, so it migrates, takes signals and ends
//! like any job. Its
//! stdin is /dev/null; its output is collected whole, to be shown in one piece when it ends;
//! inherited descriptors named by `--keep-fd` go on to it. A job has ended once its
//! deputy exited and both its output pipes closed: a process it left running in the background
//! with those pipes open holds the job (and its output) until that process closes them.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::batch::JobSpec;
use super::outcome::Outcome;

/// The status given to a job whose deputy could not be started or waited for, as a shell
/// reports a command it could not run; the reason is the job's stderr.
const COULD_NOT_RUN: i32 = 127;

/// A started job: the deputy's pid (`None` if it could not start), and the future that yields
/// how it ended (its place is filled in by the caller, which knows it).
pub struct Started {
    pub pid: Option<u32>,
    /// When it started (its runtime counts from here).
    pub started: Instant,
    pub ended: std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>,
}

/// Starts `spec` through the `mrun` binary `exe`. When it cannot start, the future yields that
/// failure at once.
/// `kept_fds` (from `--keep-fd`) go on to the deputy, which passes them on to its job.
pub fn start(exe: &Path, home: bool, kept_fds: &[i32], spec: JobSpec) -> Started {
    let started_unix = crate::jobs::unix_now().as_secs_f64();
    let started = Instant::now();
    let mut cmd = std::process::Command::new(exe);
    // The batch warned about a broken config file once; its jobs do not repeat it (a hidden
    // first word, read before the command line is parsed).
    cmd.arg("--batch-job");
    if home {
        cmd.arg("--home");
    }
    if let Some(nodes) = crate::nodes::command_line() {
        cmd.arg("--nodes").arg(nodes.join(","));
    }
    if let Some(keep) = crate::fds::keep_arg(kept_fds) {
        cmd.arg("--keep-fd").arg(keep);
        mrun_core::sys::process::keep_fds_in_child(&mut cmd, kept_fds);
    }
    cmd.arg("--")
        .args(&spec.words)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // We block SIGINT and SIGTERM to take them on a thread of our own; jobs start unblocked.
    mrun_core::sys::process::unblock_signals_in_child(&mut cmd);
    let ended =
        move |status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>, spec: JobSpec| Outcome {
            spec,
            status,
            started_unix,
            runtime: started.elapsed(),
            place: "home".to_string(),
            stdout,
            stderr,
        };
    match tokio::process::Command::from(cmd).spawn() {
        Ok(mut child) => {
            let pid = child.id();
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            Started {
                pid,
                started,
                ended: Box::pin(async move {
                    let (stdout, stderr, status) =
                        tokio::join!(read_all(stdout), read_all(stderr), child.wait());
                    match status {
                        Ok(status) => ended(status, stdout, stderr, spec),
                        Err(e) => {
                            let mut stderr = stderr;
                            stderr.extend_from_slice(
                                format!("mrun: cannot wait for {}: {e}\n", spec.display())
                                    .as_bytes(),
                            );
                            ended(
                                ExitStatus::from_raw(COULD_NOT_RUN << 8),
                                stdout,
                                stderr,
                                spec,
                            )
                        }
                    }
                }),
            }
        }
        Err(e) => {
            let message = format!(
                "mrun: cannot start {} through {}: {e}\n",
                spec.display(),
                exe.display()
            );
            let outcome = ended(
                ExitStatus::from_raw(COULD_NOT_RUN << 8),
                Vec::new(),
                message.into_bytes(),
                spec,
            );
            Started {
                pid: None,
                started,
                ended: Box::pin(std::future::ready(outcome)),
            }
        }
    }
}

/// Everything `pipe` yields until its end (or until it fails: what came so far).
async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut data = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut data).await;
    }
    data
}
