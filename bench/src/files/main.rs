//! `mrun-bench-files`: what it costs a job on a node that does not see home's files to work on
//! them anyway (issue 12), against OpenSSH moving the same bytes to the same node in the same
//! run. The node is this machine, behind a private OpenSSH sshd on 127.0.0.1 that runs in a
//! mount namespace of its own where the data directory is an empty tmpfs. Each job starts at
//! home under `mrun` with its working directory in the data directory, is moved to the node with
//! `mrunctl migrate` while it waits for a line on its stdin, and only then does its work, timing
//! it itself. Uses the real CLI as a user would; never links the engine.

mod jobs;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use mrun_bench::measure::run_timed;
use mrun_bench::mrun::Mrun;
use mrun_bench::node::{Node, Push};
use mrun_bench::pattern;
use mrun_bench::report::{self, median};
use mrun_bench::scratch::Scratch;

use jobs::{Ran, Work};

/// The node's name in the client's `.ssh/config`.
const NODE: &str = "nodea";
/// The block the writing job repeats: larger than any zstd window mrun could compress with
/// below its long mode, so the written stream is as incompressible as the read one.
const BLOCK: usize = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "mrun-bench-files",
    about = "A job on a node that does not see home's files, streaming and opening them through \
             mrun, against OpenSSH moving the same bytes"
)]
struct Args {
    /// Size of the streamed file, in MB (10^6 bytes).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    mb: u64,
    /// Number of small files.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    files: u32,
    /// Size of each small file, in KiB.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    file_kib: u32,
    /// Repetitions of every measurement; the median is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Where mrun, mrunctl and mrun-agent are [default: next to this binary].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// A check of the bench itself: the node sees the data directory (no namespace), so the
    /// jobs read and write it directly and mrun serves nothing. Not a measurement of issue 12.
    #[arg(long)]
    node_sees_data: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mrun_bench::entry::run("mrun-bench-files", || run(&args))
}

/// The measurements of one row, or why they stopped.
#[derive(Default)]
struct Row {
    forwarded: Vec<Ran>,
    baseline: Vec<Duration>,
    failure: Option<String>,
}

