#!/usr/bin/env bash
# Install the Debian packages the test suite's real services need, when they are missing:
#   browser  headless Chromium and ChromeDriver (grading page and dashboard browser tests)
#   slurm    slurmctld, slurmd, slurm-client and munge (a one-node SLURM on localhost)
# Usage: deploy/system-packages.sh browser slurm
# Needs root (or sudo) and apt-get; elsewhere it says what is missing and the tests that
# need it skip themselves.
set -euo pipefail
declare -A packages=(
  [browser]="chromium chromium-driver"
  [slurm]="slurmctld slurmd slurm-client munge"
)
declare -A probes=([browser]="chromedriver" [slurm]="slurmctld")
missing=()
for group in "$@"; do
  [ -n "${packages[$group]:-}" ] || { echo "system-packages.sh: unknown group $group" >&2; exit 2; }
  command -v "${probes[$group]}" >/dev/null 2>&1 || missing+=(${packages[$group]})
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
if ! command -v apt-get >/dev/null 2>&1 || { [ -n "$sudo" ] && ! sudo -n true 2>/dev/null; }; then
  echo "system-packages.sh: cannot install ${missing[*]} (needs apt-get as root); the tests that need them will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
