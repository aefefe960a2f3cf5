"""The progress decision: a live bar when a person runs the cell in JupyterLab, none when papermill,
nbclient, nbval, the study or a script runs it."""

from __future__ import annotations

import pytest

from swavnb.base.frontend import show_progress


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ("true", True),
        ("False", False),
        (" TRUE ", True),
        (True, True),
        (False, False),
        ("auto", False),
    ],
)
def test_progress_settings_outside_a_kernel(setting, shown):
    assert show_progress(setting) is shown  # auto: a script is no kernel


def test_an_unknown_progress_setting_names_the_choices():
    with pytest.raises(ValueError, match="progress 'yes please': choose one of auto, true, false"):
        show_progress("yes please")


def _auto_in(kernel_client, metadata: dict) -> str:
    """``show_progress('auto')`` in a live kernel, asked by an execute request carrying
    ``metadata``."""
    content = {
        "code": "from swavnb.base.frontend import show_progress",
        "silent": False,
        "store_history": False,
        "user_expressions": {"auto": "show_progress('auto')"},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    request = kernel_client.session.msg("execute_request", content, metadata=metadata)
    kernel_client.shell_channel.send(request)
    while True:
        reply = kernel_client.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
            break
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["user_expressions"]["auto"]["data"]["text/plain"]


def test_auto_is_on_for_a_cell_run_from_jupyterlab_and_off_for_papermill_nbclient_and_nbval():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        # what JupyterLab 4 sends with every cell (CodeCell.execute), and what nbclient (papermill's
        # engine) and nbval send: no metadata
        jupyterlab = {"cellId": "2f1c", "deletedCells": [], "recordTiming": False}
        assert _auto_in(client, jupyterlab) == "True"
        assert _auto_in(client, {}) == "False"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
