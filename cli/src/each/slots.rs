//! How many jobs `mrun --each` runs at once when `-j` is not given: the CPUs of the whole
//! cluster, this machine's and those of every configured node that answers.

/// This machine's CPU capacity (affinity and cgroup quota counted, as the balancer counts
/// them) plus each reachable configured node's, as the daemon sees them (it is started if it
/// is not running: the batch needs it to balance anyway). With no nodes configured, nothing is
/// started; nodes that cannot be reached count for nothing.
pub fn cluster_cpus() -> usize {
    let local = mrun_core::load::scope::Scope::detect()
        .cpus()
        .round()
        .max(1.0) as usize;
    // A broken config file was reported once by the batch: no nodes then.
    let Ok(cfg) = crate::nodes::config() else {
        return local;
    };
    let nodes = cfg.node_list();
    // `local` is an agent on this very machine: no CPUs of its own.
    let remote: Vec<String> = nodes.into_iter().filter(|n| n != "local").collect();
    if remote.is_empty() {
        return local;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return local;
    };
    // The daemon answers from its watch; a node it only now starts watching gets a moment
    // (`cluster::FIRST_ANSWER`) to answer before it counts for nothing.
    let counted = runtime.block_on(async {
        let report = crate::daemon::cluster_report(&remote, false).await?;
        let cpus: u32 = report
            .nodes
            .iter()
            .filter(|e| remote.contains(&e.node))
            .filter_map(|e| e.facts.as_ref())
            .map(|f| f.cpus)
            .sum();
        anyhow::Ok(cpus as usize)
    });
    match counted {
        Ok(cpus) => local + cpus,
        Err(e) => {
            crate::errln!("mrun: warning: cannot learn the nodes' CPUs ({e:#}); running as many jobs at once as this machine has CPUs");
            local
        }
    }
}
