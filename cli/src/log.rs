//! The user's mrun log: one line per event worth keeping (a job moved, a move failed and why),
//! in `$XDG_STATE_HOME/mrun/mrun.log` (else `~/.local/state/mrun/mrun.log`).

use std::io::Write;
use std::path::PathBuf;

pub fn path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state")
        });
    base.join("mrun/mrun.log")
}

/// Append one line; logging never fails the caller.
pub fn line(text: &str) {
    let p = path();
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let now = crate::jobs::unix_now().as_secs();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
    {
        let _ = writeln!(f, "{now} {}", text.replace('\n', " "));
    }
}
