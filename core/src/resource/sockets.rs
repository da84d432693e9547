//! Sockets. A pair of connected unix sockets whose both ends the job holds (`socketpair(2)`, or
//! a connection a listener of the job accepted; kept by one process or shared by members of the
//! tree) is carried: each end with its type, status flags, shutdown state, options and what
//! waits in its receive queue, copied without consuming it; the restore makes a new pair (or
//! accepts the connection again from the restored listener) and refills each end from the
//! other. Listeners are [`super::listeners`]. Every other socket reaches outside the job (TCP,
//! UDP, a unix datagram socket bound to a name, a unix socket connected to a process outside
//! the job) and is refused in one sentence naming what it is.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::fds::refuse;
use super::listeners::Listeners;
use crate::engine::error::{Context, EngineError, Result};
use crate::image::model::{FdKind, SocketKind, SocketOptions};
use crate::sys::sock_diag::{self, SockDiag, UnixSocket};
use crate::sys::socket::{self, Peeked};
use crate::sys::Pid;

/// The most bytes one end's receive queue may hold to be carried (the default buffer of a unix
/// socket is about 208 KiB; more is a socket raised with SO_SNDBUFFORCE).
const MAX_QUEUED: usize = 8 << 20;

/// `sk_shutdown` bits.
const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;

/// The inode of a `socket:[N]` descriptor link target.
pub fn inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The sockets the members of a job hold, by inode: a descriptor holding each, to copy it from.
#[derive(Default)]
pub struct Held(HashMap<u64, (Pid, i32)>);

impl Held {
    /// Note that `fd` of `pid` holds socket `ino` (the first holder is kept).
    pub fn note(&mut self, ino: u64, pid: Pid, fd: i32) {
        self.0.entry(ino).or_insert((pid, fd));
    }
}

/// What a socket of the job is, as far as its family, state and peer tell: a listener (carried
/// by [`super::listeners`]) or one end of a pair the job holds. Anything else is a refusal.
enum Checked {
    Listener(UnixSocket),
    Pair {
        me: UnixSocket,
        peer: Option<u64>,
        kind: SocketKind,
    },
}

