# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mrunctl_global_optspecs
    string join \n h/help V/version
end

function __fish_mrunctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mrunctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mrunctl_using_subcommand
    set -l cmd (__fish_mrunctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mrunctl -n "__fish_mrunctl_needs_command" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -s V -l version -d 'Print version'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "checkpoint" -d 'Freeze a process, write its image, then end it (it lives on in the image)'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "restore" -d 'Bring an image back to life in the foreground, with this command\'s stdio'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "migrate" -d 'Move a running job to a node, or back home'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "status" -d 'List this user\'s jobs (where each runs, its age and CPU time) and the nodes'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "nodes" -d 'The configured nodes and what each reports (CPUs, load, free memory)'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "kill" -d 'Send a signal (default TERM) to jobs wherever they run, as kill(1) does'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "daemon" -d 'The home daemon: whether it runs, and stopping it'
complete -c mrunctl -n "__fish_mrunctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand checkpoint" -s o -l output -d 'Where to write the image; `-` writes it to standard output' -r -F
complete -c mrunctl -n "__fish_mrunctl_using_subcommand checkpoint" -l compress -d 'Compression of the page data: `auto` compresses (zstd level 1) when that makes the image go faster, as measured while writing it (a slow pipe or disk; not a file the page cache takes, nor random bytes): into a pipe it starts compressed, into a file raw; `off` never; a zstd level (1 is fast, 19 is small) always' -r
complete -c mrunctl -n "__fish_mrunctl_using_subcommand checkpoint" -l leave-running -d 'Let the process go on running after the checkpoint instead of ending it'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand checkpoint" -l pre-copy -d 'Write the memory while the process still runs, in rounds, then freeze it and write only what it changed meanwhile: a shorter freeze, a larger file (Linux 6.7+; elsewhere a plain checkpoint, which MRUN_TRACE=1 says). `mrunctl restore` reads either'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand checkpoint" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand restore" -l new-pid -d 'Do not give the process its original pid (no new pid namespace). glibc\'s cached thread id is then stale; use only where user namespaces are disabled'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand restore" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -l nodes -d 'Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml' -r
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -l interval -d 'Seconds between two redraws of --watch' -r
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -l json -d 'Print JSON for scripts (`{"version": 1, "jobs": [...], "nodes": [...]}`; docs/json.md)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -l refresh -d 'Ask every node anew (all at once) instead of showing what the daemon last heard'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -s w -l watch -d 'Keep showing: a live view of the machines\' loads, the jobs and the balancer\'s moves, redrawn every interval (like mosmon/mtop). Ctrl-C ends it'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand nodes" -l nodes -d 'Nodes to show (comma separated), instead of MRUN_NODES or ~/.config/mrun/config.toml' -r
complete -c mrunctl -n "__fish_mrunctl_using_subcommand nodes" -l json -d 'Print JSON for scripts'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand nodes" -l refresh -d 'Ask every node anew (all at once) instead of showing what the daemon last heard'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand nodes" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand kill" -s s -l signal -d 'The signal: a name with or without SIG (TERM, SIGUSR1, int) or a number (9). `-SIGNAL` before the first job works too (`mrunctl kill -9 JOB`), as with kill(1)' -r
complete -c mrunctl -n "__fish_mrunctl_using_subcommand kill" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and not __fish_seen_subcommand_from status stop help" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and not __fish_seen_subcommand_from status stop help" -f -a "status" -d 'Whether it runs: pid, uptime, memory, nodes watched, job connections carried. Exit status 0 if it runs, 1 if not'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and not __fish_seen_subcommand_from status stop help" -f -a "stop" -d 'Stop it (refused while a job running on a node is connected through it). The next command that needs it starts it again, with the environment of that command'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and not __fish_seen_subcommand_from status stop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "status" -d 'Whether it runs: pid, uptime, memory, nodes watched, job connections carried. Exit status 0 if it runs, 1 if not'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop it (refused while a job running on a node is connected through it). The next command that needs it starts it again, with the environment of that command'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "checkpoint" -d 'Freeze a process, write its image, then end it (it lives on in the image)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "restore" -d 'Bring an image back to life in the foreground, with this command\'s stdio'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "migrate" -d 'Move a running job to a node, or back home'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "status" -d 'List this user\'s jobs (where each runs, its age and CPU time) and the nodes'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "nodes" -d 'The configured nodes and what each reports (CPUs, load, free memory)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "kill" -d 'Send a signal (default TERM) to jobs wherever they run, as kill(1) does'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "daemon" -d 'The home daemon: whether it runs, and stopping it'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and not __fish_seen_subcommand_from checkpoint restore migrate status nodes kill daemon help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "status" -d 'Whether it runs: pid, uptime, memory, nodes watched, job connections carried. Exit status 0 if it runs, 1 if not'
complete -c mrunctl -n "__fish_mrunctl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop it (refused while a job running on a node is connected through it). The next command that needs it starts it again, with the environment of that command'

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
