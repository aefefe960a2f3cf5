"""Every file the package writes goes through one atomic writer (swavnb.base.files); a full disk or
a read-only folder is one line naming it."""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from swavnb import finetune, pretrain
from swavnb.base import cli
from swavnb.base.errors import DiskFullError, ReadOnlyFolderError
from swavnb.base.files import check_writable, write_text

PACKAGE = Path(__file__).resolve().parents[2] / "swavnb"
# writes that cannot be atomic, by design: a child's output streamed into its log as it runs, and
# the lock file, whose inode is what a second process's flock waits on
STREAMS = {("study/scheduler.py", "execute_headless"), ("base/folder_lock.py", "_open_lock")}
# methods and functions that write a file when given a path (a buffer is fine: see _to_a_buffer)
WRITERS = {"write_text", "write_bytes", "to_csv", "to_json", "to_parquet", "savefig", "save"}


def _to_a_buffer(call: ast.Call) -> bool:
    """Whether a writer writes to memory: no target (``to_csv()`` returns the text), or a buffer
    (``io.BytesIO()``, a name holding 'buffer')."""
    path_keywords = {"path", "path_or_buf", "fname", "f"}
    if not call.args and not any(k.arg in path_keywords for k in call.keywords):
        return True
    # torch.save(obj, f): the target is the second argument
    target = call.args[1 if getattr(call.func, "attr", "") == "save" else 0] if call.args else None
    if isinstance(target, ast.Name):
        return "buffer" in target.id or target.id in {"png", "svg"}
    if isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute):
        return target.func.attr in {"BytesIO", "StringIO"}
    return False


def _direct_writes(source: str) -> list[tuple[str, int, str]]:
    """(function, line, call) of each file write in ``source`` that bypasses swavnb.base.files."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if name == "open" and owner == "os":  # os.open(path, os.O_WRONLY | ...)
                flags = {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if flags & {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}:
                    found.append((function.name, node.lineno, "os.open(..., writing)"))
            elif name in {"open", "fdopen"}:
                modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
                modes += [k.value.value for k in node.keywords if k.arg == "mode"]
                if owner != "tarfile" and any(set(str(m)) & set("wax+") for m in modes):
                    found.append((function.name, node.lineno, f"{name}({modes[0]!r})"))
            elif name in {"dump", "write"} and owner in {"json", "nbformat", "pickle"}:
                found.append((function.name, node.lineno, f"{owner}.{name}"))
            elif name in WRITERS and isinstance(func, ast.Attribute) and owner != "tar":
                # the writer's own functions are called by name, never as methods
                if name in {"write_text", "write_bytes"} or not _to_a_buffer(node):
                    found.append((function.name, node.lineno, f".{name}(...)"))
    return found


def test_every_file_the_package_writes_goes_through_the_atomic_writer():
    bypassing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "base/files.py":
            continue
        for function, line, call in _direct_writes(path.read_text()):
            if (relative, function) not in STREAMS:
                bypassing.append(f"swavnb/{relative}:{line} {function}: {call}")
    assert not bypassing, "write through swavnb.base.files instead:\n" + "\n".join(bypassing)


def test_the_check_finds_each_kind_of_direct_write():
    source = (
        "def f(frame, fig, out, data):\n"
        "    frame.to_csv(out / 'results.csv')\n"
        "    (out / 'tables.md').write_text('x')\n"
        "    fig.savefig(out / 'a.png')\n"
        "    torch.save(data, out / 'c.pt')\n"
        "    json.dump(data, handle)\n"
        "    open(out / 'x', 'w')\n"
        "    os.open(out / 'x', os.O_WRONLY | os.O_CREAT)\n"
        "    fig.savefig(buffer, format='png')\n"  # to memory: fine
        "    frame.to_csv(index=False)\n"  # to a string: fine
        "    open(out / 'x')\n"  # a read: fine
        "    os.open(out / 'x', os.O_RDONLY)\n"
    )
    assert [line for _, line, _ in _direct_writes(source)] == [2, 3, 4, 5, 6, 7, 8]


def test_a_full_disk_mid_write_keeps_the_old_text_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "tables.md"
    write_text(path, "old tables\n")

    def no_space(*args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError) as full:
        write_text(path, "new tables\n")
    assert f"'{path}'" in str(full.value) and "the previous version is intact" in str(full.value)
    assert path.read_text() == "old tables\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tables.md"]


def test_a_read_only_folder_is_one_line_naming_it_and_nothing_is_written(tmp_path, read_only):
    folder = read_only(tmp_path / "results")
    with pytest.raises(ReadOnlyFolderError) as refused:
        write_text(folder / "smoke" / "results.csv", "rows\n")
    assert str(refused.value) == (
        f"cannot write in '{folder}' (read-only file system): make it writable, or choose "
        "another folder"
    )
    assert list(folder.iterdir()) == []
    with pytest.raises(ReadOnlyFolderError, match="choose another --results_dir"):
        check_writable(folder / "smoke", "make it writable, or choose another --results_dir")
    check_writable(tmp_path / "elsewhere" / "smoke")  # writable: nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_read_only_run_folder_is_one_line_and_exit_2(tmp_path, read_only, capsys, command):
    runs = tmp_path / "runs"
    if command == "pretrain":  # a run folder that exists already, on a read-only mount
        out = runs / "smoke" / "flip" / "seed-0"
        out.mkdir(parents=True)
        argv = ["--preset", "smoke", "--aug", "flip", "--out", str(out), "--no-progress"]
        main, refused = pretrain.main, out
    else:  # a new folder inside one
        out = runs / "smoke" / "scratch" / "linear-0.1"
        argv = ["--checkpoint", "none", "--fraction", "0.1", "--mode", "linear"]
        argv += ["--preset", "smoke", "--out", str(out)]
        main, refused = finetune.main, runs
    read_only(runs)
    with pytest.raises(SystemExit) as exited:
        cli.run(main, argv)
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err, err
    assert err == f"error: cannot write in '{refused}' (read-only file system): " + (
        "make it writable, or choose another folder"
    )


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into a folder chmod made read-only; the read_only fixture tests this",
)
def test_a_folder_chmod_made_read_only_is_one_line(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ReadOnlyFolderError, match=f"cannot write in '{folder}' \\(permission"):
            write_text(folder / "result.json", "{}")
    finally:
        folder.chmod(0o755)
