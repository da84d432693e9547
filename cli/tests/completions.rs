//! The shell completions in `completions/` are generated from the clap definitions; this test
//! fails when they are out of date. Regenerate with `MRUN_UPDATE_COMPLETIONS=1 cargo test -p mrun
//! --test completions`.

use std::path::PathBuf;

use clap_complete::Shell;

fn file_for(bin: &str, shell: Shell) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../completions");
    dir.join(match shell {
        Shell::Bash => format!("{bin}.bash"),
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => format!("{bin}.{shell}"),
    })
}

#[test]
fn completions_are_current() {
    let update = std::env::var("MRUN_UPDATE_COMPLETIONS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for bin in ["mrun", "mrunctl"] {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let want = mrun::args::completion(bin, shell);
            let path = file_for(bin, shell);
            if update {
                std::fs::write(&path, &want).expect("write a completion file");
            } else if std::fs::read(&path).ok().as_deref() != Some(&want[..]) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (regenerate with MRUN_UPDATE_COMPLETIONS=1 cargo test -p mrun --test completions): {stale:?}"
    );
    let bash = std::fs::read_to_string(file_for("mrunctl", Shell::Bash)).expect("read");
    for sub in ["checkpoint", "restore", "migrate", "status", "nodes"] {
        assert!(bash.contains(sub), "mrunctl's bash completion lacks {sub}");
    }
}
