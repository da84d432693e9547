//! Moving a process between this machine and a wire session: checkpoint it into a stream of
//! image chunks (on a thread of its own, since a tracee answers only to the thread that
//! attached), and restore an incoming image through a restore helper process.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::engine;
use crate::sys::{self, Pid};

/// Size of the image chunks sent as frames.
const CHUNK: usize = 1 << 20;

/// What a checkpoint thread reports.
pub enum DumpEvent {
    Chunk(Bytes),
    /// The chunks so far were a round of pre-copy, sent while the process ran on. The next
    /// round, or the freeze, comes once the receiver answers on this sender (when the other
    /// side has them all); dropped unanswered, the process runs on untouched and the
    /// checkpoint ends.
    SentAhead(oneshot::Sender<()>),
    /// The image is complete; the process is frozen until a verdict is given.
    Done,
    /// The engine does not carry something the process holds; it runs on untouched.
    Refused(engine::Refusal),
    Failed(String),
}

/// What to do with a frozen process once its image is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It lives on elsewhere: end it.
    Kill,
    /// The move failed: let it run on.
    Resume,
}

struct ChunkWriter {
    tx: mpsc::Sender<DumpEvent>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.tx
                .blocking_send(DumpEvent::Chunk(chunk))
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the receiving side went away")
                })?;
        }
        Ok(())
    }
}

/// The checkpoint thread's frozen process, waiting for its fate. Both ways wait until the
/// thread is done with it: a process resumed is no longer traced when [`Held::resume`]
/// returns, so the next attempt to move it (a retry, the balancer's round) finds it free.
/// Dropped without a word, the thread lets the process run on by itself, a moment later.
pub struct Held {
    verdict: oneshot::Sender<Verdict>,
    /// Closed when the checkpoint thread ends.
    finished: oneshot::Receiver<()>,
}

impl Held {
    /// The move failed: let the process run on, and wait until it does.
    pub async fn resume(self) {
        self.settle(Verdict::Resume).await
    }

    /// The process lives on elsewhere: end it, and wait until it is gone. `false` if the
    /// checkpoint thread was already gone (it failed or was refused).
    pub async fn kill(self) -> bool {
        let sent = self.verdict.send(Verdict::Kill).is_ok();
        let _ = self.finished.await;
        sent
    }

    async fn settle(self, verdict: Verdict) {
        let _ = self.verdict.send(verdict);
        let _ = self.finished.await;
    }
}

/// Checkpoint `pid` on a thread of its own. Events arrive on the returned receiver; after
/// `Done`, tell the [`Held`] what becomes of the process.
pub fn checkpoint_to_chunks(
    pid: Pid,
    opts: engine::DumpOptions,
) -> (mpsc::Receiver<DumpEvent>, Held) {
    let (tx, rx) = mpsc::channel(8);
    let (vtx, vrx) = oneshot::channel();
    let (finished_tx, finished) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        // Dropped when this thread ends, whatever way: that wakes `Held`'s wait.
        let _finished = finished_tx;
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let precopied = if opts.precopy {
            let mut synced = |w: &mut ChunkWriter| {
                let (go_tx, go) = oneshot::channel();
                w.flush()?;
                let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the move was called off");
                (w.tx.blocking_send(DumpEvent::SentAhead(go_tx))).map_err(|_| gone())?;
                go.blocking_recv().map_err(|_| gone())
            };
            match engine::precopy::run(pid, &mut writer, opts.compression, &mut synced) {
                Ok(p) => p,
                // A move called off mid-rounds: the deputy no longer listens, and knows why.
                Err(e) => {
                    let e = engine::EngineError::from(e);
                    let _ = tx.blocking_send(DumpEvent::Failed(engine::error_chain(&e)));
                    return;
                }
            }
        } else {
            None
        };
        let dumped = engine::dump_precopied(pid, &mut writer, &opts, precopied).and_then(|held| {
            writer.flush().map_err(|e| engine::EngineError::Os {
                what: "sending the image".into(),
                source: e,
            })?;
            Ok(held)
        });
        match dumped {
            Ok(held) => {
                let _ = tx.blocking_send(DumpEvent::Done);
                match vrx.blocking_recv() {
                    Ok(Verdict::Kill) => {
                        let _ = held.kill();
                    }
                    _ => {
                        let _ = held.resume();
                    }
                }
            }
            Err(engine::EngineError::Refused(why)) => {
                let _ = tx.blocking_send(DumpEvent::Refused(why));
            }
            Err(e) => {
                let _ = tx.blocking_send(DumpEvent::Failed(engine::error_chain(&e)));
            }
        }
    });
    (
        rx,
        Held {
            verdict: vtx,
            finished,
        },
    )
}

