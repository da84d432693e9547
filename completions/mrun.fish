complete -c mrun -s h -l help -d 'Print help'
complete -c mrun -s V -l version -d 'Print version'
