"""PyTorch backend: runs the family's export wrappers themselves (eval mode, inference mode).

Precision (``PyTorchConfig``): fp32 (TF32 off, so results are comparable with ONNX Runtime), tf32 (TF32 on for
matmul and cuDNN convolutions), fp16 (half weights; 4-D inputs and the module channels_last). Inputs are cast at
the runner boundary and outputs come back float32 and contiguous, so the pipeline around the runner never sees a
half tensor. ``cuda_graph`` captures a graph whose input shape is fully static (the head's canvas) once, on the
first call, and replays it afterwards: one launch instead of one per layer. A graph whose only dynamic dims are a
batch size (``TensorSpec.batched``: YOLOX's images) gets one captured graph per batch size seen, up to
``MAX_GRAPHS``; a data-dependent dynamic dim (the encoder's pillar count) runs eagerly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ConfigError
from .base import GraphRunner, TensorSpec

PRECISIONS = ("fp32", "tf32", "fp16")
GRAPH_WARMUP_RUNS = 3  # on a side stream before capture (cuDNN picks its kernels, the allocator settles)
MAX_GRAPHS = 8  # captured shapes per batched runner; shapes beyond run eagerly


def check_torch_options(precision: str, cuda_graph: bool, device: str | torch.device) -> None:
    """One line refusing what cannot run: unknown precision, fp16/tf32/cuda_graph off CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"pytorch.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if torch.device(device).type != "cuda":
        if precision != "fp32":
            raise ConfigError(f"pytorch.precision {precision} needs a CUDA device (device is {device}); use "
                              f"precision fp32 on CPU")
        if cuda_graph:
            raise ConfigError(f"pytorch.cuda_graph needs a CUDA device (device is {device}); set cuda_graph false "
                              f"on CPU")


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 for matmul and cuDNN only inside the call; the process-wide flags are restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@dataclass
class _Captured:
    """One captured CUDA graph and the static buffers it reads and writes."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: tuple[torch.Tensor, ...]


class TorchGraphRunner(GraphRunner):
    def __init__(self, module: nn.Module, name: str, inputs: tuple[TensorSpec, ...], output_names: tuple[str, ...],
                 device: str | torch.device = "cpu", precision: str = "fp32", cuda_graph: bool = False) -> None:
        check_torch_options(precision, cuda_graph, device)
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self.inputs = tuple(inputs)
        self.output_names = tuple(output_names)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        # channels_last pays off for 2-D convolutions in half precision (tensor cores, no layout transposes).
        self._channels_last = precision == "fp16" and all(len(s.shape) == 4 for s in self.inputs)
        if precision == "fp16":  # half() works in place: leave the caller's (maybe shared) model as it was
            module = copy.deepcopy(module)
        module = module.to(self.device).eval()
        if precision == "fp16":
            module = module.half()
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module: nn.Module | None = module
        static = all(d is not None for s in self.inputs for d in s.shape)
        batched = all(s.batched and all(d is not None for d in s.shape[1:]) for s in self.inputs)
        self.cuda_graph = cuda_graph and (static or batched)  # the encoder's pillar count runs eagerly
        self._graphs: dict[tuple[tuple[int, ...], ...], _Captured] = {}

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, dtype=self._dtype if t.is_floating_point() else t.dtype)
        if self._channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _forward(self, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), _tf32(self.precision == "tf32"):
            out = self.module(*args)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out)

    def _capture(self, args: list[torch.Tensor]) -> _Captured:
        """Warm up on a side stream, then capture one forward pass reading from static input buffers."""
        static_in = [a.clone() for a in args]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_RUNS):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), _tf32(self.precision == "tf32"):
            out = self.module(*static_in)
        return _Captured(graph, static_in, (out,) if isinstance(out, torch.Tensor) else tuple(out))

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], bool]:
        """The raw outputs, and whether they are a captured graph's static buffers (overwritten next replay)."""
        args = [self._cast(inputs[n]) for n in self.input_names]
        key = tuple(tuple(a.shape) for a in args)
        captured = self._graphs.get(key) if self.cuda_graph else None
        if captured is None and self.cuda_graph and len(self._graphs) < MAX_GRAPHS:
            captured = self._graphs[key] = self._capture(args)
        if captured is None:
            return self._forward(args), False
        for buf, a in zip(captured.inputs, args):
            buf.copy_(a)
        captured.graph.replay()
        return captured.outputs, True

    def _infer_impl(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, static = self._run(inputs)
        # A graph's outputs are overwritten by the next replay: hand out copies (float32, contiguous).
        return {n: o.to(torch.float32, memory_format=torch.contiguous_format, copy=static)
                for n, o in zip(self.output_names, out)}

    def _infer_into(self, inputs: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        raw, static = self._run(inputs)
        result = {}
        for n, o in zip(self.output_names, raw):
            if n in out:  # the conversion to float32 / contiguous is this copy itself
                result[n] = out[n].copy_(o)
            else:
                result[n] = o.to(torch.float32, memory_format=torch.contiguous_format, copy=static)
        return result

    def _release(self) -> None:
        self._graphs.clear()
        self.module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
