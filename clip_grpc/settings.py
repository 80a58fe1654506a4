"""The one settings layer of the server and the REST bridge (torch-free: both import it).

A service's settings are the fields of one frozen dataclass, each declared once with
`setting(default, help, choices=..., minimum=..., maximum=...)`. Building the dataclass directly
(`ServerConfig(port=0)`, as tests do) checks the same bounds as the command line, and
`parse_settings` reads flags first, then `<PREFIX><NAME>` environment variables, then the
defaults, answering a bad value from either source with the same message and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

Config = TypeVar("Config")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_METAVARS = {int: "INT", float: "NUMBER", str: "TEXT", bool: "BOOL"}


class SettingError(ValueError):
    """A value outside what one setting allows; `name` says which."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")
        self.name = name


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """One setting: a dataclass field whose metadata drives parsing, --help and checking.

    `parse` turns the text of a flag or env value into the value (default: by the field's type).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": tuple(choices) if choices else None,
        "minimum": minimum, "maximum": maximum, "parse": parse,
    })


def check_settings(config: Any) -> None:
    """Raise SettingError for the first value outside its choices or bounds (for __post_init__)."""
    for field in dataclasses.fields(config):
        value, meta = getattr(config, field.name), field.metadata
        if value is None or not meta:
            continue
        if meta["choices"] and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise SettingError(field.name, f"must be one of {allowed}, got {value!r}")
        low, high = meta["minimum"], meta["maximum"]
        if low is not None and high is not None and not low <= value <= high:
            raise SettingError(field.name, f"must be in {low}..{high}, got {value}")
        elif low is not None and value < low:
            raise SettingError(field.name, f"must be at least {low}, got {value}")
        elif high is not None and value > high:
            raise SettingError(field.name, f"must be at most {high}, got {value}")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean (use true or false): {text!r}")


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of an annotation such as `int` or `str | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0], True
    return annotation, False


def _converter(field: dataclasses.Field, annotation: Any) -> Callable[[str], Any]:
    kind, optional = _value_type(annotation)
    parse = field.metadata.get("parse") or (parse_bool if kind is bool else kind)

    def convert(text: str) -> Any:
        if optional and text == "":
            return None
        try:
            return parse(text)
        except ValueError as error:
            if parse in (int, float):
                raise ValueError(f"invalid {parse.__name__} value: {text!r}") from None
            raise error

    return convert


def env_name(prefix: str, name: str) -> str:
    return prefix + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(
    config_class: type, *, prog: str, description: str, env_prefix: str
) -> argparse.ArgumentParser:
    """Flags for every setting; none has an argparse default, so only the given ones are set."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS,
        epilog=f"Every flag can also be set with an environment variable {env_prefix}<NAME>; "
        "a flag wins over the environment, which wins over the default.",
    )
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.metadata:
            continue
        meta = field.metadata
        choices = meta["choices"]
        help_text = meta["help"]
        default = "none" if field.default is None else repr(field.default)
        help_text += f" [env {env_name(env_prefix, field.name)}, default {default}]"
        kind = _value_type(hints[field.name])[0]
        extra: dict[str, Any] = {"metavar": _METAVARS.get(kind, "VALUE")}
        if kind is bool:
            extra.update(nargs="?", const="true")
        if choices:
            extra["metavar"] = "{" + ",".join(choices) + "}"
        parser.add_argument(flag_name(field.name), dest=field.name,
                            help=help_text.replace("%", "%%"), **extra)
    return parser


def parse_settings(
    config_class: type[Config],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    prog: str,
    description: str,
    env_prefix: str,
) -> Config:
    """Flags win over `env_prefix`* environment variables, which win over the defaults.

    A value that does not parse or is out of bounds exits with status 2 and a message naming the
    flag or variable it came from, e.g. `--port=http: invalid int value: 'http'`.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser(config_class, prog=prog, description=description,
                          env_prefix=env_prefix)
    given = vars(parser.parse_args(argv))
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for field in dataclasses.fields(config_class):
        if not field.metadata:
            continue
        variable = env_name(env_prefix, field.name)
        if field.name in given:
            text, origin = given[field.name], flag_name(field.name)
        elif variable in environ:
            text, origin = environ[variable], variable
        else:
            continue
        origins[field.name] = f"{origin}={text}"
        try:
            values[field.name] = _converter(field, hints[field.name])(text)
        except ValueError as error:
            parser.error(f"{origins[field.name]}: {error}")
    try:
        return config_class(**values)
    except SettingError as error:
        parser.error(f"{origins.get(error.name, error.name)}: {error}")
    except ValueError as error:
        parser.error(str(error))
    raise AssertionError("unreachable: parser.error exits")
