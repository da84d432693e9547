//! Listening unix sockets of the job. A listener with nothing waiting to be accepted is carried
//! with its type, backlog, status flags and options, and made again bound to the same name: a
//! path's socket file where it was, with its permission bits, or the same abstract name. A
//! connection it accepted whose both ends the job holds is a pair ([`super::sockets`]), accepted
//! again from the new listener so that it keeps the listener's name.
//!
//! Where the job's own original still holds the listener while the restore runs (a move back to
//! the machine it left, or a restore next to a frozen original), the socket file at the path is
//! the original's: it is moved aside for the new one, put back if the restore fails and removed
//! once it succeeds. An abstract name there is still taken, and the restore says so. A name
//! bound relative to a directory is bound again by its absolute path.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use nix::sys::socket::UnixAddr;

use super::fds::refuse;
use super::made_files::MadeFiles;
use super::sockets::{credentials_option, options, set_options, show_name};
use crate::engine::error::{Context, EngineError, Result};
use crate::image::model::{FdKind, SocketFile, SocketKind};
use crate::sys::sock_diag::{SockDiag, UnixSocket};
use crate::sys::socket;
use crate::sys::Pid;

/// The listening unix socket `me` on `fd` of `pid` (status `flags`), captured, or the refusal
/// saying why it cannot be.
pub fn capture(pid: Pid, fd: i32, sock: BorrowedFd, me: &UnixSocket, flags: i32) -> Result<FdKind> {
    let Some(name) = me.name.clone() else {
        return Err(refuse(pid, fd, "a listening unix socket with no name"));
    };
    let shown = show_name(&name);
    let kind = match me.kind {
        libc::SOCK_STREAM => SocketKind::Stream,
        libc::SOCK_SEQPACKET => SocketKind::SeqPacket,
        other => {
            let what = format!("a listening unix socket ({shown}) of type {other}");
            return Err(refuse(pid, fd, what));
        }
    };
    if me.rqueue > 0 {
        let what = format!(
            "a listening unix socket ({shown}) with {} connection(s) waiting to be accepted",
            me.rqueue
        );
        return Err(refuse(pid, fd, what));
    }
    if let Some(option) = credentials_option(sock) {
        let what = format!("a listening unix socket ({shown}) that passes credentials ({option})");
        return Err(refuse(pid, fd, what));
    }
    let file = match name.first() {
        Some(0) => None,
        _ => match socket_file(pid, &name, me.file)? {
            Ok(file) => Some(file),
            Err(what) => return Err(refuse(pid, fd, what)),
        },
    };
    let options = options(sock).ctx(|| format!("reading the options of fd {fd} of pid {pid}"))?;
    Ok(FdKind::UnixListener {
        kind,
        flags,
        name,
        file,
        backlog: me.wqueue,
        options,
    })
}

/// Where the socket file of a listener bound to the path `name` is, checked against the file the
/// kernel says it made (`bound`: inode and device), or why it cannot be found again.
fn socket_file(
    pid: Pid,
    name: &[u8],
    bound: Option<(u64, u64)>,
) -> Result<std::result::Result<SocketFile, String>> {
    let raw = name.split(|b| *b == 0).next().unwrap_or_default();
    let Ok(named) = std::str::from_utf8(raw) else {
        return Ok(Err(format!(
            "a listening unix socket bound to a path that is not UTF-8 ({})",
            show_name(name)
        )));
    };
    let path = if named.starts_with('/') {
        named.to_string()
    } else {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ctx(|| format!("reading the working directory of pid {pid}"))?;
        format!("{}/{named}", cwd.to_string_lossy().trim_end_matches('/'))
    };
    let gone = || {
        Ok(Err(format!(
            "a listening unix socket whose file {named} was removed or replaced since it was \
             bound"
        )))
    };
    let meta = match std::fs::symlink_metadata(format!("/proc/{pid}/root{path}")) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return gone(),
        Err(e) => {
            return Err(EngineError::Os {
                what: format!("stat of {path}"),
                source: e,
            })
        }
    };
    match bound {
        Some((ino, dev))
            if meta.file_type().is_socket() && meta.ino() == ino && meta.dev() == dev =>
        {
            Ok(Ok(SocketFile {
                path,
                dev,
                ino,
                mode: meta.mode() & 0o7777,
            }))
        }
        _ => gone(),
    }
}

/// The listeners of a restore, made and listening, by the name they had.
#[derive(Default)]
pub struct Listeners(HashMap<Vec<u8>, (OwnedFd, UnixAddr)>);

impl Listeners {
    /// The listener named `name`, taken out (each is one open file of the image, taken once).
    pub fn take(&mut self, name: &[u8]) -> Result<OwnedFd> {
        self.0.remove(name).map(|(fd, _)| fd).ok_or_else(|| {
            EngineError::Unrestorable(format!(
                "the image holds the listening unix socket {} twice",
                show_name(name)
            ))
        })
    }

