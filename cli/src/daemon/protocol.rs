//! What crosses the daemon's socket: one request per connection, as one JSON line, and its
//! answer. No version field: the socket's name is keyed to the build (see
//! `client::socket_path`), so a client only ever talks to a daemon of its own build.
//!
//! Answers: `Connect` gets `ok` (then the connection is the agent's byte stream) or
//! `error REASON`; `Hello` and `Stop` get `ok` or `error REASON`; `Facts` one JSON
//! [`ClusterReport`](super::cluster::ClusterReport); `Status` one JSON [`DaemonStatus`].

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// A deputy making sure the daemon (and so the balancer) runs. `nodes`: the nodes its
    /// command was given, which the daemon watches and balances onto while job `job` lives.
    Hello {
        job: Option<u32>,
        nodes: Vec<String>,
    },
    /// The daemon's view of home and of `nodes` (which it starts watching if it did not),
    /// then of every other node it watches. `refresh`: ask each of `nodes` anew first, all at
    /// once, instead of answering from the last reports.
    Facts { nodes: Vec<String>, refresh: bool },
    /// Turn this connection into a byte stream to a new `mrun-agent` on `node`.
    Connect { node: String },
    /// The daemon's own state.
    Status,
    /// Leave now (refused while it carries a job's connection to a node).
    Stop,
}

/// What `mrunctl daemon status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub socket: String,
    pub uptime_secs: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Nodes watched, and how many of them report.
    pub nodes_watched: usize,
    pub nodes_up: usize,
    /// Connections of jobs to their nodes that go through the daemon now.
    pub carried: usize,
}

/// One answer line, without its newline. Read byte by byte: what follows it belongs to the
/// agent (after `ok` to a `Connect`).
pub async fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut answer = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `ok` or `error REASON` as a result.
pub fn ok_or_error(answer: &str) -> anyhow::Result<()> {
    match answer.split_once(' ').unwrap_or((answer, "")) {
        ("ok", _) => Ok(()),
        ("error", why) => anyhow::bail!("{why}"),
        _ => anyhow::bail!("the mrun daemon gave no answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Facts {
            nodes: vec!["a".into(), "b".into()],
            refresh: true,
        };
        let line = serde_json::to_string(&r).expect("encode");
        assert!(!line.contains('\n'));
        assert!(line.contains("\"request\":\"facts\""), "{line}");
        let back: Request = serde_json::from_str(&line).expect("decode");
        assert!(matches!(back, Request::Facts { refresh: true, nodes } if nodes == ["a", "b"]));
    }

    #[test]
    fn answers_read_as_results() {
        assert!(ok_or_error("ok").is_ok());
        let e = ok_or_error("error node x is down").expect_err("an error");
        assert_eq!(e.to_string(), "node x is down");
        assert!(ok_or_error("").is_err());
    }
}
