//! The shell completion scripts kept in `completions/`: clap's script for each binary and shell
//! (options, subcommands), with what clap cannot say added:
//!
//! - `mrun COMMAND...`: from the command word on, the command's own completion, as for `sudo`
//!   and `nice` (bash-completion's `_command_offset`, zsh's `_normal`, fish's
//!   `__fish_complete_subcommand`); mrun's options only before it. Which options take a value
//!   (and so do not start the command) is read from the clap definitions.
//! - `mrunctl migrate JOB NODE`: job ids, then node names, asked of `mrunctl complete jobs` and
//!   `mrunctl complete nodes` at each TAB.
//!
//! Pure text: it runs nothing. A test keeps `completions/` equal to what this produces.

use clap::Command;
use clap_complete::Shell;

/// The completion script of `cmd` (named `bin`) for `shell`.
pub fn script(mut cmd: Command, bin: &str, shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    let generated = String::from_utf8_lossy(&out).into_owned();
    let text = match (bin, shell) {
        ("mrun", Shell::Bash) => generated + &mrun_bash(&value_options(&cmd)),
        ("mrun", Shell::Zsh) => mrun_zsh(generated),
        ("mrun", Shell::Fish) => mrun_fish(generated, &value_options(&cmd)),
        ("mrunctl", Shell::Bash) => generated + MRUNCTL_BASH,
        ("mrunctl", Shell::Zsh) => mrunctl_zsh(generated),
        ("mrunctl", Shell::Fish) => generated + MRUNCTL_FISH,
        _ => generated,
    };
    text.into_bytes()
}

/// The options of `cmd` that take a value (`-j`, `--jobs`, ...): the word after one is its
/// value, not the command.
fn value_options(cmd: &Command) -> Vec<String> {
    let mut names = Vec::new();
    for arg in cmd.get_arguments() {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        if let Some(s) = arg.get_short() {
            names.push(format!("-{s}"));
        }
        if let Some(l) = arg.get_long() {
            names.push(format!("--{l}"));
        }
    }
    names
}

fn mrun_bash(value_options: &[String]) -> String {
    format!(
        r#"
# From the command word on, that command's own completion (as for sudo and nice); mrun's
# options before it.
_mrun_command() {{
    local i=1 word
    while (( i < COMP_CWORD )); do
        word=${{COMP_WORDS[i]}}
        case "$word" in
            --) (( i++ )); break ;;
            {values})
                if [[ ${{COMP_WORDS[i+1]}} == = ]]; then (( i += 3 )); else (( i += 2 )); fi ;;
            -*) (( i++ )) ;;
            *) break ;;
        esac
    done
    if (( i < COMP_CWORD )) || {{ (( i == COMP_CWORD )) && [[ ${{COMP_WORDS[i]}} != -* || ${{COMP_WORDS[i-1]}} == -- ]]; }}; then
        if declare -F _comp_command_offset >/dev/null; then
            _comp_command_offset "$i"
        elif declare -F _command_offset >/dev/null; then
            _command_offset "$i"
        elif (( i == COMP_CWORD )); then
            COMPREPLY=($(compgen -c -- "${{COMP_WORDS[COMP_CWORD]}}"))
        else
            COMPREPLY=($(compgen -f -- "${{COMP_WORDS[COMP_CWORD]}}"))
        fi
        return
    fi
    _mrun "$@"
}}
complete -F _mrun_command -o bashdefault -o default mrun
"#,
        values = value_options.join("|")
    )
}

