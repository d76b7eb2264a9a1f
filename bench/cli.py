"""What the bench and soak command lines share: argument types, and how they exit."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def exit_after(
    main: Coroutine[Any, Any, int],
    *,
    log: Callable[[str], None],
    interrupted: Callable[[], int],
    failed: int,
) -> NoReturn:
    """Run a command's coroutine, report how it ended, and leave with its exit code."""
    try:
        code = asyncio.run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; everything started has been stopped")
        code = interrupted()
    except Exception as err:
        log(f"failed: {type(err).__name__}: {err}")
        code = failed
    sys.stdout.flush()
    sys.stderr.flush()
    # Avoid the interpreter-exit abort in the Temporal core (sdk-python#300).
    os._exit(code)
