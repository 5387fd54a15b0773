"""ONNX Runtime backend: one InferenceSession per graph, behind the GraphRunner interface.

CPU tensors cross into ONNX Runtime without a copy (`Tensor.numpy()` shares memory, `torch.from_numpy` on the way
back). With the CUDA or TensorRT execution provider (onnxruntime-gpu), CUDA tensors are bound by device pointer
through IOBinding, so nothing round-trips through the host.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import ArtifactError, BackendUnavailableError
from .base import GraphRunner, TensorSpec

log = logging.getLogger(__name__)

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(f"onnxruntime is not installed ({e}); pip install onnxruntime") from None
    return onnxruntime


def check_onnx_file(path: Path) -> None:
    """One clear line for a missing or corrupt ONNX file (before ONNX Runtime's longer message)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: ONNX file not found; run export with export.mode onnx")
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, DecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a valid ONNX model ({first}); re-run export to rebuild it") from None


class OrtGraphRunner(GraphRunner):
    def __init__(self, path: str | Path, name: str, providers: Sequence[str] = ("CPUExecutionProvider",),
                 graph_optimization: str = "all", intra_op_threads: int = 0, allow_spinning: bool = False) -> None:
        ort = _ort()
        path = Path(path)
        check_onnx_file(path)
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(sorted(available))}); "
                f"install onnxruntime-gpu for CUDA/TensorRT providers or set onnxruntime.providers"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[graph_optimization])
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf, ort_state.NoSuchFile,
                ort_state.InvalidArgument, ort_state.RuntimeException) as e:
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None
        self.name = name
        self.path = path
        self.inputs = tuple(TensorSpec(i.name, _ORT_TYPES.get(i.type), tuple(d if isinstance(d, int) else None
                                                                               for d in i.shape))
                            for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.on_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers)

    def _infer_impl(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.on_gpu and all(inputs[n].is_cuda for n in self.input_names):
            return self._run_bound(inputs)
        feed = {n: inputs[n].detach().cpu().contiguous().numpy() for n in self.input_names}
        outs = self.session.run(list(self.output_names), feed)
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}

    def _run_bound(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CUDA tensors in, ONNX Runtime-allocated device outputs back as torch tensors (via DLPack)."""
        binding = self.session.io_binding()
        for n in self.input_names:
            t = inputs[n].contiguous()
            binding.bind_input(n, "cuda", t.device.index or 0, _np_dtype(t), list(t.shape), t.data_ptr())
        for n in self.output_names:
            binding.bind_output(n, "cuda")
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return {n: torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack") else torch.from_numpy(o.numpy())
                for n, o in zip(self.output_names, outs)}


    def _release(self) -> None:
        # ONNX Runtime frees a session's arena and its provider state when the last reference goes.
        self.session = None


_ORT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
              "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(int8)": torch.int8,
              "tensor(uint8)": torch.uint8, "tensor(bool)": torch.bool}


def _np_dtype(t: torch.Tensor):
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
            torch.int32: np.int32}[t.dtype]
