"""torchrun entry point for the DDP tests: the ``picojepa`` command line plus two test instruments.

- ``PICOJEPA_TEST_WRITES=<prefix>``: an audit hook records every write this rank makes under ``--out``
  (opening for writing, creating, renaming, removing) and saves the list to ``<prefix>.<rank>.json``.
- ``PICOJEPA_TEST_CRASH_AT_CHECKPOINT=<n>``: rank 0 dies by SIGKILL in the middle of its n-th checkpoint
  write, leaving a half-written temporary file behind as a real crash would; torchrun then stops the rest.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _out_dir(argv: list[str]) -> Path:
    for flag in ("--out", "-o"):
        if flag in argv:
            return Path(argv[argv.index(flag) + 1]).resolve()
    raise SystemExit("ddp_worker.py needs --out")


def _record_writes(prefix: str, out: Path) -> None:
    writes: list[str] = []
    root = str(out)

    def under_out(path: object) -> str | None:
        if isinstance(path, int):
            return None  # an already open descriptor
        try:
            name = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        except TypeError:
            return None
        return name if name == root or name.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
            if writing and (name := under_out(path)):
                writes.append(f"open {name}")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.chmod"):
            for path in args[:2]:
                if (name := under_out(path)) is not None:
                    writes.append(f"{event} {name}")

    sys.addaudithook(hook)
    rank = os.environ.get("RANK", "0")
    # Written outside --out, after the run: the hook sees it but does not record it.
    atexit.register(lambda: Path(f"{prefix}.{rank}.json").write_text(json.dumps(writes)))


def _crash_at_checkpoint(n: int) -> None:
    from picojepa.train import checkpoint

    saves = {"count": 0}
    original = checkpoint.save_checkpoint

    def save(state: dict, out: Path) -> None:
        saves["count"] += 1
        if saves["count"] == n:
            (out / ".checkpoint.safetensors.crashed.tmp").write_bytes(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        original(state, out)

    checkpoint.save_checkpoint = save


def main() -> None:
    argv = sys.argv[1:]
    if prefix := os.environ.get("PICOJEPA_TEST_WRITES"):
        _record_writes(prefix, _out_dir(argv))
    crash = os.environ.get("PICOJEPA_TEST_CRASH_AT_CHECKPOINT")
    if crash and os.environ.get("RANK", "0") == "0":
        _crash_at_checkpoint(int(crash))
    from picojepa.cli import main as cli

    sys.argv = ["picojepa", *argv]
    cli()


if __name__ == "__main__":
    main()
