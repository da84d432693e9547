//! The only code in mrun-core that talks to the kernel directly: ptrace, process memory,
//! namespaces and clone3. Everything here is a thin, typed wrapper; policy lives in `engine`.

pub mod caps;
pub mod cpu;
pub mod events;
pub mod fdio;
pub mod kcmp;
pub mod memfd;
pub mod memory;
pub mod ns;
pub mod pidfd;
pub mod pipe;
pub mod placed;
pub mod process;
pub mod ptrace;
pub mod signals;
pub mod sock_diag;
pub mod socket;
pub mod tty;
pub mod uffd;

pub use nix::unistd::Pid;

/// The last OS error as a `std::io::Error`.
pub(crate) fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}
