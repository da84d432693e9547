//! A session with a node's agent: over an SSH exec channel, or, for the node named `local`, an
//! `mrun-agent` subprocess on pipes; the handshake that opens every session.

use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use mrun_core::wire::{Control, Frame, FrameCodec, Hello};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::PollSender;

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What keeps the agent alive.
enum Carrier {
    Local(Child),
    Ssh(super::ssh::Session),
    /// A channel on the daemon's connection, spliced to our socket.
    Daemon,
}

/// Frames waiting for the writer task. Enough for a full stdin window in 64 KiB pieces plus
/// control messages, so that relaying never waits here (see `feed::STDIN_WINDOW`).
const QUEUED_FRAMES: usize = 64;

pub struct Link {
    pub node: String,
    /// What the agent sends, but for its requests for home's files: those are carried out
    /// as they arrive (see [`Incoming`]).
    pub rx: Incoming,
    /// Frames for the agent, written by a task of their own: a send never waits for the
    /// connection, so reading what the agent sends never stops behind a write to it.
    pub tx: PollSender<Frame>,
    /// How the job ended, when a move saw it end on this node (the move then fails, and the
    /// deputy ends like the job).
    pub ended: Option<mrun_core::wire::Ended>,
    /// CPU seconds the job used on this node so far, as its agent last reported (`Usage`).
    pub cpu_seconds: f64,
    /// The files the job used when it left home, as home saw them (see
    /// `mrun_core::files::seen`): sent with each restore.
    pub files_seen: Vec<mrun_core::files::seen::SeenFile>,
    writer: tokio::task::JoinHandle<()>,
    carrier: Carrier,
}

impl Link {
    pub async fn connect(node: &str) -> Result<Link> {
        let (rx, tx, carrier): (Reader, Writer, Carrier) = if node == "local" {
            let exe = super::agent_path()?;
            let mut cmd = std::process::Command::new(&exe);
            mrun_core::sys::process::unblock_signals_in_child(&mut cmd);
            let mut agent = tokio::process::Command::from(cmd)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            let (Some(stdin), Some(stdout)) = (agent.stdin.take(), agent.stdout.take()) else {
                bail!("the agent's pipes are missing");
            };
            (Box::new(stdout), Box::new(stdin), Carrier::Local(agent))
        } else if std::env::var("MRUN_NO_DAEMON").as_deref() != Ok("1") {
            // Through the daemon's connection to the node.
            let stream = crate::daemon::open_agent(node).await?;
            let (r, w) = tokio::io::split(stream);
            (Box::new(r), Box::new(w), Carrier::Daemon)
        } else {
            let dest = super::ssh::resolve(node)?;
            let session = super::ssh::connect(&dest).await?;
            let command = super::ssh::agent_command(&session, &dest, &super::agent_path()?).await?;
            let channel = session
                .channel_open_session()
                .await
                .context("opening an SSH channel")?;
            channel
                .exec(true, command)
                .await
                .context("starting mrun-agent over SSH")?;
            let (r, w) = tokio::io::split(channel.into_stream());
            (Box::new(r), Box::new(w), Carrier::Ssh(session))
        };
        Link::handshake(node, rx, tx, carrier).await
    }

