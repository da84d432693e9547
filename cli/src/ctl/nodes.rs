//! `mrunctl nodes`: home and the configured nodes, and what each reports.

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use mrun_core::wire::{Control, Frame, NodeFacts};

use crate::exit;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml.
    #[arg(long, value_name = "NODES")]
    pub nodes: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    pub reachable: bool,
    pub facts: Option<NodeFacts>,
    pub problem: Option<String>,
}

/// What each configured node reports (it is asked through its agent).
pub fn reports(flag: Option<&str>) -> Vec<NodeReport> {
    let nodes = crate::nodes::configured(flag)
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("{e:#}"), exit::FAILURE));
    if nodes.is_empty() {
        return Vec::new();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot start: {e}"), exit::FAILURE));
    runtime.block_on(async {
        let mut out = Vec::new();
        for node in nodes {
            out.push(match describe(&node).await {
                Ok(facts) => NodeReport {
                    node,
                    reachable: true,
                    facts: Some(facts),
                    problem: None,
                },
                Err(e) => NodeReport {
                    node,
                    reachable: false,
                    facts: None,
                    problem: Some(format!("{e:#}")),
                },
            });
        }
        out
    })
}

/// Home as a machine among the nodes: measured here, as an agent measures its node when asked
/// to describe it (a few run-queue samples; the daemon's view is not needed).
pub fn home_report() -> NodeReport {
    let mut meter = mrun_core::load::Meter::new();
    for k in 0..3 {
        if k > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        meter.sample();
    }
    let mut facts = meter.facts();
    facts.jobs = meter.hosted_jobs();
    NodeReport {
        node: "home".into(),
        reachable: true,
        facts: Some(facts),
        problem: None,
    }
}

/// How many of `jobs` run on `node` (`home` for home), as their deputies say: the one count
/// `mrunctl status` and `mrunctl nodes` show, in their tables and JSON alike.
pub fn jobs_at(jobs: &[crate::jobs::JobInfo], node: &str) -> usize {
    jobs.iter().filter(|j| j.place == node).count()
}

/// The machine table (home first, then the nodes); `jobs` gives each one's count of this
/// user's jobs.
pub fn table(reports: &[NodeReport], jobs: &[crate::jobs::JobInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:>4} {:>9} {:>10} {:>5}  {}\n",
        "NODE", "REACHABLE", "CPUS", "LOAD/CPU", "MEM FREE", "JOBS", "SPEED / ARCH / PROBLEM"
    );
    for r in reports {
        let here = jobs_at(jobs, &r.node);
        out.push_str(&match &r.facts {
            Some(f) => format!(
                "{:<20} {:<10} {:>4} {:>9.2} {:>9.1}G {:>5}  {:.0} {} {}\n",
                r.node,
                "yes",
                f.cpus,
                f.load_per_cpu,
                f.mem_available as f64 / (1u64 << 30) as f64,
                here,
                f.speed,
                f.arch,
                f.kernel
            ),
            None => format!(
                "{:<20} {:<10} {:>4} {:>9} {:>10} {:>5}  {}\n",
                r.node,
                "no",
                "-",
                "-",
                "-",
                here,
                r.problem.as_deref().unwrap_or("")
            ),
        });
    }
    out
}

pub fn run(args: NodesArgs) -> ! {
    let mut machines = vec![home_report()];
    machines.extend(reports(args.nodes.as_deref()));
    // Listed after the nodes answered, as `mrunctl status` does: the counts are of one moment.
    let jobs = crate::jobs::list().unwrap_or_default();
    if args.json {
        crate::ctl::json::print(&crate::ctl::json::Nodes {
            version: crate::ctl::json::VERSION,
            nodes: machines
                .iter()
                .map(|r| crate::ctl::json::Node::of(r, &jobs))
                .collect(),
        })
    }
    crate::out!("{}", table(&machines, &jobs));
    if machines.len() == 1 {
        crate::outln!(
            "no nodes configured: use --nodes, MRUN_NODES or {}",
            crate::nodes::config_path().display()
        );
    }
    std::process::exit(0)
}

async fn describe(node: &str) -> anyhow::Result<NodeFacts> {
    let mut link = crate::run::link::Link::connect(node).await?;
    link.tx.send(Frame::Control(Control::Describe)).await?;
    let facts = match link.rx.next().await {
        Some(Ok(Frame::Control(Control::Facts(f)))) => f,
        Some(Ok(Frame::Control(Control::Error { message }))) => anyhow::bail!(message),
        other => anyhow::bail!("the agent on {node} did not describe itself ({other:?})"),
    };
    link.finish().await;
    Ok(facts)
}
