# shellcheck shell=bash
# exp_scripts/_args.sh: the command-line convention of every exp_scripts/*.sh, in one place.
# Sourced, never run. It keeps DARTS-PT's convention (id = the script's name without .sh,
# passed as --save $id; defaults as var=${var:-default}, so an environment variable of the same
# name works too; every --NAME VALUE pair sets the shell variable NAME) and fixes its gaps:
#   * an unknown --NAME, a --NAME without a value or a stray word stops the script (exit 2)
#     with the list of accepted names (the original ignored them silently); --NAME=VALUE works;
#   * the script runs from anywhere: run_door enters the door's folder through exp_scripts/;
#   * the python is $PYTHON if set, else the repository's .venv/bin/python, else python3;
#   * the python process is exec'd, so its exit status is the script's;
#   * EXP_DRY_RUN=1 prints the command instead of running it.
#
# A script looks like this (see eval.sh):
#
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"   # sets id, EXP_SCRIPTS, REPO_ROOT
#   seed=${seed:-2}
#   arch=${arch:-none}
#   parse_args "seed arch epochs fast" -- "$@"           # --seed 3 sets seed=3
#   require arch none "pass --arch NAME"                 # refuse the 'none' default
#   show_vars id seed arch                               # "seed: 3" lines, as the original
#   add_flags epochs                                     # --epochs "$epochs" only if set
#   add_switches fast                                    # --fast only if fast is 1
#   run_door darts_pt/sota/cnn train.py --arch "$arch" --seed "$seed" --save "$id"
#
# Paths given as values (--data, --experiments) are relative to the door's folder, as in the
# original scripts, which cd there too.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "_args.sh is sourced by the exp_scripts/*.sh scripts, not run" >&2
    exit 2
fi

EXP_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$EXP_SCRIPTS")"
id="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"
ACCEPTED_NAMES=""
DOOR_FLAGS=()

die() {  # die MESSAGE...: one line on stderr, exit status 2 (a usage error)
    echo "$id: error: $*" >&2
    exit 2
}

_accepted_list() {
    local name out=""
    for name in $ACCEPTED_NAMES; do out+="--$name "; done
    echo "${out% }"
}

usage() {
    local name
    echo "usage: bash ${SCRIPT_PATH:-exp_scripts/$id.sh} [--NAME VALUE]..."
    echo "accepted names (current value):"
    for name in $ACCEPTED_NAMES; do
        printf '  --%-16s %s\n' "$name" "${!name-(unset: the door default)}"
    done
}

parse_args() {  # parse_args "name1 name2 ..." -- "$@"
    local arg name value
    ACCEPTED_NAMES=""
    for name in $1; do  # any whitespace separates the names
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "parse_args: '$name' is not a name"
        ACCEPTED_NAMES+="${ACCEPTED_NAMES:+ }$name"
    done
    shift
    [[ "${1-}" == "--" ]] || die "parse_args: write parse_args \"NAMES\" -- \"\$@\""
    shift
    while (($#)); do
        arg="$1"
        case "$arg" in
            -h | --help)
                usage
                exit 0
                ;;
            --*=*)
                name="${arg%%=*}"
                name="${name#--}"
                value="${arg#*=}"
                shift
                ;;
            --*)
                name="${arg#--}"
                if (($# < 2)) || [[ "$2" == --* ]]; then
                    _check_name "$name"
                    die "--$name needs a value (--$name VALUE)"
                fi
                value="$2"
                shift 2
                ;;
            *)
                die "unexpected argument '$arg': options come as --NAME VALUE pairs;" \
                    "accepted: $(_accepted_list)"
                ;;
        esac
        _check_name "$name"
        printf -v "$name" '%s' "$value"
    done
}

_check_name() {
    if [[ " $ACCEPTED_NAMES " != *" $1 "* ]]; then
        die "unknown option --$1; $id.sh accepts: $(_accepted_list)"
    fi
}

require() {  # require NAME SENTINEL MESSAGE...: refuse NAME unset, empty or equal to SENTINEL
    local value="${!1-}"
    if [[ -z "$value" || "$value" == "$2" ]]; then
        die "${@:3}"
    fi
}

show_vars() {  # show_vars NAME...: "NAME: value" lines, as the original scripts echo them
    local name
    for name; do echo "$name: ${!name-}"; done
}

add_flags() {  # add_flags NAME...: append --NAME "$NAME" to DOOR_FLAGS for each NAME that is set
    local name
    for name; do
        if [[ -n "${!name-}" ]]; then DOOR_FLAGS+=("--$name" "${!name}"); fi
    done
}

add_switches() {  # add_switches NAME...: append --NAME when NAME is 1/true/yes (0/false/no: not)
    local name
    for name; do
        case "${!name-}" in
            "" | 0 | false | no) ;;
            1 | true | yes) DOOR_FLAGS+=("--$name") ;;
            *) die "--$name takes 1 or 0, got '${!name}'" ;;
        esac
    done
}

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

# run_door DIR SCRIPT ARG...: cd to DIR (repo-relative), exec python SCRIPT ARG... DOOR_FLAGS
run_door() {
    local dir="$1" py
    shift
    cd "$EXP_SCRIPTS" && cd "../$dir" || die "no folder $REPO_ROOT/$dir"
    py="$(pick_python)"
    local cmd=("$py" "$@" ${DOOR_FLAGS[@]+"${DOOR_FLAGS[@]}"})
    echo "+ (cd $dir &&$(printf ' %q' "${cmd[@]}"))"
    if [[ "${EXP_DRY_RUN:-0}" == 1 ]]; then
        exit 0
    fi
    exec "${cmd[@]}"
}
