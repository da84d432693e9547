//! The jobs of `mrun --each`: the split of the words after `--each` (see [`super::words`]),
//! with the per-job arguments from those words or from the lines of stdin or of a file.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStrExt;

use anyhow::{anyhow, Context, Result};

use super::words::{Arguments, Template};

/// One job: the command words, and its place (1-based) in argument order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub seq: usize,
    pub words: Vec<OsString>,
}

impl JobSpec {
    /// The command line as one string: the words joined by spaces.
    pub fn display(&self) -> String {
        self.words
            .iter()
            .map(|w| w.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One job `fixed... argument` per argument, numbered in order.
pub fn jobs(fixed: &[OsString], arguments: Vec<OsString>) -> Vec<JobSpec> {
    arguments
        .into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let mut words = fixed.to_vec();
            words.push(arg);
            JobSpec { seq: i + 1, words }
        })
        .collect()
}

/// One argument per line of `input`; empty lines are skipped.
pub fn arguments_from_lines(input: &[u8]) -> Vec<OsString> {
    input
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| OsStr::from_bytes(line).to_os_string())
        .collect()
}

/// The jobs of `template`, reading stdin or a file when it says so.
pub fn jobs_of(template: Template) -> Result<Vec<JobSpec>> {
    let arguments = match template.per_job {
        Arguments::Words(args) => args,
        Arguments::Lines(Some(file)) => {
            let input = std::fs::read(&file).map_err(|e| {
                anyhow!(
                    "cannot read the jobs' arguments from {}: {}",
                    file.display(),
                    reason(&e)
                )
            })?;
            arguments_from_lines(&input)
        }
        Arguments::Lines(None) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                crate::errln!(
                    "mrun: reading the jobs' arguments from the terminal, one per line; end \
                     with Ctrl-D"
                );
            }
            let mut input = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut input)
                .context("reading the jobs' arguments from stdin")?;
            arguments_from_lines(&input)
        }
    };
    Ok(jobs(&template.fixed, arguments))
}

/// What went wrong, in words, without the errno number.
fn reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn each_argument_makes_one_job_after_the_fixed_words() {
        let jobs = jobs(&words(&["gzip", "-9"]), words(&["a", "b"]));
        assert_eq!(
            jobs,
            [
                JobSpec {
                    seq: 1,
                    words: words(&["gzip", "-9", "a"])
                },
                JobSpec {
                    seq: 2,
                    words: words(&["gzip", "-9", "b"])
                }
            ]
        );
    }

    #[test]
    fn lines_of_stdin_are_arguments_and_empty_lines_are_skipped() {
        assert_eq!(arguments_from_lines(b"a b\n\nc\n"), words(&["a b", "c"]));
        assert_eq!(arguments_from_lines(b""), Vec::<OsString>::new());
    }
}
