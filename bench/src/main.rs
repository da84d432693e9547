//! `mrun-bench`: times `mrunctl checkpoint` and `mrunctl restore` of victims with a given amount
//! of touched memory, random or text-like, against a plain copy of the same bytes measured in
//! the same run; with `--threads`, of victims with that many threads instead (1 against 4
//! against 1,000 by default). Uses the real CLI as a user would; never links the engine.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use mrun_bench::criu::{self, Criu};
use mrun_bench::measure::{self, Engine, Setup};
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
    /// CRIU to measure side by side: `build` (clone v4.2 and `make criu` in
    /// ~/.cache/mrun-bench/criu-4.2 unless already built there), `off`, or the path of a criu
    /// binary [default: the one built in the cache, if any]. Needs root.
    #[arg(long, value_name = "build|off|PATH")]
    criu: Option<String>,
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
    let criu = if args.threads.is_some() {
        Criu::Absent("not measured with --threads".into())
    } else {
        // CRIU is the bench's reference, not what it measures: without it mrun is still measured.
        criu::resolve(args.criu.as_deref()).unwrap_or_else(|e| {
            let e = format!("{e:#}");
            eprintln!("mrun-bench: CRIU: {e}");
            Criu::Absent(format!("not measured: {e}"))
        })
    };
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
    print_header(args, &plan, &mrunctl, &version, start_cost, &dir, &criu);
    let setup = Setup {
        mrunctl: &snapshot,
        victim: &victim,
        dir: &dir,
    };
    let criu_bin = match &criu {
        Criu::Ready { bin, .. } => Some(bin.as_path()),
        Criu::Absent(_) => None,
    };
    let mut rows = Vec::new();
    for &mib in &plan.sizes {
        if let Some(short) = memory_short(mib) {
            eprintln!("mrun-bench: {mib} MiB left out: {short}");
            println!("{mib} MiB left out: {short}");
            continue;
        }
        for &contents in &plan.contents {
            let len = usize::try_from(mib << 20).context("size too large")?;
            let bytes = pattern::generate(contents, len);
            for &threads in &plan.threads {
                rows.push(measure_row(
                    &setup,
                    criu_bin,
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
        println!();
        match &criu {
            Criu::Ready { version, .. } => {
                println!("CRIU ({version}) in the same runs, and mrun's medians over CRIU's")
            }
            Criu::Absent(_) => println!("CRIU"),
        }
        println!("{}", report::CRIU_LEGEND);
        let absent = match &criu {
            Criu::Ready { .. } => None,
            // A build's error is long: the header holds it.
            Criu::Absent(why) if why.len() > 60 => Some("not measured (the reason is above)"),
            Criu::Absent(why) => Some(why.as_str()),
        };
        report::print_criu_table(&rows, absent);
        println!();
        println!(
            "mrun's checkpoint stages, median ms, as mrunctl reports them with MRUN_TRACE=1 \
             (other: the rest of ckpt s, i.e. starting mrunctl, ending the victim, exiting)"
        );
        report::print_stages(&rows, "checkpoint");
        println!();
        println!("mrun's restore stages, median ms, likewise (other: the rest of rst net s)");
        report::print_stages(&rows, "restore");
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

/// Why `mib` MiB do not fit in this machine's available memory now (the bench's copy of the
/// bytes, the victim, the image in tmpfs and the restored victim: 4x, plus 512 MiB), if they
/// do not.
fn memory_short(mib: u64) -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let need = 4 * mib + 512;
    (avail_kib / 1024 < need).then(|| {
        format!(
            "needs ~{need} MiB of free memory, {} MiB available",
            avail_kib / 1024
        )
    })
}

/// All runs of one size, contents and thread count, each a baseline copy of `bytes` (the
/// victim's memory, regenerated) then a checkpoint and restore by mrun and, with `criu`, by
/// CRIU (alternating which goes first), so that all see the same conditions. A failing
/// checkpoint or restore ends that engine's part of the row with the error; a failing
/// baseline, the bench.
fn measure_row(
    s: &Setup,
    criu: Option<&std::path::Path>,
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
        criu: Vec::new(),
        criu_failure: None,
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
        let mut engines = vec![Engine::Mrun];
        if let Some(c) = criu {
            engines.push(Engine::Criu(c));
            if i % 2 == 0 {
                engines.reverse();
            }
        }
        for engine in engines {
            let (samples, failure) = match engine {
                Engine::Mrun => (&mut row.samples, &mut row.failure),
                Engine::Criu(_) => (&mut row.criu, &mut row.criu_failure),
            };
            if failure.is_some() {
                continue;
            }
            match measure::checkpoint_restore(s, engine, mib, contents, threads, sum) {
                Ok(sample) => samples.push(sample),
                Err(e) => *failure = Some(format!("{e:#}")),
            }
        }
        if row.failure.is_some() && (criu.is_none() || row.criu_failure.is_some()) {
            break;
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
    criu: &Criu,
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
        match criu {
            Criu::Ready { bin, version } => println!(
                "CRIU: {} ({version}), measured side by side (table below)",
                bin.display()
            ),
            Criu::Absent(why) => println!("CRIU: {why}"),
        }
        println!("{}", report::LEGEND);
    }
}
