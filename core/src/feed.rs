//! Feeding a process's stdin pipe without ever waiting on it: input is queued (the queue is
//! bounded by whoever fills it, see `STDIN_WINDOW`) and written as far as the pipe takes it,
//! so that a job that does not read its stdin (because it is busy writing its stdout) never
//! stops the loop that relays its output, signals and control messages.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes};
use tokio::net::unix::pipe;

/// How many bytes of a job's input may be on their way to it (sent by home and not yet taken
/// by its stdin pipe) at a time: home sends more only as the agent reports bytes taken
/// (`Control::StdinRead`), so input never piles up in memory while the job does not read.
pub const STDIN_WINDOW: u64 = 1 << 20;

/// The largest Stdin frame to send (well below the wire's `MAX_FRAME`).
pub const STDIN_FRAME: usize = 256 * 1024;

/// The write end of a process's stdin pipe with the input queued for it.
#[derive(Default)]
pub struct Feed {
    pipe: Option<pipe::Sender>,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// No more input will come: close the pipe once the queue is written.
    eof: bool,
}

impl Feed {
    /// Feed `pipe` (None: the process has no stdin to feed; input is dropped).
    pub fn new(pipe: Option<pipe::Sender>) -> Feed {
        Feed {
            pipe,
            ..Default::default()
        }
    }

    /// Feed a child's stdin pipe.
    pub fn child(stdin: Option<tokio::process::ChildStdin>) -> io::Result<Feed> {
        let pipe = match stdin {
            Some(s) => Some(pipe::Sender::from_owned_fd(s.into_owned_fd()?)?),
            None => None,
        };
        Ok(Feed::new(pipe))
    }

    /// Whether a pipe is still fed.
    pub fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    /// Bytes waiting in the queue (not yet in the pipe).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queue `data` for the pipe.
    pub fn push(&mut self, data: Bytes) {
        if self.pipe.is_some() && !data.is_empty() {
            self.queued += data.len();
            self.queue.push_back(data);
        }
    }

    /// The input ends: the pipe is closed once what is queued was written.
    pub fn end(&mut self) {
        self.eof = true;
        if self.queue.is_empty() {
            self.pipe = None;
        }
    }

    /// Whether `progress` has anything to do.
    pub fn busy(&self) -> bool {
        self.pipe.is_some() && !self.queue.is_empty()
    }

    /// Take back everything queued and not yet written (the process is leaving).
    pub fn take_queued(&mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.queued);
        for b in self.queue.drain(..) {
            all.extend_from_slice(&b);
        }
        self.queued = 0;
        all
    }

    /// Write queued input as far as the pipe takes it; the number of bytes that left the
    /// queue (into the pipe, or dropped because the reader closed it). Waits while the pipe
    /// is full; cancel-safe (nothing is lost if the future is dropped). Pending forever when
    /// there is nothing to do.
    pub async fn progress(&mut self) -> usize {
        let (Some(p), Some(front)) = (self.pipe.as_ref(), self.queue.front_mut()) else {
            return std::future::pending().await;
        };
        let taken = loop {
            if p.writable().await.is_err() {
                break None;
            }
            match p.try_write(front) {
                Ok(n) => break Some(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        match taken {
            Some(n) => {
                front.advance(n);
                if front.is_empty() {
                    self.queue.pop_front();
                }
                self.queued -= n;
                if self.queue.is_empty() && self.eof {
                    self.pipe = None;
                }
                n
            }
            None => {
                // The reader is gone (it closed its stdin or ended): nothing more can go in.
                let n = self.queued;
                self.queue.clear();
                self.queued = 0;
                self.pipe = None;
                n
            }
        }
    }
}

/// `data` cut into Stdin-frame-sized pieces.
pub fn stdin_pieces(data: Vec<u8>) -> impl Iterator<Item = Bytes> {
    let data = Bytes::from(data);
    let n = data.len().div_ceil(STDIN_FRAME);
    (0..n).map(move |i| data.slice(i * STDIN_FRAME..((i + 1) * STDIN_FRAME).min(data.len())))
}
