//! The deputy: starts the command at home as its child, then follows it wherever it goes.
//! At home the process uses our stdio directly; away, its output arrives as frames and our
//! stdin and signals go to it as frames. The home copy is ended only once the node confirmed
//! that the restored copy runs.

use std::ffi::OsString;
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use mrun_core::supervise;
use mrun_core::sys::signals::Received;
use mrun_core::transfer::{self, DumpEvent, Restoring};
use mrun_core::wire::{Control, Ended, Frame};
use nix::sys::signal::{kill, SigSet};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use mrun_core::engine::Refusal;
use mrun_core::feed::{stdin_pieces, Feed, STDIN_WINDOW};

use super::control::{self, JobSocket, Refused, Request};
use super::link::Link;
use super::stdin::StdinRelay;
use super::terminal::HomeTerminal;
use super::usage::{cpu_seconds, cpu_wanted_seconds, touched_bytes};

// One Place per job, moved only when the job moves: its size costs nothing, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Place {
    /// `child` is the command itself, or the restore helper supervising it after a return;
    /// `pid` is the process to checkpoint. After a return its stdin may be a pipe we `feed`
    /// (from our stdin, after the input it had not read yet where it was).
    Home {
        child: tokio::process::Child,
        pid: i32,
        feed: Feed,
    },
    Away {
        link: Link,
    },
}

/// `pinned_home`: the balancer leaves the job at home. `balanced`: the balancer may move it
/// (nodes are configured and balancing is on), so wake the daemon once the job is old enough.
/// `kept_fds`: inherited descriptors (close-on-exec here) the job gets (`--keep-fd`).
pub fn run(command: Vec<OsString>, pinned_home: bool, balanced: bool, kept_fds: Vec<i32>) -> ! {
    // Signals to pass on are blocked (before any thread starts, so all inherit the mask; every
    // process we start gets an empty mask again) and read from a signalfd by the runtime.
    // SIGTSTP is left to its default: a terminal's ^Z stops mrun together with the job in its
    // process group, so the shell gets the terminal back and `fg` continues both.
    let mut set = SigSet::empty();
    for s in supervise::FORWARDED
        .into_iter()
        .filter(|s| *s != nix::sys::signal::Signal::SIGTSTP)
    {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        crate::exit::fail("mrun", format!("cannot block signals: {e}"), 1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| crate::exit::fail("mrun", format!("cannot start: {e}"), 1));
    let ended = runtime.block_on(async {
        let sig_rx = mrun_core::sys::signals::AsyncSignals::new(&set)
            .unwrap_or_else(|e| crate::exit::fail("mrun", format!("cannot watch signals: {e}"), 1));
        let mut output = Output::new();
        let ended = deputy(
            command,
            pinned_home,
            balanced,
            kept_fds,
            sig_rx,
            &mut output,
        )
        .await;
        // Output relayed from a node is all written before we end like the job.
        output.flush().await;
        ended
    });
    match ended {
        Ok(ended) => supervise::end_like(ended),
        Err(e) => crate::exit::fail("mrun", format!("{e:#}"), 1),
    }
}

/// What the deputy tells `mrunctl status` about its job.
struct JobMeta {
    job: u32,
    command: String,
    started_unix: u64,
    last_problem: Option<String>,
    pinned_home: bool,
    /// When the job arrived where it is (its start if it never moved).
    arrived_unix_ms: u64,
    /// Touched memory at the last move (away, it cannot be read from here).
    bytes_at_move: u64,
    /// How many times the job moved (the balancer's stay rule applies only after a move).
    moves: u32,
    /// The last sample at home (when, seconds run or waiting to run) and the demand it gave.
    cpu_sample: std::cell::Cell<Option<(std::time::Instant, f64, f64)>>,
    /// Inherited descriptors passed on to the job (`--keep-fd`); we hold them too.
    kept_fds: Vec<i32>,
    /// CPU seconds the job used where it ran before its last move (home and nodes).
    cpu_before: std::cell::Cell<f64>,
    /// The last forecast of a checkpoint's refusal at home, and until when it holds.
    forecast: std::cell::RefCell<Option<(std::time::Instant, Option<Refusal>)>>,
    /// A refusal a real checkpoint met (the forecast may miss some): it keeps the job at home
    /// until its time to try again.
    refused: Option<(Refusal, Retry)>,
    /// Nodes where a move of the job failed (the node could not restore it, its agent or the
    /// connection died), each left alone by the balancer until its time to try again.
    failed_on: std::collections::BTreeMap<String, Retry>,
}

/// When the balancer may try a move again that failed or was refused (the job may have let go
/// of what kept it; the node may have been mended).
#[derive(Clone, Copy)]
struct Retry {
    at: std::time::SystemTime,
    /// How long it waits this time: each failure in a row doubles it.
    backoff: std::time::Duration,
}

impl Retry {
    /// After `last` (the retry of the previous failure, if the one before failed too).
    fn after(last: Option<&Retry>) -> Retry {
        let backoff = match last {
            Some(r) => (r.backoff * 2).min(REFUSED_BACKOFF.1),
            None => REFUSED_BACKOFF.0,
        };
        Retry {
            at: std::time::SystemTime::now() + backoff,
            backoff,
        }
    }

    fn due(&self) -> bool {
        std::time::SystemTime::now() >= self.at
    }
}

/// The first wait after a refused or failed move, and the longest.
const REFUSED_BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(30),
    std::time::Duration::from_secs(600),
);

/// How long a forecast holds at least: every `info` asks (the balancer and `mrun --each` each
/// second).
const FORECAST_FOR: std::time::Duration = std::time::Duration::from_millis(900);
/// ...and at least this many times what it took: a job of thousands of sockets (0.55 s to
/// forecast with 4,000 here) costs its deputy at most 5% of a CPU.
const FORECAST_COST_SHARE: u32 = 20;

