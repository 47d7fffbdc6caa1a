"""Config dataclasses loadable from YAML and overridable from the command line.

Shared by every layer that has a config (train and eval), so it sits at the top of the package
and imports nothing from medvl.

Every trainer and evaluator config (`SFTConfig`, later `GRPOConfig` and `EvalConfig`) is a
dataclass that inherits `YamlConfig`::

    config = SFTConfig.from_yaml("configs/sft_tiny.yaml", ["--lr", "1e-5", "--lora.r", "16"])
    config.save_yaml("outputs/run/config.yaml")   # what was actually used, overrides included

Rules, the same for YAML values and command-line strings:

* Values are coerced to the field's annotated type: ``--lr 1e-5`` is a float (also in YAML,
  where PyYAML would read ``1e-5`` as a string), ``--max_steps 1e3`` an int, ``--bf16 yes`` a
  bool, ``--lora none`` None for an optional field, ``--betas 0.9,0.95`` (or ``[0.9, 0.95]``) a
  tuple, ``Literal`` fields accept only their choices.
* ``--key value``, ``--key=value``; a bare ``--flag`` means ``true``. Dashes in keys are
  underscores (``--max-steps`` is ``max_steps``).
* Dotted keys reach inside: ``--dataset.view montage`` sets a field of a nested dataclass (typed
  as that dataclass declares), ``--lora.r 16`` sets a key of a dict field (the value is parsed as
  YAML, so ``16`` is an int and ``[q_proj, v_proj]`` a list). A dict field that is None becomes
  ``{}`` first.
* An unknown key fails with the key, where it came from, and the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from medvl._io import atomic_write_text

__all__ = ["ConfigError", "YamlConfig", "coerce", "parse_overrides"]

C = TypeVar("C", bound="YamlConfig")
_NONE_WORDS = ("none", "null", "~")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ConfigError(ValueError):
    """A config that cannot be built: unknown key, wrong type, bad value or bad YAML."""


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """CLI-style ``["--lr", "1e-5", "--resume", "--lora.r=16"]`` -> ``{"lr": "1e-5", ...}``.

    Values stay strings (``True`` for a bare flag); `YamlConfig.from_dict` coerces them.

    Raises:
        ConfigError: A token that is neither ``--key`` nor the value following one.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"expected an option --key [value], got {token!r}")
        key, sep, value = token[2:].partition("=")
        if not sep:
            # A negative number is a value, not the next option.
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            else:
                value = True
        out[key.replace("-", "_")] = value
        i += 1
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (other unions unchanged)."""
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _parse_sequence(value: str) -> list[Any]:
    text = value.strip()
    if text.startswith("["):
        return yaml.safe_load(text)
    return [] if not text else [part.strip() for part in text.split(",")]


def coerce(value: Any, tp: Any, key: str = "value") -> Any:
    """Converts ``value`` (a YAML value or a command-line string) to the annotated type ``tp``.

    Raises:
        ConfigError: The value does not fit; the message names ``key`` and the expected type.
    """

    def fail(expected: str | None = None) -> ConfigError:
        return ConfigError(f"{key}: expected {expected or _type_name(tp)}, got {value!r}")

    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS)
        ):
            return None
        for arg in args:  # first member that accepts it, in declaration order
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise fail("one of " + ", ".join(repr(c) for c in args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise fail()
    if tp is int:
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise fail() from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str or tp is os.PathLike or tp is Path:
        # Paths are kept as strings so the config dumps back to plain YAML.
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise fail()
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        items = _parse_sequence(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise fail(f"{len(args)} values ({_type_name(tp)})")
            pairs = enumerate(zip(items, args, strict=True))
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in pairs)
        item_type = args[0] if args else Any
        out = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        value_type = args[1] if len(args) == 2 else Any
        return {k: coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return _build(tp, value, key + ".")
    if origin is Callable or tp is Callable:
        if callable(value):
            return value
        raise fail("a callable")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail()


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _unknown(key: str, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r}{where}{hint}; valid keys: {', '.join(sorted(valid))}")


def _build(cls: type, data: Mapping[str, Any], prefix: str = "", where: str = "") -> Any:
    fields, hints = _fields(cls), _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(prefix + str(key), [prefix + f for f in fields], where)
        kwargs[key] = coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ checks, missing required fields
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}{where}: {e}") from e


def _set_dotted(cls: type, data: dict[str, Any], key: str, value: Any, prefix: str = "") -> None:
    """Puts an override into the raw (pre-coercion) dict, walking nested dataclasses/dicts."""
    head, _, rest = key.partition(".")
    fields = _fields(cls)
    if head not in fields:
        raise _unknown(prefix + head, [prefix + f for f in fields], " (command-line override)")
    if not rest:
        data[head] = value
        return
    tp = _strip_optional(_hints(cls)[head])
    if dataclasses.is_dataclass(tp):
        sub = data.get(head)
        if dataclasses.is_dataclass(sub):  # a default instance: start from its values
            sub = _to_plain(sub)
        data[head] = dict(sub or {})
        _set_dotted(tp, data[head], rest, value, f"{prefix}{head}.")
    elif get_origin(tp) in (dict, Mapping) or tp in (dict, Mapping):
        node = data.get(head)
        node = dict(node) if isinstance(node, Mapping) else {}
        data[head] = node
        parts = rest.split(".")
        for part in parts[:-1]:
            node[part] = dict(node[part]) if isinstance(node.get(part), Mapping) else {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value) if isinstance(value, str) else value
    else:
        raise ConfigError(f"{prefix + head!r} is a {_type_name(tp)}, it has no sub-key {rest!r}")


def _to_plain(value: Any) -> Any:
    """Dataclasses, tuples and paths -> dicts, lists and strings that ``yaml.safe_dump`` takes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # A callable preset or a peft LoraConfig given from Python: recorded, not re-loadable.
    if hasattr(value, "to_dict"):
        return _to_plain(value.to_dict())
    return repr(value)


