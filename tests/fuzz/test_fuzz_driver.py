"""scripts/fuzz.py, the high-volume fuzz driver, run briefly so that it cannot rot.

The million-input runs are on demand (``python3 scripts/fuzz.py --inputs 1000000``);
here each target gets a few thousand inputs, the live target a few hundred
sessions against a real server, and the driver shows it reports a planted bug.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _driver():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("buzon_fuzz_driver", REPO / "scripts/fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz = _driver()


@pytest.mark.parametrize("name", sorted(fuzz.PURE))
def test_a_pure_target_survives_a_few_thousand_inputs(name: str) -> None:
    assert fuzz.main([name, "--inputs", "3000", "--seed", "7"]) == 0


@pytest.mark.slow
def test_the_live_target_survives_a_few_hundred_sessions() -> None:
    assert fuzz.main(["smtp", "--inputs", "300", "--seed", "7"]) == 0


def test_the_driver_reports_a_planted_bug(capsys: pytest.CaptureFixture[str]) -> None:
    def check(data: bytes) -> None:
        if b"\x00" in data:
            raise KeyError("planted")

    target = fuzz.Target("planted", [b"abc", b"de"], check, max_len=16)
    with pytest.raises(fuzz.Finding, match="(?s)planted: input .* KeyError: .planted."):
        fuzz.run_pure(target, 5000, seed=1)


def test_inputs_are_reproducible_from_the_seed() -> None:
    target = fuzz.PURE["monitor"]()
    first = [d for _, d in fuzz.inputs(target, 200, 3)]
    assert first == [d for _, d in fuzz.inputs(target, 200, 3)]
    assert first != [d for _, d in fuzz.inputs(target, 200, 4)]
