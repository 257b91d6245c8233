"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then full TensorFlow.

``ai_edge_litert`` is the maintained runtime (aarch64 and x86_64 wheels, NumPy 2).
``tflite_runtime`` 2.14 still sits on old Pi images but breaks under NumPy 2 and Python
3.12+, so it is only a fallback. ``tensorflow.lite`` is last: it works on a training
machine but costs seconds to import on a Pi.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any


class RuntimeMissing(ImportError):
    """No TFLite interpreter could be imported."""


def _candidates() -> list[tuple[str, Callable[[], Any]]]:
    def litert() -> Any:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter

    def tflite_runtime() -> Any:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter

    def tensorflow() -> Any:
        # The last resort on a training machine; imported by name so nothing on the Pi path
        # (or a reader of this file) mistakes it for a dependency of the runtime.
        return importlib.import_module("tensorflow").lite.Interpreter

    return [("ai_edge_litert", litert), ("tflite_runtime", tflite_runtime), ("tensorflow.lite", tensorflow)]


_FOUND: tuple[str, Any] | None = None


def interpreter_class() -> tuple[str, Any]:
    """The first importable interpreter class and the name of the package it came from."""
    global _FOUND
    if _FOUND is not None:
        return _FOUND
    forced = os.environ.get("WAKEGUARD_TFLITE_RUNTIME")
    errors = []
    for name, load in _candidates():
        if forced and name != forced:
            continue
        try:
            _FOUND = (name, load())
            return _FOUND
        except Exception as exc:  # an ImportError, or NumPy 2 breaking an old wheel
            errors.append(f"{name}: {exc.__class__.__name__}: {exc}")
    raise RuntimeMissing(
        "no TFLite interpreter found; install the edge extra (pip install 'wakeguard[edge]', "
        "which brings ai-edge-litert). Tried: " + "; ".join(errors)
    )


def default_threads() -> int:
    """One thread unless told otherwise: the Pi shares its cores with the assistant."""
    return int(os.environ.get("WAKEGUARD_THREADS", "1"))


def make_interpreter(model_content: bytes, num_threads: int | None = None) -> Any:
    """An allocated interpreter over a model held in memory, with ``num_threads`` set explicitly."""
    _, cls = interpreter_class()
    threads = default_threads() if num_threads is None else int(num_threads)
    interp = cls(model_content=model_content, num_threads=max(1, threads))
    interp.allocate_tensors()
    return interp
