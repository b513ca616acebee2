"""One JSON codec for the frozen config dataclasses that jobs record with their outputs and
TFX passes between processes as execution properties.

``to_json`` writes ``dataclasses.asdict`` with sorted keys (stable, so a recorded config can
be compared byte for byte on resume); ``from_dict`` rebuilds nested dataclasses from their
field annotations, turns JSON lists back into tuples, and rejects unknown keys with a message
that names where they were found.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

# Field metadata: the field is left out of ``to_json`` while it holds its default. For a field
# added later whose default does what was done before it existed: older records still match.
RECORDED_IF_SET = "recorded_if_set"


def to_json(config: Any, omit: Iterable[str] = ()) -> str:
    """``config`` (a dataclass) as canonical JSON, without the top-level keys in ``omit`` and
    the :data:`RECORDED_IF_SET` fields at their defaults (at any depth)."""
    raw = dataclasses.asdict(config)
    for key in omit:
        raw.pop(key, None)
    _drop_defaults(config, raw)
    return json.dumps(raw, sort_keys=True)


def _drop_defaults(config: Any, raw: dict) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get(RECORDED_IF_SET) and value == f.default:
            raw.pop(f.name, None)
        elif dataclasses.is_dataclass(value) and isinstance(raw.get(f.name), dict):
            _drop_defaults(value, raw[f.name])


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def check_keys_in(raw: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """ValueError naming ``where`` if ``raw`` has a key outside ``allowed``."""
    unknown = sorted(set(map(str, raw)) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {', '.join(sorted(allowed))})")


def from_dict(cls: type[T], raw: Mapping[str, Any] | None, where: str = "") -> T:
    """A ``cls`` from a mapping of some of its fields (the others keep their defaults).

    Nested dataclass fields are built from nested mappings; lists become tuples. Values of
    other types are passed through (a dataclass's ``__post_init__`` may coerce them).

    Raises
    ------
    ValueError
        For keys that ``cls`` (or a nested dataclass) does not have, or values its checks
        refuse (a TypeError there is reported as a ValueError naming ``where``).
    """
    raw = dict(raw or {})
    where = where or cls.__name__
    check_keys_in(raw, (f.name for f in dataclasses.fields(cls)), where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _tuples(value)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a value of the wrong type, met by a check or a comparison
        raise ValueError(f"{where}: {exc}") from None


def from_json(cls: type[T], text: str | None) -> T:
    """:func:`from_dict` of a JSON text (empty or None: the defaults)."""
    return from_dict(cls, json.loads(text) if text else {})
