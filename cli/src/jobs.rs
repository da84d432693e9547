//! Where a running job can be reached: each `mrun` deputy listens on a Unix socket named after
//! its job in a directory private to its user, and answers one-line requests.
//!
//! Requests: `migrate NODE` (NODE may be `home`), `where`, `info` (answered with a JSON
//! [`JobInfo`]), `signal N` (deliver signal N to the job wherever it runs). Answers: `ok TEXT`,
//! `refused TEXT` (the job cannot do that and runs on as it was) or `error TEXT`.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What `mrunctl status` shows of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: u32,
    /// The process's pid (the same wherever it runs).
    pub pid: u32,
    pub command: String,
    /// `home`, or the node's name.
    pub place: String,
    /// `running`, or `moving` while a migration is under way.
    pub state: String,
    pub started_unix: u64,
    /// CPU seconds (user + system) used so far in all, at home and on every node it ran on.
    pub cpu_seconds: Option<f64>,
    /// Why the last migration failed, if it did.
    #[serde(default)]
    pub last_problem: Option<String>,
    /// The pid of the job's `mrun` deputy (the process its user started).
    #[serde(default)]
    pub deputy: u32,
    /// Started with `mrun --home` (or a command listed in `home_commands`): never moved by
    /// the balancer.
    #[serde(default)]
    pub pinned_home: bool,
    /// The nodes its command named (`mrun --nodes`, `MRUN_NODES`), the only ones the balancer
    /// moves it to; `None` when it follows the config file (any node the daemon watches).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// When the job last arrived where it is (its start if it never moved).
    #[serde(default)]
    pub arrived_unix_ms: u64,
    /// How many times it moved.
    #[serde(default)]
    pub moves: u32,
    /// Touched memory, bytes: what a move carries (measured at home, or at the last move).
    #[serde(default)]
    pub bytes: u64,
    /// Fraction of the time since the previous `info` the job ran or waited to run (at home;
    /// unknown away).
    #[serde(default)]
    pub cpu_demand: Option<f64>,
    /// Descriptors the job holds (passed on by `mrun --keep-fd`) that it shares with a process
    /// outside it: while it holds any, it cannot move (at home; empty away).
    #[serde(default)]
    pub shared_fds: Vec<crate::fds::SharedFd>,
    /// Why the job cannot move right now, if it can't (at home): one sentence naming what it
    /// holds (a kept descriptor, or what the engine would refuse).
    #[serde(default)]
    pub cannot_move: Option<String>,
    /// The same in a few words, alike for jobs kept home by the same kind of thing (`holds a
    /// TCP socket`).
    #[serde(default)]
    pub stays_home: Option<String>,
    /// Nodes where a move of the job failed lately (the node could not restore it, its agent
    /// or the connection died): the balancer tries them again only after a while.
    #[serde(default)]
    pub failed_on: Vec<String>,
}

/// Time since the Unix epoch (the clock job times are given in).
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The user's private directory for job sockets: `$XDG_RUNTIME_DIR/mrun`, else
/// `/tmp/mrun-UID`. Created 0700; refused if someone else owns it or others can enter it.
pub fn socket_dir() -> Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mrun"),
        _ => PathBuf::from(format!("/tmp/mrun-{uid}")),
    };
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
    }
    let meta =
        std::fs::symlink_metadata(&dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of this user (it must be owned by uid {uid} with mode 0700); if it is yours, fix or remove it, or set XDG_RUNTIME_DIR",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn job_socket(job: u32) -> Result<PathBuf> {
    Ok(socket_dir()?.join(format!("job-{job}.sock")))
}

/// Why asking a job's deputy something failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No deputy listens for this job (it ended, or never was).
    #[error("no mrun job {0}; `mrunctl status` lists the jobs")]
    NoJob(u32),
    /// The deputy refused: the job cannot do that (it keeps running as it was).
    #[error("{0}")]
    Refused(String),
    /// The deputy tried and failed.
    #[error("{0}")]
    Failed(String),
    /// The deputy's socket directory is unusable, or the exchange broke off.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Ask the deputy of `job` something; its answer's text, or its error.
pub fn ask(job: u32, request: &str) -> Result<String, AskError> {
    ask_within(job, request, None)
}

/// [`ask`], giving up after `limit` (a deputy busy moving its job answers only after).
pub fn ask_within(
    job: u32,
    request: &str,
    limit: Option<std::time::Duration>,
) -> Result<String, AskError> {
    use std::io::{BufRead, BufReader, Write};
    let path = job_socket(job)?;
    // Not there, or left behind by a deputy that died: no such job either way.
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|_| AskError::NoJob(job))?;
    let mut line = String::new();
    stream
        .set_read_timeout(limit)
        .and_then(|()| stream.write_all(format!("{request}\n").as_bytes()))
        .and_then(|()| BufReader::new(stream).read_line(&mut line))
        .with_context(|| format!("asking job {job}"))?;
    match line.trim_end().split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("refused", text)) => Err(AskError::Refused(text.to_string())),
        Some(("error", text)) => Err(AskError::Failed(text.to_string())),
        _ => Err(anyhow::anyhow!("job {job} gave no answer").into()),
    }
}

/// The jobs of this user whose deputies answer; stale sockets are removed.
pub fn list() -> Result<Vec<JobInfo>> {
    list_within(std::time::Duration::from_secs(5))
}

/// [`list`], skipping deputies that do not answer within `limit` (busy moving their job).
pub fn list_within(limit: std::time::Duration) -> Result<Vec<JobInfo>> {
    let dir = socket_dir()?;
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let Some(job) = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
            n.strip_prefix("job-")?
                .strip_suffix(".sock")?
                .parse::<u32>()
                .ok()
        }) else {
            continue;
        };
        match ask_within(job, "info", Some(limit)) {
            Ok(text) => {
                if let Ok(info) = serde_json::from_str::<JobInfo>(&text) {
                    jobs.push(info);
                }
            }
            Err(_) => {
                if std::os::unix::net::UnixStream::connect(&path).is_err() {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    jobs.sort_by_key(|j| j.job);
    Ok(jobs)
}

/// `text` (a job's command) on one line of a table or log: newlines, tabs and other control
/// characters written as escapes (`\n`, `\t`, `\x1b`), a backslash doubled, the rest as is.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_keeps_a_command_on_one_line() {
        assert_eq!(
            super::printable("sh -c 'a\nb\tc\x1b[31m\\'"),
            "sh -c 'a\\nb\\tc\\x1b[31m\\\\'"
        );
        assert_eq!(super::printable("gzip -9 é.txt"), "gzip -9 é.txt");
        assert_eq!(super::printable("a\u{85}b"), "a\\u{85}b");
    }
}
