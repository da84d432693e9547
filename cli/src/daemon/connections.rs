//! The daemon's SSH connections: one per node, opened on first use, reconnected with backoff
//! after a failure, and a fresh `mrun-agent` channel on it per session. Each node has a lock
//! of its own, so a node that hangs in its SSH handshake delays only those who wait for that
//! node, never a move to another one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::Mutex;

use crate::run::ssh;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A node's connection, or when to try again after a failure.
enum NodeState {
    Never,
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

/// Every node's connection, each behind its own lock.
#[derive(Clone, Default)]
pub(super) struct Connections {
    nodes: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<NodeState>>>>>,
}

impl Connections {
    fn slot(&self, node: &str) -> Arc<Mutex<NodeState>> {
        let mut map = self
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(node.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(NodeState::Never)))
            .clone()
    }

    /// Forget a failure's backoff, so that the next channel to `node` tries at once (the user
    /// asked anew). Skipped while someone else is connecting to it.
    pub fn retry_now(&self, node: &str) {
        if let Ok(mut state) = self.slot(node).try_lock() {
            if let NodeState::Down { retry_at, .. } = &mut *state {
                *retry_at = Instant::now();
            }
        }
    }

    /// A new channel running the agent on `node`, over its cached connection; connects when
    /// there is none or it died (not before the backoff after a failure is over).
    pub async fn open_channel(&self, node: &str) -> Result<russh::Channel<russh::client::Msg>> {
        let slot = self.slot(node);
        let mut state = slot.lock().await;
        for attempt in 0..2 {
            let (session, agent) = match &*state {
                NodeState::Up { session, agent } => (session.clone(), agent.clone()),
                NodeState::Down { retry_at, why, .. } if Instant::now() < *retry_at => {
                    let wait = retry_at.saturating_duration_since(Instant::now());
                    anyhow::bail!("{why} (next attempt in {:.1} s)", wait.as_secs_f64());
                }
                _ => match connect(node).await {
                    Ok((session, agent)) => {
                        let session = Arc::new(session);
                        *state = NodeState::Up {
                            session: session.clone(),
                            agent: agent.clone(),
                        };
                        (session, agent)
                    }
                    Err(e) => {
                        let backoff = match &*state {
                            NodeState::Down { backoff, .. } => (*backoff * 2).min(MAX_BACKOFF),
                            _ => FIRST_BACKOFF,
                        };
                        *state = NodeState::Down {
                            retry_at: Instant::now() + backoff,
                            backoff,
                            why: format!("{e:#}"),
                        };
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
                    *state = NodeState::Never;
                }
                Err(e) => return Err(e).context(format!("opening a channel to {node}")),
            }
        }
        anyhow::bail!("cannot open a channel to {node}")
    }
}

async fn connect(node: &str) -> Result<(ssh::Session, String)> {
    let dest = ssh::resolve(node)?;
    let session = ssh::connect(&dest).await?;
    let agent = ssh::agent_command(&session, &dest, &crate::run::agent_path()?).await?;
    Ok((session, agent))
}
