//! Terminals: window size, modes, and giving a session its controlling terminal.

use std::io;
use std::os::fd::{AsFd, RawFd};

use nix::sys::termios::{self, SetArg, Termios};

use super::last_err;
use crate::wire::{TermModes, WinSize};

pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

pub fn window_size(fd: RawFd) -> io::Result<WinSize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ writes one to a valid pointer.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(last_err());
    }
    Ok(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

pub fn set_window_size(fd: RawFd, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Start a new session and make the terminal on `fd` its controlling terminal.
pub fn take_as_controlling(fd: RawFd) -> io::Result<()> {
    // SAFETY: setsid and TIOCSCTTY take no pointers.
    unsafe {
        if libc::setsid() < 0 {
            return Err(last_err());
        }
        if libc::ioctl(fd, libc::TIOCSCTTY, 0) != 0 {
            return Err(last_err());
        }
    }
    Ok(())
}

/// Make process group `pgrp` the foreground group of the terminal `fd` (our controlling
/// terminal; we are in its foreground group).
pub fn set_foreground(fd: RawFd, pgrp: nix::unistd::Pid) -> io::Result<()> {
    // SAFETY: `fd` is only borrowed for the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::tcsetpgrp(fd, pgrp)?;
    Ok(())
}

/// The modes of the terminal `fd`, for the wire.
pub fn modes(fd: impl AsFd) -> io::Result<(Termios, TermModes)> {
    let t = termios::tcgetattr(fd)?;
    let raw: libc::termios = t.clone().into();
    let modes = TermModes {
        iflag: raw.c_iflag,
        oflag: raw.c_oflag,
        cflag: raw.c_cflag,
        lflag: raw.c_lflag,
        cc: raw.c_cc.to_vec(),
    };
    Ok((t, modes))
}

/// Apply modes received from the wire to the terminal `fd`.
pub fn set_modes(fd: impl AsFd, m: &TermModes) -> io::Result<()> {
    let mut raw: libc::termios = termios::tcgetattr(fd.as_fd())?.into();
    raw.c_iflag = m.iflag;
    raw.c_oflag = m.oflag;
    raw.c_cflag = m.cflag;
    raw.c_lflag = m.lflag;
    for (dst, src) in raw.c_cc.iter_mut().zip(&m.cc) {
        *dst = *src;
    }
    termios::tcsetattr(fd, SetArg::TCSANOW, &Termios::from(raw))?;
    Ok(())
}

/// Put the terminal in raw mode (keys pass through unprocessed); returns the previous modes.
pub fn make_raw(fd: impl AsFd) -> io::Result<Termios> {
    let before = termios::tcgetattr(fd.as_fd())?;
    let mut raw = before.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(fd, SetArg::TCSAFLUSH, &raw)?;
    Ok(before)
}

pub fn restore_modes(fd: impl AsFd, t: &Termios) -> io::Result<()> {
    termios::tcsetattr(fd, SetArg::TCSADRAIN, t)?;
    Ok(())
}

/// Register a descriptor we own with tokio's reactor (for a pty master).
pub fn watch(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the OwnedFd is moved in, so its descriptor stays open and unchanged until the
    // AsyncFd is dropped; OwnedFd::as_raw_fd always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
