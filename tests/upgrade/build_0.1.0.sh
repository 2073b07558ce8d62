#!/usr/bin/env bash
# Builds the 0.1.0 release from its own commit (git archive of OLD_COMMIT, own target dir) into an
# installation package under $1/pkg, once: a later run finds it and skips the build. The package's
# generated install script must equal sql/customer_unify--0.1.0.sql, the file the upgrade starts from.
source "$(dirname "$0")/../../scripts/lib.sh"
OLD_COMMIT=c36529a   # the 0.1.0 release (sql/README.md)
DIR="${1:?usage: build_0.1.0.sh DIR}"
PKG="$DIR/pkg"
if [ -f "$PKG/.built-$OLD_COMMIT" ]; then exit 0; fi
# A shallow clone lacks the commit: fetch the history first.
if ! git -C "$ROOT" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null && [ -f "$(git -C "$ROOT" rev-parse --git-dir)/shallow" ]; then
    git -C "$ROOT" fetch -q --unshallow || true
fi
git -C "$ROOT" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null \
    || die "commit $OLD_COMMIT (0.1.0) is not in this clone: the upgrade test builds 0.1.0 from it (clone with full history)"
log "building customer_unify 0.1.0 from $OLD_COMMIT (once; a few minutes)"
rm -rf "$DIR/src" "$PKG"; mkdir -p "$DIR/src"
git -C "$ROOT" archive "$OLD_COMMIT" | tar -x -C "$DIR/src"
# The old build's own lock file and profile; its own target directory.
(cd "$DIR/src" && CARGO_TARGET_DIR="$DIR/target" cargo pgrx package --profile profiling \
    --pg-config "$SYSTEM_PG_CONFIG" --out-dir "$PKG" >/dev/null)
script=$(find "$PKG" -name 'customer_unify--0.1.0.sql')
cmp -s "$script" "$ROOT/sql/customer_unify--0.1.0.sql" \
    || die "the 0.1.0 build's install script differs from sql/customer_unify--0.1.0.sql"
touch "$PKG/.built-$OLD_COMMIT"