    /// A session over a stream already connected to an agent (the daemon's own channels).
    pub async fn over<S>(node: &str, stream: S) -> Result<Link>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Link::handshake(node, Box::new(r), Box::new(w), Carrier::Daemon).await
    }

    async fn handshake(node: &str, rx: Reader, tx: Writer, carrier: Carrier) -> Result<Link> {
        let (queue, mut queued) = mpsc::channel::<Frame>(QUEUED_FRAMES);
        // Answers about home's files go first, never behind image chunks: the restore on the
        // node may be waiting for one before it reads more of the image.
        let (answers, mut answered) = mpsc::channel::<Frame>(QUEUED_FRAMES);
        let writer = tokio::spawn(async move {
            let mut tx = FramedWrite::new(tx, FrameCodec::default());
            loop {
                let frame = tokio::select! {
                    biased;
                    Some(f) = answered.recv() => f,
                    f = queued.recv() => match f {
                        Some(f) => f,
                        None => break,
                    },
                };
                if tx.send(frame).await.is_err() {
                    return; // The reading side sees the connection's end.
                }
            }
            let _ = tx.close().await;
        });
        let mut link = Link {
            node: node.to_string(),
            rx: Incoming {
                frames: FramedRead::new(rx, FrameCodec::default()),
                server: None,
                answers,
            },
            tx: PollSender::new(queue),
            ended: None,
            cpu_seconds: 0.0,
            files_seen: Vec::new(),
            writer,
            carrier,
        };
        let ours = Hello::ours();
        link.tx
            .send(Frame::Control(Control::Hello(ours.clone())))
            .await?;
        match link.rx.next().await {
            Some(Ok(Frame::Control(Control::Hello(peer)))) => {
                if let Some(problem) = ours.mismatch(&peer, &format!("the agent on {node}")) {
                    bail!(problem);
                }
            }
            Some(Ok(Frame::Control(Control::Error { message }))) => {
                bail!("the agent on {node}: {message}")
            }
            Some(Ok(other)) => {
                bail!(
                    "the agent on {node} answered {} instead of a handshake",
                    other.kind()
                )
            }
            Some(Err(e)) => {
                return Err(anyhow!(e)).context(format!("talking to the agent on {node}"))
            }
            None => bail!("the agent on {node} closed the connection before the handshake"),
        }
        Ok(link)
    }

    /// Send a frame while watching the agent: if it reports an error or goes away meanwhile
    /// (a full SSH window would otherwise block the send forever), fail at once.
    pub async fn send_watching(&mut self, frame: Frame) -> Result<()> {
        tokio::select! {
            sent = self.tx.send(frame) => sent.with_context(|| format!("sending to the agent on {}", self.node)),
            heard = self.rx.next() => match heard {
                Some(Ok(Frame::Control(Control::Error { message }))) => bail!("the agent on {}: {message}", self.node),
                Some(Ok(other)) => bail!("the agent on {} sent {other:?} out of turn", self.node),
                Some(Err(e)) => Err(anyhow!(e)).context(format!("the connection to {} failed", self.node)),
                None => bail!("the agent on {} went away", self.node),
            },
        }
    }

    /// After `Restore`: wait until the node says it takes the job, before anything is frozen.
    /// Its refusal (it does not have the job's files and cannot be given them) is a
    /// [`super::control::Refused`].
    pub async fn ready(&mut self) -> Result<()> {
        match self.rx.next().await {
            Some(Ok(Frame::Control(Control::Ready))) => Ok(()),
            Some(Ok(Frame::Control(Control::Refused { message }))) => {
                Err(super::control::Refused(format!("node {} {message}", self.node)).into())
            }
            Some(Ok(Frame::Control(Control::Error { message }))) => {
                bail!("node {} {message}", self.node)
            }
            Some(Ok(other)) => bail!(
                "the agent on {} answered {} to Restore",
                self.node,
                other.kind()
            ),
            Some(Err(e)) => {
                Err(anyhow!(e)).context(format!("the connection to {} failed", self.node))
            }
            None => bail!("the agent on {} went away", self.node),
        }
    }

    /// Wait for the agent process to end (after the session is over).
    /// Ask the agent what its machine is like (`Describe`), then end the session.
    pub async fn describe(mut self) -> Result<mrun_core::wire::NodeFacts> {
        self.tx.send(Frame::Control(Control::Describe)).await?;
        let facts = match self.rx.next().await {
            Some(Ok(Frame::Control(Control::Facts(f)))) => f,
            Some(Ok(Frame::Control(Control::Error { message }))) => bail!(message),
            other => bail!(
                "the agent on {} did not describe itself ({other:?})",
                self.node
            ),
        };
        self.finish().await;
        Ok(facts)
    }

    pub async fn finish(self) {
        // What was queued (a Commit, say) goes out before the connection ends; the file
        // server, which also writes there, ends with what reads the link.
        drop(self.tx);
        drop(self.rx);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.writer).await;
        match self.carrier {
            Carrier::Local(mut agent) => {
                let _ = agent.wait().await;
            }
            Carrier::Ssh(session) => {
                let _ = session
                    .disconnect(russh::Disconnect::ByApplication, "", "")
                    .await;
            }
            Carrier::Daemon => {}
        }
    }
}

/// The frames from the agent. Its requests for home's files (when the node does not have the
/// job's files) never reach the deputy: they go to a file server started on the first one,
/// whose answers join the frames for the agent. They are served while the deputy reads the
/// link, which it always does but while its own output waits for a slow reader.
pub struct Incoming {
    frames: FramedRead<Reader, FrameCodec>,
    server: Option<mrun_core::files::server::Server>,
    /// The file server's way to the agent: the writer sends these before the link's own
    /// frames, and ends with the link's `tx` whatever waits here.
    answers: mpsc::Sender<Frame>,
}

impl futures_util::Stream for Incoming {
    type Item = Result<Frame, mrun_core::wire::WireError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use mrun_core::wire::files::FileMsg;
        loop {
            match std::task::ready!(self.frames.poll_next_unpin(cx)) {
                Some(Ok(Frame::Files(FileMsg::Ask { id, op }, data))) => {
                    if self.server.is_none() {
                        match mrun_core::files::server::Server::start(self.answers.clone()) {
                            Ok(s) => self.server = Some(s),
                            Err(e) => {
                                return std::task::Poll::Ready(Some(Err(
                                    mrun_core::wire::WireError::Io(e),
                                )))
                            }
                        }
                    }
                    if let Some(server) = &self.server {
                        server.ask(id, op, data);
                    }
                }
                other => return std::task::Poll::Ready(other),
            }
        }
    }
}
