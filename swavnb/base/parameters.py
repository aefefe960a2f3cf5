"""A notebook's parameters checked against the types its ``parameters`` cell declares.

papermill reads ``-p name True``, ``False`` and ``None`` as Python values and numbers as int or
float, whatever the cell declares; a notebook that then writes ``compile or None`` or
``checkpoint or <derived>`` would quietly turn ``-p compile False`` into the preset's default and
``-p checkpoint None`` into the study's encoder. So every value is checked first, and a mismatch
stops the notebook naming the parameter and what to pass instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_VALUE_FORMAT = 1  # annotationlib.Format.VALUE, where annotations are evaluated lazily (3.14+)
# a parameters cell's types; as strings where annotations are not evaluated (`from __future__`)
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _declared(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters cell's ``name: type`` declarations, as a kernel's namespace holds them."""
    if "__annotations__" in namespace:
        declared = dict(namespace["__annotations__"])
    elif callable(annotate := namespace.get("__annotate__")):  # module level from Python 3.14 on
        declared = dict(annotate(_VALUE_FORMAT))
    else:
        declared = {}
    return {name: _TYPES.get(kind, kind) for name, kind in declared.items()}


def _fits(value: Any, kind: Any) -> bool:
    if not isinstance(kind, type):
        return True  # a declaration this check does not read (a generic alias)
    if isinstance(value, bool):  # a bool is an int to isinstance; papermill's True is no number
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _advice(name: str, value: Any, kind: type) -> str:
    if value is None:
        return f"papermill reads None as Python's None: pass -p {name} '' for the derived default"
    if isinstance(value, bool) and kind is str:
        lower = str(value).lower()
        return f"papermill reads {value} as a bool: write it in lower case, -p {name} {lower}"
    if kind is bool and isinstance(value, str):
        return f"papermill reads only True and False as bools: -p {name} True or -p {name} False"
    return f"pass a {kind.__name__}"


def check_parameters(namespace: Mapping[str, Any]) -> None:
    """Raise unless every declared parameter in ``namespace`` (a notebook's ``globals()``) holds a
    value of its declared type (an int passes for a float).

    Raises:
        TypeError: naming the parameter, its value and what to pass.
    """
    for name, kind in _declared(namespace).items():
        if name in namespace and not _fits(namespace[name], kind):
            value = namespace[name]
            raise TypeError(
                f"parameter {name} is {value!r} ({type(value).__name__}), declared "
                f"{kind.__name__}: {_advice(name, value, kind)}"
            )