/// A move refused because of what the job holds: it stays at home, untouched.
#[derive(Debug)]
/// The engine refuses to carry the job (predicted from /proc or met in a checkpoint): a
/// refusal (exit 3 for `mrunctl migrate`), remembered so the balancer does not retry.
pub(super) struct StaysHome(Refusal);

impl std::fmt::Display for StaysHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; the job stays at home", self.0)
    }
}

impl std::error::Error for StaysHome {}

impl JobMeta {
    fn info(&self, place: &Place) -> crate::jobs::JobInfo {
        // The total, wherever it ran: what it used before its last move, plus here.
        let before = self.cpu_before.get();
        let (cpu, cpu_demand) = match place {
            Place::Home { pid, .. } => (
                cpu_seconds(*pid).map(|c| before + c),
                cpu_wanted_seconds(*pid).map(|c| self.cpu_demand(c)),
            ),
            Place::Away { link } => (Some(before + link.cpu_seconds), None),
        };
        let shared_fds = self.shared_fds(place);
        let stays_home = self.stays_home(place, &shared_fds);
        crate::jobs::JobInfo {
            job: self.job,
            pid: self.job,
            command: self.command.clone(),
            place: place_name(place),
            state: "running".into(),
            started_unix: self.started_unix,
            cpu_seconds: cpu,
            last_problem: self.last_problem.clone(),
            deputy: std::process::id(),
            pinned_home: self.pinned_home,
            nodes: crate::nodes::named_by_command(),
            arrived_unix_ms: self.arrived_unix_ms,
            moves: self.moves,
            bytes: self.bytes(place),
            cpu_demand,
            cannot_move: stays_home.as_ref().map(|(why, _)| why.clone()),
            stays_home: stays_home.map(|(_, brief)| brief),
            shared_fds,
            failed_on: self.nodes_failed_lately(),
        }
    }

    /// The kept descriptors the job still holds that a process outside it shares (at home;
    /// away it holds none: it could not have moved with one).
    fn shared_fds(&self, place: &Place) -> Vec<crate::fds::SharedFd> {
        match place {
            Place::Home { pid, .. } => crate::fds::shared_with_outside(*pid, &self.kept_fds),
            Place::Away { .. } => Vec::new(),
        }
    }

    /// Why the job cannot leave home now, if it cannot: a sentence and a few words. What it
    /// shares through a kept descriptor; else (unless started `--home`, which never moves
    /// anyway) what a checkpoint would refuse as /proc tells, or a refusal a real attempt
    /// met, until its time to try again.
    fn stays_home(
        &self,
        place: &Place,
        shared: &[crate::fds::SharedFd],
    ) -> Option<(String, String)> {
        let Place::Home { pid, .. } = place else {
            return None;
        };
        if let Some(first) = shared.first() {
            return Some((
                crate::fds::cannot_move(shared),
                format!("holds {} passed on by --keep-fd", first.what),
            ));
        }
        if self.pinned_home {
            return None;
        }
        if let Some(r) = self.forecast(*pid) {
            return Some((format!("the job cannot move: {r}"), r.brief()));
        }
        let (refusal, retry) = self.refused.as_ref()?;
        (!retry.due()).then(|| {
            (
                format!(
                    "the job cannot move: {refusal}; the balancer tries again at {}",
                    crate::log::iso8601(retry.at)
                ),
                refusal.brief(),
            )
        })
    }

    /// What a checkpoint of the job at home would refuse, read from /proc (the job runs on).
    fn forecast(&self, pid: i32) -> Option<Refusal> {
        let mut last = self.forecast.borrow_mut();
        let now = std::time::Instant::now();
        if let Some((_, r)) = last.as_ref().filter(|(until, _)| now < *until) {
            return r.clone();
        }
        let r = mrun_core::engine::predict_refusal(Pid::from_raw(pid), Some(nix::unistd::getpid()));
        let took = now.elapsed();
        *last = Some((
            now + FORECAST_FOR.max(took * FORECAST_COST_SHARE),
            r.clone(),
        ));
        r
    }

    /// A real attempt was refused: keep the job home, and try again only after a while, twice
    /// as long as last time if the last attempt was refused too.
    fn remember(&mut self, refusal: Refusal) {
        let retry = Retry::after(self.refused.as_ref().map(|(_, r)| r));
        self.forecast.replace(None);
        self.refused = Some((refusal, retry));
    }

    /// A move to `node` failed there: the balancer leaves that node alone for a while, twice
    /// as long as last time if the last move there failed too.
    fn failed_on(&mut self, node: &str) {
        let retry = Retry::after(self.failed_on.get(node));
        self.failed_on.insert(node.to_string(), retry);
    }

