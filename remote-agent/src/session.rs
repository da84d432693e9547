//! One session with home: handshake, then one job: receive its image and restore it, relay
//! its stdio and signals, report its end; or checkpoint it and send it on.

use std::process::Stdio;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mrun_core::transfer::{self, DumpEvent, Restoring, Verdict};
use mrun_core::wire::{Control, Ended, Frame, FrameCodec, Hello};

use crate::pty::Pty;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

type Out = FramedWrite<tokio::io::Stdout, FrameCodec>;

/// Fault injection for tests of what home does when an agent dies at each step of a
/// migration: `MRUN_AGENT_FAULT=before-image|mid-image|after-image|before-running` makes the
/// agent exit abruptly at that point. `MRUN_AGENT_PROTOCOL=N` makes it claim protocol N.
fn fault(point: &str) {
    if std::env::var("MRUN_AGENT_FAULT").is_ok_and(|f| f == point) {
        std::process::exit(70);
    }
}

pub async fn run() -> Result<()> {
    let mut input = FramedRead::new(tokio::io::stdin(), FrameCodec::default());
    let mut out: Out = FramedWrite::new(tokio::io::stdout(), FrameCodec::default());
    let mut ours = Hello::ours();
    if let Some(p) = std::env::var("MRUN_AGENT_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        ours.protocol = p;
    }
    out.send(Frame::Control(Control::Hello(ours.clone())))
        .await?;
    let peer = match input.next().await {
        Some(Ok(Frame::Control(Control::Hello(h)))) => h,
        Some(Ok(other)) => bail!("home did not start with a handshake (got {other:?})"),
        Some(Err(e)) => return Err(e).context("reading home's handshake"),
        None => return Ok(()),
    };
    if let Some(problem) = ours.mismatch(&peer, "home") {
        let _ = out
            .send(Frame::Control(Control::Error {
                message: problem.clone(),
            }))
            .await;
        bail!(problem);
    }
    let (job_stdin, terminal) = match input.next().await {
        Some(Ok(Frame::Control(Control::Restore {
            stdin, terminal, ..
        }))) => (stdin, terminal),
        Some(Ok(Frame::Control(Control::Describe))) => {
            let mut meter = mrun_core::load::Meter::new();
            for _ in 0..3 {
                meter.sample();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            out.send(Frame::Control(Control::Facts(node_facts(&mut meter))))
                .await?;
            return Ok(());
        }
        Some(Ok(Frame::Control(Control::Watch { interval_ms }))) => {
            return watch(&mut input, &mut out, interval_ms).await
        }
        None => return Ok(()),
        Some(other) => bail!("expected a job to restore, got {other:?}"),
    };
    let exe = std::env::current_exe().context("finding mrun-agent's own path")?;
    let (mut job, mut outputs) = match &terminal {
        // A terminal at home: a pty here, with the same size and modes.
        Some(term) => {
            let (pty, slave) = Pty::open(term)?;
            let io = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone().map(Stdio::from).context("sharing the pty")
            };
            let job = Restoring::start(
                &exe,
                &["restore-helper", "--terminal"],
                io(&slave)?,
                io(&slave)?,
                io(&slave)?,
            )
            .context("starting the restore helper")?;
            (
                job,
                Outputs {
                    stdout: None,
                    stderr: None,
                    pty: Some(pty),
                },
            )
        }
        None => {
            let stdin_cfg = if job_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            };
            let (out_r, out_w) =
                mrun_core::sys::pipe::create(1 << 16).context("creating a pipe")?;
            let (err_r, err_w) =
                mrun_core::sys::pipe::create(1 << 16).context("creating a pipe")?;
            let job = Restoring::start(
                &exe,
                &["restore-helper"],
                stdin_cfg,
                Stdio::from(out_w),
                Stdio::from(err_w),
            )
            .context("starting the restore helper")?;
            let outputs = Outputs {
                stdout: Some(pipe::Receiver::from_owned_fd(out_r).context("watching stdout")?),
                stderr: Some(pipe::Receiver::from_owned_fd(err_r).context("watching stderr")?),
                pty: None,
            };
            (job, outputs)
        }
    };
    let helper = Pid::from_raw(job.child.id().map(|p| p as i32).unwrap_or(0));
    let mut child_stdin = job.child.stdin.take();

    // Receive the image.
    fault("before-image");
    let mut image = job.image.take();
    let mut received = 0usize;
    loop {
        match input.next().await {
            Some(Ok(Frame::Image(chunk))) => {
                received += chunk.len();
                if received > (1 << 20) {
                    fault("mid-image");
                }
                if let Some(w) = image.as_mut() {
                    if w.write_all(&chunk).await.is_err() {
                        image = None; // The helper gave up; its status line says why.
                    }
                }
            }
            Some(Ok(Frame::Control(Control::ImageEnd))) => break,
            Some(Ok(other)) => bail!("unexpected frame during the image transfer: {other:?}"),
            Some(Err(e)) => return Err(e).context("receiving the image"),
            None => return Ok(()), // Home went away: the helper dies with us (kill_on_drop).
        }
    }
    drop(image);
    fault("after-image");
    let proc_pid = match job.outcome().await {
        Ok(pid) => pid,
        Err(why) => {
            out.send(Frame::Control(Control::Error {
                message: format!("restore failed on this node: {why}"),
            }))
            .await?;
            return Ok(());
        }
    };
    fault("before-running");
    out.send(Frame::Control(Control::Running { pid: proc_pid }))
        .await?;

    let mut leaving: Option<oneshot::Sender<Verdict>> = None;
    let mut dump_events: Option<mpsc::Receiver<DumpEvent>> = None;
    // With a pty, a ^Z from home stops the process here: watch for it, so home can stop too.
    let mut stop_check = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut stopped = false;
    loop {
        tokio::select! {
            _ = stop_check.tick(), if outputs.pty.is_some() && leaving.is_none() => {
                let now = job_control_stopped(proc_pid);
                if now && !stopped {
                    out.send(Frame::Control(Control::Stopped)).await?;
                }
                stopped = now;
            }
            frame = input.next() => match frame {
                Some(Ok(Frame::Stdin(data))) if outputs.pty.is_some() => {
                    if let Some(p) = outputs.pty.as_ref() {
                        let _ = p.write_all(&data).await;
                    }
                }
                Some(Ok(Frame::Stdin(data))) => {
                    if let Some(i) = child_stdin.as_mut() {
                        if i.write_all(&data).await.is_err() {
                            child_stdin = None;
                        }
                    }
                }
                Some(Ok(Frame::Control(Control::StdinEof))) => child_stdin = None,
                Some(Ok(Frame::Control(Control::Signal { signo }))) => {
                    if let Ok(sig) = Signal::try_from(signo) {
                        let _ = kill(helper, sig);
                    }
                }
                Some(Ok(Frame::Control(Control::Checkpoint))) => {
                    let (events, verdict) = transfer::checkpoint_to_chunks(Pid::from_raw(proc_pid), Default::default());
                    dump_events = Some(events);
                    leaving = Some(verdict);
                }
                Some(Ok(Frame::Control(Control::Commit))) => {
                    if let Some(v) = leaving.take() {
                        let _ = v.send(Verdict::Kill);
                    }
                    // The process lives on elsewhere; its helper ends with it.
                    let _ = job.child.wait().await;
                    return Ok(());
                }
                Some(Ok(Frame::Control(Control::Abort))) => {
                    if let Some(v) = leaving.take() {
                        let _ = v.send(Verdict::Resume);
                    }
                }
                Some(Ok(Frame::Control(Control::Resize(size)))) => {
                    if let Some(p) = outputs.pty.as_ref() {
                        p.resize(size);
                    }
                }
                Some(Ok(other)) => bail!("unexpected frame from home: {other:?}"),
                Some(Err(e)) => return Err(e).context("reading from home"),
                None => {
                    // Home is gone: nobody can see this process's output any more.
                    let _ = kill(Pid::from_raw(proc_pid), Signal::SIGKILL);
                    return Ok(());
                }
            },
            ev = next_event(&mut dump_events) => match ev {
                Some(DumpEvent::Chunk(c)) => out.send(Frame::Image(c)).await?,
                Some(DumpEvent::Done) => {
                    dump_events = None;
                    // The process is frozen: everything it wrote is in the pipes now. It goes
                    // out before the image ends, so no byte can arrive after the next copy's.
                    for frame in outputs.drain() {
                        out.send(frame).await?;
                    }
                    // Input it has not read yet goes back home, for its next copy.
                    if outputs.pty.is_none() {
                        let unread = transfer::unread_stdin(Pid::from_raw(proc_pid));
                        if !unread.is_empty() {
                            out.send(Frame::Stdin(Bytes::from(unread))).await?;
                        }
                    }
                    out.send(Frame::Control(Control::ImageEnd)).await?;
                }
                Some(DumpEvent::Failed(why)) => {
                    dump_events = None;
                    leaving = None;
                    out.send(Frame::Control(Control::Error { message: format!("checkpoint failed on this node: {why}") })).await?;
                }
                None => dump_events = None,
            },
            data = outputs.next() => {
                if let Some(frame) = data {
                    out.send(frame).await?;
                }
            }
            status = job.child.wait(), if outputs.closed() => {
                let status = status.context("waiting for the restore helper")?;
                let ended = Ended::from(status);
                out.send(Frame::Control(Control::Exited(ended))).await?;
                return Ok(());
            }
        }
    }
}

