# bash completion for hosttune: subcommands and the global options.
_hosttune() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "recommend tune topology doctor capture accel status telemetry record classify apply set rollback history show collapse outcomes config model job k8s --help --version" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _hosttune hosttune
