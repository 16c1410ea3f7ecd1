"""``import lensdask`` (and the stages built so far) must not pull in heavy optional parts."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "dask_cuda", "dask_jobqueue", "torch", "jax")


def test_import_lensdask_imports_no_heavy_dependency():
    code = (
        "import sys, lensdask, lensdask.cli, lensdask.catalog.select, lensdask.mock.survey; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_the_extra():
    from lensdask.cluster import require

    try:
        require("lensdask_no_such_module", "hpc")
    except ImportError as err:
        assert "pip install 'lensdask[hpc]'" in str(err)
    else:  # pragma: no cover
        raise AssertionError("require() did not fail")
