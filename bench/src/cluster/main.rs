//! `mrun-bench-cluster`: a batch of CPU-bound jobs (`gzip -9` of text files) on two emulated
//! machines, three ways in the same run: all at home (`xargs -P`), `mrun --each` (the balancer
//! moves jobs to the node while they run), and GNU parallel with a job slot on each machine.
//! This 2-CPU host plays both: home is CPU 0 (every way is started under `taskset -c 0`), the
//! node is a private OpenSSH sshd on 127.0.0.1 pinned to CPU 1 (its sessions, mrun's agent and
//! the jobs restored there inherit that). mrun measures each machine's load on its own CPUs.

mod inputs;
mod moves;
mod table;
mod ways;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use mrun_bench::mrun::Mrun;
use mrun_bench::node::Node;
use mrun_bench::report;
use mrun_bench::scratch::Scratch;

use inputs::Inputs;
use moves::MoveLog;
use table::Run;
use ways::{Setup, Way};

/// The node's name in the client's `.ssh/config` and in mrun's config.
const NODE: &str = "nodea";

#[derive(Debug, Parser)]
#[command(
    name = "mrun-bench-cluster",
    about = "gzip -9 batch on two emulated machines: home only, mrun --each, GNU parallel -S"
)]
struct Args {
    /// Number of input files (one job each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    files: u64,
    /// Size of each input file, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    mib: u64,
    /// Repetitions of the whole comparison; the median is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// The CPUs of home (a `taskset -c` list).
    #[arg(long, default_value = "0")]
    home_cpus: String,
    /// The CPUs of the node (a `taskset -c` list).
    #[arg(long, default_value = "1")]
    node_cpus: String,
    /// A line for the `[balance]` table of mrun's config.toml, e.g. `min_stay = 2.0` (repeat
    /// for more; default: none, the policy's defaults).
    #[arg(long, value_name = "KEY = VALUE")]
    balance: Vec<String>,
    /// Where mrun, mrunctl and mrun-agent are [default: next to this binary].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mrun_bench::entry::run("mrun-bench-cluster", || run(&args).map(|()| true))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let bin_dir = mrun_bench::mrun::bin_dir(args.bin_dir.as_deref())?;
    for tool in ["/usr/bin/taskset", "/usr/bin/parallel", "/usr/bin/xargs"] {
        if !Path::new(tool).is_file() {
            bail!("{tool} is missing: run scripts/install-deps (packages util-linux, parallel, findutils)");
        }
    }
    // Dropped in reverse: the daemon (with Mrun), then sshd, then the directory.
    let dir = Scratch::new()?;
    let node = Node::start_on_cpus(dir.path(), NODE, Some(&args.node_cpus))?;
    let mrun = Mrun::install(&bin_dir, &dir, &node.home)?;
    let config = write_config(&node.home, &args.balance)?;

    let count = usize::try_from(args.files).context("too many files")?;
    eprintln!(
        "mrun-bench-cluster: writing {count} files of {} MiB and their reference gzip -9 outputs",
        args.mib
    );
    let inputs = Inputs::create(dir.path(), count, args.mib)?;
    let setup = Setup {
        home_cpus: &args.home_cpus,
        node: &node,
        mrun: &mrun,
        inputs: &inputs,
        dir: &dir,
    };

    eprintln!("mrun-bench-cluster: starting mrun's daemon and connecting it to {NODE}");
    let nodes = warm_up(&setup)?;
    print_header(args, &setup, &bin_dir, &config, &nodes);

    let mut runs = Vec::new();
    for rep in 1..=args.reps {
        for way in ways::ALL {
            eprintln!(
                "mrun-bench-cluster: rep {rep}/{}: {}",
                args.reps,
                way.label()
            );
            let log = MoveLog::mark(&node.home);
            let wall = setup.run(way)?;
            let moves = way.is_mrun().then(|| log.since());
            eprintln!("mrun-bench-cluster:   {:.2} s", wall.as_secs_f64());
            runs.push(Run { way, wall, moves });
        }
    }
    println!();
    table::print(&runs);
    println!();
    println!("load average at the end: {}", report::loadavg());
    Ok(())
}

