_mrun() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="mrun"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        mrun)
            opts="-j -k -h -V --home --each --jobs --joblog --keep-order --keep-fd --nodes --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --jobs)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -j)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --joblog)
                    local oldifs
                    if [ -n "${IFS+x}" ]; then
                        oldifs="$IFS"
                    fi
                    IFS=$'\n'
                    COMPREPLY=($(compgen -f "${cur}"))
                    if [ -n "${oldifs+x}" ]; then
                        IFS="$oldifs"
                    fi
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o filenames
                    fi
                    return 0
                    ;;
                --keep-fd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --nodes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _mrun -o nosort -o bashdefault -o default mrun
else
    complete -F _mrun -o bashdefault -o default mrun
fi

# From the command word on, that command's own completion (as for sudo and nice); mrun's
# options before it.
_mrun_command() {
    local i=1 word
    while (( i < COMP_CWORD )); do
        word=${COMP_WORDS[i]}
        case "$word" in
            --) (( i++ )); break ;;
            -j|--jobs|--joblog|--keep-fd|--nodes)
                if [[ ${COMP_WORDS[i+1]} == = ]]; then (( i += 3 )); else (( i += 2 )); fi ;;
            -*) (( i++ )) ;;
            *) break ;;
        esac
    done
    if (( i < COMP_CWORD )) || { (( i == COMP_CWORD )) && [[ ${COMP_WORDS[i]} != -* || ${COMP_WORDS[i-1]} == -- ]]; }; then
        if declare -F _comp_command_offset >/dev/null; then
            _comp_command_offset "$i"
        elif declare -F _command_offset >/dev/null; then
            _command_offset "$i"
        elif (( i == COMP_CWORD )); then
            COMPREPLY=($(compgen -c -- "${COMP_WORDS[COMP_CWORD]}"))
        else
            COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
        fi
        return
    fi
    _mrun "$@"
}
complete -F _mrun_command -o bashdefault -o default mrun
