//! The daemon's view of the cluster: home measured here, every configured node as its agent
//! reports it (one long-lived `Watch` session per node), and the throughput of each node's
//! link as measured by real moves. `mrunctl status` and `mrun --each` read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mrun_core::load::Meter;
use mrun_core::wire::{Control, Frame, NodeFacts};
use serde::{Deserialize, Serialize};

use super::server::Nodes;

/// Facts older than this are not trusted (the node is treated as unreachable).
pub const STALE: Duration = Duration::from_secs(3);
/// How often agents report.
const REPORT_MS: u32 = 1000;
/// Until a move was measured, a link is assumed to carry this many bytes per second.
pub const DEFAULT_THROUGHPUT: f64 = 50e6;

pub struct NodeView {
    pub facts: Option<(NodeFacts, Instant)>,
    pub problem: Option<String>,
    /// Bytes per second, from the moves made (moving average).
    pub throughput: Option<f64>,
    watcher: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct ClusterState {
    pub home: Option<NodeFacts>,
    pub nodes: HashMap<String, NodeView>,
    /// The balancer's last decisions, newest last (for `mrunctl status`).
    pub recent: Vec<String>,
}

pub type Cluster = Arc<Mutex<ClusterState>>;

/// What the daemon answers to `facts`: one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    pub home: Option<NodeFacts>,
    pub nodes: Vec<NodeEntry>,
    pub balancing: bool,
    pub recent: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub node: String,
    pub facts: Option<NodeFacts>,
    pub problem: Option<String>,
}

pub fn report(cluster: &Cluster, balancing: bool) -> ClusterReport {
    let state = lock(cluster);
    let mut nodes: Vec<NodeEntry> = state
        .nodes
        .iter()
        .map(|(name, v)| NodeEntry {
            node: name.clone(),
            facts: v
                .facts
                .as_ref()
                .filter(|(_, at)| at.elapsed() < STALE)
                .map(|(f, _)| f.clone()),
            problem: v.problem.clone(),
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    ClusterReport {
        home: state.home.clone(),
        nodes,
        balancing,
        recent: state.recent.clone(),
    }
}

pub fn lock(cluster: &Cluster) -> std::sync::MutexGuard<'_, ClusterState> {
    // A panic elsewhere cannot leave the view half-written in a way that matters: go on.
    cluster
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Measure home, continuously, on a thread of its own (reading /proc blocks).
pub fn measure_home(cluster: Cluster) {
    std::thread::spawn(move || {
        let mut meter = Meter::new();
        let mut n = 0u32;
        loop {
            meter.sample();
            n += 1;
            if n % 5 == 0 {
                let facts = meter.facts();
                lock(&cluster).home = Some(facts);
            }
            std::thread::sleep(mrun_core::load::SAMPLE_EVERY);
        }
    });
}

/// Watch exactly the `wanted` nodes: start a watcher for new ones, stop those no longer listed.
pub(super) fn sync_watchers(cluster: &Cluster, channels: &Nodes, wanted: &[String]) {
    let mut state = lock(cluster);
    state.nodes.retain(|name, view| {
        let keep = wanted.contains(name);
        if !keep {
            view.watcher.abort();
        }
        keep
    });
    for name in wanted {
        if name == "local" || state.nodes.contains_key(name) {
            // `local` is an agent subprocess per move, not a machine to balance onto.
            continue;
        }
        let watcher = tokio::spawn(watch(cluster.clone(), channels.clone(), name.clone()));
        state.nodes.insert(
            name.clone(),
            NodeView {
                facts: None,
                problem: None,
                throughput: None,
                watcher,
            },
        );
    }
}

/// Keep a `Watch` session with `node`'s agent, reconnecting after failures.
async fn watch(cluster: Cluster, channels: Nodes, node: String) {
    let mut pause = Duration::from_millis(500);
    loop {
        let why = match watch_once(&cluster, &channels, &node).await {
            Ok(()) => "the agent ended its report".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if let Some(view) = lock(&cluster).nodes.get_mut(&node) {
            view.facts = None;
            view.problem = Some(why);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

async fn watch_once(cluster: &Cluster, channels: &Nodes, node: &str) -> anyhow::Result<()> {
    let channel = super::server::open_channel(channels, node).await?;
    let mut link = crate::run::link::Link::over(node, channel.into_stream()).await?;
    link.tx
        .send(Frame::Control(Control::Watch {
            interval_ms: REPORT_MS,
        }))
        .await?;
    loop {
        // An agent that stops talking is as good as gone.
        let heard = tokio::time::timeout(STALE, link.rx.next()).await;
        match heard {
            Ok(Some(Ok(Frame::Control(Control::Facts(facts))))) => {
                if let Some(view) = lock(cluster).nodes.get_mut(node) {
                    view.facts = Some((facts, Instant::now()));
                    view.problem = None;
                }
            }
            Ok(Some(Ok(Frame::Control(Control::Error { message })))) => {
                anyhow::bail!("the agent on {node}: {message}")
            }
            Ok(Some(Ok(other))) => {
                anyhow::bail!("the agent on {node} sent {other:?} instead of a load report")
            }
            Ok(Some(Err(e))) => {
                return Err(anyhow::anyhow!(e).context(format!("the connection to {node} failed")))
            }
            Ok(None) => return Ok(()),
            Err(_) => anyhow::bail!("{node} sent no load report for {} s", STALE.as_secs()),
        }
    }
}

/// Record a move's measured throughput for `node`'s link: `bytes` in `seconds`, of which
/// `fixed` are the policy's fixed cost of any move (so that the cost model, fixed + bytes /
/// throughput, does not count it twice).
pub fn record_throughput(cluster: &Cluster, node: &str, bytes: u64, seconds: f64, fixed: f64) {
    if bytes < (1 << 20) || seconds <= 0.0 {
        return; // Too small to say anything about the link.
    }
    let sample = bytes as f64 / (seconds - fixed).max(seconds / 4.0);
    if let Some(view) = lock(cluster).nodes.get_mut(node) {
        view.throughput = Some(match view.throughput {
            Some(old) => 0.7 * old + 0.3 * sample,
            None => sample,
        });
    }
}

/// Node facts fresh enough to decide on, with each link's throughput.
pub fn usable_nodes(cluster: &Cluster) -> Vec<(String, NodeFacts, f64)> {
    let state = lock(cluster);
    let mut out: Vec<(String, NodeFacts, f64)> = state
        .nodes
        .iter()
        .filter_map(|(name, v)| {
            let (facts, at) = v.facts.as_ref()?;
            (at.elapsed() < STALE).then(|| {
                (
                    name.clone(),
                    facts.clone(),
                    v.throughput.unwrap_or(DEFAULT_THROUGHPUT),
                )
            })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Remember one of the balancer's decisions (the last 20 are kept).
pub fn note(cluster: &Cluster, line: String) {
    let mut state = lock(cluster);
    state.recent.push(line);
    let excess = state.recent.len().saturating_sub(20);
    state.recent.drain(..excess);
}