    /// The nodes a move failed on whose time to try again has not come.
    fn nodes_failed_lately(&self) -> Vec<String> {
        self.failed_on
            .iter()
            .filter(|(_, r)| !r.due())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Touched memory: measured at home; away, what it was at the last move.
    fn bytes(&self, place: &Place) -> u64 {
        match place {
            Place::Home { pid, .. } => touched_bytes(*pid),
            Place::Away { .. } => self.bytes_at_move,
        }
    }

    /// The fraction of the time the job ran or waited to run since the previous sample (at
    /// least 300 ms back; a sooner asker gets the last figure), or since arrival for the first.
    /// Its threads add up, so a job with two busy threads reads 2 and counts as fully busy (1).
    fn cpu_demand(&self, cpu_now: f64) -> f64 {
        let now = std::time::Instant::now();
        let share = match self.cpu_sample.get() {
            Some((at, _, share)) if now.duration_since(at).as_secs_f64() < 0.3 => return share,
            Some((at, cpu, _)) => (cpu_now - cpu) / now.duration_since(at).as_secs_f64(),
            None => {
                cpu_now / (now_ms().saturating_sub(self.arrived_unix_ms) as f64 / 1000.0).max(0.01)
            }
        };
        let share = share.clamp(0.0, 1.0);
        self.cpu_sample.set(Some((now, cpu_now, share)));
        share
    }

    /// The job arrived somewhere new: its CPU use starts over.
    fn arrived_now(&mut self, bytes: u64) {
        self.arrived_unix_ms = now_ms();
        self.moves += 1;
        self.bytes_at_move = bytes;
        self.cpu_sample.set(None);
    }
}

fn now_ms() -> u64 {
    crate::jobs::unix_now().as_millis() as u64
}

/// What the output thread is asked to do.
enum OutputWork {
    Write(i32, bytes::Bytes),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where the job's output goes while it runs away: our stdout and stderr, written by a thread
/// of its own (a consumer that reads slowly makes it wait, not the deputy), through a short
/// queue: when it is full the deputy stops reading from the node, so the node's agent stops
/// reading the job's output and the job waits, as it would writing to a slow pipe at home.
/// The thread starts with the first output from a node: a job that never leaves home writes
/// to our stdio itself, and costs none.
struct Output {
    /// The writing thread's queue, once started.
    queue: Option<mpsc::Sender<OutputWork>>,
    /// What the thread tells when the reader of our stdout or stderr went away; held here
    /// until the thread starts.
    gone_tx: Option<mpsc::Sender<()>>,
    /// A chunk that did not fit in the queue yet; nothing more is read from the node meanwhile.
    held: Option<OutputWork>,
    /// Told when the reader of our stdout or stderr went away (a closed pipe); the deputy
    /// takes it to wait on it among its other events.
    reader_gone: Option<mpsc::Receiver<()>>,
}

impl Output {
    fn new() -> Output {
        let (gone_tx, reader_gone) = mpsc::channel(1);
        Output {
            queue: None,
            gone_tx: Some(gone_tx),
            held: None,
            reader_gone: Some(reader_gone),
        }
    }

    /// Start the writing thread unless it runs already. Called before the job first leaves,
    /// so that a machine that cannot start one more thread keeps the job at home.
    fn start(&mut self) -> std::io::Result<()> {
        self.queue().map(|_| ())
    }

    /// The writing thread's queue, the thread started on first use.
    fn queue(&mut self) -> std::io::Result<&mpsc::Sender<OutputWork>> {
        if self.queue.is_none() {
            let (queue, work) = mpsc::channel::<OutputWork>(8);
            Output::spawn_writer(work, self.gone_tx.clone())?;
            self.gone_tx = None;
            self.queue = Some(queue);
        }
        self.queue.as_ref().ok_or_else(Output::closed)
    }

    fn spawn_writer(
        mut work: mpsc::Receiver<OutputWork>,
        gone_tx: Option<mpsc::Sender<()>>,
    ) -> std::io::Result<()> {
        let writer = std::thread::Builder::new().name("mrun-output".into());
        writer.spawn(move || {
            // Our descriptors whose reader went away: what the job writes there is dropped.
            let mut gone: Vec<i32> = Vec::new();
            while let Some(w) = work.blocking_recv() {
                match w {
                    OutputWork::Write(fd, _) if gone.contains(&fd) => {}
                    // Our stdio descriptors were shared with the job at home, which may have
                    // left them non-blocking (xz does): write_all waits on a full pipe.
                    OutputWork::Write(fd, b) => match mrun_core::sys::fdio::write_all(fd, &b) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            gone.push(fd);
                            if let Some(tx) = &gone_tx {
                                let _ = tx.try_send(());
                            }
                        }
                        // The queue closes: the deputy sees it at its next write.
                        Err(_) => return,
                    },
                    OutputWork::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(())
    }

    fn closed() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "cannot write the job's output any more",
        )
    }

    /// Queue output without waiting; if the queue is full it is held until `unhold`.
    fn offer(&mut self, fd: i32, b: bytes::Bytes) -> std::io::Result<()> {
        match self.queue()?.try_send(OutputWork::Write(fd, b)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(w)) => {
                self.held = Some(w);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Output::closed()),
        }
    }

    /// Whether more output can be taken from the node now.
    fn has_room(&self) -> bool {
        self.held.is_none()
    }

    /// Wait until the held chunk is queued (pending forever when none is). Cancel-safe.
    async fn unhold(&mut self) -> std::io::Result<()> {
        // A chunk is held only once the queue exists (it was full).
        let (Some(_), Some(queue)) = (&self.held, &self.queue) else {
            return std::future::pending().await;
        };
        let permit = queue.reserve().await.map_err(|_| Output::closed())?;
        if let Some(w) = self.held.take() {
            permit.send(w);
        }
        Ok(())
    }

    async fn put(&mut self, work: OutputWork) -> std::io::Result<()> {
        if let Some(w) = self.held.take() {
            self.queue()?.send(w).await.map_err(|_| Output::closed())?;
        }
        self.queue()?.send(work).await.map_err(|_| Output::closed())
    }

    async fn stdout(&mut self, b: bytes::Bytes) -> std::io::Result<()> {
        self.put(OutputWork::Write(1, b)).await
    }

    async fn stderr(&mut self, b: bytes::Bytes) -> std::io::Result<()> {
        self.put(OutputWork::Write(2, b)).await
    }

