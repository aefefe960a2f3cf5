"""The compile setting: auto / true / false, what auto decides, and which errors are the
compiler's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swavnb.base import compiling
from swavnb.base.compiling import check_compile, compiler_failure, resolve_compile


def test_compile_reads_like_amp_and_names_the_choices():
    assert [check_compile(v) for v in (True, False, "AUTO", " yes", "0")] == [
        "true",
        "false",
        "auto",
        "true",
        "false",
    ]
    with pytest.raises(ValueError, match="unknown compile 'maybe'; choose one of auto, true, fal"):
        check_compile("maybe")


def test_auto_compiles_only_single_process_runs_whose_probe_passes(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    probed = []
    problem = {"cpu": "", "cuda:0": "InvalidCxxCompiler: No working C++ compiler found"}
    monkeypatch.setattr(compiling, "compiler_problem", lambda d: probed.append(d) or problem[d])
    assert resolve_compile("auto", cpu, distributed=False) == (True, "")
    compiled, why = resolve_compile("auto", cuda, distributed=False)
    assert not compiled and why == problem["cuda:0"]
    # under torchrun on CUDA (DDP + SyncBatchNorm) auto is eager without probing, and says why
    compiled, why = resolve_compile("auto", cuda, distributed=True)
    assert not compiled and "SyncBatchNorm" in why and "torchrun on CUDA" in why
    assert resolve_compile("auto", cpu, distributed=True) == (False, compiling.DISTRIBUTED_REASON)
    assert probed == ["cpu", "cuda:0"]
    # true and false are obeyed as given, also under torchrun
    assert resolve_compile("true", cuda, distributed=True) == (True, "")
    assert resolve_compile(False, cpu, distributed=False) == (False, "")


def test_the_probe_reports_what_breaks_the_compiler_in_one_line_once_per_device(monkeypatch):
    """The probe's real compile is exercised by test_train (auto on this CPU) and by the headless
    rehearsal (auto with a broken compiler)."""
    calls = []

    def broken(function, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("Failed to find C compiler. Please specify via CC.\n(details)")

    compiling.compiler_problem.cache_clear()
    monkeypatch.setattr(torch, "compile", broken)
    try:
        cause = "RuntimeError: Failed to find C compiler. Please specify via CC."
        assert compiling.compiler_problem("cpu") == cause
        assert compiling.compiler_problem("cpu") == cause and len(calls) == 1  # cached
        assert calls[0] == {"dynamic": False, "fullgraph": True}
        compiling.compiler_problem.cache_clear()
        monkeypatch.setattr(torch, "compile", lambda function, **kwargs: lambda x: x)  # wrong maths
        assert "wrong result" in compiling.compiler_problem("cpu")
    finally:
        compiling.compiler_problem.cache_clear()


def _raised_in(filename: str, message: str) -> RuntimeError:
    """A RuntimeError whose innermost frame is in ``filename``, as the compiler's would be."""
    code = compile(f"raise RuntimeError({message!r})", filename, "exec")
    try:
        exec(code)
    except RuntimeError as error:
        return error
    raise AssertionError("unreachable")


def test_errors_from_building_or_launching_kernels_are_the_compilers_and_others_are_not():
    import torch._dynamo

    inner = RuntimeError("InvalidCxxCompiler")
    wrapped = torch._dynamo.exc.BackendCompilerFailed("inductor", inner, None)
    assert compiler_failure(wrapped) is inner
    inductor = Path(torch.__file__).parent / "_inductor"
    for built in (inductor / "codecache.py", inductor / "runtime" / "triton_heuristics.py"):
        error = _raised_in(str(built), "Failed to find C compiler")
        assert compiler_failure(error) is error, built
    # the kernels Inductor generates, Inductor's graph plumbing and our own code are not its build
    for other in (inductor / "output_code.py", Path("/tmp/torchinductor_x/ab/cab.py"), __file__):
        assert compiler_failure(_raised_in(str(other), "shape mismatch")) is None, other
    assert compiler_failure(torch.OutOfMemoryError("CUDA out of memory")) is None
