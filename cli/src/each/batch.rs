//! The jobs of `mrun --each`: from the words after `--each` (GNU parallel's `:::` syntax) or,
//! when no per-job argument is given, from the lines of stdin.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context, Result};

/// Separates the fixed arguments from the per-job arguments, as in GNU parallel.
pub const SEPARATOR: &str = ":::";

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

/// How the words after `--each` split up.
#[derive(Debug, PartialEq, Eq)]
pub struct Template {
    /// The program and the arguments every job gets before its own.
    pub fixed: Vec<OsString>,
    /// One argument per job; `None` when they are to be read from stdin.
    pub per_job: Option<Vec<OsString>>,
}

impl Template {
    /// `COMMAND FIXED... ::: ARG...`, or `COMMAND ARG...` (no `:::`), or `COMMAND` alone (the
    /// arguments come from stdin).
    pub fn parse(words: Vec<OsString>) -> Result<Template> {
        let split = words
            .iter()
            .position(|w| w.as_os_str() == OsStr::new(SEPARATOR));
        let (fixed, per_job) = match split {
            Some(at) => {
                let mut fixed = words;
                let per_job = fixed.split_off(at + 1);
                fixed.pop();
                (fixed, Some(per_job))
            }
            None => {
                let mut fixed = words;
                let per_job = fixed.split_off(fixed.len().min(1));
                (fixed, (!per_job.is_empty()).then_some(per_job))
            }
        };
        if fixed.is_empty() {
            bail!("--each needs a command before {SEPARATOR}");
        }
        Ok(Template { fixed, per_job })
    }

    /// One job per argument, numbered in order.
    pub fn jobs(&self, arguments: Vec<OsString>) -> Vec<JobSpec> {
        arguments
            .into_iter()
            .enumerate()
            .map(|(i, arg)| {
                let mut words = self.fixed.clone();
                words.push(arg);
                JobSpec { seq: i + 1, words }
            })
            .collect()
    }
}

/// One argument per line of `input`; empty lines are skipped.
pub fn arguments_from_lines(input: &[u8]) -> Vec<OsString> {
    input
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| OsStr::from_bytes(line).to_os_string())
        .collect()
}

/// The jobs of `words`, reading stdin when they name no per-job argument.
pub fn jobs_of(words: Vec<OsString>) -> Result<Vec<JobSpec>> {
    let template = Template::parse(words)?;
    let arguments = match &template.per_job {
        Some(args) => args.clone(),
        None => {
            let mut input = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut input)
                .context("reading the job arguments from stdin")?;
            arguments_from_lines(&input)
        }
    };
    Ok(template.jobs(arguments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn without_separator_each_further_word_is_a_job() {
        let t = Template::parse(words(&["gzip", "a.txt", "b.txt"])).expect("parse");
        assert_eq!(t.fixed, words(&["gzip"]));
        let jobs = t.jobs(t.per_job.clone().expect("per-job words"));
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[1],
            JobSpec {
                seq: 2,
                words: words(&["gzip", "b.txt"])
            }
        );
    }

    #[test]
    fn separator_splits_fixed_from_per_job_arguments() {
        let t = Template::parse(words(&["gzip", "-9", ":::", "a", "b", "c"])).expect("parse");
        assert_eq!(t.fixed, words(&["gzip", "-9"]));
        let jobs = t.jobs(t.per_job.clone().expect("per-job words"));
        assert_eq!(
            jobs.iter().map(JobSpec::display).collect::<Vec<_>>(),
            ["gzip -9 a", "gzip -9 b", "gzip -9 c"]
        );
    }

    #[test]
    fn separator_with_nothing_after_it_means_no_jobs() {
        let t = Template::parse(words(&["true", ":::"])).expect("parse");
        assert_eq!(t.per_job, Some(Vec::new()));
    }

    #[test]
    fn a_command_alone_reads_its_arguments_from_stdin() {
        let t = Template::parse(words(&["gzip"])).expect("parse");
        assert_eq!(t.per_job, None);
        assert_eq!(arguments_from_lines(b"a b\n\nc\n"), words(&["a b", "c"]));
    }

    #[test]
    fn a_separator_without_command_is_refused() {
        assert!(Template::parse(words(&[":::", "a"])).is_err());
    }
}
