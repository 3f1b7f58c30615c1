#!/usr/bin/env bash
# The test command: installs the pinned third-party interop clients (PyPI,
# npm) if missing, then runs every test of the workspace against real
# servers on loopback (SQLite), then the IAM server's tests again on
# PostgreSQL (127.0.0.1:5432, database `test`; each test server gets a
# fresh database of its own, see portcullis-test-support's database.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash interop/install.sh
cargo test --workspace --locked "$@"
# Kubernetes manifests under deploy/ parse and point at served paths.
python3 scripts/check-deploy.py

# Not run on PostgreSQL: tests that open the SQLite file of a server by its
# path (users.rs `stored_hash`). Tests that build their own sqlite:// URL
# (key_rotation.rs key rings) stay on SQLite in this run too.
SQLITE_ONLY=(
  declared_password_hashes_are_stored_as_given
  declared_users_are_present_after_start_and_upserted_on_restart
  argon2_parameters_from_config_are_used
)
skips=()
[[ " $* " == *" -- "* ]] || skips+=(--)
for t in "${SQLITE_ONLY[@]}"; do skips+=(--skip "$t"); done
PORTCULLIS_TEST_DATABASE=postgres cargo test -p portcullis-iam --locked "$@" "${skips[@]}"
