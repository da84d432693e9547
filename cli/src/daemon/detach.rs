//! The daemon lets go of whoever started it: a session of its own (no terminal, no signals
//! meant for the starting shell's jobs), `/` as working directory (it keeps no directory busy
//! that the starter might unmount or remove), and no descriptor beyond stdin, stdout and
//! stderr (a pipe of the starting shell, a `make -j` jobserver or an IDE's socket kept open
//! for the daemon's whole life would keep its reader waiting for an end that never comes).
//! Those three are /dev/null when `mrun` starts it.

use anyhow::{Context, Result};

pub fn detach() -> Result<()> {
    // Fails only for a process group leader (started by hand from an interactive shell): it
    // then keeps that shell's session, which is what its user asked for.
    let _ = nix::unistd::setsid();
    nix::unistd::chdir("/").context("changing to /")?;
    let open = mrun_core::sys::process::open_fds_above_stdio()
        .context("listing the descriptors it inherited")?;
    for fd in open {
        // An fd that closed meanwhile has nothing left to release.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}
