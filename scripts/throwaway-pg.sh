# Sourced by scripts that need a PostgreSQL for a moment: `start_throwaway_pg` starts one from
# /usr/lib/postgresql/*/bin (PGBIN overrides) on a free loopback port, as the postgres user
# when run as root, and sets $pgbin and $port; it is stopped and deleted on exit.

as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_throwaway_pg() {
    pgbin=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
    [[ -x $pgbin/postgres ]] || { echo "no PostgreSQL binaries under /usr/lib/postgresql/*/bin" >&2; exit 1; }
    pg_tmp=$(mktemp -d)
    if [[ $(id -u) == 0 ]]; then chown postgres: "$pg_tmp"; fi
    trap 'stop_throwaway_pg' EXIT
    # A free loopback port: nothing answers a TCP connect there.
    port=
    for p in $(seq 54329 54429); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
    done
    [[ -n $port ]] || { echo "no free loopback port in 54329..54429" >&2; exit 1; }
    as_pg "$pgbin/initdb" -D "$pg_tmp/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
    as_pg "$pgbin/pg_ctl" -D "$pg_tmp/data" -l "$pg_tmp/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off" \
        start >/dev/null || { cat "$pg_tmp/server.log" >&2; exit 1; }
}

stop_throwaway_pg() {
    if [[ -f $pg_tmp/data/postmaster.pid ]]; then
        as_pg "$pgbin/pg_ctl" -D "$pg_tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_tmp"
}
