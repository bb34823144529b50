#!/usr/bin/env bash
# The project's test command: formatting, lints, all tests (incl. real-peer integration tests).
# Prerequisite for the integration tests: scripts/setup-test-env.sh (DCMTK, Orthanc, .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast
