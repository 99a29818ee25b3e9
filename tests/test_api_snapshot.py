"""The public API does not change by accident: scripts written against it keep working.

The snapshot (`tests/api_snapshot.json`) holds, for every named endpoint of the whole app on the tiny
backend with no hub and nothing cached, its parameter names in order with their Python type and
default, and how many values it returns. (Where hub weights can be had, a tab's `preprocessor`
default is its hub annotator: the one default that depends on the server.) A deliberate change regenerates it with `UPDATE_API_SNAPSHOT=1 pytest tests/test_api_snapshot.py`
and says why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app import build_app
from controlnet_core import Engine, Settings, get_preprocessor

SNAPSHOT = Path(__file__).with_name("api_snapshot.json")


def api_contract(demo) -> dict:
    """Endpoint name → its parameters (name, python type, default) and its number of outputs."""
    contract = {}
    for name, endpoint in sorted(demo.get_api_info()["named_endpoints"].items()):
        contract[name] = {
            "parameters": [
                [
                    parameter["parameter_name"],
                    parameter["python_type"]["type"],
                    parameter["parameter_default"] if parameter["parameter_has_default"] else None,
                ]
                for parameter in endpoint["parameters"]
            ],
            "returns": len(endpoint["returns"]),
        }
    return contract


def snapshot_text(contract: dict) -> str:
    """The contract as JSON with one line per parameter, so a diff shows what changed."""
    lines = ["{"]
    for index, (name, entry) in enumerate(contract.items()):
        lines.append(f" {json.dumps(name)}: {{")
        lines.append(f'  "returns": {entry["returns"]},')
        lines.append('  "parameters": [')
        rows = [f"   {json.dumps(p, ensure_ascii=False)}" for p in entry["parameters"]]
        lines.append(",\n".join(rows))
        lines.append("  ]")
        lines.append(" }" + ("," if index < len(contract) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def test_public_api_matches_the_snapshot(monkeypatch):
    # A tab starts on a preprocessor that can run on its server (demos.builder.starting_preprocessor):
    # the snapshot is that of a server with no hub and nothing cached, whatever this machine holds.
    import demos.builder

    monkeypatch.setattr(
        demos.builder,
        "preprocessor_runs_here",
        lambda pid, online: get_preprocessor(pid).weights is None,
    )
    demo = build_app(Engine(Settings(backend="tiny")))
    contract = json.loads(json.dumps(api_contract(demo)))  # tuples → lists, as stored
    if os.environ.get("UPDATE_API_SNAPSHOT") == "1":
        SNAPSHOT.write_text(snapshot_text(contract))
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(contract) == sorted(expected), "endpoints were added or removed"
    for name, entry in expected.items():
        assert contract[name] == entry, f"{name} changed its parameters or outputs"
