//! The user's configuration: which nodes they have (`--nodes a,b,c`, else `MRUN_NODES`, else
//! the `nodes` list of `~/.config/mrun/config.toml`), which commands always stay home, and the
//! balancer's settings. A node is `local` or an SSH destination (a Host alias of
//! `~/.ssh/config`, or `[user@]host[:port]`). The list a command resolves is the one it sends
//! the daemon with each request (see `daemon/`); the daemon itself reads only the file.

use anyhow::Result;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Programs (by name, like `vim`, or by path) whose jobs never leave home, as with
    /// `mrun --home`.
    #[serde(default)]
    pub home_commands: Vec<String>,
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Per node, the command line that starts `mrun-agent` there (`[agents]`, e.g.
    /// `build1 = "/opt/mrun/bin/mrun-agent"`), when it is neither on the node's PATH nor to be
    /// installed into its `~/.cache/mrun`.
    #[serde(default)]
    pub agents: std::collections::BTreeMap<String, String>,
}

/// `[balance]` in config.toml: whether mrun moves jobs by itself, and the policy's knobs
/// (see docs/policy.md); each missing knob keeps its default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// `false`: jobs move only when asked (`mrunctl migrate`). Also `MRUN_BALANCE=off`.
    pub enabled: Option<bool>,
    /// Seconds between two decisions.
    pub interval: Option<f64>,
    pub fixed_cost: Option<f64>,
    pub min_age: Option<f64>,
    pub min_load_gap: Option<f64>,
    pub stay_factor: Option<f64>,
    pub min_stay: Option<f64>,
    pub mem_margin: Option<f64>,
    pub max_moves: Option<usize>,
    pub min_cpu_demand: Option<f64>,
}

impl BalanceConfig {
    pub fn enabled(&self) -> bool {
        match std::env::var("MRUN_BALANCE").as_deref() {
            Ok("off" | "0" | "no" | "false") => false,
            Ok(_) => true,
            Err(_) => self.enabled.unwrap_or(true),
        }
    }

    pub fn knobs(&self) -> mrun_core::policy::Knobs {
        let mut k = mrun_core::policy::Knobs::default();
        let set = |v: Option<f64>, into: &mut f64| {
            if let Some(v) = v {
                *into = v;
            }
        };
        set(self.fixed_cost, &mut k.fixed_cost);
        set(self.min_age, &mut k.min_age);
        set(self.min_load_gap, &mut k.min_load_gap);
        set(self.stay_factor, &mut k.stay_factor);
        set(self.min_stay, &mut k.min_stay);
        set(self.mem_margin, &mut k.mem_margin);
        set(self.min_cpu_demand, &mut k.min_cpu_demand);
        if let Some(m) = self.max_moves {
            k.max_moves = m;
        }
        k
    }
}

/// What a command does when the configuration file is broken, said after the problem.
pub const DEFAULTS_APPLY: &str = "using the defaults until it is fixed";

/// The configuration file, or the defaults when there is none.
/// A file that does not parse is one sentence naming the file, line and column.
pub fn config() -> Result<ConfigFile> {
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = text.get(..span.start).unwrap_or(&text);
                    let line = before.lines().count().max(1) + usize::from(before.ends_with('\n'));
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!(" line {line}, column {column}")
                })
                .unwrap_or_default();
            anyhow::anyhow!(
                "{}{at}: {}",
                path.display(),
                e.message().trim_end().replace('\n', " ")
            )
        }),
        Err(_) => Ok(ConfigFile::default()),
    }
}

/// Whether jobs of `program` stay home by configuration.
pub fn stays_home(cfg: &ConfigFile, program: &std::ffi::OsStr) -> bool {
    let path = std::path::Path::new(program);
    cfg.home_commands.iter().any(|c| {
        let c = std::path::Path::new(c);
        c == path || (c.components().count() == 1 && path.file_name() == Some(c.as_os_str()))
    })
}

