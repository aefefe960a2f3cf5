"""The code's commit, as runs and exported model cards record it."""

from __future__ import annotations

import re
import subprocess

import swavnb.base.commit
from swavnb.base.commit import DIRTY, source_commit


def test_the_commit_is_this_checkouts_head_or_unknown(monkeypatch, tmp_path):
    commit = source_commit()
    head = subprocess.run(
        ["git", "-C", str(swavnb.base.commit._SOURCE_CHECKOUT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:  # a git checkout: HEAD, marked when tracked files differ from it
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
        assert commit.removesuffix(DIRTY) == head.stdout.strip()
    else:  # a copy without .git: unknown, not an error
        assert commit is None
    # code that is not the top of a git checkout (an installed package, even inside some other
    # repository) has no commit of its own
    installed = tmp_path / "project" / ".venv" / "site-packages"
    installed.mkdir(parents=True)
    (installed / "pyproject.toml").write_text("")
    project = ["git", "-C", str(tmp_path / "project"), "-c", "user.name=t", "-c", "user.email=t"]
    subprocess.run([*project, "init", "-q"], check=True)
    subprocess.run([*project, "commit", "-q", "--allow-empty", "-m", "its own"], check=True)
    monkeypatch.setattr(swavnb.base.commit, "_SOURCE_CHECKOUT", installed)
    assert source_commit() is None
    monkeypatch.setattr(swavnb.base.commit, "_SOURCE_CHECKOUT", tmp_path / "nowhere")
    assert source_commit() is None
