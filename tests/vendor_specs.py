"""Where the vendors' own API documents are: one answer for every test that reads them.

They live outside the repository (``../shared/vendor-specs`` beside the checkout, never copied
in). A checkout elsewhere finds them through, in order: ``$RETL_VENDOR_SPECS``; the folder
beside this checkout; beside the main checkout of a git worktree; beside the repository a
fresh clone was cloned from (its ``origin`` when that is a local path: CI clones the working
repository into a temporary folder). In CI (``CI=true``) a missing folder fails the test;
elsewhere it skips it, saying where it looked.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class SpecsMissingError(RuntimeError):
    """The vendor-specs folder is not where it should be."""


def _candidates() -> list[Path]:
    found = [ROOT.parent / "shared" / "vendor-specs"]
    dotgit = ROOT / ".git"
    if dotgit.is_file():  # a worktree: .git names the main repository's git dir
        gitdir = Path(dotgit.read_text().partition("gitdir:")[2].strip())
        common = gitdir / "commondir"
        main_git = (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir.parents[1]
        found.append(main_git.parent.parent / "shared" / "vendor-specs")
        dotgit = main_git
    config = dotgit / "config"
    if config.is_file():  # a clone of a local repository: look beside where it came from
        parser = configparser.ConfigParser(strict=False)
        parser.read(config)
        origin = parser.get('remote "origin"', "url", fallback="").removeprefix("file://")
        if origin.startswith("/"):
            found.append(Path(origin).resolve().parent / "shared" / "vendor-specs")
    return found


def specs_dir() -> Path:
    """The shared vendor-specs folder (raises ``SpecsMissingError`` saying where it looked)."""
    override = os.environ.get("RETL_VENDOR_SPECS")
    if override:
        if not Path(override).is_dir():
            raise SpecsMissingError(f"RETL_VENDOR_SPECS={override} is not a directory")
        return Path(override)
    candidates = _candidates()
    for path in candidates:
        if path.is_dir():
            return path
    raise SpecsMissingError(f"vendor documents not found in {', '.join(map(str, candidates))}; set RETL_VENDOR_SPECS")


def spec_file(name: str) -> Path:
    """One vendor document; fails in CI and skips elsewhere when the folder or the file is missing."""
    try:
        path = specs_dir() / name
        if not path.is_file():
            raise SpecsMissingError(f"{path} does not exist")
    except SpecsMissingError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"vendor documents missing in CI: {exc}")
        pytest.skip(str(exc))
    return path


def spec_path(name: str) -> Path:
    """Where vendor document ``name`` is, for module-level constants: never raises (a missing file fails
    the test that opens it); ``spec_file`` is the checked form to use inside a test."""
    try:
        return specs_dir() / name
    except SpecsMissingError:
        return _candidates()[0] / name
