//! Exit codes and how a command's failure reaches the user: one line on stderr.

use mrun_core::engine::EngineError;

/// The process could not be checkpointed (unsupported); it keeps running.
pub const REFUSED: i32 = 3;
/// The image is unreadable, corrupt, truncated or incompatible with this machine.
pub const BAD_IMAGE: i32 = 4;
/// The command line asks for something that cannot be done as written (as clap's own errors).
pub const USAGE: i32 = 2;
/// Any other failure.
pub const FAILURE: i32 = 1;

pub fn code_for(e: &EngineError) -> i32 {
    match e {
        EngineError::Refused(_) => REFUSED,
        EngineError::Image(_) | EngineError::Incompatible(_) => BAD_IMAGE,
        _ => FAILURE,
    }
}

/// An error and its causes on one line.
pub use mrun_core::engine::error_chain as chain;

/// Print `mrunctl: message` (one line) and exit with `code`.
pub fn fail(prog: &str, message: impl std::fmt::Display, code: i32) -> ! {
    let text = message.to_string().replace('\n', " ");
    eprintln!("{prog}: {text}");
    std::process::exit(code)
}
