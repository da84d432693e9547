//! Reaching the daemon from a deputy, starting it when it is not running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

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
    stream
        .write_all(format!("connect {node}\n").as_bytes())
        .await?;
    let answer = read_line(&mut stream).await?;
    match answer
        .split_once(' ')
        .map(|(a, b)| (a, b.to_string()))
        .unwrap_or((answer.as_str(), String::new()))
    {
        ("ok", _) => Ok(stream),
        ("error", why) => bail!("{why}"),
        _ => bail!("the mrun daemon gave no answer"),
    }
}

/// Make sure the daemon runs (starting it if not), so that the balancer sees this user's jobs.
pub async fn ensure_running() -> Result<()> {
    let mut stream = reach().await?;
    stream.write_all(b"hello\n").await?;
    match read_line(&mut stream).await?.as_str() {
        "ok" => Ok(()),
        other => bail!("the mrun daemon answered {other:?}"),
    }
}

/// The daemon's view of the cluster, if a daemon runs (none is started for it).
pub async fn cluster_report() -> Result<super::cluster::ClusterReport> {
    let mut stream = UnixStream::connect(socket_path()?)
        .await
        .context("no mrun daemon runs")?;
    stream.write_all(b"facts\n").await?;
    let line = read_line(&mut stream).await?;
    serde_json::from_str(&line).context("reading the daemon's report")
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

/// One answer line. Read byte by byte: what follows it belongs to the agent.
async fn read_line(stream: &mut UnixStream) -> Result<String> {
    let mut answer = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(stream, &mut byte).await?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn start_daemon() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(mrun_binary()?);
    mrun_core::sys::process::unblock_signals_in_child(&mut cmd);
    cmd.arg("--daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the mrun daemon")?;
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
