# Shared helpers for scripts/demo.sh, scripts/test.sh and benches/*.sh. Source, don't run.
# Everything here is idempotent: a second run finds what the first installed and skips it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR=15
SYSTEM_PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
# CUSTOMER_UNIFY_PG_PREFIX=/some/dir: install into and run a private copy of the system
# PostgreSQL under that directory (PostgreSQL finds its libraries relative to its binaries), so
# several runs on one machine (a developer's and a helper's) test their own builds side by
# side. Unset (CI, the demo): the system PostgreSQL.
PG_PREFIX="${CUSTOMER_UNIFY_PG_PREFIX:-}"
PG_BIN="$PG_PREFIX/usr/lib/postgresql/$PG_MAJOR/bin"
PG_CONFIG="$PG_BIN/pg_config"
PGRX_VERSION=0.18.0
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages, cargo-pgrx and `cargo pgrx init`, each only when missing.
ensure_deps() {
    [ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and the extension into the system PostgreSQL)"
    local pkgs=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
                libclang-dev clang sudo build-essential pkg-config)
    pkgs+=("${EXTRA_PACKAGES[@]:-}")
    local missing=()
    for p in "${pkgs[@]}"; do
        [ -n "$p" ] || continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 with rustup first"
    if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
        log "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
    fi
    if ! grep -qs "pg$PG_MAJOR = \"$SYSTEM_PG_CONFIG\"" "$HOME/.pgrx/config.toml"; then
        log "cargo pgrx init --pg$PG_MAJOR $SYSTEM_PG_CONFIG"
        cargo pgrx init --pg$PG_MAJOR "$SYSTEM_PG_CONFIG" >/dev/null
    fi
    if [ -n "$PG_PREFIX" ] && [ ! -x "$PG_BIN/postgres" ]; then
        log "a private copy of PostgreSQL $PG_MAJOR under $PG_PREFIX"
        mkdir -p "$PG_PREFIX/usr/lib/postgresql" "$PG_PREFIX/usr/share/postgresql"
        cp -a "/usr/lib/postgresql/$PG_MAJOR" "$PG_PREFIX/usr/lib/postgresql/"
        cp -a "/usr/share/postgresql/$PG_MAJOR" "$PG_PREFIX/usr/share/postgresql/"
    fi
    hold_install_lock
}

# One run at a time per machine may install the library into the system PostgreSQL and run
# clusters from it: a library overwritten under a running server kills it with SIGBUS. Tests and
# benches take this lock for their whole run (a second run waits). Re-entrant via the env var.
hold_install_lock() {
    [ -n "${CUSTOMER_UNIFY_LOCK_HELD:-}" ] && return 0
    exec 9>"$(install_lock_file)"
    if ! flock -n 9; then
        log "waiting for another test or bench run on this installation ($(install_lock_file))"
        flock 9
    fi
    export CUSTOMER_UNIFY_LOCK_HELD=1
}

# The lock of the installation in use: the system PostgreSQL's, or one per private copy.
install_lock_file() {
    if [ -n "$PG_PREFIX" ]; then
        echo "/tmp/customer_unify.install.$(echo "$PG_PREFIX" | md5sum | cut -c1-12).lock"
    else
        echo /tmp/customer_unify.install.lock
    fi
}

# Installs the build of cargo profile $1 (release, profiling) into the PostgreSQL in use.
install_build() {
    local profile="$1"
    if [ -z "$PG_PREFIX" ]; then
        (cd "$ROOT" && cargo pgrx install --profile "$profile" --pg-config "$PG_CONFIG" --sudo >/dev/null)
    else
        # Packaged against the system's pg_config (same paths), copied into the private copy.
        local target="${CARGO_TARGET_DIR:-$ROOT/target}"
        (cd "$ROOT" && cargo pgrx package --profile "$profile" --pg-config "$SYSTEM_PG_CONFIG" >/dev/null)
        cp -a "$target/$profile/customer_unify-pg$PG_MAJOR/usr/." "$PG_PREFIX/usr/"
    fi
}

# Client-driven tests (tests/worker, tests/dump_restore): report a check, remember a failure in
# FAILED (the caller sets FAILED=0 and dies at the end if it is not 0).
pass() { printf '  ok    %s\n' "$1"; }
fail() { printf '  FAIL  %s\n' "$1" >&2; FAILED=1; }
expect() {  # expect NAME GOT WANT
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}

