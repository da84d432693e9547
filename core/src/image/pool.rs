//! A small ordered worker pool for (de)compressing page chunks off the caller's thread.
//!
//! Jobs go to the workers round-robin and results are taken back in the same round-robin
//! order, so they come out in submission order without a reorder buffer. With zero threads
//! the pool runs each job inline at submission. It never does I/O.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::error::ImageError;

/// What one worker does with a job; each worker owns one (with its zstd context).
pub(crate) trait Work: Send + 'static {
    type Job: Send + 'static;
    type Out: Send + 'static;
    fn run(&mut self, job: Self::Job) -> Self::Out;
}

struct Worker<W: Work> {
    jobs: Option<SyncSender<W::Job>>,
    results: Receiver<W::Out>,
    thread: Option<JoinHandle<()>>,
}

enum Mode<W: Work> {
    Inline {
        work: W,
        done: VecDeque<W::Out>,
    },
    Threads {
        workers: Vec<Worker<W>>,
        next_submit: usize,
        next_recv: usize,
    },
}

pub(crate) struct Pool<W: Work> {
    mode: Mode<W>,
    in_flight: usize,
    capacity: usize,
}

/// Threads to use when the caller does not say: one per core, at most 4.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

impl<W: Work> Pool<W> {
    /// `threads` workers each built by `make`, or inline work when `threads` is 0.
    /// At most `per_thread` jobs per worker (at least 1 in all) are in flight.
    pub(crate) fn new(
        threads: usize,
        per_thread: usize,
        name: &str,
        make: impl Fn() -> io::Result<W>,
    ) -> Result<Self, ImageError> {
        if threads == 0 {
            let mode = Mode::Inline {
                work: make()?,
                done: VecDeque::new(),
            };
            return Ok(Pool {
                mode,
                in_flight: 0,
                capacity: 1,
            });
        }
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let mut work = make()?;
            let (job_tx, job_rx) = sync_channel::<W::Job>(per_thread.max(1));
            let (out_tx, out_rx) = sync_channel::<W::Out>(per_thread.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in job_rx {
                        if out_tx.send(work.run(job)).is_err() {
                            break;
                        }
                    }
                })?;
            workers.push(Worker {
                jobs: Some(job_tx),
                results: out_rx,
                thread: Some(thread),
            });
        }
        let capacity = threads * per_thread.max(1);
        Ok(Pool {
            mode: Mode::Threads {
                workers,
                next_submit: 0,
                next_recv: 0,
            },
            in_flight: 0,
            capacity,
        })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.in_flight >= self.capacity
    }

    /// Hands a job to the next worker. The caller keeps `!is_full()` by receiving first.
    pub(crate) fn submit(&mut self, job: W::Job) -> Result<(), ImageError> {
        match &mut self.mode {
            Mode::Inline { work, done } => done.push_back(work.run(job)),
            Mode::Threads {
                workers,
                next_submit,
                ..
            } => {
                let n = workers.len();
                let sent = workers
                    .get(*next_submit)
                    .and_then(|w| w.jobs.as_ref())
                    .is_some_and(|tx| tx.send(job).is_ok());
                if !sent {
                    return Err(worker_died());
                }
                *next_submit = (*next_submit + 1) % n;
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest job's result, waiting for it; `None` when nothing is in flight.
    pub(crate) fn recv(&mut self) -> Result<Option<W::Out>, ImageError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let out = match &mut self.mode {
            Mode::Inline { done, .. } => done.pop_front().ok_or_else(worker_died)?,
            Mode::Threads {
                workers, next_recv, ..
            } => {
                let n = workers.len();
                let out = workers
                    .get(*next_recv)
                    .ok_or_else(worker_died)?
                    .results
                    .recv()
                    .map_err(|_| worker_died())?;
                *next_recv = (*next_recv + 1) % n;
                out
            }
        };
        self.in_flight -= 1;
        Ok(Some(out))
    }
}

impl<W: Work> Drop for Pool<W> {
    fn drop(&mut self) {
        if let Mode::Threads { workers, .. } = &mut self.mode {
            // Closing the job channels ends the workers; a worker blocked on a full result
            // channel is released when its receiver is dropped right after.
            for w in workers.iter_mut() {
                w.jobs = None;
            }
            for w in workers.drain(..) {
                let Worker {
                    results, thread, ..
                } = w;
                drop(results);
                if let Some(t) = thread {
                    let _ = t.join();
                }
            }
        }
    }
}

fn worker_died() -> ImageError {
    ImageError::Io(io::Error::other("an image compression worker thread died"))
}
