"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then full TensorFlow.

``ai_edge_litert`` is the maintained runtime (aarch64 and x86_64 wheels, NumPy 2).
``tflite_runtime`` 2.14 still sits on old Pi images but breaks under NumPy 2 and Python
3.12+, so it is only a fallback. ``tensorflow.lite`` is last: it works on a training
machine but costs seconds to import on a Pi.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
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

    return [
        ("ai_edge_litert", litert),
        ("tflite_runtime", tflite_runtime),
        ("tensorflow.lite", tensorflow),
    ]


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


class ModelInvalid(ValueError):
    """The interpreter refused the model bytes (empty, truncated, not a TFLite flatbuffer)."""


def default_threads() -> int:
    """``WAKEGUARD_THREADS``, else 1: the Pi shares its cores with the assistant."""
    value = os.environ.get("WAKEGUARD_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"WAKEGUARD_THREADS must be a whole number >= 1, got {value!r}")
    return threads


def make_interpreter(model_content: bytes, num_threads: int | None = None) -> Any:
    """An allocated interpreter over a model held in memory, with ``num_threads`` set explicitly.

    ``num_threads`` None means :func:`default_threads`; below 1 is a ValueError (there is no
    "auto": the thread count is always chosen, never left to the runtime). Bytes the
    interpreter cannot load raise :class:`ModelInvalid`.
    """
    threads = default_threads() if num_threads is None else int(num_threads)
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    _, cls = interpreter_class()
    if not model_content:
        raise ModelInvalid("not a valid TFLite model: the model is empty (0 bytes)")
    try:
        with _without_delegate_notice():
            interp = cls(model_content=model_content, num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelInvalid(f"not a valid TFLite model: {exc}") from exc
    return interp


DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
"""What the interpreter's C++ code prints on stderr for every model it loads."""


@contextlib.contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """Hold back :data:`DELEGATE_NOTICE`, which would open every command's output (and come
    before its error), while passing on whatever else the runtime prints (its real errors).

    The notice is written by C++ to file descriptor 2, past Python's ``sys.stderr``, so the
    descriptor is pointed at a temporary file while the model loads. Where the process has
    no descriptor 2 there is nothing to hold back."""
    fd = 2
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), fd)
            try:
                yield
            finally:
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, fd)
                held.seek(0)
                lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
                rest = "".join(line for line in lines if line.strip() != DELEGATE_NOTICE)
                if rest:
                    os.write(fd, rest.encode("utf-8"))
    finally:
        os.close(saved)
