//! `--joblog FILE`: GNU parallel's job log, so that tools reading those logs read ours. A
//! header line, then one tab-separated line per job as it ends:
//! `Seq Host Starttime JobRuntime Send Receive Exitval Signal Command`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::outcome::Outcome;

pub const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

pub struct JobLog {
    path: PathBuf,
    file: File,
}

impl JobLog {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<JobLog> {
        let mut file = File::create(path)
            .with_context(|| format!("creating the job log {}", path.display()))?;
        file.write_all(HEADER.as_bytes())
            .with_context(|| format!("writing the job log {}", path.display()))?;
        Ok(JobLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends the line of a job that ended (written at once, so the log is current).
    pub fn record(&mut self, job: &Outcome) -> Result<()> {
        self.file
            .write_all(line(job).as_bytes())
            .with_context(|| format!("writing the job log {}", self.path.display()))
    }
}

/// A job's line. As GNU parallel does: the start time with 3 decimals, the runtime cut to
/// milliseconds and right-aligned in 10 columns, 0 bytes sent and received (nothing is
/// transferred for a job), the exit value 0 when a signal ended it, and newlines in the command
/// written as NUL so that one job stays one line.
pub fn line(job: &Outcome) -> String {
    let runtime = job.runtime.as_millis() as f64 / 1000.0;
    format!(
        "{}\t{}\t{:.3}\t{:10.3}\t0\t0\t{}\t{}\t{}\n",
        job.spec.seq,
        job.place,
        job.started_unix,
        runtime,
        job.exit_value(),
        job.signal(),
        job.spec.display().replace('\n', "\0")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::each::batch::JobSpec;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    #[test]
    fn a_line_is_formatted_like_gnu_parallel() {
        let job = Outcome {
            spec: JobSpec {
                seq: 4,
                words: vec!["sh".into(), "-c".into(), "exit $0".into(), "3".into()],
            },
            status: std::process::ExitStatus::from_raw(3 << 8),
            started_unix: 1376577364.9741,
            runtime: Duration::from_micros(12_345_678),
            place: "nodea".into(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        assert_eq!(
            line(&job),
            "4\tnodea\t1376577364.974\t    12.345\t0\t0\t3\t0\tsh -c exit $0 3\n"
        );
    }
}
