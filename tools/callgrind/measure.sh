#!/bin/bash
# usage: tools/callgrind/measure.sh send|time [R1 R2]: the server's instructions per operation
# (callgrind, in-process: tools/callgrind/ring.py), by the difference of two round counts.
set -e
cd "$(dirname "$0")/../.."
mode=$1; r1=${2:-5}; r2=${3:-25}
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python tools/callgrind/ring.py $mode $1 2>&1 | grep -o "Collected : [0-9]*" | awk '{print $3}'; }
a=$(ir $r1); b=$(ir $r2)
ops=$(( (r2 - r1) * 50 * 32 ))
echo "$mode: $(( (b - a) / ops )) instructions per op ($a, $b)"
