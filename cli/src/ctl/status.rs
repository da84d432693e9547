//! `mrunctl status`: this user's jobs, where they run, for how long.

use clap::Args;

use crate::exit;
use crate::jobs::{self, JobInfo};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts (`{"version": 1, "jobs": [...], "nodes": [...]}`; docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml.
    #[arg(long, value_name = "NODES")]
    pub nodes: Option<String>,
    /// Ask every node anew (all at once) instead of showing what the daemon last heard.
    #[arg(long, conflicts_with = "watch")]
    pub refresh: bool,
    /// Keep showing: a live view of the machines' loads, the jobs and the balancer's moves,
    /// redrawn every interval (like mosmon/mtop). Ctrl-C ends it.
    #[arg(long, short = 'w', conflicts_with = "json")]
    pub watch: bool,
    /// Seconds between two redraws of --watch.
    #[arg(long, default_value_t = 1.0, value_name = "SECS", requires = "watch")]
    pub interval: f64,
}

pub fn run(args: StatusArgs) -> ! {
    if let Some(list) = args.nodes.as_deref() {
        crate::nodes::set_command_line(list);
    }
    if args.watch {
        crate::ctl::watch::run(args.interval)
    }
    let machines = crate::ctl::nodes::machines(args.nodes.as_deref(), args.refresh);
    // Listed once, after the nodes answered (which may take a while): the job table and each
    // machine's count of jobs are of one moment.
    let list = jobs::list().unwrap_or_else(|e| {
        exit::fail("mrunctl", format!("cannot list jobs: {e:#}"), exit::FAILURE)
    });
    if args.json {
        let now = now();
        crate::ctl::json::print(&crate::ctl::json::Status {
            version: crate::ctl::json::VERSION,
            jobs: list
                .iter()
                .map(|j| crate::ctl::json::Job::of(j, now))
                .collect(),
            nodes: machines
                .iter()
                .map(|r| crate::ctl::json::Node::of(r, &list))
                .collect(),
        })
    }
    crate::out!("{}", table(&list, now()));
    crate::outln!();
    crate::out!("{}", crate::ctl::nodes::table(&machines, &list));
    std::process::exit(0)
}

pub(crate) fn now() -> u64 {
    crate::jobs::unix_now().as_secs()
}

fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The job table as `mrunctl status` prints it.
pub fn table(list: &[JobInfo], now: u64) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:<16} {:<8} {:>8} {:>8}  {}\n",
        "JOB", "PID", "WHERE", "STATE", "AGE", "CPU", "COMMAND"
    );
    for j in list {
        let cpu = j
            .cpu_seconds
            .map(|c| format!("{c:.1}s"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<8} {:<8} {:<16} {:<8} {:>8} {:>8}  {}\n",
            j.job,
            j.pid,
            j.place,
            j.state,
            age(now.saturating_sub(j.started_unix)),
            cpu,
            jobs::printable(&j.command)
        ));
        if let Some(why) = &j.cannot_move {
            out.push_str(&format!("{:<8} {why}\n", ""));
        }
        // A move refused for that same reason would only say it again.
        let repeated = |p: &str| {
            let refusal = p.trim_end_matches("; the job stays at home");
            j.cannot_move
                .as_deref()
                .is_some_and(|w| p.starts_with(w) || w.contains(refusal))
        };
        if let Some(p) = j.last_problem.as_deref().filter(|p| !repeated(p)) {
            out.push_str(&format!("{:<8} last migration failed: {p}\n", ""));
        }
    }
    if list.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_each_job_on_a_line() {
        let job = JobInfo {
            job: 42,
            pid: 42,
            command: "gzip -9 big".into(),
            place: "nodea".into(),
            state: "running".into(),
            started_unix: 1000,
            cpu_seconds: Some(1.25),
            last_problem: Some("pid 42 has 2 threads".into()),
            deputy: 41,
            arrived_unix_ms: 1_000_000,
            moves: 1,
            bytes: 1 << 20,
            cpu_demand: Some(0.9),
            ..Default::default()
        };
        let job_clone = job.clone();
        let t = table(&[job], 1075);
        let line = t.lines().nth(1).expect("a job line");
        for part in ["42", "nodea", "running", "1m15s", "1.2s", "gzip -9 big"] {
            assert!(line.contains(part), "{part} missing from {line:?}");
        }
        assert!(t.contains("last migration failed: pid 42 has 2 threads"));
        let held = JobInfo {
            place: "home".into(),
            last_problem: Some("the job cannot move: it holds fd 9 (a pipe); stays".into()),
            shared_fds: vec![crate::fds::SharedFd {
                fd: 9,
                what: "a pipe".into(),
            }],
            cannot_move: Some("the job cannot move: it holds fd 9 (a pipe)".into()),
            ..job_clone
        };
        let t = table(&[held], 1075);
        assert!(
            t.lines()
                .nth(2)
                .is_some_and(|l| l.contains("cannot move: it holds fd 9 (a pipe)")),
            "{t}"
        );
        assert!(table(&[], 0).contains("(no jobs)"));
    }
}
