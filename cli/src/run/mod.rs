//! `mrun COMMAND`: start the command at home at once and stay as its deputy for its whole
//! life, wherever it runs: its stdio, signals and exit status behave as if it never moved.

mod agent_digest;
mod control;
pub mod deputy;
mod known_hosts;
pub(crate) mod link;
pub(crate) mod ssh;
mod stdin;
mod terminal;
mod usage;

/// `mrun-agent` next to this program, or on PATH.
pub(crate) fn agent_path() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let beside = dir.join("mrun-agent");
            if beside.is_file() {
                return Ok(beside);
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("mrun-agent")).find(|p| p.is_file()))
        .ok_or_else(|| anyhow::anyhow!("mrun-agent is not installed next to mrun or on PATH; install it with `cargo install --path remote-agent`"))
}