/// Classify the socket `ino` on `fd` of `pid` (`sock` a copy of it) without reading its queues:
/// the refusal [`capture`] would give for its family, name or peer, or what it is.
fn check(pid: Pid, fd: i32, ino: u64, sock: BorrowedFd, held: &Held) -> Result<Checked> {
    let opt = |name: i32, what: &str| {
        socket::option(sock, name).ctx(|| format!("reading {what} of fd {fd} of pid {pid}"))
    };
    let domain = opt(libc::SO_DOMAIN, "SO_DOMAIN")?;
    if domain != libc::AF_UNIX {
        let kind = opt(libc::SO_TYPE, "SO_TYPE")?;
        let protocol = opt(libc::SO_PROTOCOL, "SO_PROTOCOL")?;
        let listening = opt(libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? != 0;
        return Err(refuse(pid, fd, foreign(domain, kind, protocol, listening)));
    }
    let diag = SockDiag::open().ctx(|| "opening a NETLINK_SOCK_DIAG socket".into())?;
    let query = |ino: u64| {
        diag.unix(ino)
            .ctx(|| format!("sock_diag of unix socket {ino}"))
    };
    let Some(me) = query(ino)? else {
        return Err(refuse(
            pid,
            fd,
            "a unix socket of another network namespace",
        ));
    };
    if me.state == sock_diag::STATE_LISTEN {
        return Ok(Checked::Listener(me));
    }
    let peer = match connected_peer(&me, held) {
        Ok(peer) => peer,
        Err(what) => return Err(refuse(pid, fd, what)),
    };
    match peer.map(query).transpose()? {
        // Its peer is closed: it is the job's alone.
        None => {}
        Some(Some(other)) if other.peer == Some(ino) => {}
        _ => {
            return Err(refuse(
                pid,
                fd,
                "a unix socket connected to a socket that is connected elsewhere",
            ))
        }
    }
    let kind = match me.kind {
        libc::SOCK_STREAM => SocketKind::Stream,
        libc::SOCK_DGRAM => SocketKind::Datagram,
        libc::SOCK_SEQPACKET => SocketKind::SeqPacket,
        other => return Err(refuse(pid, fd, format!("a unix socket of type {other}"))),
    };
    if let Some(what) = credentials_option(sock) {
        return Err(refuse(
            pid,
            fd,
            format!("a unix socket that receives its peer's credentials ({what})"),
        ));
    }
    Ok(Checked::Pair { me, peer, kind })
}

/// What [`capture`] would refuse of the socket `ino` on `fd` of `pid` for its family, name or
/// peer, found without reading its queues or touching the job (see `engine::predict`).
pub fn predict(pid: Pid, fd: i32, ino: u64, held: &Held) -> Result<()> {
    let copy = crate::sys::pidfd::get_fd(pid, fd)
        .ctx(|| format!("copying fd {fd} of pid {pid} (a socket)"))?;
    check(pid, fd, ino, copy.as_fd(), held).map(|_| ())
}

/// The socket `ino` on `fd` of `pid` (status `flags`), captured as one end of a pair the job
/// holds, or the refusal saying what else it is.
pub fn capture(pid: Pid, fd: i32, ino: u64, flags: i32, held: &Held) -> Result<FdKind> {
    let copy = crate::sys::pidfd::get_fd(pid, fd)
        .ctx(|| format!("copying fd {fd} of pid {pid} (a socket)"))?;
    let sock = copy.as_fd();
    let (me, peer, kind) = match check(pid, fd, ino, sock, held)? {
        Checked::Listener(me) => return super::listeners::capture(pid, fd, sock, &me, flags),
        Checked::Pair { me, peer, kind } => (me, peer, kind),
    };
    let options = options(sock).ctx(|| format!("reading the options of fd {fd} of pid {pid}"))?;
    let queued = match copy_queue(sock, kind, options.peek_off) {
        Ok(Ok(queued)) => queued,
        Ok(Err(what)) => return Err(refuse(pid, fd, what)),
        Err(e) => {
            return Err(EngineError::Os {
                what: format!("copying the queue of fd {fd} of pid {pid} (a unix socket)"),
                source: e,
            })
        }
    };
    Ok(FdKind::SocketPair {
        id: peer.map_or(ino, |peer| ino.min(peer)),
        end: peer.map_or(0, |peer| u8::from(ino > peer)),
        kind,
        flags,
        shut_rd: me.shutdown & RCV_SHUTDOWN != 0,
        shut_wr: me.shutdown & SEND_SHUTDOWN != 0,
        options,
        queued,
        peer_closed: peer.is_none(),
        name: me.name,
    })
}

/// The option by which unix socket `sock` receives its peer's credentials, if one is set.
pub(super) fn credentials_option(sock: BorrowedFd) -> Option<&'static str> {
    [
        (libc::SO_PASSCRED, "SO_PASSCRED"),
        (libc::SO_PASSSEC, "SO_PASSSEC"),
        (libc::SO_PASSPIDFD, "SO_PASSPIDFD"),
    ]
    .into_iter()
    // A kernel without the option does not pass what it names.
    .find(|(name, _)| socket::option(sock, *name).unwrap_or(0) != 0)
    .map(|(_, what)| what)
}

/// The inode of the peer of unix socket `me` when it is one end of a pair held by the job
/// (`None` when the peer is closed, which leaves it the job's alone), else what the socket is
/// instead. A connected stream or seqpacket socket may have a name (an accepted connection
/// has its listener's); a named datagram socket receives from anyone who knows the name.
fn connected_peer(me: &UnixSocket, held: &Held) -> std::result::Result<Option<u64>, String> {
    if let Some(name) = &me.name {
        if me.kind == libc::SOCK_DGRAM || me.peer.is_none() {
            return Err(format!("a unix socket bound to {}", show_name(name)));
        }
    }
    match me.peer {
        None => Err("a unix socket that is not connected".into()),
        // A closed peer shuts a connection down both ways; else the peer is a connection
        // waiting in a listener's backlog (no inode until it is accepted).
        Some(0) if me.kind == libc::SOCK_DGRAM || me.shutdown == RCV_SHUTDOWN | SEND_SHUTDOWN => {
            Ok(None)
        }
        Some(0) => Err("a unix socket whose connection is not accepted yet".into()),
        Some(peer) if held.0.contains_key(&peer) => Ok(Some(peer)),
        Some(_) => Err("a unix socket connected to a process outside the job".into()),
    }
}

