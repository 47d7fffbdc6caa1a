"""medvl._lazy: package names imported on first use, through the three lazy packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medvl.eval
import medvl.model
import medvl.train


@pytest.mark.parametrize("package", [medvl.model, medvl.train, medvl.eval])
def test_every_exported_name_resolves_and_unknown_names_fail(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    message = rf"module '{package.__name__}' has no attribute 'nope'"
    with pytest.raises(AttributeError, match=message):
        package.nope  # noqa: B018


def test_importing_the_packages_does_not_import_transformers():
    code = "import sys, medvl.model, medvl.train, medvl.eval; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
