//! Where the jobs of `mrun --each` run: once a second, the place of every job of this user,
//! and why it stays home if it cannot move, keyed by the pid of its deputy (our children are
//! deputies, so their pids find their jobs).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

/// Deputy pid -> where its job is.
pub type Places = HashMap<u32, Seen>;

/// Where a job is, as its deputy says.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `home` or a node's name.
    pub place: String,
    /// Why it cannot leave home, in a few words (`holds a TCP socket`), if it cannot.
    pub stays_home: Option<String>,
}

/// How often the places are asked for.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Starts a thread that sends the places every [`INTERVAL`] (asking the deputies blocks, so it
/// is kept off the scheduler's thread); it stops when the receiver is dropped.
pub fn watch() -> mpsc::Receiver<Places> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || loop {
        std::thread::sleep(INTERVAL);
        // Deputies that are just starting or ending may not answer: their places stay as last known.
        let places = crate::jobs::list()
            .unwrap_or_default()
            .into_iter()
            .map(|j| {
                let seen = Seen {
                    place: j.place,
                    stays_home: j.stays_home,
                };
                (j.deputy, seen)
            })
            .collect();
        if tx.blocking_send(places).is_err() {
            return;
        }
    });
    rx
}

/// `home 2 · nodea 3`: how many of `running` run where (home first, then by name).
pub fn tally<'a>(running: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for place in running {
        match counts.iter_mut().find(|(p, _)| *p == place) {
            Some((_, n)) => *n += 1,
            None => counts.push((place, 1)),
        }
    }
    counts.sort_by_key(|(p, _)| (*p != "home", p.to_string()));
    counts
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `2 stay home: holds a TCP socket`: how many of the running jobs cannot move, and why
/// (most common reason first), or nothing when all can.
pub fn staying<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for why in reasons {
        match counts.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => counts.push((why, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(why, n)| match n {
            1 => format!("1 stays home: {why}"),
            n => format!("{n} stay home: {why}"),
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staying_counts_each_reason_most_common_first() {
        let why = [
            "holds a TCP socket",
            "has System V shared memory",
            "holds a TCP socket",
        ];
        assert_eq!(
            staying(why.into_iter()),
            "2 stay home: holds a TCP socket · 1 stays home: has System V shared memory"
        );
        assert_eq!(staying(std::iter::empty()), "");
    }

    #[test]
    fn tally_counts_home_first_then_nodes_by_name() {
        let running = ["nodeb", "home", "nodea", "home", "nodeb"];
        assert_eq!(tally(running.into_iter()), "home 2 · nodea 1 · nodeb 2");
    }
}
