"""`.env.example` is generated from the settings models and compose.yaml: prove it is
current, and that compose.yaml names no variable the documentation does not know."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_env_example", ROOT / "scripts" / "gen-env-example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
COMPOSE = (ROOT / "compose.yaml").read_text()
DOCUMENTED = set(re.findall(r"^#([A-Z][A-Z0-9_]+)=", gen.render(), flags=re.MULTILINE))


def test_env_example_is_current() -> None:
    assert (ROOT / ".env.example").read_text() == gen.render(), (
        ".env.example is stale: run python3 scripts/gen-env-example.py"
    )


def test_every_compose_interpolation_is_documented() -> None:
    missing = set(gen.compose_variables(COMPOSE)) - DOCUMENTED
    assert not missing, f"compose.yaml uses undocumented variables: {sorted(missing)}"


def test_every_container_variable_is_a_known_setting() -> None:
    unknown = set(gen.compose_uses(COMPOSE)) - DOCUMENTED
    assert not unknown, f"compose.yaml passes variables no model reads: {sorted(unknown)}"


def _passed_to(service: str) -> set[str]:
    return {n for n, uses in gen.compose_uses(COMPOSE).items()
            if any(u.service == service for u in uses)}


def _env_names(model: type) -> set[str]:
    prefix = model.model_config["env_prefix"]
    return {(prefix + name).upper() for name in model.model_fields}


def _server_settings() -> type:
    from buzon.config import ServerSettings

    return ServerSettings


def _sidecar_settings() -> type:
    from buzon.transform.sidecar import SidecarSettings

    return SidecarSettings


@pytest.mark.parametrize(
    ("settings", "services"),
    [(_server_settings, ["smtp"]), (_sidecar_settings, ["transform-tac", "spamassassin"])],
)
def test_every_setting_reaches_its_containers_or_is_declared_not_passed(
    settings: Callable[[], type], services: list[str]
) -> None:
    names = _env_names(settings())
    for service in services:
        passed = _passed_to(service)
        undecided = names - passed - set(gen.NATIVE_ONLY)
        assert not undecided, (
            f"new settings: pass them to {service} in compose.yaml or list them in "
            f"NATIVE_ONLY in scripts/gen-env-example.py: {sorted(undecided)}"
        )
        both = (passed & set(gen.NATIVE_ONLY) & names) - {"BUZON_DATA_DIR"}
        assert not both, f"{service}: both passed and declared not passed: {both}"


def test_not_passed_list_names_existing_settings() -> None:
    known = _env_names(_server_settings()) | _env_names(_sidecar_settings())
    assert set(gen.NATIVE_ONLY) <= known, set(gen.NATIVE_ONLY) - known


def test_compose_only_list_has_no_stale_entries() -> None:
    used = set(gen.compose_variables(COMPOSE))
    stale = set(gen.COMPOSE_ONLY) - used
    assert not stale, f"COMPOSE_ONLY documents variables compose.yaml no longer uses: {stale}"


def test_compose_defaults_match_the_documented_ones() -> None:
    for name, default in gen.compose_variables(COMPOSE).items():
        if name in gen.COMPOSE_ONLY:
            assert gen.COMPOSE_ONLY[name][0] == default, name


def test_every_variable_has_one_comment_line() -> None:
    lines = gen.render().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^#[A-Z][A-Z0-9_]+=", line):
            comment = lines[index - 1]
            assert comment.startswith("# ") and len(comment) > 4, line


SAMPLE = """\
name: x
services:
  a:
    environment:
      BUZON_ONE: ${BUZON_ONE:-1}
      BUZON_TWO:
      BUZON_THREE: /fixed
  b:
    environment:
      BUZON_TWO: ${OTHER:-2}
volumes:
  data:
"""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BUZON_ONE", [gen.ComposeUse("a", "interpolated", "1")]),
        ("BUZON_TWO", [gen.ComposeUse("a", "passthrough", ""),
                       gen.ComposeUse("b", "fixed", "${OTHER:-2}")]),
        ("BUZON_THREE", [gen.ComposeUse("a", "fixed", "/fixed")]),
    ],
)
def test_compose_uses_parses_each_kind(name: str, expected: list[object]) -> None:
    assert gen.compose_uses(SAMPLE)[name] == expected


def test_compose_variables_reads_defaults() -> None:
    assert gen.compose_variables(SAMPLE) == {"BUZON_ONE": "1", "OTHER": "2"}
