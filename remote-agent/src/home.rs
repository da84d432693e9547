//! The session's two directions with home, each on a task of its own: frames from home
//! (answers about home's files go straight to the served file system, which waits for them on
//! another thread), and frames for home (the session's, and the served file system's requests,
//! which may come at any time, even while the session waits for the restore helper).

use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Result};
use futures_util::{SinkExt, StreamExt};
use mrun_core::wire::files::FileMsg;
use mrun_core::wire::{Frame, FrameCodec, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::served::Served;

/// Where answers about home's files go, once the job has them.
pub type ServedSlot = Arc<OnceLock<Arc<Served>>>;

pub struct FromHome {
    rx: mpsc::UnboundedReceiver<Result<Frame, WireError>>,
}

impl FromHome {
    pub async fn next(&mut self) -> Option<Result<Frame, WireError>> {
        self.rx.recv().await
    }
}

#[derive(Clone)]
pub struct ToHome {
    tx: mpsc::Sender<Frame>,
}

impl ToHome {
    pub async fn send(&self, frame: Frame) -> Result<()> {
        self.tx
            .send(frame)
            .await
            .map_err(|_| anyhow!("cannot write to home any more"))
    }
}

/// Start both directions on stdin and stdout. The writer ends once every [`ToHome`] is gone
/// (the served file system's requests then go nowhere: its job is over).
pub fn connect(served: ServedSlot) -> (FromHome, ToHome, mpsc::Sender<Frame>, JoinHandle<()>) {
    let (tx, mut frames) = mpsc::channel::<Frame>(8);
    let (asks, mut asked) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut out = FramedWrite::new(tokio::io::stdout(), FrameCodec::default());
        loop {
            let frame = tokio::select! {
                f = frames.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
                Some(f) = asked.recv() => f,
            };
            if out.send(frame).await.is_err() {
                return;
            }
        }
        let _ = out.close().await;
    });
    // Never full: what home sends is always read, so that answers about home's files reach
    // the served file system even while the session waits (for the restore helper to take
    // more of the image, which it does once it has those answers). What waits here meanwhile
    // is at most the rest of the image (read at restore speed otherwise) and the stdin
    // window home allows.
    let (to_session, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut input = FramedRead::new(tokio::io::stdin(), FrameCodec::default());
        while let Some(frame) = input.next().await {
            match frame {
                Ok(Frame::Files(FileMsg::Answer { id, answer }, data)) => {
                    if let Some(s) = served.get() {
                        s.answered(id, answer, data);
                    }
                }
                other => {
                    if to_session.send(other).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (FromHome { rx }, ToHome { tx }, asks, writer)
}
