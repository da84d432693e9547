//! Which nodes this user has: `--nodes a,b,c`, else `MRUN_NODES`, else the `nodes` list of
//! `~/.config/mrun/config.toml`. A node is `local` or an SSH destination (a Host alias of
//! `~/.ssh/config`, or `[user@]host[:port]`).

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    nodes: Vec<String>,
}

pub fn config_path() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config"));
    base.join("mrun/config.toml")
}

pub fn configured(flag: Option<&str>) -> Result<Vec<String>> {
    if let Some(list) = flag {
        return Ok(split(list));
    }
    if let Ok(list) = std::env::var("MRUN_NODES") {
        return Ok(split(&list));
    }
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let cfg: ConfigFile = toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
            Ok(cfg.nodes)
        }
        Err(_) => Ok(Vec::new()),
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(split(" a, b,,local "), vec!["a", "b", "local"]);
    }

    #[test]
    fn config_file_format() {
        let cfg: ConfigFile = toml::from_str("nodes = [\"local\", \"alice@box:2222\"]\n").expect("parse");
        assert_eq!(cfg.nodes, vec!["local", "alice@box:2222"]);
        assert!(toml::from_str::<ConfigFile>("nodez = []\n").is_err(), "typos are reported");
    }
}
