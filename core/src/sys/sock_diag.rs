//! NETLINK_SOCK_DIAG for unix sockets (`man 7 sock_diag`): what the kernel knows about one
//! unix socket, by inode, that no socket call tells: its peer's inode, its name, its state and
//! its shutdown bits. Only queries; it never changes a socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::last_err;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `udiag_show` bits and attribute types (linux/unix_diag.h).
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
/// `TCP_LISTEN` in `udiag_state`.
pub const STATE_LISTEN: u8 = 10;

/// `struct unix_diag_req`.
#[repr(C)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    req: UnixDiagReq,
}

/// What sock_diag tells about one unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    pub ino: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: i32,
    /// A `TCP_*` state: [`STATE_LISTEN`] for a listening socket.
    pub state: u8,
    /// The inode of the socket it is connected to (none, or 0 once that one is closed).
    pub peer: Option<u64>,
    /// The bound address (`sun_path`, abstract names starting with a NUL byte), if any.
    pub name: Option<Vec<u8>>,
    /// Bytes waiting in its receive queue (for a datagram socket, the first message's only);
    /// for a listening socket, the connections waiting to be accepted.
    pub rqueue: u32,
    /// Bytes waiting in its send queue; for a listening socket, its backlog.
    pub wqueue: u32,
    /// The file a socket bound to a path made, `(st_ino, st_dev)` as stat(2) gives them (an
    /// accepted connection names its listener's file).
    pub file: Option<(u64, u64)>,
    /// `sk_shutdown`: 1 receive side shut down, 2 send side.
    pub shutdown: u8,
}

