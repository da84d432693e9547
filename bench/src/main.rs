//! `mrun-bench`: times `mrunctl checkpoint` and `mrunctl restore` of victims with a given amount
//! of touched memory, random or text-like, against a plain copy of the same bytes measured in
//! the same run; with `--threads`, of victims with that many threads instead (1 against 4
//! against 1,000 by default). Uses the real CLI as a user would; never links the engine.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use mrun_bench::measure::{self, Setup};
use mrun_bench::pattern::{self, Contents};
use mrun_bench::report::{self, Row};
use mrun_bench::scratch::Scratch;
use mrun_bench::victim;

#[derive(Debug, Parser)]
#[command(
    name = "mrun-bench",
    about = "Checkpoint/restore throughput of mrunctl against a plain copy"
)]
struct Args {
    /// Touched memory of the victims, in MiB [default: 1,64,512,2048; with --threads: 512].
    #[arg(long, value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    sizes: Option<Vec<u64>>,
    /// Memory contents of the victims [default: random,text; with --threads: random].
    #[arg(long, value_delimiter = ',')]
    contents: Option<Vec<Contents>>,
    /// Measure victims with these thread counts (the main thread included) instead of the size
    /// table: `--threads` alone means 1,4,1000. Each count is a row, compared with the 1-thread row.
    #[arg(long, value_delimiter = ',', num_args = 0..=1,
          default_missing_value = "1,4,1000",
          value_parser = clap::value_parser!(u32).range(1..=20000))]
    threads: Option<Vec<u32>>,
    /// Runs per row; the median is reported.
    #[arg(long, visible_alias = "reps", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// The mrunctl to measure [default: mrunctl next to this binary].
    #[arg(long, value_name = "PATH")]
    mrunctl: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mrun_bench::entry::run("mrun-bench", || run(&args))
}

/// Ok(false) when some measurement failed (the failures are printed).
fn run(args: &Args) -> anyhow::Result<bool> {
    let mrunctl = match &args.mrunctl {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("cannot find this binary's path")?
            .with_file_name("mrunctl"),
    };
    if !mrunctl.is_file() {
        bail!("no mrunctl at {}: build it with `cargo build --release -p mrun`, or pass --mrunctl PATH",
              mrunctl.display());
    }
    let dir = Scratch::new()?;
    // A copy, so that a rebuild of the workspace during the run cannot swap the binary measured.
    let snapshot = dir.file("mrunctl");
    std::fs::copy(&mrunctl, &snapshot).with_context(|| {
        format!(
            "cannot copy {} to {}",
            mrunctl.display(),
            snapshot.display()
        )
    })?;
    let victim = victim::compile(dir.path())?;
    let (version, start_cost) = version_and_start_cost(&snapshot, &dir)?;

    let threaded = args.threads.is_some();
    let plan = Plan {
        sizes: args.sizes.clone().unwrap_or_else(|| {
            if threaded {
                vec![512]
            } else {
                vec![1, 64, 512, 2048]
            }
        }),
        contents: args.contents.clone().unwrap_or_else(|| {
            if threaded {
                vec![Contents::Random]
            } else {
                vec![Contents::Random, Contents::Text]
            }
        }),
        threads: args.threads.clone().unwrap_or_else(|| vec![1]),
    };
    print_header(args, &plan, &mrunctl, &version, start_cost, &dir);
    let setup = Setup {
        mrunctl: &snapshot,
        victim: &victim,
        dir: &dir,
    };
    let mut rows = Vec::new();
    for &mib in &plan.sizes {
        for &contents in &plan.contents {
            let len = usize::try_from(mib << 20).context("size too large")?;
            let bytes = pattern::generate(contents, len);
            for &threads in &plan.threads {
                rows.push(measure_row(
                    &setup,
                    &bytes,
                    mib,
                    contents,
                    threads,
                    args.repeat,
                )?);
            }
        }
    }
    println!();
    if threaded {
        report::print_thread_table(&rows);
        println!();
        println!("what each thread beyond the first adds (against the 1-thread row, medians):");
        report::print_per_thread_cost(&rows);
        println!();
        println!(
            "checkpoint stages, median ms, as mrunctl reports them with MRUN_TRACE=1 (other: the \
             rest of ckpt s, i.e. starting mrunctl, ending the victim, exiting)"
        );
        report::print_stages(&rows, "checkpoint");
        println!();
        println!(
            "restore stages, median ms, likewise (other: the rest of rst net s, i.e. starting \
             mrunctl, the restored victim's exit after its verification, reaping it)"
        );
        report::print_stages(&rows, "restore");
    } else {
        report::print_table(&rows);
    }
    println!();
    report::print_verify_detail(&rows);
    report::print_failures(&rows);
    println!("load average at the end: {}", report::loadavg());
    Ok(rows.iter().all(|r| r.failure.is_none()))
}

