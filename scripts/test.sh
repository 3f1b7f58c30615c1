#!/usr/bin/env bash
# The test command: installs the pinned third-party interop clients (PyPI,
# npm) if missing, then runs every test of the workspace against real
# servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash interop/install.sh
cargo test --workspace --locked "$@"