/// What a socket of another family is, for a refusal.
fn foreign(domain: i32, kind: i32, protocol: i32, listening: bool) -> String {
    let what = match (domain, kind, protocol) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP) => "TCP socket",
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_MPTCP) => "MPTCP socket",
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP) => "UDP socket",
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMP)
        | (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6) => "ICMP (ping) socket",
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_RAW, _) => "raw IP socket",
        (libc::AF_INET | libc::AF_INET6, _, _) => "internet socket",
        (libc::AF_NETLINK, _, _) => "netlink socket",
        (libc::AF_PACKET, _, _) => "packet socket",
        (libc::AF_VSOCK, _, _) => "vsock socket",
        _ => return format!("a socket of address family {domain}"),
    };
    if listening {
        format!("a listening {what}")
    } else {
        format!("a {what}")
    }
}

/// A unix socket name as `ss` shows it: a path, or `@name` for an abstract one.
pub(super) fn show_name(name: &[u8]) -> String {
    match name.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        // A path comes with its terminating NUL.
        _ => {
            let path = name.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(path).into_owned()
        }
    }
}

pub(super) fn options(sock: BorrowedFd) -> std::io::Result<SocketOptions> {
    Ok(SocketOptions {
        sndbuf: socket::option(sock, libc::SO_SNDBUF)?.max(0) as u32,
        rcvbuf: socket::option(sock, libc::SO_RCVBUF)?.max(0) as u32,
        rcvtimeo_us: socket::timeout(sock, libc::SO_RCVTIMEO)?,
        sndtimeo_us: socket::timeout(sock, libc::SO_SNDTIMEO)?,
        rcvlowat: socket::option(sock, libc::SO_RCVLOWAT)?,
        peek_off: socket::option(sock, libc::SO_PEEK_OFF)?,
    })
}

/// What waits in the receive queue of `sock`, left in place: peeked at a peek offset that
/// moves past each message (SO_PEEK_OFF), set back to `peek_off` afterwards whatever happens.
/// `Ok(Err(what))` says why the queue cannot be carried.
fn copy_queue(
    sock: BorrowedFd,
    kind: SocketKind,
    peek_off: i32,
) -> std::io::Result<std::result::Result<Vec<Vec<u8>>, String>> {
    if let Err(e) = socket::set_option(sock, libc::SO_PEEK_OFF, 0) {
        // A kernel that cannot peek past the first message: fine while nothing waits.
        let mut probe = [0u8; 1];
        return match socket::peek(sock, &mut probe)? {
            Peeked::Empty => Ok(Ok(Vec::new())),
            Peeked::Data { .. } => Ok(Err(format!(
                "a unix socket with data queued that this kernel cannot copy (SO_PEEK_OFF: {e})"
            ))),
        };
    }
    let copied = peek_all(sock, kind);
    socket::set_option(sock, libc::SO_PEEK_OFF, peek_off)?;
    let queued = match copied? {
        Ok(q) => q,
        Err(what) => return Ok(Err(what)),
    };
    if kind != SocketKind::Datagram {
        let total: usize = queued.iter().map(Vec::len).sum();
        let expected = socket::queued(sock)?;
        if total != expected {
            return Ok(Err(format!(
                "a unix socket whose queue cannot be copied whole ({total} of {expected} bytes; \
                 out-of-band data?)"
            )));
        }
    }
    Ok(Ok(queued))
}

/// Peek every message (or the stream's bytes) from peek offset 0 on.
fn peek_all(
    sock: BorrowedFd,
    kind: SocketKind,
) -> std::io::Result<std::result::Result<Vec<Vec<u8>>, String>> {
    let mut queued: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let (len, truncated, control) = match socket::peek(sock, &mut buf)? {
            Peeked::Empty => break,
            Peeked::Data {
                len,
                truncated,
                control,
            } => (len, truncated, control),
        };
        if control {
            return Ok(Err(
                "a unix socket with descriptors in flight in its queue (SCM_RIGHTS)".into(),
            ));
        }
        if truncated {
            // A message longer than the buffer: look at it again, whole.
            if buf.len() > MAX_QUEUED {
                return Ok(Err(too_much()));
            }
            socket::set_option(sock, libc::SO_PEEK_OFF, total as i32)?;
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        let data = buf.get(..len).unwrap_or_default();
        match kind {
            // A stream or seqpacket socket shut down for receiving reads 0 at the end.
            SocketKind::Stream | SocketKind::SeqPacket if len == 0 => break,
            SocketKind::Stream => match queued.first_mut() {
                Some(bytes) => bytes.extend_from_slice(data),
                None => queued.push(data.to_vec()),
            },
            SocketKind::Datagram | SocketKind::SeqPacket => queued.push(data.to_vec()),
        }
        total += len;
        if total > MAX_QUEUED {
            return Ok(Err(too_much()));
        }
    }
    Ok(Ok(queued))
}

