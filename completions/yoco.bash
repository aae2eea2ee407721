# bash completion for yoco. Each TAB asks `yoco` itself (_YOCO_COMPLETE=complete_bash) for the candidates.
# bash splits the line at the characters of COMP_WORDBREAKS, `@` and `:` among them, and yoco's names hold
# both (digits/idc/ipc10@lbpe-easy-balanced-ipc1, folder:PATH): the words are joined again before asking,
# and the answers lose the part before the last such break, the part readline leaves on the line.
_yoco_words() {
    local breaks="" ch line rest piece prev="" i
    for ch in @ :; do
        [[ $COMP_WORDBREAKS == *"$ch"* ]] && breaks+=$ch
    done
    _yoco_w=() _yoco_cword=-1
    line=${COMP_LINE:0:COMP_POINT}
    for (( i = 0; i <= COMP_CWORD; i++ )); do
        piece=${COMP_WORDS[i]}
        rest=${line#"${line%%[![:space:]]*}"}
        if (( i > 0 )) && [[ $rest == "$line" && -n $breaks ]] &&
           { [[ -n $piece && -z ${piece//[$breaks]/} ]] || [[ -n $prev && -z ${prev//[$breaks]/} ]]; }; then
            _yoco_w[_yoco_cword]+=$piece   # no blank before it and a break character on one side
        else
            _yoco_w+=("$piece")
            (( _yoco_cword++ ))
        fi
        line=${rest:${#piece}}
        prev=$piece
    done
    _yoco_breaks=$breaks
}

_yoco_completion() {
    local IFS=$'\n' _yoco_w _yoco_cword _yoco_breaks cur keep
    _yoco_words
    COMPREPLY=( $( env COMP_WORDS="${_yoco_w[*]}" \
                   COMP_CWORD=$_yoco_cword \
                   _YOCO_COMPLETE=complete_bash $1 ) )
    cur=${_yoco_w[_yoco_cword]}
    if [[ -n $_yoco_breaks && $cur == *[$_yoco_breaks]* ]]; then
        keep=${cur%"${cur##*[$_yoco_breaks]}"}   # up to and with the last @ or :
        # readline replaces the text after that break, but from an `@` on (bash's special prefixes)
        [[ $keep == *@ ]] && keep=${keep%@}
        COMPREPLY=( "${COMPREPLY[@]#"$keep"}" )
    fi
    # a folder (folder:PATH/) goes on being typed: no space after it
    [[ ${#COMPREPLY[@]} == 1 && ${COMPREPLY[0]} == */ ]] && compopt -o nospace 2>/dev/null
    return 0
}

complete -o default -F _yoco_completion yoco