/// mrun's configuration in the client HOME: the node, and the balancer with the given knobs
/// (the policy's defaults for the others); its text.
fn write_config(home: &Path, balance: &[String]) -> anyhow::Result<String> {
    let dir = home.join(".config/mrun");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("config.toml");
    let mut text = format!("nodes = [\"{NODE}\"]\n\n[balance]\nenabled = true\n");
    for line in balance {
        text.push_str(line.trim());
        text.push('\n');
    }
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text)
}

/// `mrunctl nodes` under `taskset -c HOME`: starts the daemon (pinned to home, as `mrun`
/// would start it) and its SSH connection to the node before anything is timed, so that the
/// first mrun way does not pay for them. Its output (the node's CPUs and load) goes into the
/// header.
fn warm_up(setup: &Setup) -> anyhow::Result<String> {
    let mut cmd = setup.mrun.command("/usr/bin/taskset");
    cmd.arg("-c")
        .arg(setup.home_cpus)
        .arg(&setup.mrun.mrunctl)
        .arg("nodes")
        .stdin(Stdio::null());
    let timed =
        mrun_bench::measure::run_timed(&mut cmd, setup.dir, "nodes", Duration::from_secs(60))?;
    if !timed.status.success() {
        return Err(timed.failure("mrunctl nodes"));
    }
    Ok(timed.stdout)
}

fn print_header(args: &Args, setup: &Setup, bin_dir: &Path, config: &str, nodes: &str) {
    let n = setup.inputs.files.len();
    println!("mrun-bench-cluster: {n} x `gzip -9 -n -k -f FILE` of {} MiB text files ({:.1} MiB of .gz), \
              three ways on two emulated machines",
             args.mib, setup.inputs.output_bytes() as f64 / f64::from(1u32 << 20));
    println!("machine: {}", report::machine());
    println!(
        "mrun, mrunctl, mrun-agent: from {} ({})",
        bin_dir.display(),
        setup.mrun.version()
    );
    println!(
        "home: CPU {} (every way runs under `taskset -c {}`, and so does the mrun daemon)",
        args.home_cpus, args.home_cpus
    );
    println!(
        "node {NODE}: OpenSSH sshd on 127.0.0.1:{} under `taskset -c {}` (the agent and the jobs \
              restored there inherit it)",
        setup.node.port, args.node_cpus
    );
    println!(
        "mrun's config.toml (knobs not named keep the defaults of docs/policy.md): {}",
        config
            .lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("`mrunctl nodes` before the runs (daemon started and connected, untimed):");
    for line in nodes.lines() {
        println!("  {line}");
    }
    println!(
        "ways, in this order in each repetition (outputs checked byte for byte against plain \
              `gzip -9 -n -c`, made before):"
    );
    for way in ways::ALL {
        println!("  {:<18} {}", way.label(), describe(way, n));
    }
    println!("fairness: GNU parallel gets one slot per CPU (its best setting: it cannot move a running \
              job, so more slots only crowd the CPUs); mrun is shown both with -j {n} (every job at once, \
              as xargs -P {n}) and with its default -j (the CPUs of home and node: 2 here)");
    println!("load average at the start: {} (this host's two CPUs also run other work: it skews the numbers, \
              and the timings are not asserted)", report::loadavg());
    println!("repetitions: {} (median wall time reported)", args.reps);
}

fn describe(way: Way, n: usize) -> String {
    match way {
        Way::HomeOnly => format!("xargs -P {n} -n 1 gzip -9 -n -k -f   (all on the home CPU)"),
        Way::MrunAll => format!(
            "mrun --each -j {n} gzip -9 -n -k -f ::: FILES   (the balancer moves jobs to {NODE})"
        ),
        Way::MrunDefault => "mrun --each gzip -9 -n -k -f ::: FILES   (default -j)".into(),
        Way::Parallel => {
            format!("parallel -S 1/:,1/{NODE} gzip -9 -n -k -f ::: FILES   (ssh per remote job)")
        }
    }
}