    /// Wait until everything queued was written (before the job writes to our stdio itself,
    /// and before we end).
    async fn flush(&mut self) {
        if self.queue.is_none() {
            // Nothing was ever queued: the job never ran away.
            return;
        }
        let (done, written) = tokio::sync::oneshot::channel();
        if self.put(OutputWork::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Pending until a write of [`Output`] found the reader of our stdout or stderr gone.
/// Cancel-safe.
async fn reader_gone(told: &mut Option<mpsc::Receiver<()>>) {
    if let Some(rx) = told.as_mut() {
        if rx.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// What woke the deputy up.
enum Event {
    Ended(Ended),
    Signal(Received),
    Request(Request, tokio::net::UnixStream),
    Output(Frame),
    Lost(String),
    Stdin(Option<bytes::Bytes>),
    /// The reader of our stdout or stderr went away while the job ran on a node.
    ReaderGone,
}

async fn deputy(
    command: Vec<OsString>,
    pinned_home: bool,
    balanced: bool,
    kept_fds: Vec<i32>,
    mut signals: mrun_core::sys::signals::AsyncSignals,
    output: &mut Output,
) -> Result<Ended> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given")
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    mrun_core::sys::process::unblock_signals_in_child(&mut cmd);
    mrun_core::sys::process::keep_fds_in_child(&mut cmd, &kept_fds);
    let child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            // As a shell says it (127 and 126 as a shell exits), without the errno's number.
            let (code, why) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "command not found".to_string()),
                std::io::ErrorKind::PermissionDenied => (126, "permission denied".to_string()),
                _ => (126, e.to_string()),
            };
            crate::errln!("mrun: cannot run {}: {why}", program.to_string_lossy());
            return Ok(Ended::Exited(code));
        }
    };
    let job = child.id().unwrap_or(0);
    let mut meta = JobMeta {
        job,
        command: command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        started_unix: crate::jobs::unix_now().as_secs(),
        last_problem: None,
        pinned_home,
        arrived_unix_ms: now_ms(),
        bytes_at_move: 0,
        moves: 0,
        cpu_sample: std::cell::Cell::new(None),
        kept_fds,
        cpu_before: std::cell::Cell::new(0.0),
        forecast: std::cell::RefCell::new(None),
        refused: None,
        failed_on: Default::default(),
    };
    // Said once, in the log: the job holds what keeps it here (`mrunctl status` shows it as
    // long as it does; a move asked for meanwhile is refused with the same sentence).
    let held = crate::fds::shared_with_outside(job as i32, &meta.kept_fds);
    if !held.is_empty() {
        crate::log::line(&format!(
            "job {job} ({}): {}",
            meta.command,
            crate::fds::cannot_move(&held)
        ));
    }
    let mut socket = JobSocket::bind(job).ok();
    if balanced {
        tokio::spawn(wake_balancer(job));
    }
    let (stdin_relay, mut stdin_rx) = StdinRelay::start();
    let mut terminal = HomeTerminal::detect();
    let mut stdin_open = true;
    let mut place = Place::Home {
        child,
        pid: job as i32,
        feed: Feed::default(),
    };
    // Input sent to the node and not yet reported taken by the job's stdin (at most
    // STDIN_WINDOW: the rest waits in our own stdin).
    let mut in_flight: u64 = 0;
    let mut gone = output.reader_gone.take();
    loop {
        let event = match &mut place {
            Place::Home { child, feed, .. } => tokio::select! {
                status = child.wait() => Event::Ended(Ended::from(status.context("waiting for the command")?)),
                Ok(sig) = signals.recv() => Event::Signal(sig),
                chunk = stdin_rx.recv(), if stdin_open && feed.is_open() && (feed.queued() as u64) < STDIN_WINDOW => Event::Stdin(chunk.flatten()),
                _ = feed.progress(), if feed.busy() => continue,
                (r, s) = next_request(&mut socket) => Event::Request(r, s),
                // Output relayed before the job came home: it writes to our stdio itself now.
                () = reader_gone(&mut gone) => continue,
            },
            Place::Away { link } if link.ended.is_some() => match link.ended.take() {
                Some(ended) => Event::Ended(ended),
                None => continue,
            },
            Place::Away { link } => tokio::select! {
                held = output.unhold() => { held?; continue }
                () = reader_gone(&mut gone) => Event::ReaderGone,
                frame = link.rx.next(), if output.has_room() => match frame {
                    Some(Ok(Frame::Control(Control::Exited(ended)))) => Event::Ended(ended),
                    Some(Ok(f)) => Event::Output(f),
                    Some(Err(e)) => Event::Lost(format!(": {e}")),
                    None => Event::Lost(String::new()),
                },
                Ok(sig) = signals.recv() => Event::Signal(sig),
                chunk = stdin_rx.recv(), if stdin_open && in_flight < STDIN_WINDOW => Event::Stdin(chunk.flatten()),
                (r, s) = next_request(&mut socket) => Event::Request(r, s),
            },
        };
        match event {
            Event::Ended(ended) => {
                terminal.home();
                return Ok(ended);
            }
            Event::Signal(sig) => match &mut place {
                // A terminal's signals reached the process already (same process group).
                Place::Home { child, pid, .. } => {
                    if sig.from_process {
                        signal_home(child, *pid, sig.signal);
                    }
                }
                Place::Away { link } => {
                    if sig.signal == nix::sys::signal::Signal::SIGCONT {
                        // `fg` after a ^Z: the terminal is the job's again (raw, keys to the
                        // node). After `bg` it is not ours: leave it alone.
                        terminal.resume_if_foreground();
                    }
                    let size = (sig.signal == nix::sys::signal::Signal::SIGWINCH)
                        .then(|| terminal.size())
                        .flatten();
                    let control = match size {
                        // The node's pty tells the job itself, as a terminal would.
                        Some(size) => Control::Resize(size),
                        None => Control::Signal {
                            signo: sig.signal as i32,
                        },
                    };
                    if let Err(e) = link.tx.send(Frame::Control(control)).await {
                        return Ok(job_lost(&mut terminal, &place, &format!(": {e}")));
                    }
                }
            },
            Event::Output(frame) => match frame {
                Frame::Stdout(b) => output.offer(1, b)?,
                Frame::Stderr(b) => output.offer(2, b)?,
                Frame::Control(Control::StdinRead { bytes }) => {
                    in_flight = in_flight.saturating_sub(bytes)
                }
                Frame::Control(Control::Usage { cpu_seconds }) => {
                    if let Place::Away { link } = &mut place {
                        link.cpu_seconds = cpu_seconds;
                    }
                }
                Frame::Control(Control::Error { message }) => {
                    crate::errln!("mrun: {}: {message}", describe(&place))
                }
                Frame::Control(Control::Stopped) => {
                    // A ^Z reached the job's pty on the node. Stop like a job stopped at home
                    // would, so the shell takes the terminal back (in its modes); the shell's
                    // SIGCONT wakes us and goes on to the job.
                    if terminal.present() {
                        terminal.home();
                        let _ = kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTSTP);
                    }
                }
                // What is left of an image the node had started to send for a move that then
                // failed on the other side: nothing to do with it.
                Frame::Image(_) | Frame::Control(Control::ImageEnd) => {}
                other => crate::errln!(
                    "mrun: unexpected message from {}: {}",
                    describe(&place),
                    other.kind()
                ),
            },
            Event::Lost(why) => return Ok(job_lost(&mut terminal, &place, &why)),
            Event::ReaderGone => {
                // At home the job's own write would have raised SIGPIPE (it ends it, as it
                // ends `yes | head -1`, unless the job ignores it): so it does on the node.
                if let Place::Away { link } = &mut place {
                    let signo = nix::sys::signal::Signal::SIGPIPE as i32;
                    if let Err(e) = link
                        .tx
                        .send(Frame::Control(Control::Signal { signo }))
                        .await
                    {
                        return Ok(job_lost(&mut terminal, &place, &format!(": {e}")));
                    }
                }
            }
            Event::Stdin(chunk) => {
                if let Place::Home { feed, .. } = &mut place {
                    match chunk {
                        Some(b) => feed.push(b),
                        None => {
                            stdin_open = false;
                            feed.end();
                        }
                    }
                } else if let Place::Away { link } = &mut place {
                    let frame = match chunk {
                        Some(b) => {
                            in_flight += b.len() as u64;
                            Frame::Stdin(b)
                        }
                        None => {
                            stdin_open = false;
                            Frame::Control(Control::StdinEof)
                        }
                    };
                    if let Err(e) = link.tx.send(frame).await {
                        return Ok(job_lost(&mut terminal, &place, &format!(": {e}")));
                    }
                }
            }
            Event::Request(req, stream) => {
                let req_target = match &req {
                    Request::Migrate(node) => Some(node.clone()),
                    _ => None,
                };
                let is_move = req_target.is_some();
                // What a move carries, read before it (once away, it cannot be read from here).
                let before = is_move.then(|| (place_name(&place), meta.bytes(&place)));
                let (next, answer) = handle(
                    req,
                    place,
                    &meta,
                    &stdin_relay,
                    stdin_open,
                    &mut terminal,
                    output,
                )
                .await;
                place = next;
                if let Some((_, bytes)) = before.filter(|(from, _)| *from != place_name(&place)) {
                    meta.arrived_now(bytes);
                    // A new session: its agent has none of our input yet.
                    in_flight = 0;
                }
                match &answer {
                    Ok(text) if is_move => {
                        crate::log::line(&format!("job {job} ({}): {text}", meta.command))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(StaysHome(refusal)) = e.downcast_ref::<StaysHome>() {
                            meta.remember(refusal.clone());
                        } else if let Some(node) = failed_there(&req_target) {
                            meta.failed_on(node);
                        }
                        let why = format!("{e:#}");
                        crate::log::line(&format!(
                            "job {job} ({}): migration failed: {why}",
                            meta.command
                        ));
                        meta.last_problem = Some(why);
                    }
                }
                control::answer(stream, answer).await;
            }
        }
    }
}

