//! Reaching the daemon from a deputy or `mrunctl`, starting it when it is not running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::protocol::{ok_or_error, read_line, DaemonStatus, Request};

/// The daemon's socket. Its SSH configuration comes from `$HOME/.ssh`, so each HOME has its own
/// daemon (the same user with another HOME gets another one); and each build of mrun has its
/// own, so that after an upgrade no old daemon starts old agents for new deputies.
pub fn socket_path() -> Result<PathBuf> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut key = std::env::var_os("HOME")
        .unwrap_or_default()
        .into_encoded_bytes();
    key.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    if let Ok(meta) = mrun_binary().and_then(|p| std::fs::metadata(p).map_err(Into::into)) {
        key.extend_from_slice(&meta.size().to_le_bytes());
        key.extend_from_slice(&meta.mtime_nsec().to_le_bytes());
        key.extend_from_slice(&meta.mtime().to_le_bytes());
    }
    let digest = sha2::Sha256::digest(&key);
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(crate::jobs::socket_dir()?.join(format!("daemon-{tag}.sock")))
}

/// A byte stream to a fresh `mrun-agent` on `node`, through the daemon.
pub async fn open_agent(node: &str) -> Result<UnixStream> {
    let mut stream = reach().await?;
    send(&mut stream, &Request::Connect { node: node.into() }).await?;
    ok_or_error(&read_line(&mut stream).await?)?;
    Ok(stream)
}

/// Make sure the daemon runs (starting it if not), so that the balancer sees this user's jobs,
/// and give it the nodes this command may use (`job`'s, while it lives).
pub async fn ensure_running(job: Option<u32>) -> Result<()> {
    let nodes = this_commands_nodes();
    let mut stream = reach().await?;
    send(&mut stream, &Request::Hello { job, nodes }).await?;
    ok_or_error(&read_line(&mut stream).await?)
}

/// The daemon's view of home and of `nodes` (then of the other nodes it watches), starting the
/// daemon if needed; `refresh`: it asks the nodes anew first.
pub async fn cluster_report(
    nodes: &[String],
    refresh: bool,
) -> Result<super::cluster::ClusterReport> {
    let mut stream = reach().await?;
    let request = Request::Facts {
        nodes: nodes.to_vec(),
        refresh,
    };
    send(&mut stream, &request).await?;
    let line = read_line(&mut stream).await?;
    serde_json::from_str(&line).context("reading the daemon's report")
}

/// The running daemon's state, or `None` when none runs (none is started for it).
pub async fn daemon_status() -> Result<Option<DaemonStatus>> {
    let Ok(mut stream) = UnixStream::connect(socket_path()?).await else {
        return Ok(None);
    };
    send(&mut stream, &Request::Status).await?;
    let line = read_line(&mut stream).await?;
    Ok(Some(
        serde_json::from_str(&line).context("reading the daemon's status")?,
    ))
}

/// Stop the running daemon; its pid, or `None` when none ran. Returns once it is gone.
pub async fn stop() -> Result<Option<u32>> {
    let Some(status) = daemon_status().await? else {
        return Ok(None);
    };
    let mut stream = UnixStream::connect(socket_path()?)
        .await
        .context("reaching the mrun daemon")?;
    send(&mut stream, &Request::Stop).await?;
    ok_or_error(&read_line(&mut stream).await?)?;
    // The daemon ends right after its answer: the connection closes with it.
    let _ = tokio::time::timeout(Duration::from_secs(10), read_line(&mut stream)).await;
    Ok(Some(status.pid))
}

/// The nodes this command names: `--nodes`, else `MRUN_NODES`, else the config file's (none
/// from a file that does not parse: the command has said so already).
fn this_commands_nodes() -> Vec<String> {
    crate::nodes::config().unwrap_or_default().node_list()
}

async fn send(stream: &mut UnixStream, request: &Request) -> Result<()> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .await
        .context("writing to the mrun daemon")
}

/// A connection to the daemon, started if needed.
async fn reach() -> Result<UnixStream> {
    let path = socket_path()?;
    if let Ok(s) = UnixStream::connect(&path).await {
        return Ok(s);
    }
    start_daemon()?;
    let mut tries = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match UnixStream::connect(&path).await {
            Ok(s) => return Ok(s),
            Err(e) if tries > 150 => return Err(e).context("the mrun daemon did not start"),
            Err(_) => tries += 1,
        }
    }
}

fn start_daemon() -> Result<()> {
    let mut cmd = std::process::Command::new(mrun_binary()?);
    mrun_core::sys::process::unblock_signals_in_child(&mut cmd);
    // It makes a session of its own (see `detach`): not a group leader now, so it can.
    let mut child = cmd
        .arg("--daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the mrun daemon")?;
    // Reaped if it ends while we live (`mrunctl daemon stop`), so it leaves no zombie.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// The `mrun` binary (the daemon is one of its roles): this program if it is mrun, else the
/// `mrun` beside it (mrunctl asks nodes through the daemon too), else on PATH.
fn mrun_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this program's path")?;
    if me.file_name().is_some_and(|n| n == "mrun") {
        return Ok(me);
    }
    if let Some(beside) = me.parent().map(|d| d.join("mrun")).filter(|p| p.is_file()) {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("mrun"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| anyhow::anyhow!("mrun is not installed beside {} or on PATH", me.display()))
}
