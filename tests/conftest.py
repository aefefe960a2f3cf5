"""Shared fixtures: where the real CIFAR-100 lives and the train split, loaded once."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from swavnb.data.cifar import FOLDER, CifarSplit, load_cifar100

# A clone next to ../shared (e.g. ../ci-check) finds the data without SWAVNB_DATA.
DATA_ROOT = Path(
    os.environ.get("SWAVNB_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
# code under test (and the subprocesses it starts) resolves the data root from the environment
os.environ["SWAVNB_DATA"] = str(DATA_ROOT)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding ``cifar-100-python/``; a missing copy fails the data tests loudly."""
    if not (DATA_ROOT / FOLDER / "train").is_file():
        pytest.fail(
            f"real CIFAR-100 not found at '{DATA_ROOT / FOLDER}'; "
            "set SWAVNB_DATA to the folder that holds "
            f"{FOLDER}/ (e.g. SWAVNB_DATA=/work/shared/data)",
            pytrace=False,
        )
    return DATA_ROOT


@pytest.fixture(scope="session")
def train_split(data_root: Path) -> CifarSplit:
    return load_cifar100("train", data_root, download=False)


@pytest.fixture(scope="session")
def real_images(train_split: CifarSplit) -> torch.Tensor:
    """512 real uint8 images, enough for statistics and still fast on a CPU."""
    return train_split.images[:512].clone()


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Any]:
    """One real smoke-sized study (flip and random init, 10 % labels), shared by the study and nbval
    tests: its folders, and the command line that built it (``argv``)."""
    from swavnb.study import __main__ as study

    root = tmp_path_factory.mktemp("smoke-study")
    folders = {"runs": root / "runs", "results": root / "results", "figures": root / "figures"}
    argv = [
        "--preset",
        "smoke",
        "--augs",
        "flip",
        "--fractions",
        "0.1",
        "--data_root",
        str(data_root),
    ]
    for name, folder in folders.items():
        argv += [f"--{name}_dir", str(folder)]
    assert study.main(argv) == 0
    return {**folders, "root": root, "argv": argv}


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """Start a second process that holds a folder's lock (swavnb.base.folder_lock) until the test
    ends."""
    code = (
        "import sys, time; from swavnb.base import folder_lock\n"
        "with folder_lock.locked(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(120)\n"
    )
    started = []

    def hold(folder: Path) -> subprocess.Popen:
        holder = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in started:
        holder.kill()
        holder.wait()


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """Make a folder read as a read-only mount does (EROFS on every create or write inside it), as
    chmod cannot for root, who may write anyway; returns the folder."""
    frozen: list[Path] = []
    real_open, real_mkdir = os.open, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path: Any) -> bool:
        return any(Path(os.path.abspath(path)).is_relative_to(f) for f in frozen)

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & writing and inside(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if inside(path):
            if os.path.isdir(path):
                raise FileExistsError(errno.EEXIST, "File exists", str(path))
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)

    def freeze(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        frozen.append(folder.resolve())
        return folder

    return freeze


class Processes:
    """What the stopping tests watch: whether a folder's lock is held, whether a process is gone,
    and waiting for either."""

    @staticmethod
    def held(folder: Path) -> bool:
        """Whether a process holds ``folder``'s lock (swavnb.base.folder_lock)."""
        with open(folder / ".lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    @staticmethod
    def gone(pid: int) -> bool:
        """Whether process ``pid`` has ended (a zombie has: only its reaping is left)."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False
        return state in ("Z", "X")

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


@pytest.fixture
def processes() -> type[Processes]:
    return Processes


class PhiloxLike(torch.Generator):
    """A CPU generator that also answers ``get_offset``, as a CUDA (Philox) generator does: what
    code that takes the GPU path on fake CUDA tensors asks of its generator (none exists here)."""

    offset = 0

    def get_offset(self) -> int:
        return self.offset


@pytest.fixture
def philox_like() -> type[PhiloxLike]:
    return PhiloxLike


# cheap to build again: a worker of its own may load them; every other fixture of ours that lives
# for the module or the session keeps the tests sharing it on one pytest-xdist worker, built once
# (pytest's own, such as tmp_path_factory, group nothing)
_CHEAP_FIXTURES = {"data_root", "train_split", "real_images"}


# first: pytest-xdist's own hook reads these marks to keep a group on one worker
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (make test), tests that share an expensive fixture
    (the smoke study, the node rehearsal, a trained checkpoint) run on one worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in item.fixturenames:
            definitions = info.name2fixturedefs.get(name) or ()
            if not definitions or name in _CHEAP_FIXTURES:
                continue
            definition = definitions[-1]
            ours = getattr(definition.func, "__module__", "").split(".")[0] in ("conftest", "tests")
            ours = ours or getattr(definition.func, "__module__", "").startswith("test_")
            if ours and definition.scope in ("module", "session"):
                item.add_marker(pytest.mark.xdist_group(f"{definition.baseid}::{name}"))
                break


def _single_threaded_workers() -> None:
    """N workers on N cores: one thread each, for this process and the ones its tests start (2 of
    them beat one two-threaded process by 1.3x on a 2-core CPU, docs/performance.md)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and workers >= len(os.sched_getaffinity(0)):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


_single_threaded_workers()
