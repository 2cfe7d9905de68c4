"""Code the Ray tests run inside Ray workers (importable there through ``PYTHONPATH``).

:func:`install` is a worker set-up hook for the retry test (``runtime_env={"worker_process_setup_hook": ...}``).

``PICOJEPA_TEST_FAULT=<encoder>:<marker>``: the first worker anywhere that saves a checkpoint of that
encoder raises right after the save, once — the marker file, created exclusively, says it happened — so
Ray's retry must resume the run and still reach the uninterrupted result.
"""

from __future__ import annotations

import os
from pathlib import Path


def install() -> None:
    spec = os.environ.get("PICOJEPA_TEST_FAULT")
    if not spec:
        return
    name, marker = spec.split(":", 1)
    from picojepa.train import checkpoint

    original = checkpoint.save_checkpoint

    def save(state: dict, out: Path) -> None:
        original(state, out)
        if Path(out).name.split("-")[0] != name:  # run folders are <encoder>-<settings key>
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # already failed once: this is the retry
        raise RuntimeError(f"injected fault after a checkpoint of {name}")

    checkpoint.save_checkpoint = save


def user_mistake(counter: str) -> None:
    """A job that fails the way bad input does; counts its calls in ``counter``."""
    from picojepa.errors import PicoJepaError

    with open(counter, "a") as f:
        f.write("x")
    raise PicoJepaError("bad input")
