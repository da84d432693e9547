# Whether the command word has not been typed yet (the words so far are mrun's options).
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
            case -j --jobs --joblog --keep-fd --nodes
                set skip 1
            case '-*'
            case '*'
                return 1
        end
    end
    return 0
end
complete -c mrun -n __fish_mrun_no_command -s j -l jobs -d 'With --each: how many jobs run at once (default: the CPUs of this machine and of every reachable configured node together)' -r
complete -c mrun -n __fish_mrun_no_command -l joblog -d 'With --each: write GNU parallel\'s job log to FILE (one tab-separated line per job)' -r -F
complete -c mrun -n __fish_mrun_no_command -l keep-fd -d 'Pass descriptor FD, inherited by mrun, on to the job (repeatable, or `3,4`; `all` for every one). By default a job gets only stdin, stdout and stderr, as with sudo. A job holding a kept pipe, socket or terminal that a process outside it shares cannot move' -r
complete -c mrun -n __fish_mrun_no_command -l nodes -d 'The nodes this job may move to (comma separated), instead of MRUN_NODES or the `nodes` of ~/.config/mrun/config.toml. With --each, for every job' -r
complete -c mrun -n __fish_mrun_no_command -l home -d 'Keep this job at home: the balancer never moves it (mrunctl migrate still can). With --each, every job stays home'
complete -c mrun -n __fish_mrun_no_command -l each -d 'Run COMMAND once per argument, up to --jobs at once: `mrun --each COMMAND [-OPTION...] ARG...` runs `COMMAND -OPTION... ARG` for each ARG; `mrun --each COMMAND FIXED... ::: ARG...` runs `COMMAND FIXED... ARG`; with no ARG, or `:::: -`, one argument per line of stdin (`:::: FILE`: of FILE)'
complete -c mrun -n __fish_mrun_no_command -s k -l keep-order -d 'With --each: show the jobs\' outputs in the order of their arguments, as GNU parallel\'s --keep-order (jobs still run at once; an output waits until every earlier one is shown)'
complete -c mrun -n __fish_mrun_no_command -s h -l help -d 'Print help'
complete -c mrun -n __fish_mrun_no_command -s V -l version -d 'Print version'

# From the command word on, that command's own completion (as for sudo and nice).
complete -c mrun -x -a "(__fish_complete_subcommand -- -j --jobs --joblog --keep-fd --nodes)"
