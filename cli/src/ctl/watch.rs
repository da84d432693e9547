//! `mrunctl status --watch`: a live view of the cluster, like openMosix's mosmon and mtop.
//! Machines (home and each node) with a load bar, then this user's jobs and where they run,
//! then the balancer's last moves. The figures come from the home daemon (started if needed),
//! which already watches every node: the view opens no SSH session of its own.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::daemon::cluster::ClusterReport;
use crate::exit;
use mrun_core::wire::NodeFacts;

const BAR: usize = 20;

pub fn run(interval: f64) -> ! {
    let interval = Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot start: {e}"), exit::FAILURE));
    let terminal = std::io::stdout().is_terminal();
    let nodes = crate::nodes::configured(None)
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("{e:#}"), exit::FAILURE));
    if let Err(e) = runtime.block_on(crate::daemon::ensure_running(None)) {
        exit::fail(
            "mrunctl",
            format!("cannot reach the mrun daemon: {e:#}"),
            exit::FAILURE,
        );
    }
    loop {
        let report = runtime.block_on(crate::daemon::cluster_report(&nodes, false));
        let jobs = crate::jobs::list_within(Duration::from_millis(300)).unwrap_or_default();
        let mut frame = String::new();
        match &report {
            Ok(r) => frame.push_str(&machines(r, &jobs)),
            Err(e) => frame.push_str(&format!("(no cluster view: {e:#})\n")),
        }
        frame.push('\n');
        frame.push_str(&crate::ctl::status::table(&jobs, crate::ctl::status::now()));
        if let Ok(r) = &report {
            if !r.recent.is_empty() {
                frame.push_str("\nrecent moves (newest first):\n");
                for line in r.recent.iter().rev().take(5) {
                    frame.push_str(&format!("  {line}\n"));
                }
            }
        }
        let mut out = std::io::stdout().lock();
        // On a terminal, redraw in place; elsewhere (a pipe, a log), one frame after another.
        let shown = if terminal {
            write!(out, "\x1b[H\x1b[2J{frame}")
        } else {
            writeln!(out, "{frame}")
        };
        if let Err(e) = shown.and_then(|()| out.flush()) {
            crate::print::stdout_failed(&e); // The reader went away (e.g. `| head`).
        }
        drop(out);
        std::thread::sleep(interval);
    }
}

/// The machines table: one line per machine with a load bar (runnable per CPU, full at 2),
/// and this user's jobs there, counted as `mrunctl status` and `mrunctl nodes` count them.
pub fn machines(r: &ClusterReport, jobs: &[crate::jobs::JobInfo]) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:>7} {:<w$} {:>9} {:>5}  {}\n",
        "MACHINE",
        "CPUS",
        "LOAD",
        "",
        "MEM FREE",
        "JOBS",
        if r.balancing {
            "balancing on"
        } else {
            "balancing off"
        },
        w = BAR + 2
    );
    let mut line = |name: &str, facts: Option<&NodeFacts>, problem: Option<&str>| match facts {
        Some(f) => out.push_str(&format!(
            "{:<16} {:>4} {:>7.2} [{}] {:>8.1}G {:>5}\n",
            name,
            f.cpus,
            f.load_per_cpu,
            bar(f.load_per_cpu),
            f.mem_available as f64 / (1u64 << 30) as f64,
            crate::ctl::nodes::jobs_at(jobs, name)
        )),
        None => out.push_str(&format!(
            "{:<16} {:>4} {:>7} {:<w$} {:>9} {:>5}  {}\n",
            name,
            "-",
            "-",
            "",
            "-",
            "-",
            problem.unwrap_or("no report yet"),
            w = BAR + 2
        )),
    };
    line("home", r.home.as_ref(), None);
    for n in &r.nodes {
        line(&n.node, n.facts.as_ref(), n.problem.as_deref());
    }
    out
}

fn bar(load_per_cpu: f64) -> String {
    let filled = ((load_per_cpu / 2.0).clamp(0.0, 1.0) * BAR as f64).round() as usize;
    format!("{}{}", "#".repeat(filled), ".".repeat(BAR - filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::cluster::NodeEntry;

    fn facts(cpus: u32, runnable: f64) -> NodeFacts {
        NodeFacts {
            arch: "x86_64".into(),
            kernel: "6".into(),
            cpus,
            speed: 400.0,
            runnable,
            load_per_cpu: runnable / cpus as f64,
            mem_available: 2 << 30,
            jobs: 3,
        }
    }

    #[test]
    fn machines_show_loads_as_bars_and_unreachable_nodes_with_their_problem() {
        let r = ClusterReport {
            home: Some(facts(2, 2.0)),
            nodes: vec![
                NodeEntry {
                    node: "a".into(),
                    facts: Some(facts(1, 2.5)),
                    problem: None,
                },
                NodeEntry {
                    node: "b".into(),
                    facts: None,
                    problem: Some("connection refused".into()),
                },
            ],
            balancing: true,
            recent: vec![],
        };
        let job = |place: &str| crate::jobs::JobInfo {
            job: 1,
            pid: 1,
            command: "gzip".into(),
            place: place.into(),
            state: "running".into(),
            deputy: 1,
            ..Default::default()
        };
        let text = machines(&r, &[job("a"), job("a"), job("a"), job("home")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("balancing on"));
        assert!(
            lines[1].starts_with("home")
                && lines[1].trim_end().ends_with('1')
                && lines[1].contains("1.00")
                && lines[1].contains(&format!("[{}{}]", "#".repeat(10), ".".repeat(10)))
        );
        assert!(
            lines[2].starts_with("a")
                && lines[2].contains(&format!("[{}]", "#".repeat(20)))
                && lines[2].trim_end().ends_with('3')
        );
        assert!(lines[3].starts_with("b") && lines[3].contains("connection refused"));
    }
}
