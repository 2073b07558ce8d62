#!/usr/bin/env bash
# Benchmark (issue 27): the pipeline on a loopback Citus cluster (coordinator + 2 workers, Citus
# 13.2.2 built from the vendored source) beside plain PostgreSQL on the same data, per step, in
# the same run: tests/citus/run.sh with CITUS_TIMES=1 (which also asserts the same records, pairs
# and persons). Four databases on the coordinator: plain_local / cu_local (every source a local
# table; Citus installed in cu_local) and plain_dist / cu_dist (shop_customers and crm_contacts
# distributed and tracked: captured on their shards, cleaned on the workers by sync;
# pos_loyalty_members a reference table, untracked; newsletter_signups local and tracked). In
# cu_local and cu_dist score_pairs scores the blocks on the workers (issue 27); the plain twins
# score on the coordinator. Also printed: the peak private memory per node while each step runs
# (VmHWM - RssShmem of the largest backend of each node, sampled every 0.2 s; tests/citus/run.sh
# CITUS_MEMORY=1). All nodes share this machine's 2 cores, so the
# distributed run shows Citus's overhead, not a speed-up. docs/BENCHMARKS.md ("Citus") records the
# figures.
#
#   bash benches/citus.sh [--rows N]      (default 50000 generated CRM rows)
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=50000
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
mkdir -p "$DIR"
chown postgres: "$DIR"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); Citus 13.2.2; date $(date -u +%F); crmgen --rows $ROWS --seed 7"
ROWS="$ROWS" CITUS_TIMES=1 CITUS_MEMORY=1 bash tests/citus/run.sh "$DIR"
