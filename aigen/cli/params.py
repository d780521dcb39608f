"""Plain option values without pydantic: typer's coercion, answered where the answer is known.

Typer (0.2x) checks every parameter's value with a pydantic ``TypeAdapter``, built the first time
the parameter is processed. Importing pydantic and building the adapters added ~40-80 ms to the
start of every command (``aigen status`` included), for values that need no conversion: a ``str``
option given a string, an ``int`` given its default or an ASCII decimal. For exactly those cases
the adapter's answer is known (it returns the string itself, ``int(value)``, the default itself),
so ``plain_coercion`` answers them; any other value (a ``5.0`` for an int, ``1_000``, bytes, a
bool flag read from an environment variable) and any other kind of parameter (lists, choices,
paths, files, ranges, parsers) goes to typer's own adapter, built then, so every result and every
error message stays typer's. ``tests/test_startup_imports.py`` checks both against typer's adapter.

With a typer that does not coerce through adapters (no ``typer._coercion``), this does nothing.
"""

from __future__ import annotations

from typing import Any

try:
    from typer._coercion import RuntimeParam as _RuntimeParam
    from typer._coercion import build_runtime_param as _build_runtime_param
except ImportError:  # pragma: no cover - a typer without pydantic adapters: nothing to replace
    _RuntimeParam = None

PLAIN_TYPES = (str, int, float, bool)


if _RuntimeParam is not None:

    class PlainRuntimeParam(_RuntimeParam):  # typer's frozen dataclass: its fields, __init__ and __eq__
        """typer's RuntimeParam for a str, int, float or bool parameter with no constraint."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation, kind = self.annotation, type(value)
            if kind is annotation and kind is not int:  # a str given a str, a float a float, a bool a bool
                return value
            if annotation is int and (kind is int or (kind is str and _ascii_int(value))):
                return int(value)
            # Anything else is typer's to convert (or refuse, with its message): its adapter from now on.
            runtime = _build_runtime_param(param.type_descriptor)
            param._runtime_param = runtime
            return runtime._coerce_value(value, param=param, ctx=ctx)


def _ascii_int(text: str) -> bool:
    """What pydantic's int accepts and int() reads the same way: ASCII digits only (int() also reads
    other scripts' digits, pydantic does not), no sign but "-", no spaces or underscores."""
    digits = text[1:] if text[:1] == "-" else text
    return 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit()


def is_plain(param: Any) -> bool:
    """A typer parameter whose coercion PlainRuntimeParam can answer (not yet built by typer)."""
    if _RuntimeParam is None or getattr(param, "_runtime_param", False) is not None:
        return False
    desc = getattr(param, "type_descriptor", None)
    if desc is None or desc.annotation not in PLAIN_TYPES:
        return False
    info = desc.parameter_info
    return not (desc.is_list or desc.is_tuple or desc.is_file or desc.is_choice or desc.is_path
                or info.parser is not None or info.min is not None or info.max is not None or info.clamp)


def _make_plain(param: Any) -> None:
    if is_plain(param):
        desc = param.type_descriptor
        param._runtime_param = PlainRuntimeParam(parameter_info=desc.parameter_info, annotation=desc.annotation)


def plain_coercion(command: Any) -> None:
    """Give every plain parameter of this command, and of its subcommands, PlainRuntimeParam.

    Their --help option too, which typer makes when a command is run (a bool flag that is
    None when not given: typer builds its adapter all the same).
    """
    if _RuntimeParam is None:  # pragma: no cover
        return
    for param in getattr(command, "params", ()):
        _make_plain(param)
    get_help_option = getattr(command, "get_help_option", None)
    if get_help_option is not None and "get_help_option" not in vars(command):

        def plain_help_option(ctx: Any) -> Any:
            option = get_help_option(ctx)
            if option is not None:
                _make_plain(option)
            return option

        command.get_help_option = plain_help_option
    for sub in getattr(command, "commands", {}).values():
        plain_coercion(sub)
