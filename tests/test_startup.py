"""What a stage command imports before its cluster starts, and workers that start with their
stage's modules imported (tests/benchmarks/bench_startup.py measures the time)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import pytest

from lensdask.stages import STAGES, stage_named


def run_python(code: str) -> Any:
    """Run ``code`` in a fresh Python (the fork server is one per process); its last line
    of output, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", [stage.name for stage in STAGES])
def test_every_stage_preloads_modules_that_exist(stage):
    preload = stage_named(stage).preload
    assert preload[0] == stage_named(stage).run.partition(":")[0]
    missing = [module for module in preload if importlib.util.find_spec(module) is None]
    assert not missing


def test_no_stage_preloads_a_library_that_forking_breaks():
    """The fork server imports the stages' modules and forks the workers from itself: a
    module importing TensorFlow, PyTorch or JAX (threads started at import) there would
    leave the forked workers with broken runtimes."""
    modules = sorted({module for stage in STAGES for module in stage.preload})
    got = run_python(
        "import importlib, json, sys\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "heavy = ('tensorflow', 'keras', 'torch', 'jax')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    assert got == []


def test_a_stage_command_imports_no_pandas_before_its_cluster():
    """The cutouts never use pandas: its command's error handling, pre-flight check and run
    module must not import it (the catalog package once did, for every command)."""
    got = run_python(
        "import json, sys\n"
        "import lensdask.cli\n"
        "from lensdask.cli.stages import handle_errors\n"
        "from lensdask.stages import stage_named\n"
        "handle_errors(lambda: None)()\n"
        "stage = stage_named('cutouts')\n"
        "stage.run_function(), stage.check_function()\n"
        "print(json.dumps({m: m in sys.modules for m in ('pandas', 'numpy')}))\n"
    )
    assert got == {"pandas": False, "numpy": True}


WORKERS = """
import json, os, sys
from lensdask.cluster import ClusterSpec, connect

def has(modules):
    import sys
    return {module: module in sys.modules for module in modules}

def main():
    modules = ["lensdask.cutouts.make", "astropy.wcs", "zarr"]
    spec = ClusterSpec(n_workers=2, dashboard_address="127.0.0.1:0", preload=tuple(modules))
    with connect(spec) as client:
        before = list(client.run(has, modules).values())
        pids = set(client.run(os.getppid).values())
    os.environ["LENSDASK_SEEN_BY_WORKERS"] = "yes"  # after the fork server started
    with connect(spec) as client:
        env = set(client.run(os.environ.get, "LENSDASK_SEEN_BY_WORKERS").values())
    with connect(ClusterSpec(n_workers=1, dashboard_address="127.0.0.1:0")) as client:
        spawned = list(client.run(has, modules).values())
    print(json.dumps({"before": before, "parents": len(pids), "env": sorted(env),
                      "spawned": spawned, "me": os.getpid() in pids}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_workers_start_with_the_preloaded_modules(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=180
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    everything = {"lensdask.cutouts.make": True, "astropy.wcs": True, "zarr": True}
    assert got["before"] == [everything, everything]  # before any task ran
    assert got["parents"] == 1 and not got["me"]  # forked from one fork server, not from here
    assert got["env"] == ["yes"]  # the environment of now, not of the fork server's start
    assert got["spawned"] == [dict.fromkeys(everything, False)]  # without preload: as before
