//! Exit codes of `mrun` and `mrunctl`, the same for every command, and how a command's failure
//! reaches the user: one sentence on stderr, then the code.
//!
//! 0 success; 1 any other failure; 2 a usage error (as clap exits); 3 refused: the process
//! cannot be checkpointed or moved, and keeps running untouched; 4 a bad or incompatible
//! image. `mrun` itself passes its job's status through instead (see `mrun --help`).

use mrun_core::engine::EngineError;

/// Any other failure.
pub const FAILURE: i32 = 1;
/// The command line is wrong (clap exits with this code too).
pub const USAGE: i32 = 2;
/// The process could not be checkpointed or moved (unsupported); it keeps running.
pub const REFUSED: i32 = 3;
/// The image is unreadable, corrupt, truncated or incompatible with this machine.
pub const BAD_IMAGE: i32 = 4;

/// The exit codes as `--help` lists them.
pub const CODES_HELP: &str = "Exit status: 0 success, 1 failure, 2 usage error, 3 refused (the \
    process cannot be checkpointed or moved and keeps running), 4 bad or incompatible image.";

pub fn code_for(e: &EngineError) -> i32 {
    match e {
        EngineError::Refused(_) => REFUSED,
        EngineError::Image(_) | EngineError::Incompatible(_) => BAD_IMAGE,
        _ => FAILURE,
    }
}

/// The exit code for a failure of any kind: the engine's and the deputies' refusals are 3,
/// bad images 4, anything else 1.
pub fn code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return code_for(e);
        }
        if let Some(crate::jobs::AskError::Refused(_)) = cause.downcast_ref() {
            return REFUSED;
        }
    }
    FAILURE
}

/// An error and its causes on one line.
pub use mrun_core::engine::error_chain as chain;

/// This program's name as messages start with it: `mrunctl` or `mrun`.
pub fn program() -> &'static str {
    let me = std::env::args_os().next().unwrap_or_default();
    match std::path::Path::new(&me).file_name() {
        Some(name) if name == "mrunctl" => "mrunctl",
        _ => "mrun",
    }
}

/// Print `prog: message` (one line) and exit with `code`.
pub fn fail(prog: &str, message: impl std::fmt::Display, code: i32) -> ! {
    let text = message.to_string().replace('\n', " ");
    crate::errln!("{prog}: {text}");
    std::process::exit(code)
}