/// The restore helper's descriptor for `/dev/fuse` when it gives the job home's files.
pub const HOME_FILES_FD: i32 = 5;

/// A restore helper process being fed an image.
pub struct Restoring {
    pub child: tokio::process::Child,
    /// Write the image here; drop it after the last chunk.
    pub image: Option<pipe::Sender>,
    status: BufReader<pipe::Receiver>,
    /// A verdict line read while waiting for a `precopied` one, kept for [`Self::outcome`].
    verdict: Option<String>,
}

impl Restoring {
    /// Start `exe HELPER_ARGS...` (a binary whose hidden subcommand runs
    /// [`crate::supervise::restore_helper`] on fds 3 and 4) with the given stdio.
    /// `home_files`: a `/dev/fuse` descriptor serving home's files, which the helper makes
    /// the job's root (`--home-files`, on its descriptor 5; see [`crate::files::mount`]).
    pub fn start(
        exe: &Path,
        helper_args: &[&str],
        home_files: Option<std::os::fd::BorrowedFd<'_>>,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> io::Result<Restoring> {
        let (image_r, image_w) = sys::pipe::create(1 << 20)?;
        let (status_r, status_w) = sys::pipe::create(4096)?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(helper_args)
            .args(["--image-fd", "3", "--status-fd", "4"]);
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        let mut fds = vec![(image_r.as_raw_fd(), 3), (status_w.as_raw_fd(), 4)];
        if let Some(fd) = home_files {
            cmd.arg("--home-files");
            fds.push((fd.as_raw_fd(), HOME_FILES_FD));
        }
        sys::process::pass_fds(&mut cmd, &fds)?;
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()?;
        drop(image_r);
        drop(status_w);
        Ok(Restoring {
            child,
            image: Some(pipe::Sender::from_owned_fd(image_w)?),
            status: BufReader::new(pipe::Receiver::from_owned_fd(status_r)?),
            verdict: None,
        })
    }

    /// Wait until the helper has taken in the first `n` pre-copy streams. `Err` when it ended
    /// or gave up first (its verdict is kept for [`Self::outcome`]).
    pub async fn precopied(&mut self, n: u32) -> Result<(), ()> {
        if self.verdict.is_some() {
            return Err(());
        }
        loop {
            let mut line = String::new();
            match self.status.read_line(&mut line).await {
                Ok(0) | Err(_) => return Err(()),
                Ok(_) => {}
            }
            match line.trim_end().strip_prefix("precopied ") {
                Some(m) if m.parse::<u32>().is_ok_and(|m| m >= n) => return Ok(()),
                Some(_) => {}
                None => {
                    self.verdict = Some(line);
                    return Err(());
                }
            }
        }
    }

    /// Wait for the helper's verdict: the restored process's pid, or why it failed.
    pub async fn outcome(&mut self) -> Result<i32, String> {
        let mut line = self.verdict.take().unwrap_or_default();
        while line.is_empty() || line.starts_with("precopied ") {
            line.clear();
            match self.status.read_line(&mut line).await {
                Ok(0) | Err(_) => return Err("the restore helper ended without a word".into()),
                Ok(_) => {}
            }
        }
        let line = line.trim_end();
        if let Some(pid) = line.strip_prefix("running ").and_then(|p| p.parse().ok()) {
            Ok(pid)
        } else {
            Err(line.strip_prefix("error ").unwrap_or(line).to_string())
        }
    }
}

/// The bytes waiting in a frozen process's stdin pipe, taken out so that they can be given to
/// its next copy first (they would be lost with this one). Empty when stdin is not a pipe.
pub fn unread_stdin(pid: Pid) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = format!("/proc/{pid}/fd/0");
    let is_pipe = std::fs::metadata(&path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_pipe {
        return Vec::new();
    }
    let Ok(mut end) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
    else {
        return Vec::new();
    };
    let mut data = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n) = end.read(&mut buf) {
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    data
}
