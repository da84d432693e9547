//! Pipes: capacity, copying out buffered bytes without consuming them (tee), creating and
//! refilling a pipe for a restored process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Give the pipe of write end `w` room for at least `bytes` if it has less; returns its
/// capacity (which stays smaller when this user may not have bigger pipes).
pub fn make_room(w: BorrowedFd, bytes: usize) -> io::Result<usize> {
    // SAFETY: fcntl on a descriptor we hold.
    let now = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if now < 0 {
        return Err(last_err());
    }
    if now as usize >= bytes {
        return Ok(now as usize);
    }
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a descriptor we hold.
    let set = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    Ok(if set < 0 { now as usize } else { set as usize })
}

/// A new open file description of the pipe end `end` (as opening `/proc/PID/fd/N` of a pipe
/// gives), close-on-exec, with no status flags of its own yet.
pub fn reopen(end: BorrowedFd, write_end: bool) -> io::Result<OwnedFd> {
    let access = if write_end {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", end.as_raw_fd()))
        .map_err(io::Error::other)?;
    // SAFETY: `path` is a valid C string; the new descriptor is ours alone.
    let fd = unsafe { libc::open(path.as_ptr(), access | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
