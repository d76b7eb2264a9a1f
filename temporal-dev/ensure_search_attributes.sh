#!/usr/bin/env bash
# Registers any missing custom search attributes once the server is healthy.
#
# Usage: temporal-dev/ensure_search_attributes.sh [--pid PID] NAME=TYPE...
#
# Why: `temporal server start-dev --search-attribute` only takes effect when the DB file is
# new. On a reused DB the flags are silently ignored (CLI 1.9.1), so an attribute added to
# start.sh later would never appear, and a changed type is never applied.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

pid_args=()
if [[ "${1:-}" == "--pid" ]]; then
    pid_args=(--pid "${2:?--pid needs a process id}")
    shift 2
fi
address="${SAGAWORKS_TEMPORAL_ADDRESS:-127.0.0.1:${SAGAWORKS_TEMPORAL_PORT:-7233}}"
namespace="${SAGAWORKS_TEMPORAL_NAMESPACE:-default}"

# shellcheck source=temporal_bin.sh
source "$here/temporal_bin.sh"

"$here/wait_healthy.sh" ${pid_args[@]+"${pid_args[@]}"} >/dev/null

conn=(--address "$address" --namespace "$namespace" --command-timeout 10s)
existing="$("$temporal" operator search-attribute list "${conn[@]}")"
status=0
for pair in "$@"; do
    name="${pair%%=*}"
    want="${pair#*=}"
    have="$(awk -v n="$name" '$1 == n { print $2 }' <<<"$existing")"
    if [[ -z "$have" ]]; then
        if "$temporal" operator search-attribute create "${conn[@]}" \
            --name "$name" --type "$want" >/dev/null; then
            echo "search-attributes: registered $name ($want) on the existing dev DB"
        else
            echo "search-attributes: could not register $name ($want)" >&2
            status=1
        fi
    elif [[ "$have" != "$want" ]]; then
        echo "search-attributes: $name is $have in the dev DB, not $want;" \
            "reset it with 'make clean' (this deletes local workflow history)" >&2
        status=1
    fi
done
exit "$status"
