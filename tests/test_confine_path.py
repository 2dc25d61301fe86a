"""api.confine_path: user-typed dashboard paths stay inside the allowed roots."""
from pathlib import Path

import pytest

from esnet import api


def test_inside_paths_resolve(tmp_path: Path) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    assert api.confine_path(tmp_path / "runs", [tmp_path]) == (tmp_path / "runs").resolve()
    # '..' that stays inside is fine, and a path need not exist.
    assert api.confine_path(f"{tmp_path}/runs/a/../b", [tmp_path]) == (tmp_path / "runs" / "b").resolve()
    assert api.confine_path(str(tmp_path), [tmp_path]) == tmp_path.resolve()


def test_dotdot_escape_names_the_rule(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match=r"'\.\.' may not climb out") as e:
        api.confine_path(f"{root}/../..", [root])
    assert f"{root}/../.." in str(e.value)


def test_symlink_escape_names_the_rule(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="symlink") as e:
        api.confine_path(root / "link", [root])
    assert str(outside) in str(e.value)


def test_outside_and_empty_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the allowed roots.*ESNET_ALLOWED_ROOTS"):
        api.confine_path("/etc", [tmp_path])
    with pytest.raises(ValueError, match="empty"):
        api.confine_path("  ", [tmp_path])


def test_default_roots_are_repo_home_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESNET_ALLOWED_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}:")
    roots = api.default_allowed_roots()
    assert roots[:2] == [api.REPO_ROOT, Path.home()]
    assert roots[2:] == [tmp_path / "a", tmp_path / "b"]
    assert api.confine_path(tmp_path / "b" / "runs") == (tmp_path / "b" / "runs").resolve()
    # Relative paths are taken from the repository root.
    assert api.confine_path("assets/demo_runs") == api.REPO_ROOT / "assets" / "demo_runs"
    monkeypatch.delenv("ESNET_ALLOWED_ROOTS")
    if not tmp_path.resolve().is_relative_to(Path.home().resolve()):
        with pytest.raises(ValueError, match="outside"):
            api.confine_path(tmp_path)
