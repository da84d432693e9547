//! A session with a node's agent: for the node named `local`, an `mrun-agent` subprocess on
//! pipes; the handshake that opens every session.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use mrun_core::wire::{Control, Frame, FrameCodec, Hello};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::codec::{FramedRead, FramedWrite};

pub struct Link {
    pub node: String,
    pub rx: FramedRead<ChildStdout, FrameCodec>,
    pub tx: FramedWrite<ChildStdin, FrameCodec>,
    agent: Child,
}

impl Link {
    pub async fn connect(node: &str) -> Result<Link> {
        if node != "local" {
            bail!("node {node:?} is not reachable: only the node named `local` is supported by this version (SSH nodes come next)");
        }
        let exe = agent_path()?;
        let mut agent = tokio::process::Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (agent.stdin.take(), agent.stdout.take()) else {
            bail!("the agent's pipes are missing");
        };
        let mut link = Link {
            node: node.to_string(),
            rx: FramedRead::new(stdout, FrameCodec::default()),
            tx: FramedWrite::new(stdin, FrameCodec::default()),
            agent,
        };
        let ours = Hello::ours();
        link.tx.send(Frame::Control(Control::Hello(ours.clone()))).await?;
        match link.rx.next().await {
            Some(Ok(Frame::Control(Control::Hello(peer)))) => {
                if let Some(problem) = ours.mismatch(&peer, &format!("the agent on {node}")) {
                    bail!(problem);
                }
            }
            Some(Ok(Frame::Control(Control::Error { message }))) => bail!("the agent on {node}: {message}"),
            Some(Ok(other)) => bail!("the agent on {node} answered {other:?} instead of a handshake"),
            Some(Err(e)) => return Err(anyhow!(e)).context(format!("talking to the agent on {node}")),
            None => bail!("the agent on {node} closed the connection before the handshake"),
        }
        Ok(link)
    }

    /// Wait for the agent process to end (after the session is over).
    pub async fn finish(mut self) {
        drop(self.tx);
        let _ = self.agent.wait().await;
    }
}

/// `mrun-agent` next to this program, or on PATH.
fn agent_path() -> Result<PathBuf> {
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let beside = dir.join("mrun-agent");
            if beside.is_file() {
                return Ok(beside);
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("mrun-agent")).find(|p| p.is_file()))
        .ok_or_else(|| anyhow!("mrun-agent is not installed next to mrun or on PATH; install it with `cargo install --path remote-agent`"))
}
