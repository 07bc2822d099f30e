#!/usr/bin/env bash
# Nightly audit: audit into $NIGHTLY_ROOT/<UTC date>/, compare with the latest earlier finished night,
# exit non-zero on a regression. Exit status: the audit's own when it fails (2 configuration, 3 too many
# failed samples, 4 unexpected), else compare's (0 every gate passed, 1 a gate tripped, 2 cannot compare).
#
# Environment:
#   NIGHTLY_ARGS   Hydra overrides for the audit (data, model, ...); default: the built-in demo
#   NIGHTLY_GATES  compare options; default below (accuracy -1 point, energy in box -0.02, a class -25 points)
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
gates="${NIGHTLY_GATES:---max-drop accuracy=0.01 --max-drop true_energy_in_box=0.02 --max-class-drop accuracy=0.25}"
tonight="$root/${NIGHTLY_NAME:-$(date -u +%Y-%m-%d)}"
mkdir -p "$root"

status=0
# shellcheck disable=SC2086  # NIGHTLY_ARGS is a list of overrides, split on purpose
"$python" -m pipeline ${NIGHTLY_ARGS:-} runtime.log_format=json "hydra.run.dir=$tonight" || status=$?
if [ "$status" -ne 0 ]; then
    echo "nightly: the audit into $tonight failed with status $status" >&2
    exit "$status"
fi

# The latest earlier night that finished (has summary.json); *.compare folders and half-done nights are skipped.
previous=""
for run in "$root"/*/; do
    run="${run%/}"
    if [[ "$run" < "$tonight" && -f "$run/summary.json" ]]; then
        previous="$run"
    fi
done
if [ -z "$previous" ]; then
    echo "nightly: $tonight is the first finished night: nothing to compare with"
    exit 0
fi

# shellcheck disable=SC2086
"$python" -m pipeline compare "$previous" "$tonight" $gates
