#!/usr/bin/env bash
# Every figure of BENCHMARKS.md in one run (a few minutes on 2 cores):
#   bash benches/run.sh            # prints the tables, and keeps them in target/bench-report.txt
# Measure when the machine is quiet: `uptime` before, and no other build running.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    cargo bench --bench hot_path --bench allocations --bench stampede --bench rollover --bench e2e
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee target/bench-report.txt | grep -vE '^(Benchmarking|Gnuplot|Warning: Unable|Found [0-9]+ outliers|  [0-9]+ \([0-9.]+%\) (low|high) (mild|severe))'
