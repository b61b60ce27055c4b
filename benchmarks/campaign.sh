#!/usr/bin/env bash
# The whole benchmark campaign in one command, on a bare GPU machine (torch, triton, pytest,
# pytest-benchmark; the package need not be installed, DeepSpeed / DALI / xformers need not exist):
#
#   bash benchmarks/campaign.sh [--dry-run] [--parts PART,...] OUT_DIR
#
# Parts, time budgets, outputs (OUT_DIR/results.json, tables.md, campaign.log, summary.txt) and
# the install fallback are described in benchmarks/campaign.py. --dry-run runs every part on the
# CPU in smoke mode (no speed results). The exit status is 1 if any part failed, after every file
# is written; 2 for bad arguments. The interpreter is $PYTHON, else python, else python3.
set -u
export HITRS_CAMPAIGN_CWD="$PWD"  # a relative OUT_DIR is relative to where the command was typed
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-$(command -v python || command -v python3 || true)}
if [ -z "$PY" ]; then
    echo "benchmarks/campaign.sh: no python on PATH (set PYTHON=/path/to/python)" >&2
    exit 2
fi
export HITRS_CAMPAIGN_LAUNCHER="bash benchmarks/campaign.sh"
exec "$PY" -m benchmarks.campaign "$@"
