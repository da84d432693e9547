//! Where the jobs of `mrun --each` run: once a second, the place of every job of this user,
//! keyed by the pid of its deputy (our children are deputies, so their pids find their jobs).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

/// Deputy pid -> `home` or a node's name.
pub type Places = HashMap<u32, String>;

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
            .map(|j| (j.deputy, j.place))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_home_first_then_nodes_by_name() {
        let running = ["nodeb", "home", "nodea", "home", "nodeb"];
        assert_eq!(tally(running.into_iter()), "home 2 · nodea 1 · nodeb 2");
    }
}
