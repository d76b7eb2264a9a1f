#!/usr/bin/env bash
# Polls the Temporal frontend until it reports healthy, or fails after a deadline.
#
# Usage: temporal-dev/wait_healthy.sh [--pid PID] [DEADLINE_S]
#   DEADLINE_S  seconds to wait (default $SAGAWORKS_TEMPORAL_WAIT_S or 60)
#   --pid PID   give up at once if that process (the server) has exited
# Address: $SAGAWORKS_TEMPORAL_ADDRESS, else 127.0.0.1:${SAGAWORKS_TEMPORAL_PORT:-7233}.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

server_pid=""
if [[ "${1:-}" == "--pid" ]]; then
    server_pid="${2:?--pid needs a process id}"
    shift 2
fi
deadline_s="${1:-${SAGAWORKS_TEMPORAL_WAIT_S:-60}}"
address="${SAGAWORKS_TEMPORAL_ADDRESS:-127.0.0.1:${SAGAWORKS_TEMPORAL_PORT:-7233}}"

# shellcheck source=temporal_bin.sh
source "$here/temporal_bin.sh"

end=$((SECONDS + deadline_s))
while :; do
    # Bounded per attempt, so one hung connection cannot eat the whole deadline.
    if out="$("$temporal" operator cluster health --address "$address" \
        --client-connect-timeout 3s --command-timeout 5s 2>&1)"; then
        echo "Temporal at $address is healthy ($out)"
        exit 0
    fi
    if [[ -n "$server_pid" ]] && ! kill -0 "$server_pid" 2>/dev/null; then
        echo "wait_healthy: the Temporal server (pid $server_pid) exited before it was healthy" >&2
        exit 1
    fi
    if ((SECONDS >= end)); then
        echo "wait_healthy: Temporal at $address was not healthy within ${deadline_s}s" >&2
        echo "wait_healthy: last error: ${out:-<none>}" >&2
        echo "wait_healthy: is the dev server running? try 'make up' or temporal-dev/start.sh" >&2
        exit 1
    fi
    sleep 1
done
