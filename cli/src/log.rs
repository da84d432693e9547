//! The user's mrun log: one line per event worth keeping (a job moved, a move failed and why,
//! a job the balancer leaves home and why), in `$XDG_STATE_HOME/mrun/mrun.log` (else
//! `~/.local/state/mrun/mrun.log`), each stamped with its time in ISO 8601, UTC
//! (`2026-12-01T19:38:37Z`), as every time mrun shows.

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
    let now = iso8601(std::time::SystemTime::now());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
    {
        let _ = writeln!(f, "{now} {}", text.replace('\n', " "));
    }
}

/// `time` in ISO 8601, UTC, to the second: `2026-12-01T19:38:37Z`.
pub fn iso8601(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A Unix time in seconds as [`iso8601`].
pub fn iso8601_unix(seconds: u64) -> String {
    iso8601(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_iso8601_utc() {
        assert_eq!(super::iso8601_unix(1_796_154_317), "2026-12-01T19:45:17Z");
        assert_eq!(super::iso8601_unix(0), "1970-01-01T00:00:00Z");
    }
}
