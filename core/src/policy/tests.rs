//! One test per rule of the placement policy.

use super::*;

fn machine(name: Option<&str>, cpus: u32, runnable: f64) -> Machine {
    Machine {
        name: name.map(str::to_string),
        cpus,
        speed: 1.0,
        runnable,
        mem_available: 16 << 30,
        link_bytes_per_sec: 100e6,
    }
}

fn job(id: u32, place: Option<&str>, age: f64) -> Job {
    Job {
        id,
        place: place.map(str::to_string),
        age,
        bytes: 64 << 20,
        since_move: None,
        pinned_home: false,
        nodes: None,
        failed_on: Vec::new(),
        cpu_demand: 1.0,
    }
}

#[test]
fn a_job_moves_only_to_the_nodes_its_command_named() {
    // Node a is idler, but the job's command named only b.
    let m = [
        machine(None, 1, 4.0),
        machine(Some("a"), 1, 0.0),
        machine(Some("b"), 1, 0.5),
    ];
    let mut j = job(1, None, 600.0);
    let free = decide(&m, std::slice::from_ref(&j), &Knobs::default());
    assert_eq!(free.first().and_then(|mv| mv.to.as_deref()), Some("a"));
    j.nodes = Some(vec!["b".into()]);
    let named = decide(&m, &[j.clone()], &Knobs::default());
    assert_eq!(named.first().and_then(|mv| mv.to.as_deref()), Some("b"));
    j.nodes = Some(vec!["c".into()]);
    assert!(decide(&m, &[j], &Knobs::default()).is_empty());
}

#[test]
fn a_job_skips_the_nodes_where_its_move_failed_lately() {
    let m = [
        machine(None, 1, 4.0),
        machine(Some("a"), 1, 0.0),
        machine(Some("b"), 1, 0.5),
    ];
    let mut j = job(1, None, 600.0);
    j.failed_on = vec!["a".into()];
    let moves = decide(&m, std::slice::from_ref(&j), &Knobs::default());
    assert_eq!(moves.first().and_then(|mv| mv.to.as_deref()), Some("b"));
    j.failed_on.push("b".into());
    assert!(decide(&m, &[j], &Knobs::default()).is_empty());
}

#[test]
fn an_old_job_leaves_an_overloaded_home_for_an_idle_node() {
    let m = [machine(None, 1, 4.0), machine(Some("a"), 1, 0.0)];
    let moves = decide(&m, &[job(1, None, 30.0)], &Knobs::default());
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to.as_deref(), Some("a"));
}

#[test]
fn idle_jobs_never_move() {
    // An editor waiting for keys at an overloaded home: moving it frees no CPU.
    let m = [machine(None, 1, 8.0), machine(Some("a"), 4, 0.0)];
    let mut idle = job(1, None, 300.0);
    idle.cpu_demand = 0.02;
    assert!(decide(&m, &[idle.clone()], &Knobs::default()).is_empty());
    idle.cpu_demand = 0.95;
    assert_eq!(decide(&m, &[idle], &Knobs::default()).len(), 1);
}

#[test]
fn young_jobs_never_move() {
    let m = [machine(None, 1, 8.0), machine(Some("a"), 4, 0.0)];
    assert!(decide(&m, &[job(1, None, 0.5)], &Knobs::default()).is_empty());
}

#[test]
fn the_age_criterion_weighs_the_cost() {
    // 2 GiB over 10 MB/s costs ~215 s: a 30 s old job is not worth it, a 1000 s one is.
    let mut node = machine(Some("a"), 1, 0.0);
    node.link_bytes_per_sec = 10e6;
    let m = [machine(None, 1, 3.0), node];
    let mut big = job(1, None, 30.0);
    big.bytes = 2 << 30;
    assert!(decide(&m, &[big.clone()], &Knobs::default()).is_empty());
    big.age = 1000.0;
    assert_eq!(decide(&m, &[big], &Knobs::default()).len(), 1);
}

#[test]
fn no_move_without_a_real_load_gap() {
    let m = [machine(None, 2, 2.0), machine(Some("a"), 2, 1.5)];
    assert!(decide(&m, &[job(1, None, 100.0)], &Knobs::default()).is_empty());
}

#[test]
fn no_ping_pong_right_after_a_move() {
    // Just arrived on a; a is now busier than b, but the job stays put for a while.
    let m = [
        machine(None, 1, 1.0),
        machine(Some("a"), 1, 3.0),
        machine(Some("b"), 1, 0.0),
    ];
    let mut j = job(1, Some("a"), 100.0);
    j.since_move = Some(1.0);
    assert!(decide(&m, &[j.clone()], &Knobs::default()).is_empty());
    j.since_move = Some(60.0);
    assert_eq!(decide(&m, &[j], &Knobs::default()).len(), 1);
}

#[test]
fn a_first_move_waits_only_for_min_age() {
    // Never moved: old enough is enough, however long the minimum stay after a move.
    let m = [machine(None, 1, 4.0), machine(Some("a"), 1, 0.0)];
    let knobs = Knobs {
        min_stay: 30.0,
        ..Knobs::default()
    };
    assert_eq!(decide(&m, &[job(1, None, 3.0)], &knobs).len(), 1);
}

#[test]
fn the_decision_does_not_flip_back_on_its_own_move() {
    // Two machines, two jobs on home: one goes; with the loads updated, the other stays.
    let m = [machine(None, 1, 2.0), machine(Some("a"), 1, 0.0)];
    let moves = decide(
        &m,
        &[job(1, None, 50.0), job(2, None, 40.0)],
        &Knobs::default(),
    );
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].job, 1, "the oldest job moves first");
}

#[test]
fn never_to_a_node_without_the_memory() {
    let mut node = machine(Some("a"), 4, 0.0);
    node.mem_available = 100 << 20;
    let m = [machine(None, 1, 4.0), node];
    let mut j = job(1, None, 100.0);
    j.bytes = 200 << 20;
    assert!(decide(&m, &[j], &Knobs::default()).is_empty());
}

#[test]
fn jobs_come_home_when_home_is_idle() {
    let m = [machine(None, 2, 0.0), machine(Some("a"), 2, 2.0)];
    let moves = decide(&m, &[job(1, Some("a"), 100.0)], &Knobs::default());
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to, None);
}

#[test]
fn pinned_jobs_stay_home() {
    let m = [machine(None, 1, 8.0), machine(Some("a"), 8, 0.0)];
    let mut j = job(1, None, 500.0);
    j.pinned_home = true;
    assert!(decide(&m, &[j], &Knobs::default()).is_empty());
}

#[test]
fn faster_and_bigger_nodes_win() {
    let mut fast = machine(Some("fast"), 4, 0.0);
    fast.speed = 2.0;
    let m = [machine(None, 1, 4.0), machine(Some("slow"), 1, 0.0), fast];
    let moves = decide(&m, &[job(1, None, 100.0)], &Knobs::default());
    assert_eq!(moves[0].to.as_deref(), Some("fast"));
}
