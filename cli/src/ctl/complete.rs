//! `mrunctl complete jobs|nodes` (hidden, not a clap subcommand): the words the shell completions in `completions/`
//! offer for `mrunctl migrate JOB NODE`, one per line, each followed by a tab and a short
//! description. It prints what is known here and now (running jobs, configured nodes) without
//! contacting any node, and prints nothing rather than an error: a TAB must stay quiet.

/// Prints the candidates for `what` (`jobs` or `nodes`; anything else: none) and exits 0.
pub fn run(what: &str) -> ! {
    let lines: Vec<String> = match what {
        "jobs" => crate::jobs::list_within(std::time::Duration::from_millis(500))
            .unwrap_or_default()
            .into_iter()
            .map(|j| {
                let command = j.command.replace(['\t', '\n'], " ");
                format!("{}\t{command} (at {})", j.job, j.place)
            })
            .collect(),
        "nodes" => {
            let nodes = crate::nodes::config()
                .map(|c| c.node_list())
                .unwrap_or_default();
            std::iter::once("home\tthis machine".to_string())
                .chain(nodes.into_iter().map(|n| {
                    if n == "local" {
                        format!("{n}\tan agent on this machine")
                    } else {
                        format!("{n}\tconfigured node")
                    }
                }))
                .collect()
        }
        _ => Vec::new(),
    };
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    use std::io::Write;
    // A closed pipe (the shell stopped reading) is no error worth a word.
    let _ = std::io::stdout().write_all(text.as_bytes());
    std::process::exit(0)
}
