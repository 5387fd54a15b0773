"""TensorRT backend: one deserialized engine, one execution context and one CUDA stream per graph.

Inputs and outputs are torch CUDA tensors bound by tensor NAME (`set_input_shape` + `set_tensor_address` +
`execute_async_v3`, TensorRT 8.5+; bindings + `execute_async_v2` on older TensorRT). Nothing goes through the
host and nothing is allocated per call: outputs are preallocated at the optimisation profile's maximum and each
call returns views sized by `context.get_tensor_shape` after the input shape is set, so the encoder's dynamic
num_voxels gives correctly shaped outputs.

The returned tensors are views into buffers the next call overwrites: consume them (the pipeline scatters and
decodes at once) or `.clone()` them to keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, BackendUnavailableError
from .base import GraphRunner, TensorSpec

log = logging.getLogger(__name__)

# trt.DataType member name -> torch dtype (members missing in older TensorRT are simply absent there)
_DTYPES = (("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16), ("INT8", torch.int8),
           ("INT32", torch.int32), ("INT64", torch.int64), ("BOOL", torch.bool), ("UINT8", torch.uint8))
_LOGGER: Any = None


def import_tensorrt():
    """`import tensorrt`, or one clear BackendUnavailableError saying how to get it: the ONE place that says
    TensorRT is missing, for export, replay, real-time replay and the nodes alike."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(
            f"the tensorrt backend needs the Python package 'tensorrt', which is not importable here ({e}); "
            f"install TensorRT (JetPack's python3-libnvinfer on Jetson, pip install 'awml_deploy_core[tensorrt]' "
            f"on x86 with a CUDA GPU) or choose another backend (pytorch, onnxruntime)"
        ) from None
    return tensorrt


