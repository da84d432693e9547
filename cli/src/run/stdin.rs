//! Relaying our stdin to a process that runs elsewhere — and only then: while the process runs
//! at home it reads our stdin itself, so not one byte may be taken from it.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use mrun_core::sys::fdio;
use tokio::sync::mpsc;

/// Data read from stdin, or `None` at end of input.
pub type Chunk = Option<Bytes>;

pub struct StdinRelay {
    /// True while the process is away; reads happen only under this lock.
    away: Arc<Mutex<bool>>,
    /// The sending end for the reading thread, until the process first goes away: a job that
    /// never leaves home (most of them) costs no thread.
    unstarted: Mutex<Option<mpsc::Sender<Chunk>>>,
}

impl StdinRelay {
    /// The relay, and where its chunks arrive; nothing is read before
    /// [`StdinRelay::start_reader`] and the first [`StdinRelay::set_away`]`(true)`.
    pub fn start() -> (StdinRelay, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(4);
        let relay = StdinRelay {
            away: Arc::new(Mutex::new(false)),
            unstarted: Mutex::new(Some(tx)),
        };
        (relay, rx)
    }

    /// Start the thread that reads stdin while the process is away (and waits while it is
    /// home), unless it runs already. Called before the process first leaves, so that a
    /// machine that cannot start one more thread keeps the job at home.
    pub fn start_reader(&self) -> std::io::Result<()> {
        let mut unstarted = self
            .unstarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = unstarted.as_ref() {
            StdinRelay::spawn_reader(tx.clone(), self.away.clone())?;
            *unstarted = None;
        }
        Ok(())
    }

    fn spawn_reader(tx: mpsc::Sender<Chunk>, flag: Arc<Mutex<bool>>) -> std::io::Result<()> {
        let reader = std::thread::Builder::new().name("mrun-stdin".into());
        reader.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match fdio::poll_readable(0, 100) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                let chunk = {
                    // Only the read happens under the lock: the send below may wait for the
                    // deputy, which may be waiting for this lock.
                    let Ok(away) = flag.lock() else { return };
                    if !*away {
                        drop(away);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    match fdio::read(0, &mut buf) {
                        // The job at home may have left our shared stdin non-blocking.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Ok(0) | Err(_) => None,
                        Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
                    }
                };
                let eof = chunk.is_none();
                if tx.blocking_send(chunk).is_err() || eof {
                    return;
                }
            }
        })?;
        Ok(())
    }

    /// The process is away (true) or home (false). Returns once no read is in progress.
    /// The reader must have been started ([`StdinRelay::start`]).
    pub fn set_away(&self, away: bool) {
        *self.away.lock().unwrap_or_else(PoisonError::into_inner) = away;
    }
}
