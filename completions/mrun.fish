complete -c mrun -l home -d 'Keep this job at home: the balancer never moves it (mrunctl migrate still can)'
complete -c mrun -s h -l help -d 'Print help'
complete -c mrun -s V -l version -d 'Print version'
