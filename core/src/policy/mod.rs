//! Placement policy: which running jobs should move where. Pure decisions over a snapshot of
//! the cluster (no I/O, no clocks): the daemon gathers the facts, asks, and carries out.
//!
//! A job moves from an overloaded machine to a less loaded one only when it pays, by the age
//! criterion of Harchol-Balter and Downey: a job that has run T seconds is expected to run about
//! T more, so moving it is worth its cost C (seconds of downtime and transfer) when
//! `T > C / (load_from - load_to)`, loads being runnable jobs per unit of CPU speed. Hysteresis
//! (a minimum load gap and a minimum stay after each move) keeps jobs from ping-ponging; a
//! target must have the memory for the job; jobs come home when home has room again; jobs
//! started with `mrun --home` never move. See `docs/policy.md` for the knobs.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

/// Where a job is: `None` = home, `Some(node)` = that node.
pub type Place = Option<String>;

/// A machine as the policy sees it.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `None` for home.
    pub name: Place,
    pub cpus: u32,
    /// Relative speed of one CPU (1.0 = home's).
    pub speed: f64,
    /// Runnable processes now (load average over one minute, or PSI-derived), all users.
    pub runnable: f64,
    pub mem_available: u64,
    /// Measured throughput of the link from home, bytes per second (ignored for home).
    pub link_bytes_per_sec: f64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: u32,
    pub place: Place,
    /// Seconds it has run.
    pub age: f64,
    /// Touched memory: what a move carries.
    pub bytes: u64,
    /// Seconds since it last moved; `None` if it never did (the stay rule, against ping-pong,
    /// is about moves made, so a job's first move waits only for `min_age`).
    pub since_move: Option<f64>,
    /// Started with `mrun --home`: stays home.
    pub pinned_home: bool,
    /// The nodes its command named (`mrun --nodes`, `MRUN_NODES`): it moves to no other.
    /// `None`: any node.
    pub nodes: Option<Vec<String>>,
    /// Nodes where a move of it failed lately (the node could not restore it, its agent or
    /// the connection died): left alone until its deputy says they may be tried again.
    pub failed_on: Vec<String>,
    /// Fraction of the time lately it was running or waiting to run, its threads summed and
    /// capped at 1.0 (1.0 when unknown): a job that sleeps or waits for input gains nothing by
    /// moving and frees no CPU. (Not the CPU it got: at an overloaded home a busy job gets
    /// little.)
    pub cpu_demand: f64,
}

/// The policy's knobs (defaults in [`Knobs::default`]).
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Fixed cost of any move, seconds (connect, freeze, restore, confirm).
    pub fixed_cost: f64,
    /// Jobs younger than this never move (most short jobs end before a move pays).
    pub min_age: f64,
    /// A move needs at least this difference in load per CPU between the two machines.
    pub min_load_gap: f64,
    /// After a move, a job stays put at least this many times its move's cost, and at least
    /// `min_stay` seconds.
    pub stay_factor: f64,
    pub min_stay: f64,
    /// The target must keep this fraction of its free memory after taking the job.
    pub mem_margin: f64,
    /// At most this many moves per decision round.
    pub max_moves: usize,
    /// Jobs that wanted a CPU less of the time than this lately (waiting for input,
    /// sleeping) never move.
    pub min_cpu_demand: f64,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            fixed_cost: 0.3,
            min_age: 2.0,
            min_load_gap: 0.5,
            stay_factor: 4.0,
            min_stay: 10.0,
            mem_margin: 0.1,
            max_moves: 2,
            min_cpu_demand: 0.5,
        }
    }
}

/// One decided move, with the reason in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub job: u32,
    pub from: Place,
    pub to: Place,
    pub reason: String,
}

/// Load per unit of CPU capacity.
fn load(m: &Machine, runnable: f64) -> f64 {
    runnable / (m.cpus.max(1) as f64 * m.speed.max(0.01))
}

/// Seconds a move of `job` over the link of `via` costs.
fn cost(knobs: &Knobs, job: &Job, via: &Machine) -> f64 {
    knobs.fixed_cost + job.bytes as f64 / via.link_bytes_per_sec.max(1.0)
}

/// Decide the moves for one round. `machines[0]` must be home.
pub fn decide(machines: &[Machine], jobs: &[Job], knobs: &Knobs) -> Vec<Move> {
    let mut runnable: Vec<f64> = machines.iter().map(|m| m.runnable).collect();
    let mut mem: Vec<u64> = machines.iter().map(|m| m.mem_available).collect();
    let index = |p: &Place| machines.iter().position(|m| &m.name == p);
    let mut moves = Vec::new();
    // Oldest first: they have the longest expected remaining life, so they gain most.
    let mut order: Vec<&Job> = jobs
        .iter()
        .filter(|j| {
            !j.pinned_home && j.age >= knobs.min_age && j.cpu_demand >= knobs.min_cpu_demand
        })
        .collect();
    order.sort_by(|a, b| b.age.total_cmp(&a.age));
    for job in order {
        if moves.len() >= knobs.max_moves {
            break;
        }
        let Some(from) = index(&job.place) else {
            continue;
        };
        let mut best: Option<(usize, f64, f64)> = None;
        for (to, m) in machines.iter().enumerate() {
            if to == from {
                continue;
            }
            if let (Some(name), Some(allowed)) = (&m.name, &job.nodes) {
                if !allowed.contains(name) {
                    continue; // not one of the nodes its command named
                }
            }
            if m.name.as_ref().is_some_and(|n| job.failed_on.contains(n)) {
                continue; // a move there failed lately
            }
            // The link a move uses: the remote end's (home <-> node, or node -> node via home).
            let via = if m.name.is_none() { &machines[from] } else { m };
            let c = cost(knobs, job, via);
            if job
                .since_move
                .is_some_and(|t| t < (knobs.stay_factor * c).max(knobs.min_stay))
            {
                continue; // hysteresis: it moved too recently
            }
            if (mem[to] as f64) * (1.0 - knobs.mem_margin) < job.bytes as f64 {
                continue; // the target lacks the memory
            }
            // Loads as they would be with the job moved: it leaves `from`, joins `to`.
            let load_from = load(&machines[from], runnable[from]);
            let load_to_after = load(m, runnable[to] + 1.0);
            let gap = load_from - load_to_after;
            let home_has_room = m.name.is_none() && runnable[to] + 1.0 <= m.cpus as f64;
            if home_has_room {
                // Home gets its jobs back as soon as it has a free CPU, if that is no worse.
                if gap < 0.0 {
                    continue;
                }
            } else {
                if gap < knobs.min_load_gap {
                    continue;
                }
                // Harchol-Balter & Downey: expected remaining life ~ age; move only when it
                // exceeds the cost spread over the load the job escapes.
                if job.age <= c / gap {
                    continue;
                }
            }
            if best.is_none_or(|(_, g, _)| gap > g) {
                best = Some((to, gap, c));
            }
        }
        if let Some((to, gap, c)) = best {
            runnable[from] = (runnable[from] - 1.0).max(0.0);
            runnable[to] += 1.0;
            mem[to] = mem[to].saturating_sub(job.bytes);
            let reason = if machines[to].name.is_none() {
                format!("home has a free CPU again (move costs {c:.2} s)")
            } else {
                format!(
                    "age {:.0} s exceeds cost {c:.2} s / load gap {gap:.2}",
                    job.age
                )
            };
            moves.push(Move {
                job: job.id,
                from: job.place.clone(),
                to: machines[to].name.clone(),
                reason,
            });
        }
    }
    moves
}
