//! The balancer: once a round, gather the cluster (home measured here, nodes as their agents
//! report, this user's jobs as their deputies report), ask the placement policy, and carry
//! out its moves through the jobs' deputies, exactly as `mrunctl migrate` would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mrun_core::policy::{self, Job, Machine};

use super::cluster::{self, Cluster};
use super::connections::Connections;
use crate::jobs::JobInfo;

/// After moves, no decision until every report covers only time after them: the run-queue
/// window (1 s), plus up to one report interval (1 s) for the next report, plus a margin.
/// Deciding on reports that still count the moved jobs where they were overshoots: the
/// benchmark sent 5 of 8 jobs to a one-CPU node that way.
const SETTLE: Duration = Duration::from_millis(2500);
const DEFAULT_INTERVAL: f64 = 1.0;

/// Whether the balancer is on (read by the server to answer `facts`).
pub static BALANCING: AtomicBool = AtomicBool::new(false);

/// Runs for the daemon's life. `alive` is set while this user has jobs (the daemon stays).
pub async fn run(cluster: Cluster, connections: Connections, alive: Arc<AtomicBool>) {
    let mut settle_until = Instant::now();
    let mut seen = Seen::default();
    loop {
        let cfg = crate::nodes::config().unwrap_or_else(|e| {
            crate::log::line(&format!("balancer: {e:#}; using the defaults"));
            crate::nodes::ConfigFile::default()
        });
        let interval = cfg
            .balance
            .interval
            .unwrap_or(DEFAULT_INTERVAL)
            .clamp(0.2, 60.0);
        // The file's nodes, and those of the jobs and requests (not this process's MRUN_NODES).
        let nodes = cluster::sync_watchers(&cluster, &connections, &cfg.nodes);
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
        let jobs =
            tokio::task::spawn_blocking(|| crate::jobs::list_within(Duration::from_millis(500)))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
        alive.store(!jobs.is_empty(), Ordering::SeqCst);
        let (kept, moved) = seen.update(&jobs);
        for line in kept {
            crate::log::line(&format!("balancer: {line}"));
        }
        // The deputies logged these moves themselves.
        for line in moved {
            cluster::note(&cluster, stamped(&line));
        }
        let enabled = cfg.balance.enabled() && !nodes.is_empty();
        BALANCING.store(enabled, Ordering::SeqCst);
        if !enabled || jobs.is_empty() || Instant::now() < settle_until {
            continue;
        }
        let Some(home) = cluster::lock(&cluster).home.clone() else {
            continue;
        };
        let usable = cluster::usable_nodes(&cluster);
        let machines = machines(&home, &usable);
        let now_ms = crate::jobs::unix_now().as_millis() as u64;
        let policy_jobs: Vec<Job> = jobs.iter().map(|j| policy_job(j, now_ms)).collect();
        let knobs = cfg.balance.knobs();
        let moves = policy::decide(&machines, &policy_jobs, &knobs);
        if moves.is_empty() {
            continue;
        }
        let mut running = Vec::new();
        for m in &moves {
            // Its own moves are noted as they end, with their reason and time taken.
            seen.expect_move(m.job);
        }
        for m in moves {
            let Some(info) = jobs.iter().find(|j| j.job == m.job).cloned() else {
                continue;
            };
            let to = m.to.clone().unwrap_or_else(|| "home".to_string());
            let from = m.from.clone().unwrap_or_else(|| "home".to_string());
            let cluster = cluster.clone();
            let fixed = knobs.fixed_cost;
            running.push(tokio::spawn(async move {
                let started = Instant::now();
                let request = format!("migrate {to}");
                let job = info.job;
                let answer =
                    tokio::task::spawn_blocking(move || crate::jobs::ask(job, &request)).await;
                let seconds = started.elapsed().as_secs_f64();
                let command = crate::jobs::printable(&info.command);
                let line = match answer {
                    Ok(Ok(_)) => {
                        let link = if to == "home" { &from } else { &to };
                        cluster::record_throughput(&cluster, link, info.bytes, seconds, fixed);
                        format!(
                            "job {job} ({command}) {from} -> {to} in {seconds:.2} s: {}",
                            m.reason
                        )
                    }
                    // Between the listing and the move the job may simply have ended.
                    Ok(Err(_)) if !crate::jobs::job_socket(job).is_ok_and(|p| p.exists()) => {
                        format!("job {job} ({command}) ended before it could move to {to}")
                    }
                    Ok(Err(e)) => format!("job {job} ({command}) {from} -> {to} failed: {e:#}"),
                    Err(e) => format!("job {job} ({command}) {from} -> {to} failed: {e}"),
                };
                crate::log::line(&format!("balancer: {line}"));
                cluster::note(&cluster, stamped(&line));
            }));
        }
        for r in running {
            let _ = r.await;
        }
        settle_until = Instant::now() + SETTLE;
    }
}

