//! `mrunctl checkpoint PID -o FILE`: write a process's image, then end it (or let it run on).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::Args;
use mrun_core::engine::{self, DumpOptions, EngineError};
use mrun_core::image::Compression;
use mrun_core::sys::Pid;

use crate::exit;

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The process to checkpoint.
    pub pid: i32,
    /// Where to write the image; `-` writes it to standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Let the process go on running after the checkpoint instead of ending it.
    #[arg(long)]
    pub leave_running: bool,
    /// Compression of the page data: `auto` compresses (zstd level 1) when that makes the
    /// image go faster, as measured while writing it (a slow pipe or disk; not a file the
    /// page cache takes, nor random bytes): into a pipe it starts compressed, into a file
    /// raw; `off` never; a zstd level (1 is fast, 19 is small) always.
    #[arg(long, value_name = "auto|off|LEVEL", default_value = "auto", value_parser = parse_compression)]
    pub compress: Compression,
    /// Write the memory while the process still runs, in rounds, then freeze it and write only
    /// what it changed meanwhile: a shorter freeze, a larger file (Linux 6.7+; elsewhere a
    /// plain checkpoint, which MRUN_TRACE=1 says). `mrunctl restore` reads either.
    #[arg(long)]
    pub pre_copy: bool,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "auto" => Ok(Compression::Auto(mrun_core::image::DEFAULT_LEVEL)),
        "off" | "none" => Ok(Compression::Off),
        level => match level.parse::<i32>() {
            Ok(l) if (1..=19).contains(&l) => Ok(Compression::Zstd(l)),
            _ => Err(format!(
                "`{level}` is not auto, off or a zstd level from 1 to 19"
            )),
        },
    }
}

/// `auto` into a regular file starts raw: the page cache takes pages faster than zstd makes
/// them, so the first chunks are measured, not compressed (a small image is never compressed).
fn for_a_file(c: Compression, regular: bool) -> Compression {
    match c {
        Compression::Auto(level) if regular => Compression::AutoLocal(level),
        c => c,
    }
}

pub fn run(args: CheckpointArgs) -> ! {
    let opts = DumpOptions {
        compression: args.compress,
        leave_running: args.leave_running,
        precopy: args.pre_copy,
        share_stdio_with: None,
    };
    let pid = Pid::from_raw(args.pid);
    let to_stdout = args.output.as_os_str() == "-";
    let result = if to_stdout {
        let stdout = std::io::stdout().lock();
        engine::checkpoint(pid, BufWriter::with_capacity(1 << 20, stdout), &opts)
    } else {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&args.output)
            .unwrap_or_else(|e| {
                exit::fail(
                    "mrunctl",
                    format!("cannot create {}: {e}", args.output.display()),
                    exit::FAILURE,
                )
            });
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let opts = DumpOptions {
            compression: for_a_file(opts.compression, regular),
            ..opts
        };
        let r = engine::checkpoint(pid, BufWriter::with_capacity(1 << 20, file), &opts);
        // A partial image is worse than none; but never remove what is not a plain file
        // (`-o /dev/null`, a FIFO).
        if r.is_err() && regular {
            let _ = std::fs::remove_file(&args.output);
        }
        r
    };
    match result {
        Ok(_) => {
            let _ = std::io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => {
            let msg = match &e {
                EngineError::Refused(_) => e.to_string(),
                _ => format!(
                    "checkpoint of pid {} failed: {}; the process keeps running",
                    args.pid,
                    exit::chain(&e)
                ),
            };
            exit::fail("mrunctl", msg, exit::code_for(&e))
        }
    }
}
