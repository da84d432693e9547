//! `mrun-bench-migrate`: the downtime of `mrunctl migrate` over SSH for jobs with a given
//! amount of touched memory, random or text-like, idle or writing (50 MB/s by default), with
//! pre-copy and without, against pushing the same bytes through an OpenSSH channel in the same
//! run and against issue 13's target; and what `mrun` adds to starting a command. The node is
//! this machine, behind a private OpenSSH sshd on 127.0.0.1. Uses the real CLI as a user
//! would; never links the engine.

mod job;
mod spawn;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use mrun_bench::mrun::Mrun;
use mrun_bench::node::{Node, Push};
use mrun_bench::pattern::{self, Contents};
use mrun_bench::report::{self, median};
use mrun_bench::scratch::Scratch;
use mrun_bench::victim;

use job::Variant;
use table::{Group, Row};

/// The node's name in the client's `.ssh/config`.
const NODE: &str = "nodea";

#[derive(Debug, Parser)]
#[command(
    name = "mrun-bench-migrate",
    about = "Migration downtime over loopback SSH, with and without pre-copy, idle and writing jobs, \
             against a plain SSH transfer; mrun's start cost"
)]
struct Args {
    /// Touched memory of the migrated jobs, in MiB.
    #[arg(long, value_delimiter = ',', default_value = "64,512",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    sizes: Vec<u64>,
    /// Memory contents of the jobs.
    #[arg(long, value_delimiter = ',', default_value = "text,random")]
    contents: Vec<Contents>,
    /// Jobs: idle (blocked in read) and/or writing (rewriting its memory at --write-rate).
    #[arg(long, value_delimiter = ',', default_value = "idle,write")]
    jobs: Vec<JobKind>,
    /// Migrations with pre-copy (mrun's default) and/or without (MRUN_PRECOPY=0).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    precopy: Vec<OnOff>,
    /// What a writing job rewrites per second, in MB (10^6 bytes): whole pages at random.
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
    write_rate: f64,
    /// Migrations per size and contents below 1 GiB; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Migrations per size and contents from 1 GiB up.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat_large: u32,
    /// Runs each of `true` and `mrun true` (0: skip).
    #[arg(long, default_value_t = 50)]
    spawn_runs: u32,
    /// Runs each of `/bin/sleep 0.1` and `mrun /bin/sleep 0.1` (0: skip).
    #[arg(long, default_value_t = 10)]
    sleep_runs: u32,
    /// Print each job's `mrun trace:` lines and its last line (`verified=...`) on stderr
    /// once it ended.
    #[arg(long)]
    show_trace: bool,
    /// Where mrun, mrunctl and mrun-agent are [default: next to this binary].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JobKind {
    Idle,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate in MB/s (above 0, at most 100000)"
        )),
    }
}

