//! How many jobs `mrun --each` runs at once when `-j` is not given: the CPUs of the whole
//! cluster, this machine's and those of every configured node that answers.

/// This machine's CPUs plus each reachable configured node's. With no nodes configured, no
/// connection is tried; nodes that cannot be reached count for nothing.
pub fn cluster_cpus() -> usize {
    let local = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match crate::nodes::configured(None) {
        Ok(nodes) if nodes.is_empty() => local,
        Ok(_) => {
            let remote: usize = crate::ctl::nodes::reports(None)
                .iter()
                .filter_map(|r| r.facts.as_ref())
                .map(|f| f.cpus as usize)
                .sum();
            local + remote
        }
        Err(e) => {
            eprintln!("mrun: warning: {e:#}; running as many jobs at once as this machine has CPUs");
            local
        }
    }
}
