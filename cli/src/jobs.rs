//! Where a running job can be reached: each `mrun` deputy listens on a Unix socket named after
//! its job in a directory private to its user, and answers one-line requests.
//!
//! Requests: `migrate NODE` (NODE may be `home`), `where`. Answers: `ok TEXT` or `error TEXT`.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The user's private directory for job sockets: `$XDG_RUNTIME_DIR/mrun`, else
/// `/tmp/mrun-UID`. Created 0700; refused if someone else owns it or others can enter it.
pub fn socket_dir() -> Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mrun"),
        _ => PathBuf::from(format!("/tmp/mrun-{uid}")),
    };
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
    }
    let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is not a private directory of this user (it must be owned by uid {uid}, mode 0700); remove it", dir.display());
    }
    Ok(dir)
}

pub fn job_socket(job: u32) -> Result<PathBuf> {
    Ok(socket_dir()?.join(format!("job-{job}.sock")))
}

/// Ask the deputy of `job` something; its answer's text, or its error.
pub fn ask(job: u32, request: &str) -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let path = job_socket(job)?;
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("no mrun job {job} is running for this user"))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    match line.trim_end().split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", text)) => bail!("{text}"),
        _ => bail!("job {job} gave no answer"),
    }
}