impl Args {
    /// Each job kind with pre-copy on and off, in the order given.
    fn variants(&self) -> Vec<Variant> {
        let mut v = Vec::new();
        for job in &self.jobs {
            for p in &self.precopy {
                let variant = Variant {
                    precopy: *p == OnOff::On,
                    write_mbps: (*job == JobKind::Write).then_some(self.write_rate),
                };
                if !v.contains(&variant) {
                    v.push(variant);
                }
            }
        }
        v
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    job::SHOW_TRACE.store(args.show_trace, std::sync::atomic::Ordering::Relaxed);
    mrun_bench::entry::run("mrun-bench-migrate", || run(&args))
}

/// Ok(false) when some migration failed (the failures are printed).
fn run(args: &Args) -> anyhow::Result<bool> {
    let bin_dir = mrun_bench::mrun::bin_dir(args.bin_dir.as_deref())?;
    // Dropped in reverse: the daemon (with Mrun), then sshd, then the directory.
    let dir = Scratch::new()?;
    let node = Node::start(dir.path(), NODE)?;
    let mut mrun = Mrun::install(&bin_dir, &dir, &node.home)?;
    // The node's restore stages, for the stage table.
    mrun.trace_node = true;
    let victim = victim::compile(dir.path())?;

    print_header(args, &bin_dir, &mrun, &node, &dir);
    eprintln!("mrun-bench-migrate: first migration (connecting)");
    let idle = Variant {
        precopy: true,
        write_mbps: None,
    };
    let first = job::migrate(&mrun, &dir, &victim, NODE, 1, Contents::Random, idle, None)
        .context("the first migration (1 MiB, connecting) failed")?;

    let variants = args.variants();
    let mut groups = Vec::new();
    for &mib in &args.sizes {
        for &contents in &args.contents {
            let repeat = if mib >= 1024 {
                args.repeat_large
            } else {
                args.repeat
            };
            groups.push(measure_group(
                &mrun, &node, &dir, &victim, mib, contents, &variants, repeat,
            )?);
        }
    }
    let mut spawns = Vec::new();
    for (argv, runs) in [
        (&["true"][..], args.spawn_runs),
        (&["/bin/sleep", "0.1"][..], args.sleep_runs),
    ] {
        if runs > 0 {
            eprintln!(
                "mrun-bench-migrate: {} and mrun {}: {runs} runs each",
                argv.join(" "),
                argv.join(" ")
            );
            spawns.push(spawn::compare(&mrun, argv, runs)?);
        }
    }

    println!();
    let setups: Vec<Duration> = groups
        .iter()
        .flat_map(|g| g.pushes.iter().map(|p| p.setup))
        .collect();
    println!("first migration after the daemon started (1 MiB random): conn {:.1} ms (starting the daemon, \
              TCP, SSH key exchange and login, the agent, the handshake), down {:.1} ms, ctl {:.1} ms",
             ms(first.connect), ms(first.downtime), ms(first.ctl));
    println!("  BASELINE OpenSSH `ssh {NODE} CMD` from its start to CMD's first output: {:.1} ms (median of {} runs)",
             median(setups.iter().copied()) * 1e3, setups.len());
    println!();
    println!("{}", table::LEGEND);
    table::print_migrations(&groups);
    table::print_summary(&groups);
    println!();
    println!("{}", table::STAGE_LEGEND);
    table::print_stages(&groups);
    if !spawns.is_empty() {
        println!();
        println!("{}", table::SPAWN_LEGEND);
        table::print_spawns(&spawns);
    }
    println!();
    table::print_failures(&groups);
    println!("load average at the end: {}", report::loadavg());
    Ok(groups
        .iter()
        .all(|g| g.rows.iter().all(|r| r.failure.is_none())))
}

/// All runs of one size and contents: each run is a baseline push, then one migration of each
/// variant (a fresh job each), the variants taking turns at going first, so that all see the
/// same conditions. A failing migration ends its variant's row with the error (the others go
/// on); a failing baseline, the bench.
#[allow(clippy::too_many_arguments)]
fn measure_group(
    m: &Mrun,
    node: &Node,
    dir: &Scratch,
    victim: &Path,
    mib: u64,
    contents: Contents,
    variants: &[Variant],
    repeat: u32,
) -> anyhow::Result<Group> {
    let len = usize::try_from(mib << 20).context("size too large")?;
    let bytes = pattern::generate(contents, len);
    let sum = pattern::checksum(bytes.as_slice());
    let mut group = Group {
        mib,
        contents,
        pushes: Vec::new(),
        rows: variants
            .iter()
            .map(|&variant| Row {
                variant,
                samples: Vec::new(),
                failure: None,
            })
            .collect(),
    };
    for i in 0..repeat {
        eprintln!(
            "mrun-bench-migrate: {mib} MiB {contents}: run {}/{repeat}",
            i + 1
        );
        let push: Push = node.push(bytes.as_slice(), &dir.file("push.err"), job::timeout(mib))?;
        group.pushes.push(push);
        let n = group.rows.len();
        for k in 0..n {
            let row = &mut group.rows[(k + i as usize) % n];
            if row.failure.is_some() {
                continue;
            }
            let v = row.variant;
            eprintln!(
                "mrun-bench-migrate:   {} job, pre-copy {}",
                v.job(),
                v.precopy_name()
            );
            match job::migrate(m, dir, victim, NODE, mib, contents, v, Some(sum)) {
                Ok(sample) => row.samples.push(sample),
                Err(e) => row.failure = Some(format!("{e:#}")),
            }
        }
    }
    Ok(group)
}

fn print_header(args: &Args, bin_dir: &Path, mrun: &Mrun, node: &Node, dir: &Scratch) {
    let contents: Vec<&str> = args.contents.iter().map(|c| c.name()).collect();
    println!("mrun-bench-migrate: `mrunctl migrate` downtime over loopback SSH against a plain SSH transfer \
              of the same bytes; mrun's start cost");
    println!("machine: {}", report::machine());
    println!(
        "mrun, mrunctl, mrun-agent: from {} ({}), run from copies in {} (tmpfs)",
        bin_dir.display(),
        mrun.version(),
        dir.path().display()
    );
    println!("node {NODE}: OpenSSH sshd on 127.0.0.1:{} (this machine; the agent is MRUN_REMOTE_AGENT='{}'); \
              cipher of the OpenSSH client: {}; mrun speaks SSH with russh (first choice chacha20-poly1305, \
              no compression)",
             node.port, mrun.agent_command(), node.openssh_cipher());
    println!(
        "load average at the start: {} (other work on the machine skews the numbers)",
        report::loadavg()
    );
    let variants: Vec<String> = args
        .variants()
        .iter()
        .map(|v| format!("{} job, pre-copy {}", v.job(), v.precopy_name()))
        .collect();
    println!(
        "sizes {:?} MiB; contents {}; {}; median of {} runs ({} from 1 GiB up)",
        args.sizes,
        contents.join(","),
        variants.join(", "),
        args.repeat,
        args.repeat_large
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