async fn next_event(rx: &mut Option<mpsc::Receiver<DumpEvent>>) -> Option<DumpEvent> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The restored process's stdout and stderr (pipes), or its terminal (a pty), as seen from here.
struct Outputs {
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    pty: Option<Pty>,
}

impl Outputs {
    fn closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none() && self.pty.is_none()
    }

    /// The next chunk of output as a frame; None when a stream just ended.
    async fn next(&mut self) -> Option<Frame> {
        let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        if let Some(p) = self.pty.as_ref() {
            return match p.read(&mut a).await {
                Some(n) => Some(Frame::Stdout(Bytes::copy_from_slice(&a[..n]))),
                None => {
                    self.pty = None;
                    None
                }
            };
        }
        tokio::select! {
            r = read_some(&mut self.stdout, &mut a) => r.map(|n| Frame::Stdout(Bytes::copy_from_slice(&a[..n]))),
            r = read_some(&mut self.stderr, &mut b) => r.map(|n| Frame::Stderr(Bytes::copy_from_slice(&b[..n]))),
        }
    }

    /// Everything already written, without waiting for more.
    fn drain(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(p) = self.pty.as_ref() {
            while let Some(n) = p.read_now(&mut buf) {
                frames.push(Frame::Stdout(Bytes::copy_from_slice(&buf[..n])));
            }
        }
        for (end, wrap) in [
            (&self.stdout, Frame::Stdout as fn(Bytes) -> Frame),
            (&self.stderr, Frame::Stderr),
        ] {
            let Some(rx) = end else { continue };
            while let Ok(n) = rx.try_read(&mut buf) {
                if n == 0 {
                    break;
                }
                frames.push(wrap(Bytes::copy_from_slice(&buf[..n])));
            }
        }
        frames
    }
}

