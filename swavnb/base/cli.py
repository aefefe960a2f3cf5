"""Shared command-line plumbing: ``--field value`` overrides and one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from swavnb.base.checkpoint import CheckpointError
from swavnb.base.errors import (
    CompileError,
    DatasetNotFoundError,
    DiskFullError,
    ReadOnlyFolderError,
    RunFolderBusy,
)
from swavnb.base.stopping import exit_status, handle_sigterm

USER_ERRORS = (
    ValueError,
    TypeError,
    CheckpointError,
    DatasetNotFoundError,
    FloatingPointError,
    FileNotFoundError,
    CompileError,
    RunFolderBusy,
    DiskFullError,
    ReadOnlyFolderError,
)


def parse_overrides(extra: Sequence[str], config_cls: type) -> dict[str, str]:
    """``['--epochs', '3', '--amp=false']`` -> ``{'epochs': '3', 'amp': 'false'}`` (typed later by
    the config)."""
    names = {f.name for f in fields(config_cls)}
    overrides: dict[str, str] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            raise ValueError(f"unexpected argument {item!r}; overrides look like --field value")
        key, _, value = item[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise ValueError(
                f"unknown option --{key}; valid config fields: {', '.join(sorted(names))}"
            )
        if not value:
            if not items:
                raise ValueError(f"--{key} needs a value")
            value = items.pop(0)
        overrides[key] = value
    return overrides


def run(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a CLI entry point; user mistakes end in one clear line and exit status 2, Ctrl-C and
    SIGTERM in one line and status 130 / 143 (:mod:`swavnb.base.stopping`)."""
    # torchrun's workers keep SIGTERM's default: torchrun ends them with it, and a rank blocked in
    # a collective on a dead peer could not run a Python handler until the collective times out
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        handle_sigterm()
    try:
        main(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        print(
            "interrupted: rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(exit_status(stop))


def parser(prog: str, description: str, config_cls: type) -> argparse.ArgumentParser:
    epilog = "Any config field can be overridden with --field value: " + ", ".join(
        f.name for f in fields(config_cls)
    )
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
