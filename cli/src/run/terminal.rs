//! The terminal at home while the job is away: its modes and size go with the job (the node
//! gives it a pty like it), and it is switched to raw mode so keys reach the job's own line
//! discipline unprocessed; its modes come back when the job does, or when mrun ends.

use mrun_core::sys::tty;
use mrun_core::wire::Terminal;
use nix::sys::termios::Termios;

pub struct HomeTerminal {
    present: bool,
    /// The modes before raw mode, while the job is away.
    saved: Option<Termios>,
}

impl HomeTerminal {
    pub fn detect() -> HomeTerminal {
        HomeTerminal {
            present: tty::is_terminal(0),
            saved: None,
        }
    }

    /// Whether stdin is a terminal.
    pub fn present(&self) -> bool {
        self.present
    }

    /// What the node's pty should look like, if the job has a terminal.
    pub fn describe(&self) -> Option<Terminal> {
        if !self.present {
            return None;
        }
        let size = tty::window_size(0).ok()?;
        let modes = match &self.saved {
            Some(saved) => {
                let raw: libc::termios = saved.clone().into();
                mrun_core::wire::TermModes {
                    iflag: raw.c_iflag,
                    oflag: raw.c_oflag,
                    cflag: raw.c_cflag,
                    lflag: raw.c_lflag,
                    cc: raw.c_cc.to_vec(),
                }
            }
            None => tty::modes(std::io::stdin()).ok()?.1,
        };
        Some(Terminal { size, modes })
    }

    pub fn size(&self) -> Option<mrun_core::wire::WinSize> {
        self.present.then(|| tty::window_size(0).ok()).flatten()
    }

    /// The job left: raw mode.
    pub fn away(&mut self) {
        if self.present && self.saved.is_none() {
            self.saved = tty::make_raw(std::io::stdin()).ok();
        }
    }

    /// Continued after a stop while the job is away: raw mode again, if the terminal is ours
    /// (we are in its foreground process group; after `bg` we are not, and changing its modes
    /// would only stop us again with SIGTTOU).
    pub fn resume_if_foreground(&mut self) {
        if !self.present || self.saved.is_some() {
            return;
        }
        let ours =
            nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == nix::unistd::getpgrp());
        if ours {
            self.away();
        }
    }

    /// The job is back (or gone): the modes it had.
    pub fn home(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tty::restore_modes(std::io::stdin(), &saved);
        }
    }
}

impl Drop for HomeTerminal {
    fn drop(&mut self) {
        self.home();
    }
}
