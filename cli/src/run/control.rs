//! The deputy's job socket: accepts one-line requests from `mrunctl` of the same user.

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub enum Request {
    Migrate(String),
    Where,
    Info,
}

pub struct JobSocket {
    listener: UnixListener,
    path: std::path::PathBuf,
}

impl JobSocket {
    pub fn bind(job: u32) -> Result<JobSocket> {
        let path = crate::jobs::job_socket(job)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
        Ok(JobSocket { listener, path })
    }

    /// The next request from a process of this same user (others are turned away).
    pub async fn next(&self) -> Result<(Request, UnixStream)> {
        loop {
            let (mut stream, _) = self.listener.accept().await?;
            let me = nix::unistd::getuid().as_raw();
            match stream.peer_cred() {
                Ok(c) if c.uid() == me => {}
                _ => {
                    let _ = stream.write_all(b"error this job belongs to another user\n").await;
                    continue;
                }
            }
            let mut line = String::new();
            BufReader::new(&mut stream).read_line(&mut line).await?;
            let line = line.trim();
            let req = match line.split_once(' ') {
                Some(("migrate", node)) => Request::Migrate(node.trim().to_string()),
                None if line == "where" => Request::Where,
                None if line == "info" => Request::Info,
                _ => {
                    let _ = stream.write_all(format!("error unknown request {line:?}\n").as_bytes()).await;
                    continue;
                }
            };
            return Ok((req, stream));
        }
    }
}

impl Drop for JobSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn answer(mut stream: UnixStream, result: Result<String>) {
    let line = match result {
        Ok(text) => format!("ok {text}\n"),
        Err(e) => format!("error {}\n", format!("{e:#}").replace('\n', " ")),
    };
    let _ = stream.write_all(line.as_bytes()).await;
}