class YamlConfig:
    """Mixin for config dataclasses: YAML in and out, command-line overrides, type checks."""

    @classmethod
    def from_dict(
        cls: type[C],
        data: Mapping[str, Any] | None = None,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        *,
        source: str = "",
    ) -> C:
        """Builds the config from a mapping and optional overrides.

        Args:
            data: Field values (nested mappings for nested dataclass fields).
            overrides: CLI-style tokens (``["--lr", "1e-5"]``) or a mapping of (dotted) keys.
            source: Where ``data`` came from, for error messages.

        Raises:
            ConfigError: Unknown key, value of the wrong type, or a failed check.
        """
        raw = dict(data or {})
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(list(overrides))
        for key, value in overrides.items():
            _set_dotted(cls, raw, key, value)
        return _build(cls, raw, where=f" in {source}" if source else "")

    @classmethod
    def from_yaml(
        cls: type[C], path: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] = ()
    ) -> C:
        """Loads ``path`` (a YAML mapping of field values) and applies ``overrides``."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from e
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            got = type(data).__name__
            raise ConfigError(f"{path}: expected a mapping of config keys, got {got}")
        return cls.from_dict(data, overrides, source=str(path))

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (coerced and checked like any other input)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe values of every field."""
        return _to_plain(self)

    def to_flat_dict(self) -> dict[str, Any]:
        """Dotted keys and scalar values (lists and None as text): what trackers such as
        TensorBoard's hparams accept."""

        def flat(data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
            for key, value in data.items():
                if isinstance(value, Mapping):
                    yield from flat(value, f"{prefix}{key}.")
                else:
                    scalar = isinstance(value, (int, float, str, bool))
                    yield prefix + key, value if scalar else str(value)

        return dict(flat(self.to_dict(), ""))

    def to_yaml(self) -> str:
        """The config as YAML, fields in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Writes `to_yaml` to ``path`` atomically; returns ``path``."""
        return atomic_write_text(path, self.to_yaml())


def config_main(
    run: Callable[[str, list[str]], Any], prog: str, argv: Sequence[str] | None = None
) -> int:
    """``python -m PROG --config FILE [--key value ...]``: calls ``run(FILE, overrides)`` and
    prints what it returns; a bad config or override prints the error and returns 2.

    Args:
        run: e.g. ``run_sft``; it raises `ConfigError` for a bad key or value.
        prog: The module, for the usage line.
        argv: The arguments (default ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        print(f"usage: python -m {prog} --config FILE [--key value ...]", file=sys.stderr)
        return 2
    i = args.index("--config")
    try:
        result = run(args[i + 1], args[:i] + args[i + 2 :])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result)
    return 0