pub fn config_path() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("mrun/config.toml")
}

/// The nodes given on this command's line (`--nodes`), set once at its start.
static COMMAND_LINE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Makes `list` (a `--nodes` value) this process's node list, ahead of `MRUN_NODES` and the
/// file, for everything it asks the daemon and every `mrun` it starts (`--each`).
pub fn set_command_line(list: &str) {
    let _ = COMMAND_LINE.set(split(list));
}

/// The `--nodes` list of this command, if it was given one.
pub fn command_line() -> Option<&'static [String]> {
    COMMAND_LINE.get().map(Vec::as_slice)
}

/// The nodes this command named itself (`--nodes`, else `MRUN_NODES`), if it did.
pub fn named_by_command() -> Option<Vec<String>> {
    if let Some(list) = command_line() {
        return Some(list.to_vec());
    }
    std::env::var("MRUN_NODES").ok().map(|list| split(&list))
}

/// This command's nodes: `flag` (a `--nodes` value), else those of [`ConfigFile::node_list`].
pub fn configured(flag: Option<&str>) -> Result<Vec<String>> {
    match flag {
        Some(list) => Ok(split(list)),
        None => Ok(config()?.node_list()),
    }
}

impl ConfigFile {
    /// The nodes of this command: its `--nodes` if given, else `MRUN_NODES` if set, else this
    /// file's list.
    pub fn node_list(&self) -> Vec<String> {
        if let Some(list) = command_line() {
            return list.to_vec();
        }
        match std::env::var("MRUN_NODES") {
            Ok(list) => split(&list),
            Err(_) => self.nodes.clone(),
        }
    }

    /// Whether the balancer has anything to do: it is on, and some node is another machine
    /// (`local` is an agent on this one).
    pub fn balances(&self) -> bool {
        self.balance.enabled() && self.node_list().iter().any(|n| n != "local")
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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
        let cfg: ConfigFile =
            toml::from_str("nodes = [\"local\", \"alice@box:2222\"]\n").expect("parse");
        assert_eq!(cfg.nodes, vec!["local", "alice@box:2222"]);
        assert!(
            toml::from_str::<ConfigFile>("nodez = []\n").is_err(),
            "typos are reported"
        );
    }

    #[test]
    fn balance_knobs_override_defaults_one_by_one() {
        let cfg: ConfigFile =
            toml::from_str("[balance]\nmin_age = 1.5\nmax_moves = 4\n").expect("parse");
        let k = cfg.balance.knobs();
        let d = mrun_core::policy::Knobs::default();
        assert_eq!((k.min_age, k.max_moves), (1.5, 4));
        assert_eq!(k.min_stay, d.min_stay);
        assert!(toml::from_str::<ConfigFile>("[balance]\nmin_agee = 1\n").is_err());
    }

    #[test]
    fn agents_are_given_per_node() {
        let cfg: ConfigFile =
            toml::from_str("[agents]\nbuild1 = \"/opt/mrun/bin/mrun-agent\"\n").expect("parse");
        assert_eq!(
            cfg.agents.get("build1").map(String::as_str),
            Some("/opt/mrun/bin/mrun-agent")
        );
        assert!(!cfg.agents.contains_key("other"));
    }

    #[test]
    fn home_commands_match_by_name_or_path() {
        let cfg: ConfigFile =
            toml::from_str("home_commands = [\"vim\", \"/opt/x/run\"]\n").expect("parse");
        assert!(stays_home(&cfg, std::ffi::OsStr::new("vim")));
        assert!(stays_home(&cfg, std::ffi::OsStr::new("/usr/bin/vim")));
        assert!(stays_home(&cfg, std::ffi::OsStr::new("/opt/x/run")));
        assert!(!stays_home(&cfg, std::ffi::OsStr::new("run")));
        assert!(!stays_home(&cfg, std::ffi::OsStr::new("gzip")));
    }
}
