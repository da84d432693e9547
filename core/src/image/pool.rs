//! A small ordered worker pool for (de)compressing page chunks off the caller's thread.
//!
//! Jobs go to the workers round-robin and results are taken back in the same round-robin
//! order, so they come out in submission order without a reorder buffer. With zero threads
//! the pool runs each job inline at submission; a pool made with [`Pool::lazy`] does so until
//! its first bytes are done, then starts its threads (a small image never pays for them). It
//! never does I/O.

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
    /// The threads a lazy pool starts once it has worked this much inline.
    later: Option<Later<W>>,
}

/// The threads of a lazy pool, not started yet.
struct Later<W> {
    threads: usize,
    per_thread: usize,
    name: String,
    make: Box<dyn Fn() -> io::Result<W>>,
    /// Bytes of jobs left to work inline before the threads start.
    inline_left: usize,
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
            return Self::inline(make()?);
        }
        Ok(Pool {
            mode: Self::threads(threads, per_thread, name, &make)?,
            in_flight: 0,
            capacity: threads * per_thread.max(1),
            later: None,
        })
    }

    /// As [`Pool::new`], but the jobs run inline until `inline_bytes` of them (as the caller
    /// counts them at [`Pool::submit`]) are done; only then do the threads start. Starting
    /// threads and their contexts costs more than working a few MiB.
    pub(crate) fn lazy(
        threads: usize,
        per_thread: usize,
        name: &str,
        inline_bytes: usize,
        make: impl Fn() -> io::Result<W> + 'static,
    ) -> Result<Self, ImageError> {
        let mut pool = Self::inline(make()?)?;
        if threads > 0 {
            pool.later = Some(Later {
                threads,
                per_thread,
                name: name.to_owned(),
                make: Box::new(make),
                inline_left: inline_bytes,
            });
        }
        Ok(pool)
    }

    fn inline(work: W) -> Result<Self, ImageError> {
        Ok(Pool {
            mode: Mode::Inline {
                work,
                done: VecDeque::new(),
            },
            in_flight: 0,
            capacity: 1,
            later: None,
        })
    }

    fn threads(
        threads: usize,
        per_thread: usize,
        name: &str,
        make: &dyn Fn() -> io::Result<W>,
    ) -> Result<Mode<W>, ImageError> {
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
        Ok(Mode::Threads {
            workers,
            next_submit: 0,
            next_recv: 0,
        })
    }

    /// A lazy pool whose inline share is done starts its threads, once nothing is in flight
    /// (so that results still come out in order).
    fn start_due_threads(&mut self) -> Result<(), ImageError> {
        let due = self
            .later
            .as_ref()
            .is_some_and(|l| l.inline_left == 0 && self.in_flight == 0);
        if !due {
            return Ok(());
        }
        if let Some(l) = self.later.take() {
            self.mode = Self::threads(l.threads, l.per_thread, &l.name, &l.make)?;
            self.capacity = l.threads * l.per_thread.max(1);
        }
        Ok(())
    }

    /// Whether jobs still run inline, on the caller's thread.
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.mode, Mode::Inline { .. })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.in_flight >= self.capacity
    }

    /// Hands a job of `bytes` (the caller's measure of its work) to the next worker. The
    /// caller keeps `!is_full()` by receiving first.
    pub(crate) fn submit(&mut self, job: W::Job, bytes: usize) -> Result<(), ImageError> {
        self.start_due_threads()?;
        if let Some(l) = self.later.as_mut() {
            l.inline_left = l.inline_left.saturating_sub(bytes);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles its job and says which thread did it.
    struct Double;

    impl Work for Double {
        type Job = u64;
        type Out = (u64, Option<String>);
        fn run(&mut self, job: u64) -> Self::Out {
            (job * 2, std::thread::current().name().map(str::to_owned))
        }
    }

    #[test]
    fn a_lazy_pool_works_inline_first_then_on_its_threads_in_order() {
        let mut pool = Pool::lazy(2, 2, "double", 3 << 10, || Ok(Double)).expect("pool");
        let mut out = Vec::new();
        for job in 0..20u64 {
            while pool.is_full() {
                out.extend(pool.recv().expect("recv"));
            }
            pool.submit(job, 1 << 10).expect("submit");
        }
        while let Some(o) = pool.recv().expect("recv") {
            out.push(o);
        }
        let values: Vec<u64> = out.iter().map(|(v, _)| *v).collect();
        assert_eq!(values, (0..20).map(|j| j * 2).collect::<Vec<_>>());
        let here = std::thread::current().name().map(str::to_owned);
        // The first 3 KiB inline, on this thread; all the rest on the workers.
        assert!(out[..3].iter().all(|(_, t)| *t == here), "{out:?}");
        assert!(
            out[3..]
                .iter()
                .all(|(_, t)| t.as_deref().is_some_and(|t| t.starts_with("double-"))),
            "{out:?}"
        );
    }
}