# Prints a TCP port nothing listens on.
free_port() {
    local port
    for port in $(seq "${1:-55432}" 65000); do
        if ! (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port"
}

# start_cluster DIR [extra postgresql.conf lines...]: a throwaway cluster run by `postgres` in
# DIR (initdb'd on first use), listening on 127.0.0.1 at a free port. Sets PGHOST, PGPORT, PGUSER.
start_cluster() {
    local dir="$1"; shift
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 700 "$dir"
    if [ -f "$dir/data/postmaster.pid" ]; then
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        sudo -u postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust \
            --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    # Another cluster on the machine (a second run's) may take the port between the check and
    # the bind: then again on another one. The search starts at a random port for the same reason.
    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port $((55432 + RANDOM % 4000)))
        {
            echo "# written by scripts/lib.sh start_cluster"
            echo "port = $port"
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$dir'"
            echo "max_worker_processes = 16"
            for line in "$@"; do echo "$line"; done
        } | sudo -u postgres tee "$dir/data/postgresql.auto.conf" >/dev/null
        if sudo -u postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null; then
            break
        fi
        if [ "$attempt" = 5 ] || ! tail -10 "$dir/server.log" | grep -q "Address already in use"; then
            tail -20 "$dir/server.log" >&2
            die "postgres did not start (log: $dir/server.log)"
        fi
        log "port $port was taken meanwhile: another one"
    done
    export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres
}

stop_cluster() {
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

# Builds (incrementally) and installs the release build into the system PostgreSQL.
install_release() {
    log "building and installing customer_unify (release)"
    install_build release
}

# The database benches/realtime.sh leaves behind, for the benchmarks that study it further:
# sets DIR and DB, or stops when there is none.
realtime_bench_database() {
    DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/realtime"
    DB=bench_realtime
    [ -f "$DIR/data/PG_VERSION" ] || die "no database at $DIR: run bash benches/realtime.sh first"
}

# Starts the cluster of the database benches/realtime.sh left behind (realtime_bench_database
# first) as the study benchmarks run it: 8 GB of shared buffers, two workers polling every
# 10 ms, plus the settings given; stops it on exit (with $1 run too, when not empty); reads the
# unify and crm tables into shared buffers.
start_realtime_study_cluster() {
    local on_exit="$1"; shift
    start_cluster "$DIR" "shared_buffers = '8GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'" \
        "shared_preload_libraries = 'customer_unify'" "customer_unify.databases = '$DB'" \
        "track_commit_timestamp = on" "customer_unify.naptime = '10ms'" "customer_unify.workers = 2" "$@"
    # shellcheck disable=SC2064  # expanded now, on purpose
    trap "stop_cluster '$DIR'; $on_exit" EXIT
    psql -X -q -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" \
        -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('unify', 'crm') AND c.relkind IN ('r', 'i', 't')" >/dev/null
}

# Waits until the change queue of database $1 is empty and no batch is half-way, asking every
# 50 ms from one session: a new psql per poll cost about 40 ms of CPU, which on two cores took
# a fifth of what the workers being measured had. Commits between polls, so it holds no snapshot.
wait_queue_drained() {
    psql -X -q -d "$1" -c "DO \$\$ BEGIN
        WHILE EXISTS (SELECT 1 FROM unify.change_queue) OR EXISTS (SELECT 1 FROM unify.queue_work) LOOP
            COMMIT;
            PERFORM pg_sleep(0.05);
        END LOOP;
    END \$\$"
}

# SQL: (committed, ms) for every row the benchmark writers (tests/worker/writers.pgbench)
# inserted since the key sequence stood at $1: its commit time and the milliseconds from that
# commit to the commit of its record's last person write (unify.record_persons; a later move to
# another person shows as a long time).
realtime_latencies_sql() {
    echo "WITH inserted AS (
         SELECT pg_xact_commit_timestamp(s.xmin) AS committed, 'shop' AS source, s.customer_id::text AS key FROM crm.shop_customers s WHERE s.customer_id > $1
         UNION ALL SELECT pg_xact_commit_timestamp(c.xmin), 'crm', c.kontakt_nr FROM crm.crm_contacts c
                   WHERE c.kontakt_nr LIKE 'L%' AND substr(c.kontakt_nr, 2)::bigint > $1
         UNION ALL SELECT pg_xact_commit_timestamp(p.xmin), 'pos', p.card_no::text FROM crm.pos_loyalty_members p WHERE p.card_no > $1)
       SELECT i.committed, extract(epoch FROM pg_xact_commit_timestamp(rp.xmin) - i.committed) * 1000 AS ms
       FROM inserted i JOIN unify.sources so ON so.name = i.source
       JOIN unify.records r ON r.source_id = so.source_id AND r.source_key = i.key
       JOIN unify.record_persons rp ON rp.record_id = r.record_id"
}

# The generator, built once in release mode.
crmgen() {
    (cd "$ROOT" && cargo build --quiet --release -p crmgen)
    "$ROOT/target/release/crmgen" "$@"
}

