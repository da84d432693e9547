//! The daemon's view of the cluster: home measured here, every node it watches as the node's
//! agent reports it (one long-lived `Watch` session per node), and the throughput of each
//! node's link as measured by real moves. `mrunctl status`, `mrunctl nodes` and `mrun --each`
//! read it; nobody opens a session of their own for it.
//!
//! Which nodes it watches (and so balances onto): the `nodes` of the config file, re-read
//! every round, together with every list a command sent it: a job's (`mrun --nodes`,
//! `MRUN_NODES` or the file, as that job's `mrun` resolved it) for as long as the job lives,
//! and a request's (`mrunctl status`/`nodes`, `mrun --each`) for two minutes after the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mrun_core::load::Meter;
use mrun_core::wire::{Control, Frame, NodeFacts};
use serde::{Deserialize, Serialize};

use super::connections::Connections;

/// Facts older than this are not trusted (the node is treated as unreachable).
pub const STALE: Duration = Duration::from_secs(3);
/// How often agents report.
const REPORT_MS: u32 = 1000;
/// Until a move was measured, a link is assumed to carry this many bytes per second.
pub const DEFAULT_THROUGHPUT: f64 = 50e6;
/// A node a request named stays watched this long after the last request naming it.
const ASKED_FOR: Duration = Duration::from_secs(120);
/// How long a request waits for the first word of a node it just started watching; after
/// that, a node still connecting is reported down ("no answer yet").
pub const FIRST_ANSWER: Duration = Duration::from_secs(3);
/// How long `--refresh` waits for a node's answer.
const REFRESH_WAIT: Duration = Duration::from_secs(5);