    /// A connection accepted again from the job's listener that was named `name`, when the
    /// job has one: `(client, accepted)`, both of `kind`.
    pub fn accept_again(&self, name: &[u8], kind: i32) -> Option<Result<(OwnedFd, OwnedFd)>> {
        let (listener, addr) = self.0.get(name)?;
        Some(accept_from(listener.as_fd(), addr, kind, name))
    }
}

fn accept_from(
    listener: BorrowedFd,
    addr: &UnixAddr,
    kind: i32,
    name: &[u8],
) -> Result<(OwnedFd, OwnedFd)> {
    let shown = show_name(name);
    let (client, accepted) = socket::connect_accept(kind, listener, addr)
        .ctx(|| format!("connecting to the restored listener {shown}"))?;
    // The listener is reachable from the moment it is bound: make sure what it accepted is
    // the connection just made.
    let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map(|st| st.st_ino);
    let diag = SockDiag::open().ctx(|| "opening a NETLINK_SOCK_DIAG socket".into())?;
    let accepted_ino = ino(&accepted).ctx(|| "stat of an accepted socket".into())?;
    let client_ino = ino(&client).ctx(|| "stat of a socket".into())?;
    let peer = diag
        .unix(accepted_ino)
        .ctx(|| format!("sock_diag of unix socket {accepted_ino}"))?
        .and_then(|s| s.peer);
    if peer != Some(client_ino) {
        return Err(EngineError::Unrestorable(format!(
            "a process outside the job connected to the restored listener {shown} before the \
             job's own connections were made again"
        )));
    }
    Ok((client, accepted))
}

/// Make every listener of the image, bound where it was and listening, with its options and
/// status flags. What this changes in the file system goes into `made`.
pub fn create(files: &[FdKind], same_machine: bool, made: &mut MadeFiles) -> Result<Listeners> {
    let mut listeners = Listeners::default();
    for file in files {
        let FdKind::UnixListener {
            kind,
            flags,
            name,
            file,
            backlog,
            options,
        } = file
        else {
            continue;
        };
        let shown = show_name(name);
        let raw_kind = match kind {
            SocketKind::Stream => libc::SOCK_STREAM,
            SocketKind::SeqPacket => libc::SOCK_SEQPACKET,
            SocketKind::Datagram => {
                return Err(EngineError::Unrestorable(format!(
                    "the image holds a listening datagram socket ({shown})"
                )))
            }
        };
        let (sock, addr) = match file {
            Some(file) => bind_file(file, raw_kind, same_machine, made)?,
            None => bind_abstract(name, raw_kind)?,
        };
        set_options(sock.as_fd(), options).ctx(|| format!("setting the options of {shown}"))?;
        socket::listen(sock.as_fd(), *backlog).ctx(|| format!("listening on {shown}"))?;
        crate::sys::pipe::set_status_flags(sock.as_raw_fd(), *flags)
            .ctx(|| format!("setting the flags of {shown}"))?;
        listeners.0.insert(name.clone(), (sock, addr));
    }
    Ok(listeners)
}

/// A socket bound to the path of `file`: where the job's own stale or frozen socket file is
/// there, it is moved aside first; any other file there is left alone and the restore refused.
fn bind_file(
    file: &SocketFile,
    kind: i32,
    same_machine: bool,
    made: &mut MadeFiles,
) -> Result<(OwnedFd, UnixAddr)> {
    let path = &file.path;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(meta)
            if meta.file_type().is_socket()
                && meta.ino() == file.ino
                && (!same_machine || meta.dev() == file.dev) =>
        {
            made.move_aside(path)
                .ctx(|| format!("moving the job's old socket file {path} aside"))?;
        }
        Ok(_) => {
            return Err(EngineError::Unrestorable(format!(
                "{path} exists here and is not the socket file of the job's listener; remove it \
                 or restore elsewhere"
            )))
        }
        Err(e) => {
            return Err(EngineError::Os {
                what: format!("stat of {path}"),
                source: e,
            })
        }
    }
    let addr = socket::unix_addr(path.as_bytes()).ctx(|| format!("the address {path}"))?;
    let sock = socket::bound(kind, &addr).ctx(|| format!("binding a unix socket to {path}"))?;
    made.made(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode))
        .ctx(|| format!("chmod of {path}"))?;
    Ok((sock, addr))
}

fn bind_abstract(name: &[u8], kind: i32) -> Result<(OwnedFd, UnixAddr)> {
    let shown = show_name(name);
    let addr = socket::unix_addr(name).ctx(|| format!("the address {shown}"))?;
    match socket::bound(kind, &addr) {
        Ok(sock) => Ok((sock, addr)),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Err(EngineError::Unrestorable(format!(
                "the abstract unix socket name {shown} of a listener of the job is taken on this \
                 machine (by the job itself, when it still runs here), so the listener cannot be \
                 made again here"
            )))
        }
        Err(e) => Err(EngineError::Os {
            what: format!("binding a unix socket to {shown}"),
            source: e,
        }),
    }
}