impl Row {
    /// One repetition: the job's run (or its failure) and the baseline measured beside it.
    fn record(&mut self, what: &str, r: anyhow::Result<Ran>, base: Duration) {
        self.baseline.push(base);
        match r {
            Ok(ran) => self.forwarded.push(ran),
            Err(e) => {
                eprintln!("mrun-bench-files: {what}: {e:#}");
                self.failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn work(&self) -> f64 {
        median(self.forwarded.iter().map(|r| r.work))
    }

    fn wall(&self) -> f64 {
        median(self.forwarded.iter().map(|r| r.wall))
    }

    fn base(&self) -> f64 {
        median(self.baseline.iter().copied())
    }
}

/// Ok(false) when some measurement failed (the failures are printed).
fn run(args: &Args) -> anyhow::Result<bool> {
    let bin_dir = mrun_bench::mrun::bin_dir(args.bin_dir.as_deref())?;
    let len = args.mb * 1_000_000;
    let small_len = u64::from(args.file_kib) * 1024;
    // Dropped in reverse: the daemon (with Mrun), then sshd, then the directory.
    let dir = Scratch::new()?;
    check_room(dir.path(), len)?;
    // The job's data, which the node does not see: not under /dev (every machine has its own
    // /dev, which mrun never serves from home), in memory when we may mount a tmpfs.
    let data_dir = Scratch::outside_dev()?;
    if !data_dir.in_memory() {
        eprintln!(
            "mrun-bench-files: the data are on {}'s file system, not in memory (mounting a \
             tmpfs needs root)",
            data_dir.path().display()
        );
    }
    let data = data_dir.file("data");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&data)
        .with_context(|| format!("cannot create {}", data.display()))?;
    eprintln!(
        "mrun-bench-files: writing {} MB of random bytes and {} files of {} KiB in {}",
        args.mb,
        args.files,
        args.file_kib,
        data.display()
    );
    let input = data.join("in.bin");
    write_random(&input, len, 1)?;
    let block = dir.file("block.bin");
    write_random(&block, BLOCK as u64, 2)?;
    let block_bytes = std::fs::read(&block).context("cannot read the block back")?;
    let small = data.join("small");
    std::fs::create_dir(&small).with_context(|| format!("cannot create {}", small.display()))?;
    for i in 0..args.files {
        let bytes = pattern::text_seeded(small_len as usize, u64::from(i) + 3);
        std::fs::write(small.join(format!("f{i:06}")), bytes).context("writing a small file")?;
    }

    let hidden = if args.node_sees_data {
        Vec::new()
    } else {
        vec![data.clone()]
    };
    let node = Node::start_hiding(dir.path(), NODE, None, &hidden)?;
    let mrun = Mrun::install(&bin_dir, &dir, &node.home)?;
    warm_up(&mrun, &dir)?;
    print_header(args, &bin_dir, &mrun, &node, &data);

    let stream_timeout = Duration::from_secs(120 + args.mb / 5);
    let small_timeout = Duration::from_secs(120 + u64::from(args.files) / 20);
    let (mut read, mut write, mut copy) = (Row::default(), Row::default(), Row::default());
    let (mut small_home, mut small_node) = (Row::default(), Row::default());
    let output = data.join("out.bin");
    let pulled = data.join("pulled.bin");
    for rep in 1..=args.reps {
        let say = |what: &str| eprintln!("mrun-bench-files: rep {rep}/{}: {what}", args.reps);

        say("ssh push of in.bin (baseline of reading)");
        let push = node.push_file(&input, &dir.file("push.err"), stream_timeout)?;
        say("ssh pull into a file at home (baseline of writing)");
        let pull = node.pull_to_file(len, &pulled, &dir.file("pull.err"), stream_timeout)?;
        std::fs::remove_file(&pulled).context("cannot remove the pulled file")?;
        let (push, pull) = (transfer(push), transfer(pull));

        say("read: cat in.bin > /dev/null on the node");
        read.record(
            "read",
            jobs::run(&mrun, &dir, &data, &Work::Read, Some(NODE), stream_timeout),
            push,
        );
        say("write: python3 writes out.bin on the node");
        let w = Work::Write {
            len,
            block: block.clone(),
        };
        let r = jobs::run(&mrun, &dir, &data, &w, Some(NODE), stream_timeout)
            .and_then(|r| jobs::check_repeated(&output, &block_bytes, len).map(|()| r));
        let _ = std::fs::remove_file(&output);
        write.record("write", r, pull);
        say("copy: cat in.bin > out.bin on the node");
        let r = jobs::run(&mrun, &dir, &data, &Work::Copy, Some(NODE), stream_timeout)
            .and_then(|r| jobs::check_same(&output, &input).map(|()| r));
        let _ = std::fs::remove_file(&output);
        copy.record("copy", r, push + pull);

        say("small files at home");
        let home = jobs::run(&mrun, &dir, &data, &Work::SmallFiles, None, small_timeout);
        let home_time = home.as_ref().map(|r| r.work).unwrap_or_default();
        small_home.record("small files at home", home, home_time);
        say("small files on the node");
        small_node.record(
            "small files on the node",
            jobs::run(
                &mrun,
                &dir,
                &data,
                &Work::SmallFiles,
                Some(NODE),
                small_timeout,
            ),
            home_time,
        );
    }

    println!();
    print_streams(
        args,
        len,
        &[(&read, "read"), (&write, "write"), (&copy, "copy")],
    );
    println!();
    print_small(args, &small_home, &small_node);
    let failures: Vec<(&str, &String)> = [
        ("read", &read),
        ("write", &write),
        ("copy", &copy),
        ("small files at home", &small_home),
        ("small files on the node", &small_node),
    ]
    .into_iter()
    .filter_map(|(what, row)| row.failure.as_ref().map(|f| (what, f)))
    .collect();
    if !failures.is_empty() {
        println!();
        println!("failures:");
        for (what, f) in &failures {
            println!("  {what}: {f}");
        }
    }
    println!();
    println!("load average at the end: {}", report::loadavg());
    Ok(failures.is_empty())
}

/// The time a baseline transfer took, from the remote command's start to ssh's exit.
fn transfer(p: Push) -> Duration {
    p.push
}

/// `/dev/shm` must hold the input, the job's output and the baseline's copy at once.
fn check_room(dir: &Path, len: u64) -> anyhow::Result<()> {
    let st = nix::sys::statvfs::statvfs(dir).context("statvfs")?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let need = 2 * len + (BLOCK as u64) + (256 << 20);
    if free < need {
        bail!(
            "{} has {} MB free; the bench needs {} MB there (the input, one output, the block)",
            dir.display(),
            free / 1_000_000,
            need / 1_000_000
        );
    }
    Ok(())
}

fn write_random(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    pattern::write_random(&mut out, len, seed)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `mrunctl nodes --nodes NODE`: starts the home daemon and its SSH connection to the node
/// before anything is timed.
fn warm_up(m: &Mrun, dir: &Scratch) -> anyhow::Result<()> {
    eprintln!("mrun-bench-files: starting mrun's daemon and connecting it to {NODE}");
    let mut cmd = m.command(&m.mrunctl);
    cmd.args(["nodes", "--nodes", NODE])
        .env("MRUN_BALANCE", "off")
        .stdin(Stdio::null());
    let timed = run_timed(&mut cmd, dir, "nodes", Duration::from_secs(60))?;
    if !timed.status.success() {
        return Err(timed.failure("mrunctl nodes"));
    }
    Ok(())
}

fn print_header(args: &Args, bin_dir: &Path, m: &Mrun, node: &Node, data: &Path) {
    println!(
        "mrun-bench-files: a job on a node that does not see home's files, working on them \
         through mrun, against OpenSSH moving the same bytes to the same node"
    );
    println!("machine: {}", report::machine());
    println!(
        "mrun, mrunctl, mrun-agent: from {} ({})",
        bin_dir.display(),
        m.version()
    );
    if args.node_sees_data {
        println!(
            "node {NODE}: OpenSSH sshd on 127.0.0.1:{}, SEEING THE DATA DIRECTORY \
             (--node-sees-data: a check of the bench, not a measurement of served files)",
            node.port
        );
    } else {
        println!(
            "node {NODE}: OpenSSH sshd on 127.0.0.1:{} in a mount namespace of its own where {} \
             is an empty tmpfs (checked from outside through /proc/SSHD/root)",
            node.port,
            data.display()
        );
    }
    println!("OpenSSH's choice with this node: {}", node.openssh_cipher());
    println!(
        "data at home: in.bin, {} MB of random bytes (incompressible); small/, {} files of {} \
         KiB of text; in a tmpfs of the bench's own under /tmp (not /dev: every machine has \
         its own /dev, which mrun never serves from home)",
        args.mb, args.files, args.file_kib
    );
    println!(
        "each job: mrun JOB in the data directory, moved to {NODE} with mrunctl migrate while it \
         waits for a line on stdin, then it does its work and times it itself"
    );
    println!(
        "load average at the start: {} (other work on this host skews the numbers)",
        report::loadavg()
    );
    println!("repetitions: {} (medians reported)", args.reps);
}

fn print_streams(args: &Args, len: u64, rows: &[(&Row, &str)]) {
    println!(
        "streaming {} MB (MB = 1e6 bytes), forwarded by mrun on {NODE} against OpenSSH:",
        args.mb
    );
    println!(
        "  {:<6} {:<24} {:>8} {:>8} {:>8}   {:<44} {:>8} {:>8} {:>8}",
        "what",
        "job on the node",
        "job s",
        "MB/s",
        "wall s",
        "OpenSSH, same bytes",
        "ssh s",
        "MB/s",
        "fwd/ssh"
    );
    for (row, what) in rows {
        let (job, ssh) = match *what {
            "read" => (
                "cat in.bin > /dev/null",
                format!("ssh {NODE} 'cat > /dev/null' < in.bin"),
            ),
            "write" => (
                "python3 writes out.bin",
                format!("ssh {NODE} 'head -c N /dev/zero' > file"),
            ),
            _ => (
                "cat in.bin > out.bin",
                "push, then pull (both above)".into(),
            ),
        };
        if row.forwarded.is_empty() {
            let base = if row.baseline.is_empty() {
                String::new()
            } else {
                format!("{:>8.2} {:>8.1}", row.base(), mb_s(len, row.base()))
            };
            println!(
                "  {what:<6} {job:<24} {:>26}   {ssh:<44} {base}",
                "FAILED (below)"
            );
            continue;
        }
        let (fwd, base) = (row.work(), row.base());
        println!(
            "  {what:<6} {job:<24} {fwd:>8.2} {:>8.1} {:>8.2}   {ssh:<44} {base:>8.2} {:>8.1} \
             {:>7.2}x{}",
            mb_s(len, fwd),
            row.wall(),
            mb_s(len, base),
            base / fwd,
            if row.failure.is_some() {
                "  (partial: see below)"
            } else {
                ""
            }
        );
    }
    println!(
        "  (job s: the job's own clock around its work, after the move; wall s: from the bench's \
         \"go\" to mrun's exit; ssh s: from the remote command's start to ssh's exit; fwd/ssh = \
         forwarded MB/s / OpenSSH MB/s: issue 12 asks for at least 0.50x in streaming)"
    );
}

fn print_small(args: &Args, home: &Row, node: &Row) {
    println!(
        "{} files of {} KiB, `cat small/* > /dev/null` (the shell's glob, then cat opens and \
         reads each):",
        args.files, args.file_kib
    );
    let files = f64::from(args.files);
    let line = |what: &str, row: &Row| {
        if row.forwarded.is_empty() {
            println!("  {what:<34} FAILED (below)");
        } else {
            let t = row.work();
            println!(
                "  {what:<34} {t:>8.3} s {:>10.0} files/s   (wall {:.3} s)",
                files / t.max(1e-9),
                row.wall()
            );
        }
    };
    line("at home (mrun, not moved)", home);
    let served = if args.node_sees_data {
        "its own view"
    } else {
        "served from home"
    };
    line(&format!("on {NODE} ({served})"), node);
    if !home.forwarded.is_empty() && !node.forwarded.is_empty() {
        let (h, n) = (home.work(), node.work());
        println!(
            "  node/home {:.2}x; each file costs {:.3} ms more on the node",
            n / h.max(1e-9),
            (n - h) / files * 1e3
        );
    }
}

fn mb_s(len: u64, secs: f64) -> f64 {
    len as f64 / 1e6 / secs.max(1e-9)
}