pub struct NodeView {
    pub facts: Option<(NodeFacts, Instant)>,
    pub problem: Option<String>,
    /// Bytes per second, from the moves made (moving average).
    pub throughput: Option<f64>,
    /// When watching began: a node that has said nothing since is still connecting.
    since: Instant,
    watcher: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct ClusterState {
    pub home: Option<NodeFacts>,
    pub nodes: HashMap<String, NodeView>,
    /// The balancer's last decisions, newest last (for `mrunctl status`).
    pub recent: Vec<String>,
    /// The node list each job's `mrun` sent, until the job ends.
    job_nodes: HashMap<u32, Vec<String>>,
    /// When a request last named each node.
    asked: HashMap<String, Instant>,
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

/// `requested` first (in that order), then every other node watched, by name.
pub fn report(cluster: &Cluster, requested: &[String], balancing: bool) -> ClusterReport {
    let state = lock(cluster);
    let mut names: Vec<&String> = Vec::new();
    for n in requested {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut others: Vec<&String> = state
        .nodes
        .keys()
        .filter(|n| !requested.contains(n))
        .collect();
    others.sort();
    names.extend(others);
    let nodes = names.into_iter().map(|name| entry(&state, name)).collect();
    ClusterReport {
        home: state.home.clone(),
        nodes,
        balancing,
        recent: state.recent.clone(),
    }
}

/// What is known of `name` now.
fn entry(state: &ClusterState, name: &str) -> NodeEntry {
    let (facts, problem) = if name == "local" {
        // An agent on this very machine: what home measures is what it would report.
        match &state.home {
            Some(home) => (Some(home.clone()), None),
            None => (None, Some("this machine is not measured yet".to_string())),
        }
    } else {
        match state.nodes.get(name) {
            None => (None, Some("not watched".to_string())),
            Some(view) => match (&view.facts, &view.problem) {
                (Some((f, at)), _) if at.elapsed() < STALE => (Some(f.clone()), None),
                (_, Some(why)) => (None, Some(why.clone())),
                (Some((_, at)), None) => (
                    None,
                    Some(format!(
                        "no load report for {:.0} s",
                        at.elapsed().as_secs_f64()
                    )),
                ),
                (None, None) => (
                    None,
                    Some(format!(
                        "no answer yet (connecting for {:.1} s)",
                        view.since.elapsed().as_secs_f64()
                    )),
                ),
            },
        }
    };
    NodeEntry {
        node: name.to_string(),
        facts,
        problem,
    }
}

/// Whether every one of `nodes` has answered or failed, or has been tried for
/// [`FIRST_ANSWER`] (so a report of them now says more than "connecting").
pub fn settled(cluster: &Cluster, nodes: &[String]) -> bool {
    let state = lock(cluster);
    nodes.iter().filter(|n| *n != "local").all(|n| {
        state.nodes.get(n).is_none_or(|v| {
            v.facts.is_some() || v.problem.is_some() || v.since.elapsed() >= FIRST_ANSWER
        })
    })
}

/// Remember that job `job` (or, without one, a request) wants `nodes` watched.
pub fn want(cluster: &Cluster, job: Option<u32>, nodes: &[String]) {
    let mut state = lock(cluster);
    match job {
        Some(job) => {
            state.job_nodes.insert(job, nodes.to_vec());
        }
        None => {
            let now = Instant::now();
            for n in nodes {
                state.asked.insert(n.clone(), now);
            }
        }
    }
}

/// The nodes to watch now: `file_nodes` (the config file's), then those of live jobs and of
/// recent requests. Forgets the lists of jobs that ended and of requests long past.
fn wanted(state: &mut ClusterState, file_nodes: &[String]) -> Vec<String> {
    state
        .job_nodes
        .retain(|job, _| crate::jobs::job_socket(*job).is_ok_and(|p| p.exists()));
    state.asked.retain(|_, at| at.elapsed() < ASKED_FOR);
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: &String| {
        if !out.contains(n) {
            out.push(n.clone());
        }
    };
    file_nodes.iter().for_each(&mut add);
    let mut more: Vec<&String> = state
        .job_nodes
        .values()
        .flatten()
        .chain(state.asked.keys())
        .collect();
    more.sort();
    more.into_iter().for_each(add);
    out
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

/// Watch the nodes wanted now (see [`wanted`]): start a watcher for new ones, stop those no
/// longer wanted. Returns them.
pub(super) fn sync_watchers(
    cluster: &Cluster,
    connections: &Connections,
    file_nodes: &[String],
) -> Vec<String> {
    let mut state = lock(cluster);
    let wanted = wanted(&mut state, file_nodes);
    state.nodes.retain(|name, view| {
        let keep = wanted.contains(name);
        if !keep {
            view.watcher.abort();
        }
        keep
    });
    for name in &wanted {
        if name == "local" || state.nodes.contains_key(name) {
            // `local` is an agent subprocess per move, not a machine to balance onto.
            continue;
        }
        let watcher = tokio::spawn(watch(cluster.clone(), connections.clone(), name.clone()));
        state.nodes.insert(
            name.clone(),
            NodeView {
                facts: None,
                problem: None,
                throughput: None,
                since: Instant::now(),
                watcher,
            },
        );
    }
    wanted
}

/// Keep a `Watch` session with `node`'s agent, reconnecting after failures.
async fn watch(cluster: Cluster, connections: Connections, node: String) {
    let mut pause = Duration::from_millis(500);
    loop {
        let why = match watch_once(&cluster, &connections, &node).await {
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

async fn watch_once(
    cluster: &Cluster,
    connections: &Connections,
    node: &str,
) -> anyhow::Result<()> {
    let channel = connections.open_channel(node).await?;
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

/// Ask each of `nodes` anew, all at once (`--refresh`): a fresh agent session on the node's
/// connection (reconnecting at once if it was down), its answer recorded as the node's facts
/// or problem. A node that does not answer within [`REFRESH_WAIT`] is recorded as down.
pub(super) async fn refresh(cluster: &Cluster, connections: &Connections, nodes: &[String]) {
    let asks = nodes.iter().map(|node| async move {
        let asked = tokio::time::timeout(REFRESH_WAIT, describe(connections, node)).await;
        let result = match asked {
            Ok(r) => r.map_err(|e| format!("{e:#}")),
            Err(_) => Err(format!(
                "{node} did not answer within {} s",
                REFRESH_WAIT.as_secs()
            )),
        };
        let mut state = lock(cluster);
        match (node.as_str(), result) {
            ("local", Ok(facts)) => state.home = Some(facts),
            (_, Ok(facts)) => {
                if let Some(view) = state.nodes.get_mut(node) {
                    view.facts = Some((facts, Instant::now()));
                    view.problem = None;
                }
            }
            (_, Err(why)) => {
                if let Some(view) = state.nodes.get_mut(node) {
                    view.facts = None;
                    view.problem = Some(why);
                }
            }
        }
    });
    futures_util::future::join_all(asks).await;
}

/// What `node`'s agent says of its machine when asked once.
async fn describe(connections: &Connections, node: &str) -> anyhow::Result<NodeFacts> {
    let link = if node == "local" {
        crate::run::link::Link::connect(node).await?
    } else {
        connections.retry_now(node);
        let channel = connections.open_channel(node).await?;
        crate::run::link::Link::over(node, channel.into_stream()).await?
    };
    link.describe().await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cpus: u32) -> NodeFacts {
        NodeFacts {
            arch: "x86_64".into(),
            kernel: "6".into(),
            cpus,
            speed: 1.0,
            runnable: 0.0,
            load_per_cpu: 0.0,
            mem_available: 1 << 30,
            jobs: 0,
        }
    }

    fn view(
        facts: Option<NodeFacts>,
        problem: Option<&str>,
        since: Instant,
        watcher: tokio::task::JoinHandle<()>,
    ) -> NodeView {
        NodeView {
            facts: facts.map(|f| (f, Instant::now())),
            problem: problem.map(str::to_string),
            throughput: None,
            since,
            watcher,
        }
    }

    #[test]
    fn reports_list_the_requested_nodes_first_and_say_why_one_is_down() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let idle = || tokio::spawn(std::future::pending::<()>());
        let long_ago = Instant::now()
            .checked_sub(FIRST_ANSWER * 2)
            .expect("an instant in the past");
        let cluster: Cluster = Default::default();
        {
            let mut state = lock(&cluster);
            state.home = Some(facts(8));
            let now = Instant::now();
            state
                .nodes
                .insert("a".into(), view(Some(facts(2)), None, now, idle()));
            state
                .nodes
                .insert("b".into(), view(None, Some("refused"), now, idle()));
            state
                .nodes
                .insert("c".into(), view(None, None, now, idle()));
            state
                .nodes
                .insert("z".into(), view(None, None, long_ago, idle()));
        }
        let asked: Vec<String> = ["c", "a", "b", "local"].map(String::from).to_vec();
        let r = report(&cluster, &asked, false);
        let names: Vec<&str> = r.nodes.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "local", "z"]);
        assert_eq!(r.nodes[1].facts.as_ref().map(|f| f.cpus), Some(2));
        assert_eq!(r.nodes[2].problem.as_deref(), Some("refused"));
        assert!(r.nodes[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("no answer yet")));
        assert_eq!(
            r.nodes[3].facts.as_ref().map(|f| f.cpus),
            Some(8),
            "local is this machine"
        );
        assert!(
            !settled(&cluster, &asked),
            "c was only just asked: it gets its moment"
        );
        assert!(settled(&cluster, &["a".into(), "b".into(), "z".into()]));
    }
}