/// What to measure: every size with every contents with every thread count.
struct Plan {
    sizes: Vec<u64>,
    contents: Vec<Contents>,
    threads: Vec<u32>,
}

/// All runs of one size, contents and thread count, each a baseline copy of `bytes` (the
/// victim's memory, regenerated) then a checkpoint and restore, so that both see the same
/// conditions. A failing checkpoint or restore ends the row with the error; a failing
/// baseline, the bench.
fn measure_row(
    s: &Setup,
    bytes: &mrun_bench::buf::PageBuf,
    mib: u64,
    contents: Contents,
    threads: u32,
    repeat: u32,
) -> anyhow::Result<Row> {
    let sum = pattern::checksum(bytes.as_slice());
    let mut row = Row {
        mib,
        contents,
        threads,
        samples: Vec::new(),
        copies: Vec::new(),
        failure: None,
    };
    let what = if threads > 1 {
        format!("{mib} MiB {contents} {threads} threads")
    } else {
        format!("{mib} MiB {contents}")
    };
    for i in 1..=repeat {
        eprintln!("mrun-bench: {what}: run {i}/{repeat}");
        row.copies
            .push(measure::copy(bytes.as_slice(), &s.dir.file("baseline"))?);
        match measure::checkpoint_restore(s, mib, contents, threads, sum) {
            Ok(sample) => row.samples.push(sample),
            Err(e) => {
                row.failure = Some(format!("{e:#}"));
                break;
            }
        }
    }
    Ok(row)
}

/// `mrunctl --version` output and its median wall time over 5 runs (the fixed cost of starting it).
fn version_and_start_cost(
    mrunctl: &std::path::Path,
    dir: &Scratch,
) -> anyhow::Result<(String, f64)> {
    let mut times = Vec::new();
    let mut version = String::new();
    for _ in 0..5 {
        let mut cmd = Command::new(mrunctl);
        cmd.arg("--version").stdin(Stdio::null());
        let t = measure::run_timed(&mut cmd, dir, "version", Duration::from_secs(10))?;
        if !t.status.success() {
            bail!(
                "`{} --version` failed ({}): {}",
                mrunctl.display(),
                t.status,
                t.stderr.trim()
            );
        }
        version = t.stdout.trim().to_string();
        times.push(t.elapsed);
    }
    Ok((version, report::median(times.into_iter())))
}

fn print_header(
    args: &Args,
    plan: &Plan,
    mrunctl: &std::path::Path,
    version: &str,
    start_cost: f64,
    dir: &Scratch,
) {
    let contents: Vec<&str> = plan.contents.iter().map(|c| c.name()).collect();

    println!("mrun-bench: mrunctl checkpoint/restore against a plain copy of the same bytes");
    println!("machine: {}", report::machine());
    println!(
        "mrunctl: {} ({version}, run from a copy in the scratch directory); `mrunctl --version` \
              wall time {:.2} ms (median of 5): the fixed cost of starting it",
        mrunctl.display(),
        start_cost * 1e3
    );
    println!(
        "load average at the start: {} (other work on the machine skews the numbers)",
        report::loadavg()
    );
    let threads = if args.threads.is_some() {
        format!("; threads {:?}", plan.threads)
    } else {
        String::new()
    };
    println!(
        "images and baseline files in {} (tmpfs); sizes {:?} MiB; contents {}{threads}; median of {} runs",
        dir.path().display(),
        plan.sizes,
        contents.join(","),
        args.repeat
    );
    if args.threads.is_some() {
        println!("CRIU reference for threads (quoted in mrun's issue 8, not measured here): about 90 s to \
                  checkpoint and restore a process with 10,000 threads");
        println!("{}", report::THREADS_LEGEND);
    } else {
        println!("CRIU 4.2 reference (same machine kind, uncompressed images on tmpfs): ~1 MiB dump 60-90 ms, \
                  restore 30-40 ms; 64 MiB dump ~0.1 s, restore ~0.07 s; 512 MiB dump 0.35-0.5 s, restore 0.3-0.4 s");
        println!("{}", report::LEGEND);
    }
}
