//! `mrunctl nodes`: home and the configured nodes, and what each reports.

use clap::Args;
use mrun_core::wire::NodeFacts;

use crate::exit;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml.
    #[arg(long, value_name = "NODES")]
    pub nodes: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Ask every node anew (all at once) instead of showing what the daemon last heard.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    pub reachable: bool,
    pub facts: Option<NodeFacts>,
    pub problem: Option<String>,
}

/// Home, then what each of this command's nodes reports (`flag`, else MRUN_NODES, else the
/// config file), then any other node the daemon watches for jobs started with other lists.
/// Answered by the home daemon from its watch of each node (started if needed); `refresh`: it
/// asks them anew. With `MRUN_NO_DAEMON=1`, or when the daemon cannot be reached, each node's
/// agent is asked here, all at once. Home as the daemon measures it when the daemon answers
/// (its view is what the balancer acts on, and it costs nothing to ask), else measured here.
pub fn machines(flag: Option<&str>, refresh: bool) -> Vec<NodeReport> {
    let (home, nodes) = home_and_nodes(flag, refresh);
    let home = match home {
        Some(facts) => NodeReport {
            node: "home".into(),
            reachable: true,
            facts: Some(facts),
            problem: None,
        },
        None => home_report(),
    };
    std::iter::once(home).chain(nodes).collect()
}

/// The daemon's measure of home (when it answered) and the nodes' reports.
fn home_and_nodes(flag: Option<&str>, refresh: bool) -> (Option<NodeFacts>, Vec<NodeReport>) {
    let nodes = crate::nodes::configured(flag)
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("{e:#}"), exit::FAILURE));
    if nodes.is_empty() {
        return (None, Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot start: {e}"), exit::FAILURE));
    if std::env::var("MRUN_NO_DAEMON").as_deref() == Ok("1") {
        return (None, runtime.block_on(ask_each(nodes)));
    }
    match runtime.block_on(crate::daemon::cluster_report(&nodes, refresh)) {
        Ok(report) => (
            report.home,
            report
                .nodes
                .into_iter()
                .map(|e| NodeReport {
                    node: e.node,
                    reachable: e.facts.is_some(),
                    facts: e.facts,
                    problem: e.problem,
                })
                .collect(),
        ),
        Err(e) => {
            crate::errln!(
                "mrunctl: warning: cannot reach the mrun daemon ({e:#}); asking the nodes directly"
            );
            (None, runtime.block_on(ask_each(nodes)))
        }
    }
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

/// Each node's agent asked directly, all at once, each within [`ASK_WAIT`].
async fn ask_each(nodes: Vec<String>) -> Vec<NodeReport> {
    let asks = nodes.into_iter().map(|node| async move {
        let answer = tokio::time::timeout(ASK_WAIT, describe(&node)).await;
        let answer = match answer {
            Ok(a) => a.map_err(|e| format!("{e:#}")),
            Err(_) => Err(format!(
                "{node} did not answer within {} s",
                ASK_WAIT.as_secs()
            )),
        };
        match answer {
            Ok(facts) => NodeReport {
                node,
                reachable: true,
                facts: Some(facts),
                problem: None,
            },
            Err(why) => NodeReport {
                node,
                reachable: false,
                facts: None,
                problem: Some(why),
            },
        }
    });
    futures_util::future::join_all(asks).await
}

/// How long a node asked directly may take to answer.
const ASK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    let machines = machines(args.nodes.as_deref(), args.refresh);
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
    crate::run::link::Link::connect(node)
        .await?
        .describe()
        .await
}
