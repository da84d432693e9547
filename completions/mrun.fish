complete -c mrun -s j -l jobs -d 'With --each: how many jobs run at once (default: the CPUs of this machine and of every reachable configured node together)' -r
complete -c mrun -l joblog -d 'With --each: write GNU parallel\'s job log to FILE (one tab-separated line per job)' -r -F
complete -c mrun -l keep-fd -d 'Pass descriptor FD, inherited by mrun, on to the job (repeatable, or `3,4`; `all` for every one). By default a job gets only stdin, stdout and stderr, as with sudo. A job holding a kept pipe, socket or terminal that a process outside it shares cannot move' -r
complete -c mrun -l nodes -d 'The nodes this job may move to (comma separated), instead of MRUN_NODES or the `nodes` of ~/.config/mrun/config.toml. With --each, for every job' -r
complete -c mrun -l home -d 'Keep this job at home: the balancer never moves it (mrunctl migrate still can). With --each, every job stays home'
complete -c mrun -l each -d 'Run COMMAND once per argument, up to --jobs at once: `mrun --each COMMAND ARG...` runs `COMMAND ARG` for each ARG; `mrun --each COMMAND FIXED... ::: ARG...` runs `COMMAND FIXED... ARG`; with no ARG, one argument per line of stdin'
complete -c mrun -s h -l help -d 'Print help'
complete -c mrun -s V -l version -d 'Print version'