/// A line of "recent moves" with its time (ISO 8601, UTC).
fn stamped(line: &str) -> String {
    format!(
        "{} {line}",
        crate::log::iso8601(std::time::SystemTime::now())
    )
}

/// Rounds a job that does not answer is remembered.
const FORGET_AFTER: u32 = 60;

/// What the balancer saw of each job when it last answered: where it was, how many moves it had
/// made, and why it stayed home (told once in the log, not every round). A job busy moving may
/// not answer within a round; what was seen of it is kept for [`FORGET_AFTER`] rounds, so a
/// move made meanwhile is still told.
#[derive(Default)]
struct Seen {
    jobs: HashMap<u32, SeenJob>,
}

struct SeenJob {
    place: String,
    moves: u32,
    stays_home: Option<String>,
    /// Rounds in a row it did not answer.
    missed: u32,
    /// The balancer itself is moving it: its own line says so.
    ours: bool,
}

impl Seen {
    /// Take in this round's jobs. Lines for the log: each job newly kept home, and why; for
    /// "recent moves": each job that moved since last round without the balancer (`mrunctl
    /// migrate`).
    fn update(&mut self, jobs: &[JobInfo]) -> (Vec<String>, Vec<String>) {
        let (mut kept, mut moved) = (Vec::new(), Vec::new());
        let mut now = HashMap::with_capacity(jobs.len());
        for j in jobs {
            let command = crate::jobs::printable(&j.command);
            let before = self.jobs.remove(&j.job);
            // Every job starts at home: one seen first after its only move came from there.
            let from = match &before {
                Some(b) if j.moves > b.moves && !b.ours => Some(b.place.as_str()),
                None if j.moves == 1 => Some("home"),
                _ => None,
            };
            if let Some(from) = from.filter(|from| *from != j.place) {
                moved.push(format!(
                    "job {} ({command}) {from} -> {} by mrunctl migrate",
                    j.job, j.place
                ));
            }
            let told = before.as_ref().and_then(|b| b.stays_home.as_deref());
            // A kept descriptor was told in the log by the job's deputy when it started.
            if let (Some(why), Some(brief)) = (&j.cannot_move, &j.stays_home) {
                if told != Some(brief.as_str()) && j.shared_fds.is_empty() {
                    kept.push(format!("leaves job {} ({command}) at home: {why}", j.job));
                }
            }
            let ours = before.is_some_and(|b| b.ours && j.moves == b.moves);
            now.insert(
                j.job,
                SeenJob {
                    place: j.place.clone(),
                    moves: j.moves,
                    stays_home: j.stays_home.clone(),
                    ours,
                    missed: 0,
                },
            );
        }
        // Jobs that did not answer this round (moving, or ended): kept a while.
        for (id, mut old) in self.jobs.drain() {
            old.missed += 1;
            if old.missed < FORGET_AFTER {
                now.entry(id).or_insert(old);
            }
        }
        self.jobs = now;
        (kept, moved)
    }

    /// The balancer is about to move `job`: the move it sees next is its own.
    fn expect_move(&mut self, job: u32) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.ours = true;
        }
    }
}

/// Home first, then each node with fresh facts; speeds relative to home's.
fn machines(
    home: &mrun_core::wire::NodeFacts,
    nodes: &[(String, mrun_core::wire::NodeFacts, f64)],
) -> Vec<Machine> {
    let home_speed = home.speed.max(f64::MIN_POSITIVE);
    let relative = |speed: f64| {
        let r = speed / home_speed;
        // Within measurement noise, CPUs are equal.
        if (0.85..=1.15).contains(&r) {
            1.0
        } else {
            r.clamp(0.1, 10.0)
        }
    };
    let mut out = vec![Machine {
        name: None,
        cpus: home.cpus,
        speed: 1.0,
        runnable: home.runnable,
        mem_available: home.mem_available,
        link_bytes_per_sec: f64::INFINITY,
    }];
    out.extend(nodes.iter().map(|(name, f, throughput)| Machine {
        name: Some(name.clone()),
        cpus: f.cpus,
        speed: relative(f.speed),
        runnable: f.runnable,
        mem_available: f.mem_available,
        link_bytes_per_sec: *throughput,
    }));
    out
}

