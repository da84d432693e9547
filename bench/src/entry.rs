//! How every bench binary starts and ends: inherited descriptors marked close-on-exec (a
//! victim holding a stray pipe would be refused), then the run, then one exit status: 0 when
//! every measurement was made, 1 when some failed (each failure is printed), 2 on an error
//! that stopped the run.

use std::process::ExitCode;

pub fn run(name: &str, body: impl FnOnce() -> anyhow::Result<bool>) -> ExitCode {
    if let Err(e) = crate::sys::cloexec_inherited_fds() {
        eprintln!("{name}: {e:#}");
        return ExitCode::from(2);
    }
    match body() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(2)
        }
    }
}
