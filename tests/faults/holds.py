"""Holding a step in the middle: the test-only switch a held worker obeys.

A test cannot SIGKILL a worker "while it executes a step" unless the step lasts long
enough to be caught. Workers started through `tests.faults.held_worker` stop each activity
at two points, `before` its effect and `after` it (committed, not yet acknowledged), for as
long as a hold file exists under `<data_dir>/holds`:

- `<activity>.<phase>` holds that step for every saga;
- `<activity>.<phase>.<workflow_id>` holds it for one saga only.

When an attempt stops at a hold it leaves a marker, so the test knows the worker is there
before it strikes. Files, not RPC: the test and the worker share nothing else, and a file
survives the worker being killed.
"""

from __future__ import annotations

from pathlib import Path

PHASES = ("before", "after")


class Holds:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "holds"
        self._markers = self.root / "held"
        self._markers.mkdir(parents=True, exist_ok=True)

    def engage(self, activity: str, phase: str, workflow_id: str | None = None) -> None:
        self._switch(activity, phase, workflow_id).touch()

    def release(self, activity: str, phase: str, workflow_id: str | None = None) -> None:
        self._switch(activity, phase, workflow_id).unlink(missing_ok=True)

    def release_all(self) -> None:
        for switch in self.root.glob("*.*"):
            if switch.is_file():
                switch.unlink(missing_ok=True)

    def engaged(self, activity: str, phase: str, workflow_id: str | None) -> bool:
        return self._switch(activity, phase, None).exists() or (
            workflow_id is not None and self._switch(activity, phase, workflow_id).exists()
        )

    def mark_held(self, workflow_id: str | None, activity: str, phase: str, attempt: int) -> None:
        (self._markers / f"{workflow_id}.{activity}.{phase}.{attempt}").touch()

    def held_attempts(self, workflow_id: str, activity: str, phase: str) -> list[int]:
        """The attempts of that step that stopped at that hold so far."""
        prefix = f"{workflow_id}.{activity}.{phase}."
        return sorted(
            int(marker.name.removeprefix(prefix)) for marker in self._markers.glob(f"{prefix}*")
        )

    def _switch(self, activity: str, phase: str, workflow_id: str | None) -> Path:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
        name = f"{activity}.{phase}" if workflow_id is None else f"{activity}.{phase}.{workflow_id}"
        return self.root / name
