"""Every setting a user can give is typed and described (`--help`, YAML and docs read it)."""

from __future__ import annotations

import importlib

from pydantic import BaseModel

from frugalml.config import Frozen
from frugalml.strategies import strategy_names

# Modules that define settings; importing them registers their models as Frozen subclasses.
SETTINGS_MODULES = ("frugalml.api", "frugalml.serve.settings", "frugalml.strategies")


def all_settings() -> list[type[BaseModel]]:
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    strategy_names()  # the registry imports rungs on use: load every built-in one
    found, todo = [], list(Frozen.__subclasses__())
    while todo:
        model = todo.pop()
        if model.__module__.startswith("frugalml."):  # not the rungs tests define
            found.append(model)
        todo.extend(model.__subclasses__())
    return found


def test_every_config_field_has_a_description() -> None:
    models = all_settings()
    names = {m.__name__ for m in models}
    assert {"Budget", "SplitConfig", "TrainConfig", "ServeSettings", "LoraConfig"} <= names
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert missing == []