/// The node a failed move was going to (it could not restore the job or would not take it,
/// its agent or the connection died): the balancer leaves it alone for a while.
fn failed_there(target: &Option<String>) -> Option<&str> {
    target.as_deref().filter(|n| *n != "home")
}

/// Once the job is old enough to be worth moving, make sure the daemon (whose balancer finds
/// jobs by their sockets) runs, and knows the nodes this job may use. Jobs that end sooner
/// never touch the daemon.
async fn wake_balancer(job: u32) {
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    if let Err(e) = crate::daemon::ensure_running(Some(job)).await {
        crate::log::line(&format!("cannot start the daemon for balancing: {e:#}"));
    }
}

/// The connection to the job's node is gone, and the job with it (its agent ends it when home
/// goes away): say so, and end like a lost ssh session (255).
fn job_lost(terminal: &mut HomeTerminal, place: &Place, why: &str) -> Ended {
    terminal.home();
    crate::errln!(
        "mrun: lost the connection to node {} while the job ran there{why}; the job is lost",
        describe(place)
    );
    Ended::Exited(255)
}

async fn next_request(socket: &mut Option<JobSocket>) -> (Request, tokio::net::UnixStream) {
    if let Some(s) = socket.as_mut() {
        if let Some(req) = s.next().await {
            return req;
        }
    }
    std::future::pending().await
}

