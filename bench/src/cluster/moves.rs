//! The balancer's moves during one run of mrun, read back from the client HOME's
//! `~/.local/state/mrun/mrun.log` (lines `balancer: job N (CMD) FROM -> TO in S s: REASON`, or
//! `... failed: WHY`; `... ended before it could move to TO` is neither).

use std::path::{Path, PathBuf};

/// The log, and how many lines it had when a run started.
pub struct MoveLog {
    path: PathBuf,
    start: usize,
}

/// What the balancer did during one run.
#[derive(Debug, Clone, Default)]
pub struct Moves {
    /// From home to the node.
    pub out: usize,
    /// Back home.
    pub back: usize,
    /// Moves that failed, as logged.
    pub failed: Vec<String>,
    /// Every balancer line, as logged.
    pub lines: Vec<String>,
}

impl MoveLog {
    /// Marks the current end of the log of the client HOME `home`.
    pub fn mark(home: &Path) -> MoveLog {
        let path = home.join(".local/state/mrun/mrun.log");
        let start = read_lines(&path).len();
        MoveLog { path, start }
    }

    /// The moves logged since [`MoveLog::mark`].
    pub fn since(&self) -> Moves {
        let mut moves = Moves::default();
        for line in read_lines(&self.path).into_iter().skip(self.start) {
            if !line.contains("balancer: job") {
                continue;
            }
            moves.lines.push(line.clone());
            if line.contains(" failed: ") {
                moves.failed.push(line);
            } else if line.contains(" home -> ") {
                moves.out += 1;
            } else if line.contains(" -> home ") {
                moves.back += 1;
            }
        }
        moves
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