/// A NETLINK_SOCK_DIAG socket of this process's network namespace.
pub struct SockDiag(OwnedFd);

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: socket(2) takes integers.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(last_err());
        }
        // SAFETY: socket(2) returned a new descriptor that nothing else owns.
        Ok(SockDiag(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The unix socket with inode `ino`, or `None` when this network namespace has none (the
    /// socket is in another one, or is not a unix socket).
    pub fn unix(&self, ino: u64) -> io::Result<Option<UnixSocket>> {
        let Ok(ino32) = u32::try_from(ino) else {
            return Ok(None);
        };
        let request = Request {
            header: libc::nlmsghdr {
                nlmsg_len: std::mem::size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: ino32,
                nlmsg_pid: 0,
            },
            req: UnixDiagReq {
                family: libc::AF_UNIX as u8,
                protocol: 0,
                pad: 0,
                states: u32::MAX,
                ino: ino32,
                show: UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN,
                // INET_DIAG_NOCOOKIE: look the socket up by inode alone.
                cookie: [u32::MAX, u32::MAX],
            },
        };
        // SAFETY: `request` is a plain repr(C) struct that outlives the call; the kernel
        // reads exactly its size.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                (&request as *const Request).cast(),
                std::mem::size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(last_err());
        }
        let mut buf = vec![0u8; 16384];
        // SAFETY: `buf` is a writable buffer of the given length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(last_err());
        }
        buf.truncate(n as usize);
        parse_reply(&buf, ino)
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply")
}

/// A device number as the kernel keeps it inside (`MAJOR << 20 | MINOR`), as stat(2) shows it.
fn user_dev(kernel: u32) -> u64 {
    libc::makedev(kernel >> 20, kernel & 0xf_ffff)
}

/// The answer to one request: a `unix_diag_msg` with attributes, or an error message
/// (ENOENT: no such socket here).
fn parse_reply(b: &[u8], ino: u64) -> io::Result<Option<UnixSocket>> {
    const NLMSG_HDR: usize = 16;
    let len = u32_at(b, 0).ok_or_else(malformed)? as usize;
    let kind = u16_at(b, 4).ok_or_else(malformed)?;
    let msg = b.get(NLMSG_HDR..len).ok_or_else(malformed)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = -(u32_at(msg, 0).ok_or_else(malformed)? as i32);
        return match errno {
            0 | libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(malformed());
    }
    // struct unix_diag_msg: family, type, state, pad, ino, cookie[2] (16 bytes).
    let (kind, state) = match msg.get(..4) {
        Some([_, kind, state, _]) => (*kind as i32, *state),
        _ => return Err(malformed()),
    };
    let mut sock = UnixSocket {
        ino,
        kind,
        state,
        peer: None,
        name: None,
        rqueue: 0,
        wqueue: 0,
        file: None,
        shutdown: 0,
    };
    let mut at = 16;
    while at + 4 <= msg.len() {
        let alen = u16_at(msg, at).ok_or_else(malformed)? as usize;
        let atype = u16_at(msg, at + 2).ok_or_else(malformed)? & 0x3fff;
        let data = msg.get(at + 4..at + alen).ok_or_else(malformed)?;
        match atype {
            UNIX_DIAG_NAME => sock.name = Some(data.to_vec()),
            UNIX_DIAG_PEER => sock.peer = u32_at(data, 0).map(u64::from),
            UNIX_DIAG_VFS => {
                let ino = u32_at(data, 0).ok_or_else(malformed)?;
                let dev = u32_at(data, 4).ok_or_else(malformed)?;
                sock.file = Some((u64::from(ino), user_dev(dev)));
            }
            UNIX_DIAG_RQLEN => {
                sock.rqueue = u32_at(data, 0).ok_or_else(malformed)?;
                sock.wqueue = u32_at(data, 4).ok_or_else(malformed)?;
            }
            UNIX_DIAG_SHUTDOWN => sock.shutdown = data.first().copied().unwrap_or(0),
            _ => {}
        }
        if alen < 4 {
            return Err(malformed());
        }
        at += (alen + 3) & !3;
    }
    Ok(Some(sock))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socketpair's ends name each other; nothing is queued or shut down yet.
    #[test]
    fn socketpair_ends_are_peers() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let ino = |s: &std::os::unix::net::UnixStream| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).expect("stat"),
            )
        };
        let diag = SockDiag::open().expect("sock_diag socket");
        let da = diag.unix(ino(&a)).expect("query").expect("socket a");
        let db = diag.unix(ino(&b)).expect("query").expect("socket b");
        assert_eq!(da.peer, Some(ino(&b)));
        assert_eq!(db.peer, Some(ino(&a)));
        assert_eq!(
            (da.kind, da.name.as_ref(), da.shutdown),
            (libc::SOCK_STREAM, None, 0)
        );
        std::io::Write::write_all(&mut &a, b"12345").expect("write");
        b.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let db = diag.unix(ino(&b)).expect("query").expect("socket b");
        assert_eq!((db.rqueue, db.shutdown), (5, 2));
        assert_eq!(diag.unix(u64::from(u32::MAX) - 7).expect("query"), None);
    }

    /// A listener shows its file (as stat sees it), its backlog and the connections waiting;
    /// an accepted connection shows its listener's name and file.
    #[test]
    fn listener_shows_file_backlog_and_waiting_connections() {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = std::env::temp_dir().join(format!("mrun-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("stat")
                .ino()
        };
        let diag = SockDiag::open().expect("sock_diag socket");
        let meta = std::fs::symlink_metadata(&path).expect("stat of the socket file");
        let l = diag
            .unix(ino(listener.as_raw_fd()))
            .expect("query")
            .expect("listener");
        assert_eq!(l.state, STATE_LISTEN);
        assert_eq!(l.file, Some((meta.ino(), meta.dev())));
        assert!(l.wqueue > 0, "a backlog of {}", l.wqueue);
        let _waiting = UnixStream::connect(&path).expect("connect");
        let l = diag
            .unix(ino(listener.as_raw_fd()))
            .expect("query")
            .expect("listener");
        assert_eq!(l.rqueue, 1);
        let (conn, _) = listener.accept().expect("accept");
        let c = diag
            .unix(ino(conn.as_raw_fd()))
            .expect("query")
            .expect("accepted");
        assert_eq!((c.name, c.file), (l.name, l.file));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
