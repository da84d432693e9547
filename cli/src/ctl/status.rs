//! `mrunctl status`: this user's jobs, where they run, for how long.

use clap::Args;

use crate::exit;
use crate::jobs::{self, JobInfo};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (`{"jobs": [...], "nodes": [...]}`) for scripts.
    #[arg(long)]
    pub json: bool,
    /// Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml.
    #[arg(long, value_name = "NODES")]
    pub nodes: Option<String>,
    /// Keep showing: a live view of the machines' loads, the jobs and the balancer's moves,
    /// redrawn every interval (like mosmon/mtop). Ctrl-C ends it.
    #[arg(long, short = 'w', conflicts_with = "json")]
    pub watch: bool,
    /// Seconds between two redraws of --watch.
    #[arg(long, default_value_t = 1.0, value_name = "SECS", requires = "watch")]
    pub interval: f64,
}

pub fn run(args: StatusArgs) -> ! {
    if args.watch {
        crate::ctl::watch::run(args.interval)
    }
    let list = jobs::list().unwrap_or_else(|e| {
        exit::fail("mrunctl", format!("cannot list jobs: {e:#}"), exit::FAILURE)
    });
    let nodes = crate::ctl::nodes::reports(args.nodes.as_deref());
    if args.json {
        let doc = serde_json::json!({ "jobs": list, "nodes": nodes });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => exit::fail(
                "mrunctl",
                format!("cannot encode the status: {e}"),
                exit::FAILURE,
            ),
        }
        std::process::exit(0);
    }
    print!("{}", table(&list, now()));
    if !nodes.is_empty() {
        println!();
        print!("{}", crate::ctl::nodes::table(&nodes, &list));
    }
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
            j.command
        ));
        if let Some(p) = &j.last_problem {
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
            pinned_home: false,
            arrived_unix_ms: 1_000_000,
            moves: 1,
            bytes: 1 << 20,
            cpu_demand: Some(0.9),
        };
        let t = table(&[job], 1075);
        let line = t.lines().nth(1).expect("a job line");
        for part in ["42", "nodea", "running", "1m15s", "1.2s", "gzip -9 big"] {
            assert!(line.contains(part), "{part} missing from {line:?}");
        }
        assert!(t.contains("last migration failed: pid 42 has 2 threads"));
        assert!(table(&[], 0).contains("(no jobs)"));
    }
}
