"""confine, relativize and check_job: protocol paths against the work area, symlinks included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buzon.transform.paths import check_job, confine, relativize
from buzon.transform.wire import PathRefused


@pytest.fixture
def root(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    (spool / "work").mkdir(parents=True)
    (spool / "work" / "a.in").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    return spool


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("../x", "'..' in path"),
        ("work/../../secret", "'..' in path"),
        ("work/../a.in", "'..' in path"),  # refused even when it would stay inside
        ("/etc/passwd", "absolute path"),
        ("//etc/passwd", "absolute path"),
        ("", "empty path"),
        ("work/a\x00.in", "NUL byte"),
        (".", "outside the work area"),
        ("./", "outside the work area"),
    ],
)
def test_confine_refuses(root: Path, relative: str, message: str) -> None:
    with pytest.raises(PathRefused, match=message):
        confine(root, relative)


def test_confine_refuses_a_symlink_escaping_the_root(root: Path) -> None:
    (root / "work" / "evil").symlink_to(root.parent / "secret")
    (root / "up").symlink_to(root.parent)
    with pytest.raises(PathRefused, match="resolves outside"):
        confine(root, "work/evil")
    with pytest.raises(PathRefused, match="resolves outside"):
        confine(root, "up/secret")
    with pytest.raises(PathRefused, match="resolves outside"):
        confine(root, "up/spool-not-there")  # an output path through the link


def test_confine_accepts_paths_inside_the_root(root: Path) -> None:
    real = Path(os.path.realpath(root))
    assert confine(root, "work/a.in") == real / "work" / "a.in"
    assert confine(root, "work/new.out") == real / "work" / "new.out"  # need not exist
    assert confine(root, "./work//a.in") == real / "work" / "a.in"
    (root / "alias").symlink_to(root / "work")  # a link that stays inside is fine
    assert confine(root, "alias/a.in") == real / "work" / "a.in"


def test_confine_resolves_a_symlinked_root(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "spool-link"
    link.symlink_to(root)
    assert confine(link, "work/a.in") == Path(os.path.realpath(root)) / "work" / "a.in"


def test_relativize_names_files_inside_the_root(root: Path, tmp_path: Path) -> None:
    assert relativize(root, root / "work" / "a.in") == "work/a.in"
    assert relativize(root, root / "work" / "b.out") == "work/b.out"
    link = tmp_path / "spool-link"
    link.symlink_to(root)
    assert relativize(link, root / "work" / "a.in") == "work/a.in"
    assert relativize(root, link / "work" / "a.in") == "work/a.in"


@pytest.mark.parametrize("outside", ["/etc/passwd", "../secret", "."])
def test_relativize_refuses_files_outside_the_root(root: Path, outside: str) -> None:
    path = Path(outside) if outside.startswith("/") else root / outside
    with pytest.raises(PathRefused):
        relativize(root, path)


@pytest.mark.parametrize(
    ("input_", "output", "job"),
    [
        ("AB3DEFGHIJKLMNOP.in", "AB3DEFGHIJKLMNOP.out", "AB3DEFGHIJKLMNOP"),
        ("w0/ID.in", "w0/ID.out", "ID"),
        ("w12/ID.in", "w12/ID.out.stage1", "ID"),  # the first stage of a chain
        ("w2/ID.out.stage1", "w2/ID.out.stage2", "ID"),
        ("w2/ID.out.stage2", "w2/ID.out", "ID"),  # the last stage
        ("instances/3/w0/ID.in", "instances/3/w0/ID.out", "ID"),  # a replica's (issue 15)
    ],
)
def test_check_job_accepts_the_files_of_one_job(input_: str, output: str, job: str) -> None:
    assert check_job(input_, output) == job


@pytest.mark.parametrize(
    ("input_", "output", "message"),
    [
        ("queue/SEGMENT", "w0/ID.out", "'queue/SEGMENT' is not a job file"),
        ("w0/ID.in", "queue/SEGMENT", "'queue/SEGMENT' is not a job file"),
        ("w0/ID.in", "../ID.out", "not a job file"),
        ("w0/ID.in", "/tmp/ID.out", "not a job file"),
        ("w0/ID.in", "w0/OTHER.out", "files of different jobs"),
        ("w0/ID.in", "w1/ID.out", "files of different jobs"),
        ("instances/1/w0/ID.in", "instances/2/w0/ID.out", "files of different jobs"),
        ("instances/1/w0/ID.in", "w0/ID.out", "files of different jobs"),
        ("instances/1/ID.in", "instances/1/ID.out", "not a job file"),
        ("instances/../w0/ID.in", "w0/ID.out", "not a job file"),
        ("x/w0/ID.in", "x/w0/ID.out", "not a job file"),
        ("w0/ID.in", "w0/ID.in", "cannot be written"),
        ("w0/ID.out", "w0/ID.out.stage1", "cannot be written"),
        ("w0/ID.out.stage1", "w0/ID.out.stage1", "the same file"),
        ("w0/ID.in", "w0/ID.out.tmp", "not a job file"),
        ("w0/ID.in", "w0/ID.out\n", "not a job file"),
        ("mail/bob/new/x", "w0/ID.out", "not a job file"),
        ("monitor.token", "w0/ID.out", "not a job file"),
    ],
)
def test_check_job_refuses_anything_else(input_: str, output: str, message: str) -> None:
    with pytest.raises(PathRefused, match=message):
        check_job(input_, output)