# Latency of one person by id from unify.customer_360 against the primary-key lookup of
# unify.persons (the baseline), one pgbench client for `seconds` each, in database `db`.
person_lookup_latency() {
    local dir="$1" db="$2" seconds="$3" max_id what query
    max_id=$(psql -X -A -t -d "$db" -c "SELECT max(person_id) FROM unify.persons")
    for what in baseline customer_360; do
        if [ "$what" = baseline ]; then
            query="SELECT * FROM unify.persons WHERE person_id = :id;"
        else
            query="SELECT * FROM unify.customer_360 WHERE person_id = :id;"
        fi
        printf '\\set id random(1, %s)\n%s\n' "$max_id" "$query" > "$dir/lookup_$what.sql"
        rm -f "$dir"/pgbench_log.*
        (cd "$dir" && "$PG_BIN/pgbench" -n -c 1 -T "$seconds" -l -f "$dir/lookup_$what.sql" "$db" >/dev/null 2>&1)
        # Per transaction the log holds the latency in microseconds (third column).
        sort -n -k3 "$dir"/pgbench_log.* | awk -v what="$what" '{ lat[NR] = $3 } END {
            printf "one person by id, %s: %d lookups, p50 %.3f ms, p95 %.3f ms, p99 %.3f ms\n",
                what, NR, lat[int(NR * 0.50)] / 1000, lat[int(NR * 0.95)] / 1000, lat[int(NR * 0.99)] / 1000 }'
    done
}

# The Citus source tarball (issue 27): $CUSTOMER_UNIFY_CITUS_TARBALL, else the shared vendor
# directory beside the checkout. Prints nothing when there is none.
citus_tarball() {
    local t
    for t in "${CUSTOMER_UNIFY_CITUS_TARBALL:-}" "$ROOT/../shared/vendor/citus-13.2.2.tar.gz" \
             /work/shared/vendor/citus-13.2.2.tar.gz; do
        if [ -n "$t" ] && [ -f "$t" ]; then echo "$t"; return; fi
    done
}

# Builds Citus from citus_tarball and installs it into the PostgreSQL in use (the private copy
# under CUSTOMER_UNIFY_PG_PREFIX, else the system's), only when it is not installed yet. Built in
# $CUSTOMER_UNIFY_CITUS_BUILD_DIR (default /tmp/citus-build), whose object files are deleted after
# the install. Build facts (../shared/vendor/README.md): Debian liblz4-dev libzstd-dev
# libkrb5-dev, `./configure --without-libcurl`, and PostgreSQL 15.20 exports
# have_createdb_privilege(), so Citus's own static copy for PostgreSQL < 16 is cut out of the
# build copy of src/include/pg_version_compat.h. Never part of the repository.
ensure_citus() {
    local lib="$PG_PREFIX/usr/lib/postgresql/$PG_MAJOR/lib/citus.so"
    local control="$PG_PREFIX/usr/share/postgresql/$PG_MAJOR/extension/citus.control"
    if [ -f "$lib" ] && [ -f "$control" ]; then return 0; fi
    local tarball
    tarball=$(citus_tarball)
    [ -n "$tarball" ] || die "no Citus tarball (set CUSTOMER_UNIFY_CITUS_TARBALL)"
    local pkgs=(liblz4-dev libzstd-dev libkrb5-dev) missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages for Citus: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
    local build="${CUSTOMER_UNIFY_CITUS_BUILD_DIR:-/tmp/citus-build}"
    log "building Citus from $tarball in $build (a few minutes, once)"
    rm -rf "$build/src"
    mkdir -p "$build/src"
    tar -xzf "$tarball" -C "$build/src" --strip-components=1
    # The static have_createdb_privilege() of the PostgreSQL < 16 branch clashes with 15.20's.
    perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n//s' \
        "$build/src/src/include/pg_version_compat.h"
    ! grep -q "^have_createdb_privilege(void)" "$build/src/src/include/pg_version_compat.h" \
        || die "could not remove have_createdb_privilege from Citus's pg_version_compat.h"
    (
        cd "$build/src"
        # Built against the system's pg_config (same paths as the private copy's).
        ./configure --without-libcurl PG_CONFIG="$SYSTEM_PG_CONFIG" >"$build/configure.log" 2>&1 \
            || { tail -20 "$build/configure.log" >&2; exit 1; }
        # with_llvm=no: no JIT bitcode (it would double the compile time for nothing here).
        make -j"$(nproc)" with_llvm=no >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
        if [ -n "$PG_PREFIX" ]; then
            make install with_llvm=no DESTDIR="$PG_PREFIX" >"$build/install.log" 2>&1
        else
            make install with_llvm=no >"$build/install.log" 2>&1
        fi
    ) || die "building Citus failed (logs in $build)"
    rm -rf "$build/src"
    [ -f "$lib" ] && [ -f "$control" ] || die "Citus did not install into $PG_PREFIX/usr"
    log "Citus installed ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$control"))"
}
