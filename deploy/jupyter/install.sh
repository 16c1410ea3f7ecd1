#!/usr/bin/env bash
# JupyterLab with the Dask extension (dask-labextension) in the repository's .venv:
# lensdask with its `jupyter` extra (jupyterlab, dask-labextension, ipykernel), installed by
# deploy/install.sh, the one install recipe; then the extension's Dask configuration (the
# cluster its sidebar's NEW button starts: a LocalCluster on loopback) into the venv's
# etc/dask, where every process of the venv reads it. Extra extras: deploy/jupyter/install.sh nn
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
extras="jupyter"
[ -n "${1:-}" ] && extras="jupyter,$1"
"$root/deploy/install.sh" "$extras"
mkdir -p "$root/.venv/etc/dask"
cp "$root/deploy/jupyter/dask-labextension.yaml" "$root/.venv/etc/dask/lensdask-labextension.yaml"
