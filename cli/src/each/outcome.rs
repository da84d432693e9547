//! How one job of `mrun --each` ended, and the words that say so.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use super::batch::JobSpec;

/// A job that ended, with everything it wrote.
#[derive(Debug)]
pub struct Outcome {
    pub spec: JobSpec,
    pub status: ExitStatus,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
    pub runtime: Duration,
    /// Where it ran last: `home` or a node's name.
    pub place: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status.success()
    }

    /// The exit value; 0 when a signal ended it (as GNU parallel's joblog has it).
    pub fn exit_value(&self) -> i32 {
        self.status.code().unwrap_or(0)
    }

    /// The signal that ended it, 0 if none.
    pub fn signal(&self) -> i32 {
        self.status.signal().unwrap_or(0)
    }

    /// `exit 3` or `killed by SIGKILL`.
    pub fn how(&self) -> String {
        match self.status.signal() {
            Some(signo) => format!("killed by {}", signal_name(signo)),
            None => format!("exit {}", self.exit_value()),
        }
    }
}

/// `SIGKILL` for 9, or `signal N` for a number nix does not know.
pub fn signal_name(signo: i32) -> String {
    nix::sys::signal::Signal::try_from(signo)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(raw_wait_status: i32) -> Outcome {
        Outcome {
            spec: JobSpec {
                seq: 1,
                words: vec!["true".into()],
            },
            status: ExitStatus::from_raw(raw_wait_status),
            started_unix: 0.0,
            runtime: Duration::ZERO,
            place: "home".into(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn an_exit_code_is_the_exit_value_and_no_signal() {
        let o = ended(3 << 8);
        assert_eq!((o.exit_value(), o.signal(), o.succeeded()), (3, 0, false));
        assert_eq!(o.how(), "exit 3");
    }

    #[test]
    fn a_signal_gives_exit_value_zero_and_the_signal_number() {
        let o = ended(libc::SIGKILL);
        assert_eq!((o.exit_value(), o.signal(), o.succeeded()), (0, 9, false));
        assert_eq!(o.how(), "killed by SIGKILL");
    }
}
