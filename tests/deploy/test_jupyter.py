"""deploy/jupyter/: JupyterLab with the Dask extension and the demo notebook.

The notebook is validated against the nbformat schema and executed end to end on a real
kernel (nbclient + ipykernel), with its parameter cell pointing at a tiny job.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
JUPYTER = ROOT / "deploy" / "jupyter"
NOTEBOOK = JUPYTER / "lensdask-demo.ipynb"


def read_notebook():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in lensdask's test extra")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_notebook_is_valid_and_its_code_compiles():
    notebook = read_notebook()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        ast.parse(cell.source)
        assert not cell.outputs, "the notebook is kept without outputs"
    (parameters,) = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert re.search(r'^JOB = "jobs/demo\.yaml"$', parameters.source, re.M)
    assert (ROOT / "jobs" / "demo.yaml").exists()
    source = "\n".join(cell.source for cell in code)
    assert 'host="127.0.0.1"' in source  # scheduler and workers on loopback
    assert re.search(r'^DASHBOARD_ADDRESS = "127\.0\.0\.1:\d+"$', parameters.source, re.M)
    assert "run_job(load_job(JOB), client=client)" in source
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for pane in ("Task Stream", "Progress", "Workers Memory"):
        assert pane in text


def test_install_script_uses_the_one_install_recipe():
    install = (JUPYTER / "install.sh").read_text()
    assert re.search(r'^"\$root/deploy/install\.sh" "\$extras"$', install, re.M)
    assert 'extras="jupyter"' in install
    commands = [line for line in install.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if re.search(r"\bpip\b", line)], "no pip of its own"
    config = yaml.safe_load((JUPYTER / "dask-labextension.yaml").read_text())
    factory = config["labextension"]["factory"]
    assert (factory["module"], factory["class"]) == ("distributed", "LocalCluster")
    assert factory["kwargs"]["host"] == "127.0.0.1"
    assert factory["kwargs"]["dashboard_address"].startswith("127.0.0.1:")
    start = (JUPYTER / "start").read_text()
    assert "--ip 127.0.0.1" in start and "deploy/jupyter/lensdask-demo.ipynb" in start
    for script in ("install.sh", "start"):
        assert subprocess.run(["bash", "-n", JUPYTER / script]).returncode == 0, script


def test_dask_labextension_reads_the_config():
    """The keys are the ones dask-labextension's own defaults define."""
    labextension = pytest.importorskip("dask_labextension", reason="in lensdask's jupyter extra")
    defaults = yaml.safe_load(
        (Path(labextension.__file__).parent / "labextension.yaml").read_text()
    )["labextension"]
    ours = yaml.safe_load((JUPYTER / "dask-labextension.yaml").read_text())["labextension"]
    assert set(ours) <= set(defaults)
    assert set(ours["factory"]) <= set(defaults["factory"])
    assert set(ours["default"]) <= set(defaults["default"])


@pytest.mark.slow
def test_notebook_runs_a_job_and_shows_the_dashboard(tmp_path):
    pytest.importorskip("nbclient", reason="nbclient is in lensdask's test extra")
    pytest.importorskip("ipykernel", reason="ipykernel is in lensdask's test extra")
    from nbclient import NotebookClient

    notebook = read_notebook()
    job = tmp_path / "tiny.yaml"
    workdir = tmp_path / "work"
    job.write_text(
        yaml.safe_dump(
            {
                "workdir": str(workdir),
                "mock_survey": {"tiles": 2, "tile_size": 0.05, "seed": 1},
            }
        )
    )
    (parameters,) = [
        cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])
    ]
    parameters.source = f'JOB = "{job}"\nN_WORKERS = 2\nDASHBOARD_ADDRESS = "127.0.0.1:0"\n'
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(JUPYTER)}}
    ).execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    html = "\n".join(output.get("data", {}).get("text/html", "") for output in outputs)
    assert "Dashboard:" in html  # the client widget
    links = re.findall(r"http://127\.0\.0\.1:\d+/status", html)
    assert links
    printed = "".join(
        output.get("text", "") for output in outputs if output.output_type == "stream"
    )
    assert f"Dask dashboard: {links[0]}" in printed
    assert "targets" in printed
    assert (workdir / "targets.parquet" / "_summary.json").exists()
    summary = json.loads((workdir / "targets.parquet" / "_summary.json").read_text())
    assert summary
    iframes = [link for link in re.findall(r'src="([^"]+)"', html) if "individual-" in link]
    assert len(iframes) == 3
