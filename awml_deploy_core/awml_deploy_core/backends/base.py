"""The one interface every backend implements, with a lifecycle (Polygraphy's runner habit).

A ``GraphRunner`` is one exported graph on one backend. ``__call__`` checks the inputs once, against the runner's
own metadata (names, dtypes, ranks, fixed dimensions), then calls the backend's ``_infer_impl``; ``close()`` (or the
context manager) releases sessions, contexts, streams and device memory, after which the runner refuses to run.
A ``RunnerSet`` holds the graphs of one model on one backend and closes them together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import RunnerError


@dataclass(frozen=True)
class TensorSpec:
    """A graph input as the backend declares it: dims that are None are dynamic; dtype None = not declared."""

    name: str
    dtype: torch.dtype | None
    shape: tuple[int | None, ...]
    # The dynamic dims are a batch size (few distinct values, e.g. one per camera count), not a data-dependent
    # count: a CUDA graph per seen shape stays bounded (backends/torch_backend.py).
    batched: bool = False

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{str(self.dtype).removeprefix('torch.') if self.dtype else 'any'}[{dims}]"


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}[{', '.join(str(d) for d in t.shape)}]"


def check_inputs(runner: str, specs: tuple[TensorSpec, ...], inputs: Mapping[str, Any]) -> None:
    """One line naming the input, what the graph takes and what was given, for the first mismatch."""
    for spec in specs:
        if spec.name not in inputs:
            raise RunnerError(f"{runner}: input '{spec.name}' is missing (given {sorted(inputs)}; the graph takes "
                              f"{[s.name for s in specs]})")
        t = inputs[spec.name]
        if not isinstance(t, torch.Tensor):
            raise RunnerError(f"{runner}: input '{spec.name}' must be a torch.Tensor {spec.describe()}, given "
                              f"{type(t).__name__}")
        if spec.dtype is not None and t.dtype != spec.dtype:
            raise RunnerError(f"{runner}: input '{spec.name}' has dtype {str(t.dtype).removeprefix('torch.')}, "
                              f"expected {spec.describe()} (given {_describe(t)})")
        if t.dim() != len(spec.shape) or any(d is not None and d != g for d, g in zip(spec.shape, t.shape)):
            raise RunnerError(f"{runner}: input '{spec.name}' has shape {list(t.shape)}, expected "
                              f"{spec.describe()} (given {_describe(t)})")


class GraphRunner:
    """Base of the backends' runners: input check, ``_infer_impl``, ``close()``."""

    name: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    _closed: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def closed(self) -> bool:
        return self._closed

    def __call__(self, inputs: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
        """The graph's outputs by name. ``out``: preallocated tensors (name -> tensor of that output's shape) to
        write those outputs into, e.g. the next stage's input buffers; they are returned in their place."""
        if self._closed:
            raise RunnerError(f"{self.name}: the runner is closed (its session/engine was released); load the "
                              f"pipeline again to run it")
        check_inputs(self.name, self.inputs, inputs)
        return self._infer_impl(inputs) if out is None else self._infer_into(inputs, out)

    def _infer_impl(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _infer_into(self, inputs: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """``_infer_impl``, then the ``out`` outputs copied into place; a backend that can write them there
        directly (one copy less) overrides this."""
        result = self._infer_impl(inputs)
        for name, dst in out.items():
            result[name] = dst.copy_(result[name])
        return result

    def _release(self) -> None:
        """Drop what the backend holds (sessions, contexts, buffers); called once by ``close()``."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> "GraphRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunnerSet(Mapping[str, GraphRunner]):
    """The graphs of one model on one backend, by graph key (e.g. ``encoder``, ``head``); closed together."""

    def __init__(self, runners: Mapping[str, GraphRunner], backend: str) -> None:
        self._runners = dict(runners)
        self.backend = backend

    def __getitem__(self, key: str) -> GraphRunner:
        return self._runners[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._runners)

    def __len__(self) -> int:
        return len(self._runners)

    @property
    def closed(self) -> bool:
        return all(r.closed for r in self._runners.values())

    def close(self) -> None:
        for r in self._runners.values():
            r.close()

    def __enter__(self) -> "RunnerSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
