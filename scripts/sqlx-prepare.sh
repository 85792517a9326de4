#!/usr/bin/env bash
# Regenerates tests/.sqlx: the query metadata that lets tests/macros.rs compile its
# `sqlx::query!` calls without a database (sqlx's offline mode). Run it after changing a
# macro query there, and commit the result.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/throwaway-pg.sh"
start_throwaway_pg

rm -rf "$root/tests/.sqlx"
mkdir -p "$root/tests/.sqlx"
touch "$root/tests/macros.rs"
cd "$root"
DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" SQLX_OFFLINE_DIR="$root/tests/.sqlx" \
    cargo build -p covet-tests --test macros
echo "wrote $(ls "$root/tests/.sqlx" | wc -l) query files to tests/.sqlx" >&2
