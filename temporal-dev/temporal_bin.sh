# Sourced by the temporal-dev scripts: sets $temporal to the CLI, the venv's copy first so the
# version is the one pinned in uv.lock. Expects $root (the repository) to be set.
temporal="$root/.venv/bin/temporal"
[[ -x "$temporal" ]] || temporal="$(command -v temporal || true)"
if [[ -z "$temporal" ]]; then
    echo "temporal-dev: no temporal binary in $root/.venv/bin or on PATH; run 'make venv'" >&2
    exit 1
fi
