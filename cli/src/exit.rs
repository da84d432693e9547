//! Exit codes and how a command's failure reaches the user: one line on stderr.

use mrun_core::engine::EngineError;

/// The process could not be checkpointed (unsupported); it keeps running.
pub const REFUSED: i32 = 3;
/// The image is unreadable, corrupt, truncated or incompatible with this machine.
pub const BAD_IMAGE: i32 = 4;
/// Any other failure.
pub const FAILURE: i32 = 1;

pub fn code_for(e: &EngineError) -> i32 {
    match e {
        EngineError::Refused(_) => REFUSED,
        EngineError::Image(_) | EngineError::Incompatible(_) => BAD_IMAGE,
        _ => FAILURE,
    }
}

/// An error and its causes on one line: "what: because: because".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = c.source();
    }
    text
}

/// Print `mrunctl: message` (one line) and exit with `code`.
pub fn fail(prog: &str, message: impl std::fmt::Display, code: i32) -> ! {
    let text = message.to_string().replace('\n', " ");
    eprintln!("{prog}: {text}");
    std::process::exit(code)
}

/// End this process by the same signal the supervised one died of (no core dump of our own).
pub fn die_of(sig: nix::sys::signal::Signal) -> ! {
    use nix::sys::signal::{self, SigSet, SigmaskHow};
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = mrun_core::sys::signals::set_default(sig);
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = signal::raise(sig);
    std::process::exit(128 + sig as i32)
}
