"""Whether a run compiles its network: ``compile`` = auto | true | false, and a cheap probe of the
compiler that ``auto`` asks first.

``torch.compile`` needs a working toolchain (a C++ compiler for Inductor's CPU kernels; Triton, a C
compiler and Python's headers for its GPU launchers). Where it is missing, ``auto`` runs eager and
says why in one line; ``true`` asks the same probe and stops before training (or, for what the probe
cannot see, at the first step) with the cause and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from swavnb.base.errors import CompileError, setting
from swavnb.base.precision import auto_true_false

# auto under torchrun is eager: on CUDA BatchNorm becomes SyncBatchNorm, where dynamo graph-breaks
# (pytorch/pytorch#161302, open), and compiled DDP has not run here on any device
DISTRIBUTED_REASON = "under torchrun: DDP has not run compiled here"
SYNC_BN_REASON = (
    "under torchrun on CUDA: torch.compile graph-breaks at every SyncBatchNorm "
    "(pytorch/pytorch#161302) and DDP has not run compiled here"
)


def check_compile(value: str | bool) -> str:
    """The compile setting (:func:`swavnb.base.precision.auto_true_false`)."""
    return auto_true_false(value, "compile", "compile where a probe finds the compiler working")


def _probe_function(x: torch.Tensor) -> torch.Tensor:
    return (x * 2 + 1).relu()


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for a one-line report."""
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0]


@functools.cache
def compiler_problem(device: str) -> str:
    """Compile and run a tiny function on ``device`` with Inductor: '' if it works, else the cause.

    Cached per process and device: a run asks once, up front. Building and launching one kernel
    exercises what the network's compile needs (the C++ compiler on a CPU; Triton, its C compiler
    and Python's headers on a GPU) in seconds, against the network's 40-65 s.
    """
    try:
        x = torch.arange(8.0, device=device)
        compiled = torch.compile(_probe_function, dynamic=False, fullgraph=True)
        if not torch.equal(compiled(x), _probe_function(x)):
            return "a compiled test function computed a wrong result"
    except Exception as error:  # whatever the toolchain raises, the run goes on eager
        cause = compiler_failure(error) or error
        return one_line(cause)
    return ""


def resolve_compile(
    setting: str | bool, device: torch.device, distributed: bool
) -> tuple[bool, str]:
    """Whether a run compiles, and why not where ``auto`` decided against it ('' otherwise).

    ``auto`` compiles single-process runs whose probe (:func:`compiler_problem`) passes; under
    torchrun it stays eager (:data:`SYNC_BN_REASON` on CUDA). ``true`` and ``false`` are obeyed.
    """
    setting = check_compile(setting)
    if setting != "auto":
        return setting == "true", ""
    if distributed:
        return False, SYNC_BN_REASON if device.type == "cuda" else DISTRIBUTED_REASON
    problem = compiler_problem(str(device))
    return not problem, problem


def decide_compile(
    value: str, device: torch.device, distributed: bool, say: bool = True
) -> tuple[bool, str]:
    """:func:`resolve_compile`, where ``true`` asks the probe too (a missing toolchain stops the run
    in seconds, before the network's own compile fails on it), and one line (``say``) where
    ``auto`` runs eager.

    Raises:
        CompileError: ``true`` on a machine whose compiler does not work, naming the fix.
    """
    compiled, fallback = resolve_compile(value, device, distributed)
    if check_compile(value) == "true" and (problem := compiler_problem(str(device))):
        raise CompileError(compile_fix(f"cannot build kernels here ({problem})"))
    if fallback and say:
        print(
            f"torch.compile is off ({fallback}); the run trains eager: the same training without "
            f"the compile speed-up ({setting('compile')} false skips this check)",
            file=sys.stderr,
            flush=True,
        )
    return compiled, fallback


def compiled_network(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` compiled for static shapes: a run's batch and crop sizes never change, and automatic
    dynamic shapes would compile a second run in the same process for a symbolic batch size."""
    return torch.compile(net, dynamic=False)


def compile_fix(what: str) -> str:
    """A compile failure's message: ``what`` failed, and the eager run that avoids it."""
    return (
        f"torch.compile {what}; rerun with {setting('compile')} false: the same training, eager, "
        "without the compile speed-up"
    )


@contextlib.contextmanager
def compile_failures_name_the_fix() -> Iterator[None]:
    """Around a compiled network's first forward, backward and kernel launches, where the
    compiler's failures surface (:func:`compiler_failure`): CompileError naming the fix."""
    try:
        yield
    except Exception as error:
        cause = compiler_failure(error)
        if cause is None:
            raise
        raise CompileError(
            compile_fix(f"could not build or launch the network ({one_line(cause)})")
        ) from error


def _is_build_code(filename: str) -> bool:
    """A file of Triton or of Inductor's kernel building (not the kernels Inductor generates)."""
    path = Path(filename).as_posix()
    triton = sys.modules.get("triton")
    if triton is not None and getattr(triton, "__file__", None):
        if path.startswith(Path(triton.__file__).parent.as_posix() + "/"):
            return True
    inductor = Path(torch.__file__).parent.as_posix() + "/_inductor/"
    builds = ("codecache.py", "cpp_builder.py", "async_compile.py", "compile_worker/", "runtime/")
    return path.startswith(inductor) and path[len(inductor) :].startswith(builds)


def compiler_failure(error: BaseException) -> BaseException | None:
    """The compiler's error behind ``error``, or None where ``error`` did not come from building
    kernels.

    Inductor's failures while compiling are a ``BackendCompilerFailed``; Triton may build a
    kernel's launcher (C compiler, Python headers) only at its first launch, whose error is raised
    from Triton's or Inductor's own files. An out-of-memory error is never the compiler's.
    """
    dynamo_errors = sys.modules.get("torch._dynamo.exc")
    if dynamo_errors is not None and isinstance(error, dynamo_errors.BackendCompilerFailed):
        return getattr(error, "inner_exception", None) or error
    if isinstance(error, torch.OutOfMemoryError):
        return None
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame.f_code.co_filename)
        traceback = traceback.tb_next
    return error if any(_is_build_code(name) for name in frames) else None
