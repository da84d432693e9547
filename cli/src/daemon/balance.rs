//! The balancer: once a round, gather the cluster (home measured here, nodes as their agents
//! report, this user's jobs as their deputies report), ask the placement policy, and carry
//! out its moves through the jobs' deputies, exactly as `mrunctl migrate` would.

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
                let line = match answer {
                    Ok(Ok(_)) => {
                        let link = if to == "home" { &from } else { &to };
                        cluster::record_throughput(&cluster, link, info.bytes, seconds, fixed);
                        format!(
                            "job {job} ({}) {from} -> {to} in {seconds:.2} s: {}",
                            info.command, m.reason
                        )
                    }
                    // Between the listing and the move the job may simply have ended.
                    Ok(Err(_)) if !crate::jobs::job_socket(job).is_ok_and(|p| p.exists()) => {
                        format!(
                            "job {job} ({}) ended before it could move to {to}",
                            info.command
                        )
                    }
                    Ok(Err(e)) => {
                        format!("job {job} ({}) {from} -> {to} failed: {e:#}", info.command)
                    }
                    Err(e) => format!("job {job} ({}) {from} -> {to} failed: {e}", info.command),
                };
                crate::log::line(&format!("balancer: {line}"));
                cluster::note(&cluster, line);
            }));
        }
        for r in running {
            let _ = r.await;
        }
        settle_until = Instant::now() + SETTLE;
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
        // A job holding a descriptor shared with a process outside it cannot move: trying
        // every second would only fail every second.
        pinned_home: j.pinned_home || !j.shared_fds.is_empty(),
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
            cpu_seconds: None,
            last_problem: None,
            deputy: 6,
            pinned_home: true,
            arrived_unix_ms: 150_000,
            moves: 1,
            bytes: 10,
            cpu_demand: None,
            shared_fds: Vec::new(),
            cannot_move: None,
        };
        let p = policy_job(&j, 160_000);
        assert_eq!(
            (p.age, p.since_move, p.place.as_deref(), p.pinned_home),
            (60.0, Some(10.0), Some("a"), true)
        );
        assert_eq!(p.cpu_demand, 1.0, "a job of unknown CPU use counts as busy");
    }
}
