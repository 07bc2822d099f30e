#!/usr/bin/env bash
# Nightly audit that a bad night cannot pass (docs/compare-and-nightly.md, "Nightly job").
#
#   scripts/nightly.sh              audit tonight into $NIGHTLY_ROOT/<UTC date>/, then compare it
#                                   1. with the PINNED REFERENCE ($NIGHTLY_ROOT/REFERENCE names it): a regression
#                                      stays red every night until it is fixed or the reference is re-pinned;
#                                   2. with the latest earlier finished night, for the trend (a sudden change);
#                                   both with the same gates, and the night is red when either trips.
#   scripts/nightly.sh pin NIGHT    pin NIGHT (the folder name of a finished night) as the reference, on purpose.
#                                   With no REFERENCE yet, the first night pins the latest earlier finished night,
#                                   or itself when it is the first; after that only this command changes it.
#
# Output: JSON lines only, one object per line (stdout and stderr), for cron.log and a scheduler: the audit's
# events (runtime.log_format=json), compare's verdicts (event "compare": compare.json with verdict, tripped and
# the numbers) and this script's own events ("nightly_start", "reference_pinned", "nightly_end", "error").
#
# Exit status (the "Exit statuses" table of docs/usage.md):
#   0    the audit finished and every gate passed against the reference and against last night
#   1    a compare gate tripped (against the reference or last night; the "compare" lines say which)
#   2    configuration or usage error: a bad option of the audit or of compare, a folder that already holds a
#        run, the pinned reference is not a finished night, runs that cannot be compared (other data)
#   3    the audit stopped: too many samples failed (runtime.max_error_fraction), or none could be audited
#   4    the audit stopped, or compare could not write, because the disk is full
#   5    an unexpected error (a bug): the traceback is in the job log
#   130  interrupted (SIGINT); 143 terminated (SIGTERM): the audit can be resumed (its error event says how)
#   When the audit fails its status is the script's and nothing is compared. When the two comparisons give
#   different statuses, one that is neither 0 nor 1 wins (the job itself is broken), then 1.
#
# Environment:
#   NIGHTLY_ARGS   Hydra overrides for the audit (data, model, ...); default: the built-in demo
#   NIGHTLY_GATES  compare's gate options; default below: coverage (>= 95% of the dataset audited, >= 98% of
#                  the reference's images audited again, skipped share up by <= 1 point), accuracy -1 point and
#                  true-class energy in box -0.02 overall, a class's accuracy -25 points or energy in box -0.10
#                  (Holm-corrected, classes of >= 10 images); each drop must also be significant (alpha 0.05)
#   NIGHTLY_ROOT   folder of the nights (default outputs/nightly); NIGHTLY_NAME tonight's folder name
#                  (default the UTC date, YYYY-MM-DD: names must sort in time order)
#   PYTHON         the interpreter (default .venv/bin/python)
#
# Crontab, every night at 02:00:
#   0 2 * * *  cd /srv/cam-audit && NIGHTLY_ARGS="data=imagenet_val ..." scripts/nightly.sh >> outputs/nightly/cron.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."

root="${NIGHTLY_ROOT:-outputs/nightly}"
python="${PYTHON:-.venv/bin/python}"
default_gates="--min-coverage 0.95 --min-reference-coverage 0.98 --max-skipped-rise 0.01"
default_gates+=" --max-drop accuracy=0.01 --max-drop true_energy_in_box=0.02"
default_gates+=" --max-class-drop accuracy=0.25 --max-class-drop true_energy_in_box=0.1"
gates="${NIGHTLY_GATES:-$default_gates}"
pin_file="$root/REFERENCE"

json_string() { # $1 as a JSON string literal
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '"%s"' "$s"
}

