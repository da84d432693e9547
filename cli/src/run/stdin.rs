//! Relaying our stdin to a process that runs elsewhere — and only then: while the process runs
//! at home it reads our stdin itself, so not one byte may be taken from it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mrun_core::sys::fdio;
use tokio::sync::mpsc;

/// Data read from stdin, or `None` at end of input.
pub type Chunk = Option<Bytes>;

#[derive(Clone)]
pub struct StdinRelay {
    /// True while the process is away; reads happen only under this lock.
    away: Arc<Mutex<bool>>,
}

impl StdinRelay {
    pub fn start() -> (StdinRelay, mpsc::Receiver<Chunk>) {
        let away = Arc::new(Mutex::new(false));
        let (tx, rx) = mpsc::channel(4);
        let flag = away.clone();
        std::thread::spawn(move || {
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
        });
        (StdinRelay { away }, rx)
    }

    /// The process is away (true) or home (false). Returns once no read is in progress.
    pub fn set_away(&self, away: bool) {
        if let Ok(mut a) = self.away.lock() {
            *a = away;
        }
    }
}
