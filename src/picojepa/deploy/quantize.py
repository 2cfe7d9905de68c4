"""int8 graphs with ONNX Runtime's quantisation tools.

Dynamic quantisation stores the weights of every matrix product with constant weights as int8 (one
scale per output channel) and quantises activations on the fly, batch by batch, so it needs no
calibration data. The matrix products between activations (attention's QKᵀ and AV) stay fp32:
quantising them costs accuracy for little time at 24-dimensional heads.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ..utils import atomic_write
from .onnx_support import require_onnx

INT8_SETTINGS: dict[str, Any] = {
    "method": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
    "per_channel": True, "ops": ["MatMul", "Gemm"], "constant_weights_only": True,
    "preprocessing": "onnxruntime.quantization.shape_inference.quant_pre_process",
}


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Write the dynamically quantised int8 version of the graph ``fp32`` to ``int8`` (atomically)."""
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the tools log advice at WARNING on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # ONNX shape inference + fusions
            atomic_write(int8, lambda p: quantize_dynamic(
                prepared, p, op_types_to_quantize=INT8_SETTINGS["ops"], per_channel=True,
                weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True}))
    finally:
        quiet.setLevel(level)
