#!/usr/bin/env bash
# Runs the local Temporal dev server with a persistent SQLite store.
# Extra arguments are passed through to `temporal server start-dev`.
# The script `exec`s the server, so SIGINT/SIGTERM from honcho or a terminal reach it directly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

port="${SAGAWORKS_TEMPORAL_PORT:-7233}"
ui_port="${SAGAWORKS_TEMPORAL_UI_PORT:-8233}"
ip="${SAGAWORKS_TEMPORAL_IP:-127.0.0.1}"
log_level="${SAGAWORKS_TEMPORAL_LOG_LEVEL:-error}"
db="${SAGAWORKS_TEMPORAL_DB:-$here/data/temporal.db}"

# The visibility fields the API filters orders by (DESIGN §5: GET /orders).
search_attributes=(OrderStatus=Keyword CustomerId=Keyword FailureReason=Keyword)

# shellcheck source=temporal_bin.sh
source "$here/temporal_bin.sh"

mkdir -p "$(dirname "$db")"

sa_flags=()
for sa in "${search_attributes[@]}"; do
    sa_flags+=(--search-attribute "$sa")
done

# --search-attribute only applies to a new DB file, so a detached helper registers whatever a
# reused DB lacks. After `exec` the server keeps this PID ($$); the helper stops waiting if
# it dies. The double fork keeps the helper from lingering as the server's zombie child.
(
    SAGAWORKS_TEMPORAL_ADDRESS="$ip:$port" \
        "$here/ensure_search_attributes.sh" --pid "$$" "${search_attributes[@]}" &
)

exec "$temporal" server start-dev \
    --db-filename "$db" \
    --ip "$ip" \
    --port "$port" \
    --ui-port "$ui_port" \
    --ui-disable-news-fetch \
    --log-level "$log_level" \
    "${sa_flags[@]}" \
    "$@"
