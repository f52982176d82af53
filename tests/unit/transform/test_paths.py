"""confine and relativize: protocol paths against the spool root, symlinks included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buzon.transform.paths import confine, relativize
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
        (".", "outside the spool root"),
        ("./", "outside the spool root"),
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
