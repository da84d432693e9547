//! The deputy's job socket: accepts one-line requests from `mrunctl` of the same user.

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub enum Request {
    Migrate(String),
    Where,
    Info,
    /// Deliver this signal to the job, wherever it runs (`mrunctl kill`).
    Signal(nix::sys::signal::Signal),
}

/// A request the job cannot carry out (it runs on as it was): answered `refused`, which
/// `mrunctl` exits 3 for.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub struct JobSocket {
    requests: tokio::sync::mpsc::Receiver<(Request, UnixStream)>,
    path: std::path::PathBuf,
}

impl JobSocket {
    pub fn bind(job: u32) -> Result<JobSocket> {
        let path = crate::jobs::job_socket(job)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        // Accepting and reading the request line happen in a task of their own: the deputy
        // waits for requests among other events, and a request half-read when another event
        // won would be dropped on the floor.
        let (tx, requests) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Some(req) = read_request(stream).await {
                    if tx.send(req).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(JobSocket { requests, path })
    }

    /// The next request from a process of this same user (others are turned away).
    pub async fn next(&mut self) -> Option<(Request, UnixStream)> {
        self.requests.recv().await
    }
}

async fn read_request(mut stream: UnixStream) -> Option<(Request, UnixStream)> {
    let me = nix::unistd::getuid().as_raw();
    if !stream.peer_cred().is_ok_and(|c| c.uid() == me) {
        let _ = stream
            .write_all(b"error this job belongs to another user\n")
            .await;
        return None;
    }
    let mut line = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut line)
        .await
        .ok()?;
    let line = line.trim();
    let req = match line.split_once(' ') {
        Some(("migrate", node)) => Request::Migrate(node.trim().to_string()),
        Some(("signal", n)) => match n
            .trim()
            .parse::<i32>()
            .map(nix::sys::signal::Signal::try_from)
        {
            Ok(Ok(sig)) => Request::Signal(sig),
            _ => {
                let _ = stream
                    .write_all(format!("error no such signal {n:?}\n").as_bytes())
                    .await;
                return None;
            }
        },
        None if line == "where" => Request::Where,
        None if line == "info" => Request::Info,
        _ => {
            let _ = stream
                .write_all(format!("error unknown request {line:?}\n").as_bytes())
                .await;
            return None;
        }
    };
    Some((req, stream))
}

impl Drop for JobSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn answer(mut stream: UnixStream, result: Result<String>) {
    let line = match result {
        Ok(text) => format!("ok {text}\n"),
        Err(e) => {
            let kind = if e
                .chain()
                .any(|c| c.is::<Refused>() || c.is::<super::deputy::StaysHome>())
            {
                "refused"
            } else {
                "error"
            };
            format!("{kind} {}\n", format!("{e:#}").replace('\n', " "))
        }
    };
    let _ = stream.write_all(line.as_bytes()).await;
}
