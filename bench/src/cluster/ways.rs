//! The ways of running the batch, each the same `gzip -9 -n -k -f FILE` per file, started on
//! the home CPU and timed by wall clock from spawn to reaping.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use mrun_bench::measure::run_timed;
use mrun_bench::mrun::Mrun;
use mrun_bench::node::Node;
use mrun_bench::scratch::Scratch;

use crate::inputs::{Inputs, GZIP_ARGS};

const TASKSET: &str = "/usr/bin/taskset";
const PARALLEL: &str = "/usr/bin/parallel";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `xargs -P FILES` on the home CPU alone: the baseline.
    HomeOnly,
    /// `mrun --each -j FILES`: every job starts at once, as with xargs; the balancer spreads them.
    MrunAll,
    /// `mrun --each` with its default -j (the CPUs of home and the node: 2 here).
    MrunDefault,
    /// GNU parallel with one job slot at home and one on the node.
    Parallel,
}

pub const ALL: [Way; 4] = [Way::HomeOnly, Way::MrunAll, Way::MrunDefault, Way::Parallel];

impl Way {
    pub fn label(self) -> &'static str {
        match self {
            Way::HomeOnly => "home only (xargs)",
            Way::MrunAll => "mrun --each -j N",
            Way::MrunDefault => "mrun --each",
            Way::Parallel => "GNU parallel -S",
        }
    }

    pub fn is_mrun(self) -> bool {
        matches!(self, Way::MrunAll | Way::MrunDefault)
    }
}

/// Where the ways run: the home CPU, the node, mrun's copies and the files.
pub struct Setup<'a> {
    pub home_cpus: &'a str,
    pub node: &'a Node,
    pub mrun: &'a Mrun,
    pub inputs: &'a Inputs,
    pub dir: &'a Scratch,
}

impl Setup<'_> {
    /// `way`'s command, under `taskset -c HOME`.
    pub fn command(&self, way: Way) -> Command {
        let n = self.inputs.files.len().to_string();
        // Every way gets mrun's environment (the client HOME, no ssh-agent): only mrun and
        // parallel read it.
        let mut cmd = self.mrun.command(TASKSET);
        cmd.arg("-c").arg(self.home_cpus);
        match way {
            Way::HomeOnly => {
                cmd.args(["xargs", "-P", &n, "-n", "1", "-d", "\\n", "-a"])
                    .arg(&self.inputs.list)
                    .arg("gzip")
                    .args(GZIP_ARGS);
            }
            Way::MrunAll => {
                cmd.arg(&self.mrun.mrun)
                    .args(["--each", "-j", &n, "gzip"])
                    .args(GZIP_ARGS)
                    .arg(":::")
                    .args(&self.inputs.files);
            }
            Way::MrunDefault => {
                cmd.arg(&self.mrun.mrun)
                    .args(["--each", "gzip"])
                    .args(GZIP_ARGS)
                    .arg(":::")
                    .args(&self.inputs.files);
            }
            Way::Parallel => {
                let login = format!("1/:,1/{}", self.node.name);
                cmd.args([PARALLEL, "--will-cite", "--ssh"])
                    .arg(self.node.ssh_command_line())
                    .args(["-S", &login, "gzip"])
                    .args(GZIP_ARGS)
                    .arg(":::")
                    .args(&self.inputs.files);
            }
        }
        cmd
    }

    /// Runs `way` once (after removing old outputs) and checks its outputs; its wall time.
    pub fn run(&self, way: Way) -> anyhow::Result<Duration> {
        self.inputs.clear_outputs()?;
        let mut cmd = self.command(way);
        cmd.stdin(Stdio::null());
        let timed = run_timed(&mut cmd, self.dir, "way", self.timeout())
            .with_context(|| format!("{} did not finish", way.label()))?;
        if !timed.status.success() {
            return Err(timed.failure(way.label()))
                .with_context(|| format!("its output: {}", timed.stdout.trim()));
        }
        self.inputs.check_outputs(way.label())?;
        self.inputs.clear_outputs()?;
        Ok(timed.elapsed)
    }

    /// Generous: one CPU doing all of it five times over, and a minute.
    fn timeout(&self) -> Duration {
        let mib: u64 = self.inputs.files.len() as u64 * self.inputs.mib;
        Duration::from_secs(60 + mib / 2)
    }
}