/// Read from `end` (pending forever once it is gone); None and forget it at end of stream.
async fn read_some(end: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    let Some(rx) = end.as_mut() else {
        return std::future::pending().await;
    };
    match rx.read(buf).await {
        Ok(n) if n > 0 => Some(n),
        _ => {
            *end = None;
            None
        }
    }
}

/// Report this node's facts every `interval_ms` until home closes the session.
async fn watch(
    input: &mut FramedRead<tokio::io::Stdin, FrameCodec>,
    out: &mut Out,
    interval_ms: u32,
) -> Result<()> {
    let mut meter = mrun_core::load::Meter::new();
    let report_every = std::time::Duration::from_millis(u64::from(interval_ms.max(100)));
    let mut sample = tokio::time::interval(mrun_core::load::SAMPLE_EVERY);
    let mut report = tokio::time::interval(report_every);
    loop {
        tokio::select! {
            _ = sample.tick() => meter.sample(),
            _ = report.tick() => out.send(Frame::Control(Control::Facts(node_facts(&mut meter)))).await?,
            heard = input.next() => match heard {
                None => return Ok(()),
                Some(Ok(other)) => bail!("unexpected message while reporting load: {other:?}"),
                Some(Err(e)) => return Err(e).context("reading from home"),
            },
        }
    }
}

/// Whether the process is stopped by a job-control signal (state `T`; a ptrace stop is `t`).
fn job_control_stopped(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|st| st.state == 'T')
}

/// This node's facts for home, with the jobs it hosts counted.
fn node_facts(meter: &mut mrun_core::load::Meter) -> mrun_core::wire::NodeFacts {
    let mut facts = meter.facts();
    facts.jobs = meter.hosted_jobs();
    facts
}
