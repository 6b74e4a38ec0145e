"""A topology model built from data that already passed validation, without validating it again.

Pydantic builds each model's validator on first use (~30 ms with the metadata it loads): on a no-op run,
a sixth of the whole. The parse cache marks the bytes of a topology once they validated in full against
this very model (`parse_cache.mark_valid`); such data is built field by field here with
`model_construct`. Why that is as safe as validating: ${ENV} expansion only puts strings into strings,
so what validated once validates again, whatever the environment; every check that depends on the
environment or the filesystem (`load._check_semantics`) still runs on every load.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel


def _convert(annotation: Any, raw: Any) -> Any:
    if raw is None:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _convert(kinds[0], raw) if len(kinds) == 1 else raw
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return tuple(_convert(item, v) for v in raw)
    if origin is dict:
        item = typing.get_args(annotation)[1]
        return {k: _convert(item, v) for k, v in raw.items()}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return construct(annotation, raw)
    if annotation is float:
        return float(raw)  # validation turns a whole number into a float here too
    return raw


def construct(cls: type[BaseModel], data: dict) -> BaseModel:
    values = {}
    for name, info in cls.model_fields.items():
        key = info.alias if info.alias and info.alias in data else name
        if key in data:
            values[name] = _convert(info.annotation, data[key])
    return cls.model_construct(**values)