/// Carry out a request; the job's new place (unchanged on failure) and the answer.
async fn handle(
    req: Request,
    place: Place,
    meta: &JobMeta,
    stdin: &StdinRelay,
    stdin_open: bool,
    terminal: &mut HomeTerminal,
    output: &mut Output,
) -> (Place, Result<String>) {
    let job = meta.job;
    let target = match req {
        Request::Where => {
            let text = describe(&place);
            return (place, Ok(text));
        }
        Request::Info => {
            let info = meta.info(&place);
            return (
                place,
                serde_json::to_string(&info).map_err(anyhow::Error::from),
            );
        }
        Request::Signal(sig) => {
            let mut place = place;
            let sent = signal(&mut place, sig).await;
            return (place, sent);
        }
        Request::Migrate(node) => node,
    };
    match place {
        Place::Home { .. } if target == "home" => (place, Ok("the job is already at home".into())),
        Place::Home {
            child,
            pid,
            mut feed,
        } => {
            // Refused before anything is touched: what the job shares with a process outside
            // it cannot go with it.
            let held = crate::fds::shared_with_outside(pid, &meta.kept_fds);
            if !held.is_empty() {
                let why = crate::fds::cannot_move(&held);
                return (
                    Place::Home { child, pid, feed },
                    Err(Refused(format!("{why}; the job stays at home")).into()),
                );
            }
            // What /proc already tells the engine would refuse (the forecast the balancer just
            // read, not made again): no node is bothered.
            if let Some(refusal) = meta.forecast(pid) {
                return (
                    Place::Home { child, pid, feed },
                    Err(anyhow::Error::new(StaysHome(refusal))),
                );
            }
            // The threads that relay its input and output once it is away start now, while
            // failing to start one still leaves the job untouched at home.
            if let Err(e) = stdin.start_reader().and_then(|()| output.start()) {
                return (
                    Place::Home { child, pid, feed },
                    Err(anyhow!(e).context(
                        "cannot start the threads that relay the job's input and output; the \
                         job stays at home",
                    )),
                );
            }
            match move_away(pid, job, &target, terminal.describe()).await {
                Ok((mut link, cpu_here)) => {
                    meta.cpu_before.set(meta.cpu_before.get() + cpu_here);
                    // After what waited in its pipe (sent by move_away): what waited for it.
                    for piece in stdin_pieces(feed.take_queued()) {
                        let _ = link.tx.send(Frame::Stdin(piece)).await;
                    }
                    if !stdin_open {
                        let _ = link.tx.send(Frame::Control(Control::StdinEof)).await;
                    }
                    terminal.away();
                    stdin.set_away(true);
                    // The home copy was killed; tokio reaps it.
                    drop((child, feed));
                    (
                        Place::Away { link },
                        Ok(format!("job {job} now runs on {target}")),
                    )
                }
                Err(e) => (Place::Home { child, pid, feed }, Err(e)),
            }
        }
        Place::Away { link } if link.node == target => (
            Place::Away { link },
            Ok(format!("the job already runs on {target}")),
        ),
        Place::Away { mut link } if target == "home" => {
            // A terminal is the job's own again; any other input keeps coming through us,
            // after what it had not read on the node.
            let (stdin_cfg, feed) = if terminal.present() {
                stdin.set_away(false);
                (Stdio::inherit(), false)
            } else {
                // Fed by us even when our input ended: what it had not read comes first.
                (Stdio::piped(), true)
            };
            match move_home(&mut link, stdin_cfg, feed, stdin_open, output).await {
                Ok((child, pid, feed)) => {
                    terminal.home();
                    meta.cpu_before
                        .set(meta.cpu_before.get() + link.cpu_seconds);
                    link.finish().await;
                    (
                        Place::Home { child, pid, feed },
                        Ok(format!("job {job} is back home")),
                    )
                }
                Err(e) => {
                    stdin.set_away(true);
                    (Place::Away { link }, Err(e))
                }
            }
        }
        Place::Away { mut link } => {
            match move_between(&mut link, job, &target, terminal.describe(), output).await {
                Ok(mut next) => {
                    if !stdin_open {
                        let _ = next.tx.send(Frame::Control(Control::StdinEof)).await;
                    }
                    meta.cpu_before
                        .set(meta.cpu_before.get() + link.cpu_seconds);
                    link.finish().await;
                    (
                        Place::Away { link: next },
                        Ok(format!("job {job} now runs on {target}")),
                    )
                }
                Err(e) => (Place::Away { link }, Err(e)),
            }
        }
    }
}

/// Pass `sig` on to the job at home (`pid`, our `child` or, after a return, the child of our
/// child the restore helper): to the command and the rest of its process group, as a terminal
/// would; after a return only to the helper, which passes it on so (the restored job shares
/// the helper's group: signalling the group too delivered it twice, and two of a signal
/// pending at once count as one).
fn signal_home(child: &tokio::process::Child, pid: i32, sig: nix::sys::signal::Signal) {
    match child.id() {
        Some(helper) if helper as i32 != pid => {
            let _ = kill(Pid::from_raw(helper as i32), sig);
        }
        _ => supervise::signal_job(Pid::from_raw(pid), sig),
    }
}

/// Deliver `sig` to the job where it runs (`mrunctl kill`). A signal that `mrun` passes on when
/// it gets it goes the same way as then (through the restore helper after a return, or the
/// node's agent and helper); any other (KILL, STOP, ALRM...) straight to the job's processes.
async fn signal(place: &mut Place, sig: nix::sys::signal::Signal) -> Result<String> {
    match place {
        Place::Home { child, pid, .. } if supervise::FORWARDED.contains(&sig) => {
            signal_home(child, *pid, sig);
            Ok(format!("{sig} sent to the job at home"))
        }
        Place::Home { pid, .. } => {
            supervise::signal_job(Pid::from_raw(*pid), sig);
            Ok(format!("{sig} sent to the job at home"))
        }
        Place::Away { link } => {
            let signo = sig as i32;
            link.tx
                .send(Frame::Control(Control::Signal { signo }))
                .await
                .with_context(|| format!("cannot reach node {}", link.node))?;
            Ok(format!("{sig} sent to the job on {}", link.node))
        }
    }
}

/// A move failed after the node handed back the input its copy had not read: that copy runs
/// on, so the input goes back to it (its pipe was emptied, so it lands in front again).
async fn give_back(link: &mut Link, unread: Vec<u8>) {
    for piece in stdin_pieces(unread) {
        let _ = link.tx.send(Frame::Stdin(piece)).await;
    }
}

/// `home`, or the node's name.
fn place_name(place: &Place) -> String {
    match place {
        Place::Home { .. } => "home".to_string(),
        Place::Away { link } => link.node.clone(),
    }
}

fn describe(place: &Place) -> String {
    match place {
        Place::Home { pid, .. } => format!("home (pid {pid})"),
        Place::Away { link } => link.node.clone(),
    }
}

