//! Memfds: creating one that can take the seals an image recorded, and reading and adding
//! seals.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::last_err;

/// The seals (`F_SEAL_*`) of memfd `fd`.
pub fn seals(fd: BorrowedFd) -> io::Result<u32> {
    // SAFETY: fcntl on a descriptor we hold.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        Err(last_err())
    } else {
        Ok(r as u32)
    }
}

/// A new memfd named `name`, close-on-exec, that can take `seals` later: one whose only seal
/// is `F_SEAL_SEAL` was made without `MFD_ALLOW_SEALING`, and is made so again.
pub fn create(name: &str, seals: u32) -> io::Result<OwnedFd> {
    let mut flags = libc::MFD_CLOEXEC;
    if seals != libc::F_SEAL_SEAL as u32 {
        flags |= libc::MFD_ALLOW_SEALING;
    }
    let name = std::ffi::CString::new(name.replace('\0', "")).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add `seals` to memfd `fd` (made by [`create`] for them).
pub fn add_seals(fd: BorrowedFd, seals: u32) -> io::Result<()> {
    if seals == libc::F_SEAL_SEAL as u32 {
        // Made without MFD_ALLOW_SEALING, which is this seal already.
        return Ok(());
    }
    // SAFETY: fcntl on a descriptor we hold.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) } != 0 {
        return Err(last_err());
    }
    Ok(())
}
