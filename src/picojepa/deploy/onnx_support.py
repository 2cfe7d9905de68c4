"""ONNX and ONNX Runtime are an optional extra (``picojepa[onnx]``): they are imported only through this
module, which says how to install them when they are missing."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import CheckpointError, ConfigError, PicoJepaError

INSTALL_HINT = "pip install 'picojepa[onnx]'"
OPSET = 17  # the first opset with LayerNormalization; read by ONNX Runtime ≥ 1.11 and every current edge build


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """(onnx, onnxruntime), or a PicoJepaError naming the missing package and the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise PicoJepaError(f"ONNX export and the ONNX runtime need the onnx and onnxruntime packages "
                            f"({e.name or 'one of them'} is missing): {INSTALL_HINT}") from e
    return onnx, onnxruntime


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``--device``: auto takes CUDA when this build has it."""
    _, ort = require_onnx()
    available = ort.get_available_providers()
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ConfigError("--device cuda with --runtime onnx needs the onnxruntime-gpu build "
                              f"(this one has {', '.join(available)})")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda")


def open_session(path: Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session with every graph optimisation on; ``threads`` caps the intra-op pool
    (None: ONNX Runtime's default, one thread per physical core)."""
    _, ort = require_onnx()
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (the export folder is incomplete: export again)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    # Idle worker threads sleep instead of spinning: on a few shared cores (decoding next to inference, other
    # jobs) spinning threads steal the time they wait for; measured 1.2-2x faster per clip on 2 busy cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=providers_for(device))
    except Exception as e:  # ORT raises its own pybind exception types for unreadable or invalid files
        raise CheckpointError(f"{path} is not a loadable ONNX graph: {str(e).splitlines()[0]}") from e