/// Move the job from `from`'s node straight to `node`; `from` keeps it if anything fails.
async fn move_between(
    from: &mut Link,
    job: u32,
    node: &str,
    term: Option<mrun_core::wire::Terminal>,
    output: &mut Output,
) -> Result<Link> {
    let mut to = Link::connect(node).await?;
    // The files it used when it left home: what it opened since is home's anyway where home's
    // files are served, and the node's own where they are shared.
    to.files_seen = from.files_seen.clone();
    to.tx
        .send(Frame::Control(Control::Restore {
            job: job as u64,
            stdin: true,
            terminal: term,
            files: to.files_seen.clone(),
            home_boot: mrun_core::resource::boot_id(),
        }))
        .await?;
    // Nothing is frozen until the node says it takes the job.
    if let Err(e) = to.ready().await {
        return Err(stays(e, &from.node));
    }
    from.tx.send(Frame::Control(Control::Checkpoint)).await?;
    let mut unread = Vec::new();
    let relayed = async {
        loop {
            match from.rx.next().await {
                Some(Ok(Frame::Stdin(b))) => unread.extend_from_slice(&b),
                Some(Ok(Frame::Stdout(b))) => output.stdout(b).await?,
                Some(Ok(Frame::Stderr(b))) => output.stderr(b).await?,
                Some(Ok(Frame::Control(Control::StdinRead { .. }))) => {}
                Some(Ok(Frame::Control(Control::Usage { cpu_seconds }))) => {
                    from.cpu_seconds = cpu_seconds
                }
                Some(Ok(Frame::Image(c))) => to.send_watching(Frame::Image(c)).await?,
                Some(Ok(Frame::Control(Control::ImageEnd))) => break,
                Some(Ok(Frame::Control(Control::Refused { message }))) => {
                    return Err(Refused(message).into())
                }
                Some(Ok(Frame::Control(Control::Error { message }))) => bail!("{message}"),
                Some(Ok(Frame::Control(Control::Exited(ended)))) => {
                    from.ended = Some(ended);
                    bail!("the job ended on {} before it could move", from.node)
                }
                Some(Ok(other)) => {
                    bail!("unexpected message from {}: {}", from.node, other.kind())
                }
                Some(Err(e)) => {
                    return Err(anyhow!(e))
                        .context(format!("the connection to {} failed", from.node))
                }
                None => bail!("the agent on {} went away during the checkpoint", from.node),
            }
        }
        to.tx.send(Frame::Control(Control::ImageEnd)).await?;
        expect_answer(&mut to, node, is_running, "before confirming").await
    }
    .await;
    match relayed {
        Ok(()) => {
            // The job runs on `to` now: failed sends past this point cannot undo that (the old
            // agent ends its frozen copy when it loses home; a dead `to` is seen next).
            let _ = from.tx.send(Frame::Control(Control::Commit)).await;
            for piece in stdin_pieces(unread) {
                let _ = to.tx.send(Frame::Stdin(piece)).await;
            }
            Ok(to)
        }
        Err(e) => {
            let _ = from.tx.send(Frame::Control(Control::Abort)).await;
            give_back(from, unread).await;
            Err(e.context(format!("the job stays on {}", from.node)))
        }
    }
}

/// Waits for the agent's next answer, which must be `wanted`: its `Error`, anything else,
/// a failed connection or its end say what happened instead (`waiting`: when, e.g. "during
/// pre-copy").
async fn expect_answer(
    link: &mut Link,
    node: &str,
    wanted: fn(&Control) -> bool,
    waiting: &str,
) -> Result<()> {
    match link.rx.next().await {
        Some(Ok(Frame::Control(c))) if wanted(&c) => Ok(()),
        Some(Ok(Frame::Control(Control::Error { message }))) => bail!("{message}"),
        Some(Ok(other)) => bail!("the agent on {node} answered {} {waiting}", other.kind()),
        Some(Err(e)) => Err(anyhow!(e)).context(format!("the connection to {node} failed")),
        None => bail!("the agent on {node} went away {waiting}"),
    }
}

fn is_running(c: &Control) -> bool {
    matches!(c, Control::Running { .. })
}

/// The answer of a move from home that failed, with what that means for the job.
fn stays_at_home(e: anyhow::Error) -> anyhow::Error {
    anyhow!("{e:#}; the job stays at home")
}

/// Checkpoint the home process `pid` into the agent of `node`; end it once the restored copy
/// runs there, with the CPU seconds it used at home. On any failure it keeps running at home,
/// untouched.
async fn move_away(
    pid: i32,
    job: u32,
    node: &str,
    terminal: Option<mrun_core::wire::Terminal>,
) -> Result<(Link, f64)> {
    let mut trace = mrun_core::trace::Trace::new("migrate");
    let mut link = Link::connect(node).await?;
    trace.mark("connect");
    link.files_seen = mrun_core::files::seen::used_by(Pid::from_raw(pid));
    link.tx
        .send(Frame::Control(Control::Restore {
            job: job as u64,
            stdin: true,
            terminal,
            files: link.files_seen.clone(),
            home_boot: mrun_core::resource::boot_id(),
        }))
        .await?;
    // Nothing is frozen until the node says it takes the job.
    if let Err(e) = link.ready().await {
        return Err(stays(e, "home"));
    }
    trace.mark("the node takes it (files compared)");
    let (mut events, held) = transfer::checkpoint_to_chunks(
        Pid::from_raw(pid),
        mrun_core::engine::DumpOptions {
            share_stdio_with: Some(nix::unistd::getpid()),
            // MRUN_PRECOPY=0: always stop-and-copy (for comparing, or a kernel that
            // misbehaves).
            precopy: std::env::var("MRUN_PRECOPY").map_or(true, |v| v != "0"),
            ..Default::default()
        },
    );
    // When the last pre-copy round reached the node: the freeze follows at once.
    let mut synced_at = None;
    let confirmed = async {
        loop {
            match events.recv().await {
                Some(DumpEvent::Chunk(c)) => link
                    .send_watching(Frame::Image(c))
                    .await
                    .context("the job stays at home")?,
                // A pre-copy round sent: the next round, or the freeze, once the node has it.
                Some(DumpEvent::SentAhead(go)) => {
                    link.tx.send(Frame::Control(Control::Sync)).await?;
                    // Everything sent before the Sync reached the node's restore.
                    expect_answer(
                        &mut link,
                        node,
                        |c| matches!(c, Control::Synced),
                        "during pre-copy",
                    )
                    .await
                    .map_err(stays_at_home)?;
                    synced_at = Some(std::time::Instant::now());
                    let _ = go.send(());
                }
                Some(DumpEvent::Done) => break,
                Some(DumpEvent::Refused(why)) => return Err(anyhow::Error::new(StaysHome(why))),
                Some(DumpEvent::Failed(why)) => bail!("{why}"),
                None => bail!("the checkpoint ended without a result"),
            }
        }
        link.tx.send(Frame::Control(Control::ImageEnd)).await?;
        expect_answer(&mut link, node, is_running, "before confirming")
            .await
            .map_err(stays_at_home)
    }
    .await;
    if let Err(e) = confirmed {
        // Answer only once the home copy runs again, untraced: a move asked for right after
        // (a retry, the balancer's next round) must find it free. A checkpoint still writing
        // its image sees the events closed and gives up.
        drop(events);
        held.resume().await;
        return Err(e);
    }
    if let Some(at) = synced_at {
        trace.mark_at("pre-copy (the job runs on)", at);
    }
    // From the freeze to here the job ran nowhere: that is the migration's downtime.
    trace.mark("downtime (freeze to running on the node)");
    // Still frozen, and the node's copy runs: what waits in its stdin pipe goes there first.
    // (Taken only now: had the move failed, it would have been lost to the home copy.)
    let unread = transfer::unread_stdin(Pid::from_raw(pid));
    // Frozen: its CPU time at home is final.
    let cpu_here = cpu_seconds(pid).unwrap_or(0.0);
    if !held.kill().await {
        bail!("the checkpoint thread is gone");
    }
    // The home copy is gone: the job lives on the node now, whatever happens next. A failed
    // send means the connection died, which the deputy sees (and reports) right after.
    for piece in stdin_pieces(unread) {
        let _ = link.tx.send(Frame::Stdin(piece)).await;
    }
    Ok((link, cpu_here))
}

