"""Without Docker the system tests skip on a developer's machine and fail in CI."""

from __future__ import annotations

import pytest
from system import compose_stack


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose_stack.shutil, "which", lambda name: None)


@pytest.mark.usefixtures("no_docker")
@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_ci_fails_without_docker(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true: failing instead of skipping"):
        compose_stack.require_docker()


@pytest.mark.usefixtures("no_docker")
@pytest.mark.parametrize("ci", [None, "", "false"])
def test_local_run_skips_without_docker(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="the docker CLI is not on PATH"):
        compose_stack.require_docker()
