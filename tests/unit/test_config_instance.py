"""BUZON_INSTANCE: which folders are a replica's own, and which names are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from buzon.config import ServerSettings


def test_unset_keeps_the_single_server_layout(tmp_path: Path) -> None:
    s = ServerSettings(data_dir=tmp_path)
    assert s.instance is None
    assert (s.instance_dir, s.work_area, s.instance_work) == (tmp_path, tmp_path / "work",
                                                              tmp_path / "work")
    assert ServerSettings(data_dir=tmp_path, instance="").instance is None  # set but empty


@pytest.mark.parametrize("name", ["1", "12", "east-1", "A_b", "x" * 32])
def test_a_replica_gets_its_own_folders_and_shares_the_mail(tmp_path: Path, name: str) -> None:
    s = ServerSettings(data_dir=tmp_path, instance=name)
    assert s.instance_dir == tmp_path / "instances" / name
    assert s.instance_work == tmp_path / "work" / "instances" / name
    assert s.work_area == tmp_path / "work"  # the sidecars' root, shared
    assert s.mail_dir == tmp_path / "mail"


def test_a_task_slot_given_as_a_number_is_a_name(tmp_path: Path) -> None:
    assert ServerSettings(data_dir=tmp_path, instance=3).instance == "3"


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "-x", "_x", "a b", "x" * 33, "é"])
def test_names_that_are_not_a_safe_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="must be 1-32 letters, digits"):
        ServerSettings(data_dir=tmp_path, instance=name)