/// `e`, a move's failure before anything was frozen, said with where the job stays: a
/// refusal stays one (`mrunctl migrate` exits 3).
fn stays(e: anyhow::Error, place: &str) -> anyhow::Error {
    let place = if place == "home" {
        "at home".to_string()
    } else {
        format!("on {place}")
    };
    if e.is::<Refused>() {
        Refused(format!("{e}; the job stays {place}")).into()
    } else {
        e.context(format!("the job stays {place}"))
    }
}

/// Bring the job back from `link`'s node and restore it here with our stdio.
async fn move_home(
    link: &mut Link,
    stdin_cfg: Stdio,
    feed: bool,
    stdin_open: bool,
    output: &mut Output,
) -> Result<(tokio::process::Child, i32, Feed)> {
    link.tx.send(Frame::Control(Control::Checkpoint)).await?;
    let exe = std::env::current_exe().context("finding mrun's own path")?;
    let mut job = Restoring::start(
        &exe,
        &["--restore-helper"],
        None,
        stdin_cfg,
        Stdio::inherit(),
        Stdio::inherit(),
    )?;
    let mut image = job.image.take();
    let mut unread = Vec::new();
    // The last chunk seen is held back until the image ends: it completes the image, after
    // which the restored copy may write to our stdio at once, so every byte of output of the
    // node's copy (which comes after the image's chunks) must be written before it.
    let mut last: Option<bytes::Bytes> = None;
    loop {
        let chunk = match link.rx.next().await {
            Some(Ok(Frame::Stdin(b))) => {
                unread.extend_from_slice(&b);
                None
            }
            Some(Ok(Frame::Stdout(b))) => {
                output.stdout(b).await?;
                None
            }
            Some(Ok(Frame::Stderr(b))) => {
                output.stderr(b).await?;
                None
            }
            Some(Ok(Frame::Control(Control::StdinRead { .. }))) => None,
            Some(Ok(Frame::Control(Control::Usage { cpu_seconds }))) => {
                link.cpu_seconds = cpu_seconds;
                None
            }
            Some(Ok(Frame::Image(c))) => last.replace(c),
            Some(Ok(Frame::Control(Control::ImageEnd))) => {
                output.flush().await;
                let end = last.take();
                if let (Some(w), Some(c)) = (image.as_mut(), end) {
                    let _ = w.write_all(&c).await;
                }
                break;
            }
            Some(Ok(Frame::Control(Control::Refused { message }))) => {
                let stays = format!("{message}; the job stays on {}", link.node);
                return Err(Refused(stays).into());
            }
            Some(Ok(Frame::Control(Control::Error { message }))) => bail!("{message}"),
            Some(Ok(Frame::Control(Control::Exited(ended)))) => {
                link.ended = Some(ended);
                bail!("the job ended on {} before it could move", link.node)
            }
            Some(Ok(other)) => bail!("unexpected message from {}: {}", link.node, other.kind()),
            Some(Err(e)) => {
                return Err(anyhow!(e)).context(format!("the connection to {} failed", link.node))
            }
            None => bail!("the agent on {} went away during the checkpoint", link.node),
        };
        if let (Some(w), Some(c)) = (image.as_mut(), chunk) {
            if w.write_all(&c).await.is_err() {
                image = None; // The helper gave up; its status line says why.
            }
        }
    }
    drop(image);
    match job.outcome().await {
        Ok(pid) => {
            // The job runs here now. Should Commit not get through, the node's agent loses
            // home and ends its frozen copy all the same.
            let _ = link.tx.send(Frame::Control(Control::Commit)).await;
            let mut pipe = if feed {
                Feed::child(job.child.stdin.take()).unwrap_or_default()
            } else {
                Feed::default()
            };
            for piece in stdin_pieces(unread) {
                pipe.push(piece);
            }
            if !stdin_open {
                pipe.end();
            }
            Ok((job.child, pid, pipe))
        }
        Err(why) => {
            let _ = link.tx.send(Frame::Control(Control::Abort)).await;
            give_back(link, unread).await;
            bail!(
                "restore at home failed: {why}; the job stays on {}",
                link.node
            )
        }
    }
}
