//! `mrunctl kill [-s SIGNAL | -SIGNAL] JOB...`: send a signal to jobs wherever they run, as
//! kill(1) does to local processes. A job away has no process here to `kill`; its deputy (the
//! `mrun` the user started) passes the signal on as it does one sent to itself.

use std::ffi::OsString;
use std::str::FromStr;

use clap::Args;
use nix::sys::signal::Signal;

use crate::exit;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal: a name with or without SIG (TERM, SIGUSR1, int) or a number (9). `-SIGNAL`
    /// before the first job works too (`mrunctl kill -9 JOB`), as with kill(1).
    #[arg(short = 's', long = "signal", value_name = "SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    pub signal: Signal,
    /// The jobs: their ids, which are the pids `mrun` started them with.
    #[arg(required = true, value_name = "JOB")]
    pub jobs: Vec<u32>,
}

/// A signal by name (any case, SIG optional) or number.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let bad = || format!("{text:?} is not a signal name or number (`kill -l` lists them)");
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// kill(1)'s `-SIGNAL` form: `mrunctl kill -9 JOB` is read as `mrunctl kill --signal 9 JOB`
/// (clap has no such option). Only the word right after `kill` counts, and only when it
/// names a signal; anything else goes to clap untouched.
pub fn dash_signal(mut args: Vec<OsString>) -> Vec<OsString> {
    let is_kill = args.get(1).is_some_and(|a| a == "kill");
    let signal = args
        .get(2)
        .and_then(|a| a.to_str())
        .and_then(|a| a.strip_prefix('-'))
        .filter(|s| !s.starts_with('-') && parse_signal(s).is_ok())
        .map(OsString::from);
    if let (true, Some(signal)) = (is_kill, signal) {
        args.splice(2..3, [OsString::from("--signal"), signal]);
    }
    args
}

pub fn run(args: KillArgs) -> ! {
    let mut code = 0;
    for job in args.jobs {
        match crate::jobs::ask(job, &format!("signal {}", args.signal as i32)) {
            Ok(_) => {}
            Err(e @ crate::jobs::AskError::NoJob(_)) => {
                code = exit::FAILURE;
                crate::errln!("mrunctl: {e}");
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                code = exit::code_of(&e);
                crate::errln!("mrunctl: cannot signal job {job}: {e:#}");
            }
        }
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        for (text, want) in [
            ("TERM", Signal::SIGTERM),
            ("SIGUSR1", Signal::SIGUSR1),
            ("int", Signal::SIGINT),
            ("sigkill", Signal::SIGKILL),
            ("9", Signal::SIGKILL),
            ("15", Signal::SIGTERM),
        ] {
            assert_eq!(parse_signal(text), Ok(want), "{text}");
        }
        for bad in ["", "SIG", "FOO", "0", "-1", "999"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} taken as a signal");
        }
    }

    #[test]
    fn dash_signal_only_right_after_kill() {
        let words = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            dash_signal(words(&["mrunctl", "kill", "-9", "12"])),
            words(&["mrunctl", "kill", "--signal", "9", "12"])
        );
        assert_eq!(
            dash_signal(words(&["mrunctl", "kill", "-USR1", "12", "13"])),
            words(&["mrunctl", "kill", "--signal", "USR1", "12", "13"])
        );
        for untouched in [
            &["mrunctl", "kill", "-s", "INT", "12"][..],
            &["mrunctl", "kill", "--help"],
            &["mrunctl", "kill", "12", "-9"],
            &["mrunctl", "migrate", "-9", "a"],
            &["mrunctl", "kill", "-bogus", "12"],
        ] {
            assert_eq!(dash_signal(words(untouched)), words(untouched));
        }
    }
}
