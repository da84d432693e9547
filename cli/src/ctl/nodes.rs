//! `mrunctl nodes`: the configured nodes and what each reports.

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
struct NodeReport {
    node: String,
    reachable: bool,
    facts: Option<NodeFacts>,
    problem: Option<String>,
}

pub fn run(args: NodesArgs) -> ! {
    let nodes = crate::nodes::configured(args.nodes.as_deref())
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("{e:#}"), exit::FAILURE));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot start: {e}"), exit::FAILURE));
    let reports: Vec<NodeReport> = runtime.block_on(async {
        let mut out = Vec::new();
        for node in nodes {
            out.push(match describe(&node).await {
                Ok(facts) => NodeReport { node, reachable: true, facts: Some(facts), problem: None },
                Err(e) => NodeReport { node, reachable: false, facts: None, problem: Some(format!("{e:#}")) },
            });
        }
        out
    });
    if args.json {
        match serde_json::to_string_pretty(&reports) {
            Ok(t) => println!("{t}"),
            Err(e) => exit::fail("mrunctl", format!("cannot encode: {e}"), exit::FAILURE),
        }
        std::process::exit(0);
    }
    if reports.is_empty() {
        println!("no nodes configured: use --nodes, MRUN_NODES or {}", crate::nodes::config_path().display());
        std::process::exit(0);
    }
    println!("{:<20} {:<10} {:>4} {:>9} {:>10}  {}", "NODE", "REACHABLE", "CPUS", "LOAD/CPU", "MEM FREE", "ARCH / PROBLEM");
    for r in &reports {
        match &r.facts {
            Some(f) => println!(
                "{:<20} {:<10} {:>4} {:>9.2} {:>9.1}G  {} {}",
                r.node, "yes", f.cpus, f.load_per_cpu, f.mem_available as f64 / (1u64 << 30) as f64, f.arch, f.kernel
            ),
            None => println!("{:<20} {:<10} {:>4} {:>9} {:>10}  {}", r.node, "no", "-", "-", "-", r.problem.as_deref().unwrap_or("")),
        }
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