fn too_much() -> String {
    format!(
        "a unix socket with more than {} MiB waiting in its queue",
        MAX_QUEUED >> 20
    )
}

/// The socket pairs of a restore, both ends made and filled, by `(id, end)`.
pub struct Pairs(HashMap<(u64, u8), OwnedFd>);

impl Pairs {
    /// End `end` of pair `id`, taken out (each end is one open file of the image, taken once).
    pub fn take(&mut self, id: u64, end: u8) -> Result<OwnedFd> {
        self.0.remove(&(id, end)).ok_or_else(|| {
            EngineError::Unrestorable(format!(
                "the image holds end {end} of unix socket pair {id} twice"
            ))
        })
    }
}

/// One end of a pair as the image holds it.
struct End<'a> {
    kind: SocketKind,
    flags: i32,
    shut_rd: bool,
    shut_wr: bool,
    options: &'a SocketOptions,
    queued: &'a [Vec<u8>],
    peer_closed: bool,
    name: Option<&'a [u8]>,
}

/// Make every socket pair of the image: a new pair per `id` (a connection a listener of the job
/// accepted is accepted again from it), each end given its options, refilled with what waited
/// in its queue (sent from the other end, a message per message), shut down as it was, with its
/// status flags.
pub fn create_pairs(files: &[FdKind], listeners: &Listeners) -> Result<Pairs> {
    let mut pairs: BTreeMap<u64, [Option<End>; 2]> = BTreeMap::new();
    for kind in files {
        if let FdKind::SocketPair {
            id,
            end,
            kind,
            flags,
            shut_rd,
            shut_wr,
            options,
            queued,
            peer_closed,
            name,
        } = kind
        {
            let slot = pairs
                .entry(*id)
                .or_default()
                .get_mut(usize::from(*end))
                .ok_or_else(|| {
                    EngineError::Unrestorable(format!("unix socket pair {id} has an end {end}"))
                })?;
            *slot = Some(End {
                kind: *kind,
                flags: *flags,
                shut_rd: *shut_rd,
                shut_wr: *shut_wr,
                options,
                queued,
                peer_closed: *peer_closed,
                name: name.as_deref(),
            });
        }
    }
    let mut made = HashMap::new();
    for (id, ends) in pairs {
        let (a, b) = match ends {
            [Some(a), Some(b)] => (a, b),
            [Some(a), None] if a.peer_closed => {
                // Its peer, made to refill its queue and closed again below.
                let options = SocketOptions {
                    rcvtimeo_us: 0,
                    sndtimeo_us: 0,
                    rcvlowat: 1,
                    peek_off: -1,
                    ..a.options.clone()
                };
                let peer = End {
                    kind: a.kind,
                    flags: 0,
                    shut_rd: false,
                    shut_wr: false,
                    options: &options,
                    queued: &[],
                    peer_closed: false,
                    name: None,
                };
                let (fa, _closed) = make_pair(&a, &peer, listeners).map_err(|e| in_pair(e, id))?;
                made.insert((id, 0), fa);
                continue;
            }
            _ => {
                return Err(EngineError::Unrestorable(format!(
                    "the image holds only one end of unix socket pair {id}"
                )))
            }
        };
        let (fa, fb) = make_pair(&a, &b, listeners).map_err(|e| in_pair(e, id))?;
        made.insert((id, 0), fa);
        made.insert((id, 1), fb);
    }
    Ok(Pairs(made))
}

fn in_pair(e: EngineError, id: u64) -> EngineError {
    match e {
        EngineError::Os { what, source } => EngineError::Os {
            what: format!("{what} (unix socket pair {id})"),
            source,
        },
        e => e,
    }
}

