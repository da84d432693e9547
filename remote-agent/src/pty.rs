//! The pty a restored process gets on this node when it had a terminal at home.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use mrun_core::sys::tty;
use mrun_core::wire::Terminal;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

impl Pty {
    /// A new pty with the home terminal's size and modes; returns it and its slave side.
    pub fn open(term: &Terminal) -> Result<(Pty, OwnedFd)> {
        let ws = nix::pty::Winsize {
            ws_row: term.size.rows,
            ws_col: term.size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pair = nix::pty::openpty(Some(&ws), None).context("allocating a pty")?;
        tty::set_modes(pair.slave.as_fd(), &term.modes).context("setting the pty's modes")?;
        let flags = OFlag::from_bits_truncate(
            fcntl(&pair.master, FcntlArg::F_GETFL).context("reading pty flags")?,
        );
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
            .context("setting pty flags")?;
        let master = tty::watch(pair.master).context("watching the pty")?;
        Ok((Pty { master }, pair.slave))
    }

    /// Next output; `None` once the process side is gone.
    pub async fn read(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let mut guard = self.master.readable().await.ok()?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None, // EIO: every slave descriptor is closed
                Ok(Ok(n)) => return Some(n),
                Err(_would_block) => continue,
            }
        }
    }

    /// Output already there, without waiting.
    pub fn read_now(&self, buf: &mut [u8]) -> Option<usize> {
        match nix::unistd::read(self.master.get_ref(), buf) {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, size: mrun_core::wire::WinSize) {
        let _ = tty::set_window_size(std::os::fd::AsRawFd::as_raw_fd(self.master.get_ref()), size);
    }
}
