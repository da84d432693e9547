//! The bash completions in `completions/` as a user's shell runs them: bash-completion loaded,
//! the file sourced, the completion function called with `COMP_WORDS` as bash would on TAB.
//!
//! `mrun gzi<TAB>` offers command names and `mrun gzip --fa<TAB>` gzip's own options (as
//! `sudo` and `nice` do); mrun's options only before the command. `mrunctl migrate <TAB>`
//! offers the ids of the jobs running now (a real `mrun` job), then node names from the user's
//! config. Needs bash and bash-completion (scripts/install-deps).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const BASH_COMPLETION: &str = "/usr/share/bash-completion/bash_completion";

fn completions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../completions")
}

/// What bash offers for the command line `words` (the last word is the one being completed):
/// `COMPREPLY` after the function that `complete -p BIN` names ran, sorted and deduplicated.
fn offered(env: &[(&str, &Path)], bin_dir: &Path, words: &[&str]) -> Vec<String> {
    assert!(
        Path::new(BASH_COMPLETION).is_file(),
        "{BASH_COMPLETION} is missing: install bash-completion (scripts/install-deps)"
    );
    let script = r#"
source /usr/share/bash-completion/bash_completion
source "$COMPLETIONS/mrun.bash"
source "$COMPLETIONS/mrunctl.bash"
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
spec=$(complete -p "$1")
fn=${spec#*-F }
fn=${fn%% *}
COMPREPLY=()
"$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .arg("bash")
        .args(words)
        .env("COMPLETIONS", completions_dir())
        .env("PATH", path)
        .env_remove("MRUN_NODES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    assert!(
        out.status.success(),
        "bash completion of {words:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    got.sort();
    got.dedup();
    got
}

#[test]
fn mrun_completes_the_command_then_its_own_arguments() {
    let sb = Sandbox::new("completion-mrun");
    let bin = mrun_path();
    let bin_dir = bin.parent().expect("mrun's directory");
    let home = sb.mkdir("home");
    let env = [("HOME", home.as_path())];
    for words in [
        &["mrun", "gzi"][..],
        &["mrun", "--home", "gzi"],
        &["mrun", "-j", "2", "gzi"],
        &["mrun", "--keep-fd", "3", "gzi"],
        &["mrun", "--", "gzi"],
    ] {
        let got = offered(&env, bin_dir, words);
        assert!(
            got.iter().any(|w| w == "gzip") && got.iter().all(|w| w.starts_with("gzi")),
            "{words:?}: expected command names starting with gzi, among them gzip: {got:?}"
        );
    }
    // After the command word: gzip's own completion (bash-completion's), not mrun's.
    let got = offered(&env, bin_dir, &["mrun", "--home", "gzip", "--fa"]);
    assert_eq!(got, vec!["--fast"], "mrun --home gzip --fa");
    let got = offered(&env, bin_dir, &["mrun", "gzip", "--ho"]);
    assert!(
        got.is_empty(),
        "mrun's --home offered after the command: {got:?}"
    );
    // Before it: mrun's options.
    let got = offered(&env, bin_dir, &["mrun", "--ho"]);
    assert_eq!(got, vec!["--home"], "mrun --ho");
}

#[test]
fn mrunctl_migrate_completes_jobs_then_nodes() {
    let sb = Sandbox::new("completion-mrunctl");
    let runtime = sb.mkdir("runtime");
    let home = sb.mkdir("home");
    let config = home.join(".config/mrun");
    std::fs::create_dir_all(&config).expect("mkdir config");
    std::fs::write(
        config.join("config.toml"),
        "nodes = [\"local\", \"build1\"]\n[balance]\nenabled = false\n",
    )
    .expect("write config.toml");
    let m = Mrun::new(&sb).with_runtime_dir(RuntimeDir::At(runtime.clone()));
    let bin = mrunctl_path();
    let bin_dir = bin.parent().expect("mrunctl's directory");
    let env = [
        ("HOME", home.as_path()),
        ("XDG_RUNTIME_DIR", runtime.as_path()),
    ];

    assert!(
        offered(&env, bin_dir, &["mrunctl", "migrate", ""]).is_empty(),
        "job ids offered while no job runs"
    );
    let sleep = sb.program(Path::new("/bin/sleep"));
    let mut job = m.start(
        "sleep 600",
        &sleep,
        &["600"],
        &[("HOME", home.to_str().expect("utf-8 path"))],
        Input::Null,
        Output::Pipe,
    );
    let id = job.id.to_string();
    assert_eq!(
        offered(&env, bin_dir, &["mrunctl", "migrate", ""]),
        vec![id.clone()],
        "mrunctl migrate <TAB>"
    );
    assert_eq!(
        offered(&env, bin_dir, &["mrunctl", "migrate", &id, ""]),
        vec!["build1", "home", "local"],
        "mrunctl migrate {id} <TAB>"
    );
    assert_eq!(
        offered(&env, bin_dir, &["mrunctl", "migrate", &id, "lo"]),
        vec!["local"],
        "mrunctl migrate {id} lo<TAB>"
    );
    assert_eq!(
        offered(&env, bin_dir, &["mrunctl", "mig"]),
        vec!["migrate"],
        "mrunctl mig<TAB>"
    );
    job.mrun.kill();
}
