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
# The Web UI shows payloads decrypted by the API's codec endpoint, to an operator (README,
# Data protection). Set it empty to show the ciphertext.
codec_endpoint="${SAGAWORKS_UI_CODEC_ENDPOINT-http://127.0.0.1:8000/codec}"

# The visibility fields the sagas keep current (workflows/search_attributes.py; the API
# filters GET /orders and GET /returns by them). A test keeps this list in step.
search_attributes=(OrderStatus=Keyword CustomerId=Keyword FailureReason=Keyword ReturnStatus=Keyword OrderId=Keyword)

# shellcheck source=temporal_bin.sh
source "$here/temporal_bin.sh"

mkdir -p "$(dirname "$db")"

# The tuned server profile (dynamic config and SQLite pragmas), one flag and value a line;
# the bench, the soak and the tests' dev servers read the same file (README, Performance).
profile=()
while read -r flag value; do
    [[ -z "$flag" || "$flag" == \#* ]] && continue
    profile+=("$flag" "$value")
done <"$here/profile.args"

codec_flags=()
if [[ -n "$codec_endpoint" ]]; then
    codec_flags=(--ui-codec-endpoint "$codec_endpoint")
fi

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
    "${codec_flags[@]}" \
    "${profile[@]}" \
    "$@"
