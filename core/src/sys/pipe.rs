//! Pipes: capacity, copying out buffered bytes without consuming them (tee), creating and
//! refilling a pipe for a restored process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::last_err;

pub fn capacity(f: &File) -> io::Result<u32> {
    // SAFETY: fcntl on a descriptor we own.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if r < 0 {
        Err(last_err())
    } else {
        Ok(r as u32)
    }
}

/// A new pipe `(read, write)` with at least `size` bytes of capacity, close-on-exec.
pub fn create(size: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element out-array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_err());
    }
    // SAFETY: pipe2 just returned these two descriptors and nothing else owns them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; a failure leaves the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    Ok((r, w))
}

/// Every byte buffered in the pipe read end `f`, left in place.
pub fn peek_all(f: &File) -> io::Result<Vec<u8>> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(last_err());
    }
    if n <= 0 {
        return Ok(Vec::new());
    }
    let cap = capacity(f)?;
    let (r, w) = create(cap.max(n as u32))?;
    // SAFETY: tee between two pipe descriptors we hold; it copies without consuming.
    let copied = unsafe {
        libc::tee(
            f.as_raw_fd(),
            w.as_raw_fd(),
            n as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if copied < 0 {
        return Err(last_err());
    }
    drop(w);
    let mut data = Vec::with_capacity(copied as usize);
    File::from(r).read_to_end(&mut data)?;
    Ok(data)
}

/// Write `data` into the pipe write end `fd` (which must have room for it).
pub fn fill(fd: RawFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: we borrow `fd` only for this call and forget the File so it is not closed.
    let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    f.write_all(data)
}

/// Set the file status flags (O_NONBLOCK, ...) of `fd`.
pub fn set_status_flags(fd: RawFd, flags: i32) -> io::Result<()> {
    let keep = flags & (libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT);
    // SAFETY: fcntl on a descriptor we hold.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, keep) } != 0 {
        return Err(last_err());
    }
    Ok(())
}