/// Replaces the one line of `text` that starts with `start` (after indentation) and contains
/// `from` by the same line with `to` in its place. Such a line must exist: it is what clap
/// writes for an argument named here.
fn edit_line(text: &str, start: &str, from: &str, to: &str) -> String {
    let mut found = 0;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_start().starts_with(start) && line.contains(from) {
                found += 1;
                line.replacen(from, to, 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(
        found, 1,
        "the completion generator expected one line starting with {start:?} containing {from:?} in clap's script"
    );
    lines.concat()
}

/// Inserts `code` before clap's closing dispatch (`if [ "$funcstack[1]" = ...`), so that the
/// functions exist when the script runs as an autoloaded function.
fn before_zsh_dispatch(text: &str, code: &str) -> String {
    let marker = "if [ \"$funcstack[1]\"";
    match text.rfind(marker) {
        Some(at) => format!("{}{code}\n{}", &text[..at], &text[at..]),
        None => panic!("the completion generator expected clap's zsh dispatch ({marker:?})"),
    }
}

fn mrun_zsh(generated: String) -> String {
    // `*::` narrows the words to the command and its arguments; `_normal` completes them as
    // a command line of their own.
    edit_line(&generated, "'*::command", ":_cmdambivalent'", ":_normal'")
}

fn mrun_fish(generated: String, value_options: &[String]) -> String {
    // mrun's own options only before the command word.
    let own: String = generated
        .split_inclusive('\n')
        .map(|l| match l.strip_prefix("complete -c mrun ") {
            Some(rest) => format!("complete -c mrun -n __fish_mrun_no_command {rest}"),
            None => l.to_string(),
        })
        .collect();
    let values = value_options.join(" ");
    format!(
        r#"# Whether the command word has not been typed yet (the words so far are mrun's options).
function __fish_mrun_no_command
    set -l words (commandline -opc)
    set -e words[1]
    set -l skip 0
    for w in $words
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case --
                return 1
            case {values}
                set skip 1
            case '-*'
            case '*'
                return 1
        end
    end
    return 0
end
{own}
# From the command word on, that command's own completion (as for sudo and nice).
complete -c mrun -x -a "(__fish_complete_subcommand -- {values})"
"#
    )
}

const MRUNCTL_BASH: &str = r#"
# `mrunctl migrate JOB NODE`: running jobs, then node names, from `mrunctl complete`.
_mrunctl_dynamic() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD >= 2 )) && [[ ${COMP_WORDS[1]} == migrate && $cur != -* ]]; then
        local i n=0 what=
        for (( i = 2; i < COMP_CWORD; i++ )); do
            [[ ${COMP_WORDS[i]} == -* ]] || (( n++ ))
        done
        case $n in
            0) what=jobs ;;
            1) what=nodes ;;
        esac
        if [[ -n $what ]]; then
            local IFS=$'\n'
            COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" complete "$what" 2>/dev/null | cut -f1)" -- "$cur"))
            compopt +o default +o bashdefault 2>/dev/null
            return 0
        fi
    fi
    _mrunctl "$@"
}
complete -F _mrunctl_dynamic -o bashdefault -o default mrunctl
"#;

fn mrunctl_zsh(generated: String) -> String {
    let text = edit_line(&generated, "':job -- ", ":_default'", ":_mrunctl_jobs'");
    let text = edit_line(&text, "':node -- ", ":_default'", ":_mrunctl_nodes'");
    before_zsh_dispatch(
        &text,
        r#"# `mrunctl migrate JOB NODE`: running jobs, then node names, from `mrunctl complete`.
(( $+functions[_mrunctl_candidates] )) ||
_mrunctl_candidates() {
    local -a found
    found=(${(f)"$(_call_program $1 mrunctl complete $1 2>/dev/null)"})
    found=(${found//:/\\:})
    found=(${found//$'\t'/:})
    _describe -t $1 $2 found
}
(( $+functions[_mrunctl_jobs] )) ||
_mrunctl_jobs() { _mrunctl_candidates jobs job }
(( $+functions[_mrunctl_nodes] )) ||
_mrunctl_nodes() { _mrunctl_candidates nodes node }
"#,
    )
}

const MRUNCTL_FISH: &str = r#"
# `mrunctl migrate JOB NODE`: running jobs, then node names, from `mrunctl complete`.
function __fish_mrunctl_migrate_wants
    set -l words (commandline -opc)
    set -l n 0
    for w in $words[3..-1]
        string match -q -- '-*' $w; or set n (math $n + 1)
    end
    test $n -eq $argv[1]
end
complete -c mrunctl -n "__fish_mrunctl_using_subcommand migrate" -f
complete -c mrunctl -n "__fish_mrunctl_using_subcommand migrate; and __fish_mrunctl_migrate_wants 0" -f -a "(mrunctl complete jobs)"
complete -c mrunctl -n "__fish_mrunctl_using_subcommand migrate; and __fish_mrunctl_migrate_wants 1" -f -a "(mrunctl complete nodes)"
"#;
