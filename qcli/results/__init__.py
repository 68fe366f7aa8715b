"""Pydantic result models: what each command returns and what `--json` prints, as is. The base classes
are here; qcli.results.plan holds estimate's and presets' models, qcli.results.run load's, verify's, compare's
and env's, so that `qcli estimate` does not define the models of the commands it does not run.

The JSON contract: every top-level object carries `schema_version`, `qcli_version` and `command`;
every numeric field names its unit (`_bytes`, `_params`, `_tokens`, `_seconds`, `_percent`); memory
components carry a stable machine `kind`. Human labels are built in qcli.output, never stored here.

No `from __future__ import annotations` here: pydantic would evaluate every field's annotation from its
string when the class is created, about a third of this module's import time, which every command pays.
"""

from pydantic import BaseModel, ConfigDict

from qcli import __version__

SCHEMA_VERSION = 2


class Model(BaseModel):
    """The base of every result: pydantic builds a model's validator on first use, not at import
    (`defer_build`), so `qcli estimate` does not pay for the load, verify and compare models (docs/bench.md)."""

    model_config = ConfigDict(defer_build=True)


class Result(Model):
    """The fields every `--json` object starts with."""

    schema_version: int = SCHEMA_VERSION
    qcli_version: str = __version__
