//! The daemon's socket server. Requests (one line): `connect NODE` turns the connection into a
//! byte pipe to a new `mrun-agent` on NODE, over the node's one SSH connection; `facts` is
//! answered with one JSON line, the daemon's view of the cluster; `hello` with `ok` (a deputy
//! making sure the daemon, and so the balancer, runs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::run::ssh;

/// A node's connection, or when to try again after a failure.
pub(super) enum NodeState {
    Up {
        session: Arc<ssh::Session>,
        agent: String,
    },
    Down {
        retry_at: Instant,
        backoff: Duration,
        why: String,
    },
}

pub(super) type Nodes = Arc<Mutex<HashMap<String, NodeState>>>;

/// The daemon leaves after this long with no session to carry and no request.
const IDLE_SECS: u64 = 120;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub fn run() -> ! {
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
    let nodes: Nodes = Arc::new(Mutex::new(HashMap::new()));
    let cluster: super::cluster::Cluster = Default::default();
    super::cluster::measure_home(cluster.clone());
    let jobs_alive = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(super::balance::run(
        cluster.clone(),
        nodes.clone(),
        jobs_alive.clone(),
    ));
    let me = nix::unistd::getuid().as_raw();
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
                if busy.load(std::sync::atomic::Ordering::SeqCst) > 0 || jobs_alive.load(std::sync::atomic::Ordering::SeqCst) {
                    last_active = Instant::now();
                } else if last_active.elapsed() > idle_limit {
                    // Nothing to carry and nobody asked for a while: leave.
                    let _ = std::fs::remove_file(&path);
                    return Ok(());
                }
                continue;
            }
        };
        let (stream, _) = accepted?;
        last_active = Instant::now();
        if !stream.peer_cred().is_ok_and(|c| c.uid() == me) {
            continue; // Another user: not even an answer.
        }
        let nodes = nodes.clone();
        let cluster = cluster.clone();
        let busy = busy.clone();
        busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = serve_one(stream, nodes, cluster).await;
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
}

async fn serve_one(
    stream: UnixStream,
    nodes: Nodes,
    cluster: super::cluster::Cluster,
) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut stream = reader.into_inner();
    match line.trim() {
        "hello" => {
            stream.write_all(b"ok\n").await?;
            return Ok(());
        }
        "facts" => {
            let balancing = super::balance::BALANCING.load(std::sync::atomic::Ordering::SeqCst);
            let report = super::cluster::report(&cluster, balancing);
            stream
                .write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())
                .await?;
            return Ok(());
        }
        _ => {}
    }
    let Some(node) = line.trim().strip_prefix("connect ").map(str::to_string) else {
        stream.write_all(b"error unknown request\n").await?;
        return Ok(());
    };
    let channel = match open_channel(&nodes, &node).await {
        Ok(c) => c,
        Err(e) => {
            stream
                .write_all(format!("error {}\n", format!("{e:#}").replace('\n', " ")).as_bytes())
                .await?;
            return Ok(());
        }
    };
    stream.write_all(b"ok\n").await?;
    // Splice until either side is done; then drop both, so the deputy sees the agent's end
    // (and a dead deputy ends the agent) instead of a half-open pipe that blocks a writer.
    let (mut from_deputy, mut to_deputy) = stream.into_split();
    let (mut from_agent, mut to_agent) = tokio::io::split(channel.into_stream());
    tokio::select! {
        _ = tokio::io::copy(&mut from_deputy, &mut to_agent) => {}
        _ = tokio::io::copy(&mut from_agent, &mut to_deputy) => {}
    }
    Ok(())
}

/// A new channel running the agent on `node`, over its cached connection; reconnects (with
/// backoff) when there is none or it died.
pub(super) async fn open_channel(
    nodes: &Nodes,
    node: &str,
) -> Result<russh::Channel<russh::client::Msg>> {
    let mut map = nodes.lock().await;
    for attempt in 0..2 {
        let (session, agent) = match map.get(node) {
            Some(NodeState::Up { session, agent }) => (session.clone(), agent.clone()),
            Some(NodeState::Down { retry_at, why, .. }) if Instant::now() < *retry_at => {
                let wait = retry_at.saturating_duration_since(Instant::now());
                anyhow::bail!("{why} (next attempt in {:.1} s)", wait.as_secs_f64());
            }
            _ => match connect(node).await {
                Ok((session, agent)) => {
                    let session = Arc::new(session);
                    map.insert(
                        node.to_string(),
                        NodeState::Up {
                            session: session.clone(),
                            agent: agent.clone(),
                        },
                    );
                    (session, agent)
                }
                Err(e) => {
                    let backoff = match map.get(node) {
                        Some(NodeState::Down { backoff, .. }) => (*backoff * 2).min(MAX_BACKOFF),
                        _ => FIRST_BACKOFF,
                    };
                    let why = format!("{e:#}");
                    map.insert(
                        node.to_string(),
                        NodeState::Down {
                            retry_at: Instant::now() + backoff,
                            backoff,
                            why,
                        },
                    );
                    return Err(e);
                }
            },
        };
        match session.channel_open_session().await {
            Ok(channel) => {
                channel
                    .exec(true, agent.as_str())
                    .await
                    .context("starting mrun-agent over SSH")?;
                return Ok(channel);
            }
            Err(_) if attempt == 0 => {
                // The connection died since it was cached: connect again once.
                map.remove(node);
            }
            Err(e) => return Err(e).context(format!("opening a channel to {node}")),
        }
    }
    anyhow::bail!("cannot open a channel to {node}")
}

async fn connect(node: &str) -> Result<(ssh::Session, String)> {
    let dest = ssh::resolve(node)?;
    let session = ssh::connect(&dest).await?;
    let agent = ssh::agent_command(&session, &dest, &crate::run::agent_path()?).await?;
    Ok((session, agent))
}