# log LEVEL EVENT MESSAGE [KEY=STRING | KEY:=JSON ...]: one JSON line on stderr, like the audit's events.
log() {
    local level=$1 event=$2 message=$3 line field
    shift 3
    line="{\"time\": \"$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)\", \"level\": \"$level\", \"logger\": \"nightly\""
    line+=", \"event\": $(json_string "$event"), \"message\": $(json_string "$message")"
    for field in "$@"; do
        if [[ "$field" == *:=* ]]; then
            line+=", $(json_string "${field%%:=*}"): ${field#*:=}"
        else
            line+=", $(json_string "${field%%=*}"): $(json_string "${field#*=}")"
        fi
    done
    printf '%s}\n' "$line" >&2
}

finished() { [[ -n "$1" && -f "$root/$1/summary.json" ]]; }

# pin NIGHT REASON: write REFERENCE (through a temporary file: never half-written) and log it.
pin() {
    local night=$1 reason=$2 previous=""
    [ -f "$pin_file" ] && previous="$(<"$pin_file")"
    printf '%s\n' "$night" >"$pin_file.tmp"
    mv -f "$pin_file.tmp" "$pin_file"
    log INFO reference_pinned "nightly: reference pinned to $root/$night ($reason)" \
        "reference=$night" "previous_reference=$previous" "reason=$reason"
}

if [ "${1:-}" = "pin" ]; then
    if [ $# -ne 2 ] || ! finished "$2"; then
        log ERROR error "nightly: pin NIGHT needs the folder name of a finished night in $root (one with summary.json)" \
            "night=${2:-}" exit_code:=2
        exit 2
    fi
    mkdir -p "$root"
    pin "$2" "pinned by hand${USER:+ by $USER}"
    exit 0
elif [ $# -ne 0 ]; then
    log ERROR error "nightly: usage: scripts/nightly.sh [pin NIGHT]" exit_code:=2
    exit 2
fi

name="${NIGHTLY_NAME:-$(date -u +%Y-%m-%d)}"
tonight="$root/$name"
mkdir -p "$root"
log INFO nightly_start "nightly: auditing into $tonight" "night=$name" "root=$root"

status=0
# shellcheck disable=SC2086  # NIGHTLY_ARGS is a list of overrides, split on purpose
"$python" -m pipeline ${NIGHTLY_ARGS:-} runtime.log_format=json "hydra.run.dir=$tonight" || status=$?
if [ "$status" -ne 0 ]; then
    log ERROR nightly_end "nightly: the audit into $tonight failed with status $status: nothing compared" \
        "night=$name" exit_code:="$status"
    exit "$status"
fi

# The latest earlier night that finished (has summary.json); *.compare folders and half-done nights are skipped.
previous=""
for run in "$root"/*/; do
    run="$(basename "$run")"
    if [[ "$run" < "$name" && "$run" != *.compare ]] && finished "$run"; then
        previous="$run"
    fi
done

if [ ! -f "$pin_file" ]; then # the first night of this script: pin once, then only `pin` changes it
    if [ -n "$previous" ]; then
        pin "$previous" "no reference was pinned: the latest earlier finished night"
    else
        pin "$name" "the first finished night"
    fi
fi
reference="$(<"$pin_file")"
if ! finished "$reference"; then
    log ERROR nightly_end "nightly: the pinned reference $root/$reference is not a finished night (no summary.json); pin one with scripts/nightly.sh pin NIGHT" \
        "night=$name" "reference=$reference" exit_code:=2
    exit 2
fi

# compare BASELINE ROLE: compare's own JSON line on stdout; its status in $compared
compare() {
    compared=0
    log INFO nightly_compare "nightly: comparing $name with the $2 $1" "night=$name" "baseline=$1" "role=$2"
    # shellcheck disable=SC2086  # the gates are a list of options, split on purpose
    "$python" -m pipeline compare "$root/$1" "$tonight" $gates --format json || compared=$?
}

against_reference=null # compare's status against each baseline; null: not compared
against_previous=null
if [ "$reference" != "$name" ]; then
    compare "$reference" "pinned reference"
    against_reference=$compared
fi
if [ -n "$previous" ] && [ "$previous" != "$reference" ]; then
    compare "$previous" "previous night (trend)"
    against_previous=$compared
fi

status=0
for code in "$against_reference" "$against_previous"; do
    if [ "$code" = null ] || [ "$code" -eq 0 ]; then
        continue
    elif [ "$code" -ne 1 ]; then
        status=$code
    elif [ "$status" -eq 0 ]; then
        status=1
    fi
done
case "$status" in
    0) verdict=pass level=INFO ;;
    1) verdict=fail level=ERROR ;;
    *) verdict=error level=ERROR ;;
esac
said() { # what one comparison gave, in words
    case "$1" in
        null) echo "not compared" ;;
        0) echo "pass" ;;
        1) echo "FAIL" ;;
        *) echo "error, status $1" ;;
    esac
}
if [ "$reference" = "$name" ]; then
    detail="tonight is the reference: nothing to compare"
else
    detail="against the pinned reference $reference: $(said "$against_reference")"
    if [ -z "$previous" ] || [ "$previous" = "$reference" ]; then
        detail+="; the previous finished night is the reference"
    else
        detail+="; against the previous night $previous: $(said "$against_previous")"
    fi
fi
log "$level" nightly_end "nightly: $name $verdict ($detail)" \
    "night=$name" "reference=$reference" "previous=$previous" "verdict=$verdict" \
    against_reference:="$against_reference" against_previous:="$against_previous" exit_code:="$status"
exit "$status"