fn make_pair(a: &End, b: &End, listeners: &Listeners) -> Result<(OwnedFd, OwnedFd)> {
    if a.kind != b.kind {
        return Err(EngineError::Unrestorable(
            "the two ends of a unix socket pair have different types".into(),
        ));
    }
    let raw = match a.kind {
        SocketKind::Stream => libc::SOCK_STREAM,
        SocketKind::Datagram => libc::SOCK_DGRAM,
        SocketKind::SeqPacket => libc::SOCK_SEQPACKET,
    };
    let accepted = |end: &End| end.name.and_then(|n| listeners.accept_again(n, raw));
    let (fa, fb) = if let Some(made) = accepted(a) {
        let (client, accepted) = made?;
        (accepted, client)
    } else if let Some(made) = accepted(b) {
        made?
    } else {
        socket::pair(raw).ctx(|| "creating a unix socket pair".into())?
    };
    // Buffer sizes first: what waits in one end's queue counts against the other's SO_SNDBUF.
    for (fd, end) in [(&fa, a), (&fb, b)] {
        set_options(fd.as_fd(), end.options).ctx(|| "setting socket options".into())?;
    }
    // Each end's queue, sent from the other end.
    refill(fb.as_fd(), a)?;
    refill(fa.as_fd(), b)?;
    for (fd, end) in [(&fa, a), (&fb, b)] {
        let how = match (end.shut_rd, end.shut_wr) {
            (true, true) => Some(libc::SHUT_RDWR),
            (true, false) => Some(libc::SHUT_RD),
            (false, true) => Some(libc::SHUT_WR),
            (false, false) => None,
        };
        if let Some(how) = how {
            socket::shutdown(fd.as_fd(), how).ctx(|| "shutting a socket down".into())?;
        }
        crate::sys::pipe::set_status_flags(fd.as_raw_fd(), end.flags)
            .ctx(|| "setting socket flags".into())?;
    }
    Ok((fa, fb))
}

/// Send what waited in `end`'s queue from its peer `from`.
fn refill(from: BorrowedFd, end: &End) -> Result<()> {
    for message in end.queued {
        let mut at = 0;
        loop {
            let rest = message.get(at..).unwrap_or_default();
            let sent = match socket::send(from, rest) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    let bytes: usize = end.queued.iter().map(Vec::len).sum();
                    return Err(EngineError::Unrestorable(format!(
                        "the {bytes} bytes that waited in a unix socket do not fit in the \
                         restored socket's buffer"
                    )));
                }
                Err(e) => {
                    return Err(EngineError::Os {
                        what: "refilling a unix socket".into(),
                        source: e,
                    })
                }
            };
            at += sent;
            // A stream may take part of the bytes; a message is sent whole.
            if end.kind != SocketKind::Stream || at >= message.len() {
                break;
            }
        }
    }
    Ok(())
}

/// Give a new socket the options its original had set (the buffer sizes as far as this user
/// may raise them: up to net.core.wmem_max and rmem_max).
pub(super) fn set_options(fd: BorrowedFd, o: &SocketOptions) -> std::io::Result<()> {
    for (name, want) in [(libc::SO_SNDBUF, o.sndbuf), (libc::SO_RCVBUF, o.rcvbuf)] {
        // The kernel doubles what it is given.
        if socket::option(fd, name)? != want as i32 {
            socket::set_option(fd, name, (want / 2) as i32)?;
        }
    }
    if o.rcvtimeo_us != 0 {
        socket::set_timeout(fd, libc::SO_RCVTIMEO, o.rcvtimeo_us)?;
    }
    if o.sndtimeo_us != 0 {
        socket::set_timeout(fd, libc::SO_SNDTIMEO, o.sndtimeo_us)?;
    }
    if o.rcvlowat != 1 {
        socket::set_option(fd, libc::SO_RCVLOWAT, o.rcvlowat)?;
    }
    if o.peek_off >= 0 {
        socket::set_option(fd, libc::SO_PEEK_OFF, o.peek_off)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_ss_shows_them() {
        assert_eq!(show_name(b"/run/x.sock\0"), "/run/x.sock");
        assert_eq!(show_name(b"\0abstract"), "@abstract");
    }

    #[test]
    fn other_families_are_named() {
        let tcp = foreign(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP, true);
        assert_eq!(tcp, "a listening TCP socket");
        let udp = foreign(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP, false);
        assert_eq!(udp, "a UDP socket");
        assert_eq!(
            foreign(libc::AF_NETLINK, libc::SOCK_RAW, 0, false),
            "a netlink socket"
        );
    }
}
