#!/usr/bin/env bash
# The long fuzzing run: every cleaner and similarity measure under the property tests of
# src/fuzz.rs (proptest) for --cases generated inputs each (default 10,000,000), optimized
# (profile `profiling`: release without link-time optimization), one property after another.
# Prints per property the cases, seconds and cases/s, and a summary table at the end; fails on
# the first property that breaks (with the shrunk input and the seed that repeats the run).
#
#   bash benches/fuzz.sh [--cases N] [--threads T] [--seed S] [--only NAME]
#
# --threads runs T properties at once (default 1: the rates then are per core); --seed repeats
# a run (PROPTEST_RNG_SEED); --only runs the properties whose test name contains NAME.
# No server is needed: the properties test the pure Rust modules.
source "$(dirname "$0")/../scripts/lib.sh"

CASES=10000000
THREADS=1
SEED=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) die "unknown argument $1 (see the head of $0)" ;;
    esac
done

cd "$ROOT"
command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 with rustup first"
# pgrx's build script needs a pg_config; the properties themselves never start a server.
[ -f "$HOME/.pgrx/config.toml" ] || ensure_deps

log "building the property tests (profile profiling)"
cargo test --profile profiling --no-default-features --features pg15 --lib --no-run --quiet

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
log "fuzzing: $CASES cases per property, $THREADS at a time$( [ -n "$SEED" ] && echo ", seed $SEED")"
started=$(date +%s)
export PROPTEST_CASES="$CASES"
[ -n "$SEED" ] && export PROPTEST_RNG_SEED="$SEED"
status=0
RUST_BACKTRACE=0 cargo test --profile profiling --no-default-features --features pg15 --lib \
    "fuzz::fuzz_${ONLY}" -- --nocapture --test-threads="$THREADS" 2>&1 | tee "$OUT" \
    | grep --line-buffered -E -A4 'fuzz [a-z_]+: |minimal failing' || true
grep -q '^test result: ok' "$OUT" || status=1

echo
echo "| property | cases | seconds | cases/s |"
echo "| --- | ---: | ---: | ---: |"
# The harness writes "test fuzz::fuzz_x ... " before the property's own line.
sed -nE 's/.*fuzz ([a-z_]+): ([0-9]+) cases in ([0-9.]+) s, ([0-9]+) cases\/s.*/\1 \2 \3 \4/p' "$OUT" | sort |
    while read -r name cases seconds rate; do
        printf '| %s | %s | %s | %s |\n' "$name" "$cases" "$seconds" "$rate"
    done
properties=$(grep -cE 'fuzz [a-z_]+: [0-9]+ cases' "$OUT" || true)
echo
echo "$properties properties, $(( $(date +%s) - started )) s in all, $(nproc) cores, $(date -u +%Y-%m-%d)"
[ "$status" = 0 ] || die "a property failed (above; PROPTEST_RNG_SEED repeats the run)"