fn policy_job(j: &JobInfo, now_ms: u64) -> Job {
    let age = now_ms.saturating_sub(j.started_unix * 1000) as f64 / 1000.0;
    let since_move =
        (j.moves > 0).then(|| now_ms.saturating_sub(j.arrived_unix_ms) as f64 / 1000.0);
    Job {
        id: j.job,
        place: (j.place != "home").then(|| j.place.clone()),
        age,
        bytes: j.bytes,
        since_move,
        // A job holding what cannot move with it (a descriptor shared with a process outside
        // it, what the engine refuses) cannot move: trying every second would only fail
        // every second. Its deputy says when it may be tried again.
        pinned_home: j.pinned_home || j.cannot_move.is_some(),
        nodes: j.nodes.clone(),
        failed_on: j.failed_on.clone(),
        cpu_demand: j.cpu_demand.unwrap_or(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cpus: u32, speed: f64, runnable: f64) -> mrun_core::wire::NodeFacts {
        mrun_core::wire::NodeFacts {
            arch: "x86_64".into(),
            kernel: "6".into(),
            cpus,
            speed,
            runnable,
            load_per_cpu: runnable / cpus as f64,
            mem_available: 1 << 30,
            jobs: 0,
        }
    }

    #[test]
    fn machines_put_home_first_and_speeds_relative_to_it() {
        let m = machines(
            &facts(1, 400.0, 3.0),
            &[
                ("a".into(), facts(2, 410.0, 0.0), 1e8),
                ("b".into(), facts(1, 800.0, 1.0), 1e7),
            ],
        );
        assert_eq!(m[0].name, None);
        assert_eq!(
            (m[1].speed, m[2].speed),
            (1.0, 2.0),
            "noise is no speed difference, 2x is"
        );
        assert_eq!(m[2].link_bytes_per_sec, 1e7);
    }

    #[test]
    fn jobs_carry_their_age_and_time_since_their_last_move() {
        let j = JobInfo {
            job: 7,
            pid: 7,
            command: "gzip".into(),
            place: "a".into(),
            state: "running".into(),
            started_unix: 100,
            deputy: 6,
            pinned_home: true,
            arrived_unix_ms: 150_000,
            moves: 1,
            bytes: 10,
            ..Default::default()
        };
        let p = policy_job(&j, 160_000);
        assert_eq!(
            (p.age, p.since_move, p.place.as_deref(), p.pinned_home),
            (60.0, Some(10.0), Some("a"), true)
        );
        assert_eq!(p.cpu_demand, 1.0, "a job of unknown CPU use counts as busy");
        let held = JobInfo {
            cannot_move: Some("the job cannot move: it holds a TCP socket".into()),
            stays_home: Some("holds a TCP socket".into()),
            pinned_home: false,
            ..j
        };
        assert!(
            policy_job(&held, 160_000).pinned_home,
            "a job that cannot move is never tried"
        );
    }

    fn job(id: u32, place: &str, moves: u32, stays_home: Option<&str>) -> JobInfo {
        JobInfo {
            job: id,
            pid: id,
            command: "sh -c 'a\nb'".into(),
            place: place.into(),
            state: "running".into(),
            deputy: 1,
            moves,
            cannot_move: stays_home.map(|w| format!("the job cannot move: it {w}")),
            stays_home: stays_home.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn seen_tells_a_reason_once_and_notes_moves_made_by_hand() {
        let mut seen = Seen::default();
        let tcp = Some("holds a TCP socket");
        let (kept, moved) = seen.update(&[job(1, "home", 0, tcp), job(2, "home", 0, None)]);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("leaves job 1 (sh -c 'a\\nb') at home: the job cannot"));
        assert!(moved.is_empty());
        // The same reason again is not told again; a move by hand is noted, ours is not.
        let (kept, moved) = seen.update(&[job(1, "home", 0, tcp), job(2, "a", 1, None)]);
        assert!(kept.is_empty(), "{kept:?}");
        assert_eq!(moved.len(), 1);
        assert!(
            moved[0].ends_with("job 2 (sh -c 'a\\nb') home -> a by mrunctl migrate"),
            "{moved:?}"
        );
        seen.expect_move(2);
        let (_, moved) = seen.update(&[job(1, "home", 0, tcp), job(2, "b", 2, None)]);
        assert!(
            moved.is_empty(),
            "the balancer's own move noted as one by hand: {moved:?}"
        );
    }

    /// A job too busy moving to answer for a round or two: its move by hand is still noted
    /// when it answers again, and a job gone for good is forgotten.
    #[test]
    fn seen_remembers_a_job_that_missed_rounds() {
        let mut seen = Seen::default();
        seen.update(&[job(1, "home", 0, None)]);
        seen.update(&[]);
        seen.update(&[]);
        let (_, moved) = seen.update(&[job(1, "a", 1, None)]);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(
            moved[0].ends_with("home -> a by mrunctl migrate"),
            "{moved:?}"
        );
        // First seen after its only move (the daemon started meanwhile): it came from home.
        let (_, moved) = seen.update(&[job(1, "a", 1, None), job(3, "b", 1, None)]);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(
            moved[0].ends_with("job 3 (sh -c 'a\\nb') home -> b by mrunctl migrate"),
            "{moved:?}"
        );
        for _ in 0..FORGET_AFTER {
            seen.update(&[]);
        }
        assert!(seen.jobs.is_empty());
    }
}
