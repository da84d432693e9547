//! The daemon's socket server: one [`Request`] per connection (see `protocol`). `Connect`
//! turns the connection into a byte pipe to a new `mrun-agent` on the node, over the node's
//! one SSH connection; `Facts` is answered from the daemon's view of the cluster; `Hello`
//! tells it a job's nodes; `Status` and `Stop` are `mrunctl daemon`'s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::cluster::{self, Cluster};
use super::connections::Connections;
use super::protocol::{DaemonStatus, Request};

/// The daemon leaves after this long with no session to carry and no request.
const IDLE_SECS: u64 = 120;

/// What every request handler shares.
#[derive(Clone)]
struct Shared {
    connections: Connections,
    cluster: Cluster,
    /// Job connections spliced to a node right now.
    carried: Arc<AtomicUsize>,
    /// Requests being answered (the daemon does not idle out meanwhile).
    busy: Arc<AtomicUsize>,
    started: Instant,
    socket: std::path::PathBuf,
}

pub fn run() -> ! {
    // First, before any thread: let go of what the starting shell gave us.
    if let Err(e) = super::detach::detach() {
        crate::exit::fail("mrun daemon", format!("{e:#}"), 1)
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| crate::exit::fail("mrun daemon", format!("cannot start: {e}"), 1));
    match runtime.block_on(serve()) {
        Ok(()) => std::process::exit(0),
        Err(e) => crate::exit::fail("mrun daemon", format!("{e:#}"), 1),
    }
}

async fn serve() -> Result<()> {
    let path = super::client::socket_path()?;
    if UnixStream::connect(&path).await.is_ok() {
        anyhow::bail!("another daemon already listens on {}", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    let shared = Shared {
        connections: Connections::default(),
        cluster: Default::default(),
        carried: Arc::new(AtomicUsize::new(0)),
        busy: Arc::new(AtomicUsize::new(0)),
        started: Instant::now(),
        socket: path.clone(),
    };
    cluster::measure_home(shared.cluster.clone());
    let jobs_alive = Arc::new(AtomicBool::new(false));
    tokio::spawn(super::balance::run(
        shared.cluster.clone(),
        shared.connections.clone(),
        jobs_alive.clone(),
    ));
    let me = nix::unistd::getuid().as_raw();
    let idle_limit = Duration::from_secs(
        std::env::var("MRUN_DAEMON_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(IDLE_SECS),
    );
    let mut last_active = Instant::now();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if shared.busy.load(Ordering::SeqCst) > 0 || jobs_alive.load(Ordering::SeqCst) {
                    last_active = Instant::now();
                } else if last_active.elapsed() > idle_limit {
                    // Nothing to carry and nobody asked for a while: leave.
                    leave(&path);
                }
                continue;
            }
        };
        let (stream, _) = accepted?;
        last_active = Instant::now();
        if !stream.peer_cred().is_ok_and(|c| c.uid() == me) {
            continue; // Another user: not even an answer.
        }
        let shared = shared.clone();
        shared.busy.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = serve_one(stream, &shared).await;
            shared.busy.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Remove the socket (if it is still ours) and end the process.
fn leave(path: &std::path::Path) -> ! {
    let _ = std::fs::remove_file(path);
    std::process::exit(0)
}

async fn serve_one(stream: UnixStream, shared: &Shared) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut stream = reader.into_inner();
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let answer = format!("error the daemon cannot read the request ({e})\n");
            stream.write_all(answer.as_bytes()).await?;
            return Ok(());
        }
    };
    match request {
        Request::Hello { job, nodes } => {
            cluster::want(&shared.cluster, job, &nodes);
            resync(shared);
            stream.write_all(b"ok\n").await?;
        }
        Request::Facts { nodes, refresh } => {
            cluster::want(&shared.cluster, None, &nodes);
            resync(shared);
            if refresh {
                cluster::refresh(&shared.cluster, &shared.connections, &nodes).await;
            } else {
                // Nodes just added get a moment to answer; known ones are answered for at once.
                while !cluster::settled(&shared.cluster, &nodes) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let balancing = super::balance::BALANCING.load(Ordering::SeqCst);
            let report = cluster::report(&shared.cluster, &nodes, balancing);
            stream
                .write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())
                .await?;
        }
        Request::Status => {
            let status = status(shared);
            stream
                .write_all(format!("{}\n", serde_json::to_string(&status)?).as_bytes())
                .await?;
        }
        Request::Stop => {
            let carried = shared.carried.load(Ordering::SeqCst);
            if carried > 0 {
                let answer = format!(
                    "error the mrun daemon carries the connection of {carried} job(s) running on nodes, which would be lost; move them home first (mrunctl migrate JOB home) or let them end\n"
                );
                stream.write_all(answer.as_bytes()).await?;
                return Ok(());
            }
            stream.write_all(b"ok\n").await?;
            // The client waits for the end of this connection: it comes with our own.
            leave(&shared.socket);
        }
        Request::Connect { node } => carry(stream, shared, &node).await?,
    }
    Ok(())
}

/// Watch the nodes wanted now (the config file's and those the requests named).
fn resync(shared: &Shared) {
    let file_nodes = crate::nodes::config().map(|c| c.nodes).unwrap_or_default();
    cluster::sync_watchers(&shared.cluster, &shared.connections, &file_nodes);
}

/// Splice the deputy's connection to a new agent on `node` until either side is done; then
/// drop both, so the deputy sees the agent's end (and a dead deputy ends the agent) instead of
/// a half-open pipe that blocks a writer.
async fn carry(mut stream: UnixStream, shared: &Shared, node: &str) -> Result<()> {
    let channel = match shared.connections.open_channel(node).await {
        Ok(c) => c,
        Err(e) => {
            stream
                .write_all(format!("error {}\n", format!("{e:#}").replace('\n', " ")).as_bytes())
                .await?;
            return Ok(());
        }
    };
    stream.write_all(b"ok\n").await?;
    shared.carried.fetch_add(1, Ordering::SeqCst);
    let (mut from_deputy, mut to_deputy) = stream.into_split();
    let (mut from_agent, mut to_agent) = tokio::io::split(channel.into_stream());
    tokio::select! {
        _ = tokio::io::copy(&mut from_deputy, &mut to_agent) => {}
        _ = tokio::io::copy(&mut from_agent, &mut to_deputy) => {}
    }
    shared.carried.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

fn status(shared: &Shared) -> DaemonStatus {
    let (watched, up) = {
        let state = cluster::lock(&shared.cluster);
        let up = state
            .nodes
            .values()
            .filter(|v| {
                v.facts
                    .as_ref()
                    .is_some_and(|(_, at)| at.elapsed() < cluster::STALE)
            })
            .count();
        (state.nodes.len(), up)
    };
    DaemonStatus {
        pid: std::process::id(),
        socket: shared.socket.display().to_string(),
        uptime_secs: shared.started.elapsed().as_secs_f64(),
        rss_bytes: resident_bytes().unwrap_or(0),
        nodes_watched: watched,
        nodes_up: up,
        carried: shared.carried.load(Ordering::SeqCst),
    }
}

/// `VmRSS` of this process.
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
