//! Printing as a Unix tool prints: every line `mrun` and `mrunctl` show goes through here
//! (`println!` and `eprintln!`, which panic when the reader is gone, are denied in this crate
//! by `cli/clippy.toml`).
//!
//! A closed stdout (`mrunctl status | head -1`, `mrunctl nodes | true`) ends the program the
//! way it ends `ls`: killed by SIGPIPE (status 141 in a shell), with nothing on stderr. Any
//! other failure to write stdout (a full disk) is one line on stderr and exit 1. A message for
//! stderr that cannot be written is dropped: there is nowhere left to say so.

use std::io::Write;

/// Print to stdout (as `print!`), ending like `ls` when the reader went away.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::print::stdout(format_args!($($arg)*)) };
}

/// Print a line to stdout (as `println!`), ending like `ls` when the reader went away.
#[macro_export]
macro_rules! outln {
    () => { $crate::print::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::print::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print a line to stderr (as `eprintln!`), never failing.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::print::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Write `text` to stdout and flush it; see the module's doc for what a failure does.
pub fn stdout(text: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        stdout_failed(&e)
    }
}

/// Write `text` to stderr; a failure is ignored.
pub fn stderr(text: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// Parse the command line `words` as clap does, except that `--help` and `--version` end like
/// any other output here (clap would exit 0 when nobody read them); usage errors exit 2.
pub fn parse_args<P: clap::Parser>(words: Vec<std::ffi::OsString>) -> P {
    match P::try_parse_from(words) {
        Ok(parsed) => parsed,
        Err(e) if e.use_stderr() => e.exit(),
        Err(e) => {
            if let Err(io) = e.print().and_then(|()| std::io::stdout().flush()) {
                stdout_failed(&io)
            }
            std::process::exit(0)
        }
    }
}

/// Writing our stdout failed with `e`: end as `ls` does when its reader went away (death by
/// SIGPIPE), or say what else went wrong and exit 1.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        mrun_core::supervise::end_like(mrun_core::wire::Ended::Signaled(libc::SIGPIPE))
    }
    crate::exit::fail(
        crate::exit::program(),
        format!("cannot write to stdout: {e}"),
        crate::exit::FAILURE,
    )
}
