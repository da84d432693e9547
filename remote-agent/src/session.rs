//! One session with home: handshake, then one job: receive its image and restore it, relay
//! its stdio and signals, report its end; or checkpoint it and send it on.

use std::collections::VecDeque;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use mrun_core::feed::Feed;
use mrun_core::transfer::{self, DumpEvent, Held, Restoring};
use mrun_core::wire::{Control, Ended, Frame, Hello};

use crate::pty::Pty;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::home::{FromHome, ServedSlot, ToHome};
use crate::served::{HomeFiles, Served};

type Out = ToHome;

/// Fault injection for tests of what home does when an agent dies at each step of a
/// migration: `MRUN_AGENT_FAULT=before-image|mid-image|after-image|before-running` makes the
/// agent exit abruptly at that point. `MRUN_AGENT_PROTOCOL=N` makes it claim protocol N.
fn fault(point: &str) {
    if std::env::var("MRUN_AGENT_FAULT").is_ok_and(|f| f == point) {
        std::process::exit(70);
    }
}

pub async fn run() -> Result<()> {
    let slot = ServedSlot::default();
    let (input, out, asks, writer) = crate::home::connect(slot.clone());
    let done = session(input, out, asks, slot).await;
    // What was queued (the job's end, say) goes out before we end.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    done
}

