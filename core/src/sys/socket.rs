//! Socket calls for carrying unix socket pairs: what kind a socket is, its options, copying its
//! queue without consuming it (MSG_PEEK at a moving SO_PEEK_OFF), a new pair, sending and
//! shutting down.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::last_err;

fn int_option(fd: BorrowedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(v)
}

/// An integer `SOL_SOCKET` option (SO_DOMAIN, SO_TYPE, SO_SNDBUF, SO_PEEK_OFF...).
pub fn option(fd: BorrowedFd, name: i32) -> io::Result<i32> {
    int_option(fd, libc::SOL_SOCKET, name)
}

/// Set an integer `SOL_SOCKET` option.
pub fn set_option(fd: BorrowedFd, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads one int from a valid pointer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// A timeout option (SO_RCVTIMEO, SO_SNDTIMEO) in microseconds, 0 for none.
pub fn timeout(fd: BorrowedFd, name: i32) -> io::Result<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `tv`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(tv.tv_sec.max(0) as u64 * 1_000_000 + tv.tv_usec.max(0) as u64)
}

pub fn set_timeout(fd: BorrowedFd, name: i32, micros: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_usec: (micros % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads one timeval from a valid pointer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Bytes waiting to be read (SIOCINQ): for a datagram socket, the first message's length.
pub fn queued(fd: BorrowedFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ (FIONREAD) writes one int to a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(last_err());
    }
    Ok(n.max(0) as usize)
}

/// One look at the receive queue without consuming it.
pub enum Peeked {
    /// Nothing more (EAGAIN).
    Empty,
    /// A message (or a stream's next bytes): the bytes copied into the buffer, whether the
    /// message was longer than the buffer, and whether it carried control data that was not
    /// read (descriptors, credentials).
    Data {
        len: usize,
        truncated: bool,
        control: bool,
    },
}

/// Peek at the receive queue into `buf` (MSG_PEEK, never blocking). With SO_PEEK_OFF set,
/// each peek starts where the previous one ended.
pub fn peek(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Peeked> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control buffer).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points to one iovec over `buf`, both valid for the call; without a
    // control buffer the kernel passes no descriptors to us.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = last_err();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Peeked::Empty),
            _ => Err(e),
        };
    }
    Ok(Peeked::Data {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        control: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// A new connected pair of unix sockets of `kind`, close-on-exec.
pub fn pair(kind: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element out-array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    // SAFETY: socketpair just returned these two descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `data` without blocking: the bytes accepted (a message is all or nothing).
pub fn send(fd: BorrowedFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(last_err());
    }
    Ok(n as usize)
}

/// shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR.
pub fn shutdown(fd: BorrowedFd, how: i32) -> io::Result<()> {
    // SAFETY: shutdown takes integers.
    if unsafe { libc::shutdown(fd.as_raw_fd(), how) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// The address of a unix socket name as the kernel reports it (sock_diag): a NUL byte and an
/// abstract name, or a path (its closing NUL byte, if any, dropped).
pub fn unix_addr(name: &[u8]) -> io::Result<nix::sys::socket::UnixAddr> {
    use nix::sys::socket::UnixAddr;
    let addr = match name.split_first() {
        Some((0, abstract_name)) => UnixAddr::new_abstract(abstract_name),
        _ => {
            let path = name.split(|b| *b == 0).next().unwrap_or_default();
            UnixAddr::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path))
        }
    };
    addr.map_err(io::Error::from)
}

/// A new close-on-exec unix socket of `kind` (`SOCK_STREAM`, `SOCK_SEQPACKET`).
fn unix_socket(kind: i32) -> io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let kind = SockType::try_from(kind).map_err(io::Error::from)?;
    socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)
}

/// A new close-on-exec unix socket of `kind` bound to `addr` (the caller deals with what
/// already is at a path), not listening yet.
pub fn bound(kind: i32, addr: &nix::sys::socket::UnixAddr) -> io::Result<OwnedFd> {
    let sock = unix_socket(kind)?;
    nix::sys::socket::bind(sock.as_raw_fd(), addr).map_err(io::Error::from)?;
    Ok(sock)
}

/// listen(2) with `backlog` (at most `SOMAXCONN`, as the kernel would cap it).
pub fn listen(sock: BorrowedFd, backlog: u32) -> io::Result<()> {
    use nix::sys::socket::Backlog;
    let backlog = i32::try_from(backlog)
        .ok()
        .and_then(|b| Backlog::new(b).ok())
        .unwrap_or(Backlog::MAXCONN);
    nix::sys::socket::listen(&sock, backlog).map_err(io::Error::from)
}

/// A connection from a new socket of `kind` to `addr`, where `listener` listens: the client
/// end and the end `listener` accepted, both close-on-exec.
pub fn connect_accept(
    kind: i32,
    listener: BorrowedFd,
    addr: &nix::sys::socket::UnixAddr,
) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{accept4, connect, SockFlag};
    let client = unix_socket(kind)?;
    connect(client.as_raw_fd(), addr).map_err(io::Error::from)?;
    let raw = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: accept4 just returned this descriptor and nothing else owns it.
    let accepted = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok((client, accepted))
}
