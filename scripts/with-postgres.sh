#!/usr/bin/env bash
# Run COMMAND with a throwaway PostgreSQL cluster and ETLB_TEST_POSTGRES_URL pointing at it.
#
#   scripts/with-postgres.sh COMMAND [ARGUMENT...]
#
# The cluster lives in a new temporary folder, listens on 127.0.0.1 only (no Unix socket) on a free
# port, and accepts one superuser, etlb, with a random password. It is stopped by its postmaster's
# pid and its folder removed when this script exits, and COMMAND's exit status is this script's.
#
# - ETLB_TEST_POSTGRES_URL already set: COMMAND runs against that server and nothing is started.
# - PostgreSQL missing: installed from Debian's packages when running as root with apt-get.
#   ETLB_POSTGRES_BIN names the folder of initdb, pg_ctl and createdb when they are elsewhere.
# - PostgreSQL missing and not installable: with CI=true this is an error (exit 1). Otherwise
#   COMMAND runs without the variable, and the PostgreSQL tests are skipped with the reason.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGUMENT...]" >&2
    exit 2
fi

if [[ -n "${ETLB_TEST_POSTGRES_URL:-}" ]]; then
    exec "$@"
fi

log() {
    echo "with-postgres: $*" >&2
}

find_bin() {
    # ETLB_POSTGRES_BIN first, then the newest major version in Debian's layout
    # (/usr/lib/postgresql/MAJOR/bin), then the folder of an initdb on PATH.
    if [[ -n "${ETLB_POSTGRES_BIN:-}" ]]; then
        echo "$ETLB_POSTGRES_BIN"
        return
    fi
    local candidates
    candidates=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V || true)
    if [[ -n "$candidates" ]]; then
        tail -n 1 <<<"$candidates"
    elif command -v initdb >/dev/null; then
        dirname "$(command -v initdb)"
    fi
}

bin_dir=$(find_bin)
if [[ -z "$bin_dir" && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "PostgreSQL is not installed; installing Debian's postgresql package"
    # The package would otherwise create a default cluster and start it on port 5432. This script
    # starts its own, so no default cluster is created (dpkg keeps this file as the local version).
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confold postgresql >/dev/null
    bin_dir=$(find_bin)
fi

if [[ -z "$bin_dir" ]]; then
    if [[ "${CI:-}" == "true" ]]; then
        log "PostgreSQL is not installed and could not be installed; CI needs it for the PostgreSQL store tests"
        exit 1
    fi
    log "PostgreSQL is not installed (apt-get install postgresql as root); its tests will be skipped"
    exec "$@"
fi

# initdb and postgres refuse to run as root, so as root the cluster belongs to the postgres user
# that Debian's package creates.
run_as_owner=()
if [[ $(id -u) -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        log "running as root, but there is no postgres user to own the cluster; create one or run as another user"
        exit 1
    fi
    run_as_owner=(runuser -u postgres --)
fi

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/etlb-postgres.XXXXXX")
postmaster_pid=""

stop_cluster() {
    if [[ -n "$postmaster_pid" ]] && kill -0 "$postmaster_pid" 2>/dev/null; then
        # SIGINT is PostgreSQL's fast shutdown: it ends client sessions and stops without waiting.
        kill -INT "$postmaster_pid"
        for _ in $(seq 1 300); do
            kill -0 "$postmaster_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$postmaster_pid" 2>/dev/null; then
            log "PostgreSQL (pid $postmaster_pid) did not stop within 30 s; sending SIGQUIT"
            kill -QUIT "$postmaster_pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$work_dir"
}
trap stop_cluster EXIT
# A signal ends the script through its EXIT trap, once the foreground command has returned.
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${#run_as_owner[@]} -gt 0 ]]; then
    chown postgres "$work_dir"
fi
chmod 700 "$work_dir"

password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$password" >"$work_dir/password"
if [[ ${#run_as_owner[@]} -gt 0 ]]; then
    chown postgres "$work_dir/password"
fi

"${run_as_owner[@]}" "$bin_dir/initdb" --pgdata="$work_dir/data" --username=etlb --pwfile="$work_dir/password" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$work_dir/initdb.log" 2>&1 || {
    log "initdb failed:"
    cat "$work_dir/initdb.log" >&2
    exit 1
}
rm -f "$work_dir/password"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# A port found free can be taken before the server binds it, so a failed start is tried again.
for attempt in 1 2 3; do
    port=$(free_port)
    if "${run_as_owner[@]}" "$bin_dir/pg_ctl" --pgdata="$work_dir/data" --log="$work_dir/server.log" --wait \
        --timeout=60 --silent start \
        --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' -c max_connections=200"; then
        break
    fi
    log "PostgreSQL did not start on port $port (attempt $attempt of 3):"
    tail -n 5 "$work_dir/server.log" >&2 || true
    port=""
done
if [[ -z "$port" ]]; then
    exit 1
fi
postmaster_pid=$(head -n 1 "$work_dir/data/postmaster.pid")

PGPASSWORD="$password" "$bin_dir/createdb" --host=127.0.0.1 --port="$port" --username=etlb etlb_test
export ETLB_TEST_POSTGRES_URL="postgresql://etlb:$password@127.0.0.1:$port/etlb_test"
log "$("$bin_dir/postgres" --version) is running on 127.0.0.1:$port (pid $postmaster_pid)"

status=0
"$@" || status=$?
exit "$status"