async fn session(
    mut input: FromHome,
    mut out: Out,
    asks: mpsc::Sender<Frame>,
    slot: ServedSlot,
) -> Result<()> {
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
    let (job_stdin, terminal, files, home_boot) = match input.next().await {
        Some(Ok(Frame::Control(Control::Restore {
            stdin,
            terminal,
            files,
            home_boot,
            ..
        }))) => (stdin, terminal, files, home_boot),
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
    let fuse = match home_files(&files, &home_boot, asks, &slot) {
        Ok(fuse) => fuse,
        // Home sends nothing more before `Ready`: the session ends here.
        Err(Unserved::Refused(message)) => {
            return out.send(Frame::Control(Control::Refused { message })).await;
        }
        Err(Unserved::Failed(message)) => {
            return out.send(Frame::Control(Control::Error { message })).await;
        }
    };
    out.send(Frame::Control(Control::Ready)).await?;
    let helper_fds = fuse.as_ref().map(|f| std::os::fd::AsFd::as_fd(&f.helper));
    let (mut job, outputs) = match &terminal {
        // A terminal at home: a pty here, with the same size and modes.
        Some(term) => {
            let (pty, slave) = Pty::open(term)?;
            let io = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone().map(Stdio::from).context("sharing the pty")
            };
            let job = Restoring::start(
                &exe,
                &["restore-helper", "--terminal"],
                helper_fds,
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
                helper_fds,
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
    let feed = Feed::child(job.child.stdin.take()).context("feeding the job's stdin")?;

    // Receive the image.
    fault("before-image");
    let mut image = job.image.take();
    let mut received = 0usize;
    let mut rounds = 0;
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
            // A helper that gave up has no use for the freeze that would follow: its failure
            // goes home now (below), before home freezes the job.
            Some(Ok(Frame::Control(Control::Sync))) if image.is_none() => break,
            // A pre-copy round went into the helper's pipe (the writes above awaited); answered
            // once the helper has taken it all in, so that home's next round measures what the
            // job wrote meanwhile, and the freeze that may follow does not wait for it.
            Some(Ok(Frame::Control(Control::Sync))) => {
                rounds += 1;
                if job.precopied(rounds).await.is_err() {
                    break; // The helper gave up; its verdict goes home below.
                }
                out.send(Frame::Control(Control::Synced)).await?
            }
            Some(Ok(other)) => bail!("unexpected frame during the image transfer: {other:?}"),
            Some(Err(e)) => return Err(e).context("receiving the image"),
            None => return Ok(()), // Home went away: the helper dies with us (kill_on_drop).
        }
    }
    drop(image);
    fault("after-image");
    let proc_pid = match job.outcome().await {
        Ok(pid) => {
            if fuse.is_some() {
                // Its files' device numbers here are the served file system's: a checkpoint
                // taken here records them as unknown (see `files_served_on`).
                // Off this task: the stat may have to ask home (the root's attributes went
                // stale in the served file system's cache), and this task's progress is what
                // carries home's answers.
                let root = format!("/proc/{pid}/root");
                if let Ok(Ok(m)) =
                    tokio::task::spawn_blocking(move || std::fs::metadata(root)).await
                {
                    mrun_core::resource::files_served_on(std::os::unix::fs::MetadataExt::dev(&m));
                }
            }
            pid
        }
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
    let here = Here {
        job,
        proc_pid,
        helper,
        served: slot,
    };
    relay(input, out, here, feed, outputs).await
}

/// The restored job on this node: its restore helper (which supervises it), its pid, and
/// home's files served to it, if they are.
struct Here {
    job: Restoring,
    proc_pid: i32,
    helper: Pid,
    served: ServedSlot,
}

/// Frames for home wait here while the writer is busy; output and image chunks are read only
/// while fewer than this many wait (back-pressure: a slow reader at home slows the job down).
const OUTBOX: usize = 4;

/// The job runs: relay its stdin, output, signals and control messages, each on its own,
/// until it ends or leaves. Nothing here waits on one direction while another has work:
/// home's frames are always read (input is bounded by `STDIN_WINDOW`), the job's stdin is
/// written only as far as its pipe takes it, and frames for home go through a writer task,
/// its output read only while the outbox has room.
async fn relay(
    mut input: FromHome,
    out: Out,
    here: Here,
    mut feed: Feed,
    mut outputs: Outputs,
) -> Result<()> {
    let Here {
        mut job,
        proc_pid,
        helper,
        served,
    } = here;
    // Once this copy of the job is done for, what it still asks of home's files (flushes
    // as it is killed) is answered here: home no longer listens for it.
    let unserve = || {
        if let Some(s) = served.get() {
            s.close();
        }
    };
    let (to_home, mut outgoing) = mpsc::channel::<Frame>(4);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            out.send(frame).await?;
        }
        anyhow::Ok(())
    });
    let mut outbox: VecDeque<Frame> = VecDeque::new();
    // Bytes of input that left the feed and were not yet reported to home.
    let mut taken: u64 = 0;
    let mut leaving: Option<Held> = None;
    let mut dump_events: Option<mpsc::Receiver<DumpEvent>> = None;
    // With a pty, a ^Z from home stops the process here: watch for it, so home can stop too.
    let mut stop_check = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut stopped = false;
    // Home shows the job's CPU time wherever it runs: what it used here, every second.
    let mut usage_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = usage_tick.tick(), if leaving.is_none() && outbox.len() < OUTBOX => {
                outbox.extend(usage(proc_pid));
            }
            permit = to_home.reserve(), if !outbox.is_empty() || taken > 0 => {
                let Ok(permit) = permit else { bail!("cannot write to home any more") };
                if taken > 0 {
                    permit.send(Frame::Control(Control::StdinRead { bytes: taken }));
                    taken = 0;
                } else if let Some(frame) = outbox.pop_front() {
                    permit.send(frame);
                }
            }
            _ = stop_check.tick(), if outputs.pty.is_some() && leaving.is_none() => {
                let now = job_control_stopped(proc_pid);
                if now && !stopped {
                    outbox.push_back(Frame::Control(Control::Stopped));
                }
                stopped = now;
            }
            n = feed.progress(), if leaving.is_none() => taken += n as u64,
            frame = input.next() => match frame {
                Some(Ok(Frame::Stdin(data))) if outputs.pty.is_some() => {
                    // Typed input: small, and a terminal takes it.
                    if let Some(p) = outputs.pty.as_ref() {
                        let _ = p.write_all(&data).await;
                    }
                    taken += data.len() as u64;
                }
                Some(Ok(Frame::Stdin(data))) => {
                    if feed.is_open() {
                        feed.push(data);
                    } else {
                        taken += data.len() as u64;
                    }
                }
                Some(Ok(Frame::Control(Control::StdinEof))) => feed.end(),
                Some(Ok(Frame::Control(Control::Signal { signo }))) => {
                    // The helper passes on what a supervisor forwards; any other signal (KILL,
                    // STOP, ALRM...) goes to the job's processes themselves.
                    match Signal::try_from(signo) {
                        Ok(sig) if mrun_core::supervise::FORWARDED.contains(&sig) => {
                            let _ = kill(helper, sig);
                        }
                        Ok(sig) => mrun_core::supervise::signal_job(Pid::from_raw(proc_pid), sig),
                        Err(_) => {}
                    }
                }
                Some(Ok(Frame::Control(Control::Checkpoint))) => {
                    let (events, verdict) = transfer::checkpoint_to_chunks(Pid::from_raw(proc_pid), Default::default());
                    dump_events = Some(events);
                    leaving = Some(verdict);
                }
                Some(Ok(Frame::Control(Control::Commit))) => {
                    unserve();
                    if let Some(held) = leaving.take() {
                        held.kill().await;
                    }
                    // The process lives on elsewhere; its helper ends with it.
                    let _ = job.child.wait().await;
                    return Ok(());
                }
                Some(Ok(Frame::Control(Control::Abort))) => {
                    // Resumed before anything else is read: a new Checkpoint finds it free.
                    // A checkpoint still writing its image sees the events closed first.
                    dump_events = None;
                    if let Some(held) = leaving.take() {
                        held.resume().await;
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
                    unserve();
                    let _ = kill(Pid::from_raw(proc_pid), Signal::SIGKILL);
                    return Ok(());
                }
            },
            ev = next_event(&mut dump_events), if outbox.len() < OUTBOX => match ev {
                Some(DumpEvent::Chunk(c)) => outbox.push_back(Frame::Image(c)),
                // Nodes do not pre-copy: the dump goes on at once.
                Some(DumpEvent::SentAhead(go)) => {
                    let _ = go.send(());
                }
                Some(DumpEvent::Done) => {
                    dump_events = None;
                    // The process is frozen: everything it wrote is in the pipes now. It goes
                    // out before the image ends, so no byte can arrive after the next copy's.
                    outbox.extend(outputs.drain());
                    // Input it has not read yet goes back home, for its next copy: what waits
                    // in its pipe, then what waits here.
                    if outputs.pty.is_none() {
                        let mut unread = transfer::unread_stdin(Pid::from_raw(proc_pid));
                        let queued = feed.take_queued();
                        taken += queued.len() as u64;
                        unread.extend_from_slice(&queued);
                        outbox.extend(mrun_core::feed::stdin_pieces(unread).map(Frame::Stdin));
                    }
                    // Frozen, its CPU time is final here.
                    outbox.extend(usage(proc_pid));
                    outbox.push_back(Frame::Control(Control::ImageEnd));
                }
                Some(DumpEvent::Refused(why)) => {
                    dump_events = None;
                    leaving = None;
                    outbox.push_back(Frame::Control(Control::Refused { message: format!("checkpoint refused on this node: {why}") }));
                }
                Some(DumpEvent::Failed(why)) => {
                    dump_events = None;
                    leaving = None;
                    outbox.push_back(Frame::Control(Control::Error { message: format!("checkpoint failed on this node: {why}") }));
                }
                None => dump_events = None,
            },
            data = outputs.next(), if outbox.len() < OUTBOX && leaving.is_none() => {
                if let Some(frame) = data {
                    outbox.push_back(frame);
                }
            }
            status = job.child.wait(), if outputs.closed() => {
                let status = status.context("waiting for the restore helper")?;
                outbox.push_back(Frame::Control(Control::Exited(Ended::from(status))));
                break;
            }
        }
    }
    // The job ended: what waits goes out, its end last.
    for frame in outbox {
        to_home.send(frame).await?;
    }
    drop(to_home);
    writer.await??;
    Ok(())
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
async fn watch(input: &mut FromHome, out: &mut Out, interval_ms: u32) -> Result<()> {
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

/// The job's CPU time here, for home (nothing once it is gone).
fn usage(proc_pid: i32) -> Option<Frame> {
    mrun_core::load::job::cpu_seconds(Pid::from_raw(proc_pid))
        .map(|cpu_seconds| Frame::Control(Control::Usage { cpu_seconds }))
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

/// Why the job cannot have home's files here.
enum Unserved {
    /// What it holds cannot be served (a FIFO, a socket, a device): it stays where it is.
    Refused(String),
    /// This node cannot serve files (no FUSE).
    Failed(String),
}

/// The served file system's descriptor for the restore helper, kept open as long as the
/// session (the FUSE session has its own copy).
struct HomeFilesFd {
    helper: std::os::fd::OwnedFd,
}

/// If this node does not have the job's files as home has them, start serving home's: the
/// FUSE session runs on a thread of its own, its requests go to home through `asks`, home's
/// answers reach it through `slot`. `None` when the node has them all.
fn home_files(
    files: &[mrun_core::files::seen::SeenFile],
    home_boot: &str,
    asks: mpsc::Sender<Frame>,
    slot: &ServedSlot,
) -> Result<Option<HomeFilesFd>, Unserved> {
    use mrun_core::files::seen;
    let same_boot = home_boot == mrun_core::resource::boot_id();
    let Some(why) = seen::first_difference(files, same_boot) else {
        return Ok(None);
    };
    // Home names the node: the sentences start with what it does not have.
    if let Some(refusal) = seen::unservable(files) {
        return Err(Unserved::Refused(format!(
            "does not have the job's files ({why}), and {refusal}"
        )));
    }
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            Unserved::Failed(format!(
                "does not have the job's files ({why}) and cannot give it home's: \
                 /dev/fuse: {e}"
            ))
        })?;
    let helper = std::os::fd::OwnedFd::from(
        fuse.try_clone()
            .map_err(|e| Unserved::Failed(format!("sharing /dev/fuse: {e}")))?,
    );
    let served = Served::new(asks);
    let _ = slot.set(served.clone());
    // The session's handshake reads the kernel's first request, which comes once the helper
    // has mounted the file system (before that, reading fails with EPERM): on a thread.
    std::thread::Builder::new()
        .name("mrun-home-files".into())
        .spawn(move || serve_home_files(fuse, served))
        .map_err(|e| Unserved::Failed(format!("starting the file server: {e}")))?;
    Ok(Some(HomeFilesFd { helper }))
}

/// Run the FUSE session on `fuse` once it is mounted, until it is unmounted (the job's mount
/// namespace is gone) or the helper gave up before mounting it.
fn serve_home_files(fuse: std::fs::File, served: std::sync::Arc<Served>) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let Ok(fd) = fuse.try_clone() else { return };
        match fuser::Session::from_fd(
            HomeFiles(served.clone()),
            std::os::fd::OwnedFd::from(fd),
            fuser::SessionACL::Owner,
            fuser::Config::default(),
        ) {
            Ok(session) => {
                let _ = session.run();
                return;
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM) && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}