def trt_logger():
    """One TensorRT logger per process (warnings and errors go to stderr)."""
    global _LOGGER
    if _LOGGER is None:
        trt = import_tensorrt()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    for name, tdt in _DTYPES:
        member = getattr(trt.DataType, name, None)
        if member is not None and member == dtype:
            return tdt
    raise ArtifactError(f"TensorRT tensor type {dtype} has no torch equivalent here")


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TrtGraphRunner(GraphRunner):
    """One engine behind the GraphRunner interface. `pad_rows_to_min`: inputs with fewer rows than the profile
    minimum are zero-padded and the padding cut from the outputs (valid for the voxel encoder, whose rows, the
    pillars, are encoded independently)."""

    def __init__(self, engine_path: str | Path, name: str, device: str | torch.device = "cuda",
                 pad_rows_to_min: bool = False) -> None:
        trt = import_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"the tensorrt backend runs on CUDA devices only, got device '{device}'; "
                                          f"set device: cuda")
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the tensorrt backend needs a CUDA GPU, but torch sees none here")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        path = Path(engine_path)
        if not path.is_file():
            raise ArtifactError(f"{path}: TensorRT engine not found; run export with export.mode trt or both")
        self.trt, self.name, self.path, self.pad_rows_to_min = trt, name, path, pad_rows_to_min
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(trt_logger())
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ArtifactError(f"{path}: TensorRT {trt.__version__} cannot deserialize this engine (built by "
                                    f"another TensorRT version or for another GPU?); re-run export to rebuild it")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
            self._v3 = hasattr(self.context, "execute_async_v3")  # TensorRT 8.5+
            self._describe_io()
            self._allocate()
        log.info("%s: %s on %s (TensorRT %s, %s)", name, path.name, torch.cuda.get_device_name(self.device),
                 trt.__version__, "execute_async_v3" if self._v3 else "execute_async_v2")

    # ------------------------------------------------------------------------------ setup
    def _describe_io(self) -> None:
        e, trt = self.engine, self.trt
        self.dtypes: dict[str, torch.dtype] = {}
        self.profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        self.static: dict[str, tuple[int, ...]] = {}
        inputs, outputs = [], []
        if self._v3:
            for i in range(e.num_io_tensors):
                n = e.get_tensor_name(i)
                is_in = e.get_tensor_mode(n) == trt.TensorIOMode.INPUT
                (inputs if is_in else outputs).append(n)
                self.dtypes[n] = torch_dtype(trt, e.get_tensor_dtype(n))
                self.static[n] = _dims(e.get_tensor_shape(n))
                if is_in:
                    mn, opt, mx = e.get_tensor_profile_shape(n, 0)
                    self.profile[n] = (_dims(mn), _dims(opt), _dims(mx))
        else:
            self.index: dict[str, int] = {}
            for i in range(e.num_bindings):
                n = e.get_binding_name(i)
                self.index[n] = i
                is_in = e.binding_is_input(i)
                (inputs if is_in else outputs).append(n)
                self.dtypes[n] = torch_dtype(trt, e.get_binding_dtype(i))
                self.static[n] = _dims(e.get_binding_shape(i))
                if is_in:
                    mn, opt, mx = e.get_profile_shape(0, i)
                    self.profile[n] = (_dims(mn), _dims(opt), _dims(mx))
        self.inputs = tuple(TensorSpec(n, None, _spec_dims(self.static[n], self.profile[n])) for n in inputs)
        self.output_names = tuple(outputs)

    def _set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        ok = (self.context.set_input_shape(name, shape) if self._v3
              else self.context.set_binding_shape(self.index[name], shape))
        if ok is False:
            raise ValueError(f"{self.name}: TensorRT rejected input shape {shape} for '{name}' "
                             f"(profile min/opt/max {self.profile[name]})")

    def _output_shape(self, name: str) -> tuple[int, ...]:
        return _dims(self.context.get_tensor_shape(name) if self._v3
                     else self.context.get_binding_shape(self.index[name]))

    def _allocate(self) -> None:
        """Inputs' staging buffers and outputs at the profile maximum: the only device allocations."""
        for n in self.input_names:
            self._set_input_shape(n, self.profile[n][2])
        self.buffers: dict[str, torch.Tensor] = {}
        for n in (*self.input_names, *self.output_names):
            shape = self.profile[n][2] if n in self.profile else self._output_shape(n)
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{self.path}: output '{n}' has a data-dependent shape {shape}; not supported")
            self.buffers[n] = torch.empty(shape, dtype=self.dtypes[n], device=self.device)
        if self._v3:
            for n in self.output_names:  # output addresses never change: bound once
                self.context.set_tensor_address(n, int(self.buffers[n].data_ptr()))
        else:
            self._bindings = [0] * len(self.index)
            for n in self.output_names:
                self._bindings[self.index[n]] = int(self.buffers[n].data_ptr())

    # ------------------------------------------------------------------------------ run
    def _bind_input(self, name: str, x: torch.Tensor) -> tuple[tuple[int, ...], int]:
        """The input as the engine sees it (shape, rows before padding); copies only when it must (dtype, device,
        layout, or padding up to the profile minimum), into the preallocated staging buffer."""
        mn, _, mx = self.profile[name]
        shape = tuple(x.shape)
        rows = shape[0] if shape else 0
        if len(shape) != len(mx) or any(s != m for s, m, lo in zip(shape[1:], mx[1:], mn[1:]) if m == lo):
            raise ValueError(f"{self.name}: input '{name}' has shape {shape}, the engine takes {mn}..{mx}")
        if any(s > m for s, m in zip(shape, mx)):
            raise ValueError(f"{self.name}: input '{name}' shape {shape} exceeds the engine's profile maximum {mx} "
                             f"(export.tensorrt.num_voxels_max); rebuild the engine with a larger profile")
        run_shape = shape
        direct = (x.device == self.device and x.dtype == self.dtypes[name] and x.is_contiguous())
        if any(s < m for s, m in zip(shape, mn)):
            if not (self.pad_rows_to_min and all(s == m for s, m in zip(shape[1:], mn[1:]))):
                raise ValueError(f"{self.name}: input '{name}' shape {shape} is below the profile minimum {mn}")
            run_shape = (mn[0], *shape[1:])
            direct = False
        if direct:
            ptr = x.data_ptr()
        else:
            stage = self.buffers[name][: run_shape[0]]
            stage[:rows].copy_(x, non_blocking=True)
            if run_shape[0] > rows:
                stage[rows:].zero_()
            ptr = stage.data_ptr()
        self._set_input_shape(name, run_shape)
        if self._v3:
            self.context.set_tensor_address(name, int(ptr))
        else:
            self._bindings[self.index[name]] = int(ptr)
        return run_shape, rows

    def _infer_impl(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.device):
            producer = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(producer)  # inputs were written on the caller's stream
            with torch.cuda.stream(self.stream):
                rows = {}
                for n in self.input_names:
                    _, rows[n] = self._bind_input(n, inputs[n])
                outs = {}
                for n in self.output_names:
                    shape = self._output_shape(n)  # after the input shapes are set: e.g. (num_voxels, C)
                    outs[n] = self.buffers[n].view(-1)[: _numel(shape)].view(shape)
                ok = (self.context.execute_async_v3(self.stream.cuda_stream) if self._v3
                      else self.context.execute_async_v2(self._bindings, self.stream.cuda_stream))
                if not ok:
                    raise RuntimeError(f"{self.name}: TensorRT execution failed (see the TensorRT log above)")
            producer.wait_stream(self.stream)  # the caller's later work sees the outputs, no host sync
        if self.pad_rows_to_min and self.input_names:
            n_rows = rows[self.input_names[0]]
            outs = {k: (v[:n_rows] if v.dim() and v.shape[0] > n_rows else v) for k, v in outs.items()}
        return outs


    def _release(self) -> None:
        """Context before engine before runtime (TensorRT's order), then the buffers and the stream."""
        if getattr(self, "stream", None) is not None:
            self.stream.synchronize()
        for attr in ("context", "engine", "runtime", "buffers", "stream"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        torch.cuda.empty_cache()


def _spec_dims(static: tuple[int, ...], profile: tuple[tuple[int, ...], ...]) -> tuple[int | None, ...]:
    """Dims fixed by the engine stay fixed; dynamic ones (-1) are None (the profile range is TensorRT's to check:
    inputs below the minimum may still be padded by the runner)."""
    return tuple(None if d < 0 else d for d in static)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
