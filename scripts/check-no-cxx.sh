#!/usr/bin/env bash
# check-no-cxx.sh -- the default build needs only the Rust toolchain and a C compiler.
#
# Builds the `radguard` binary (dev profile: the same build scripts and C code as the README's
# `cargo run --release -p radguard -- serve`) with a PATH from which cmake and every C++
# compiler are filtered out (a folder of links to everything else on PATH), and CXX / CMAKE
# pointing nowhere, so a build script that tries to compile C++ or run cmake fails the build.
# Then checks that no cmake or CharLS crate is in the dependency graph.
#
# Why this build, not a cold one in a scratch target directory: .ci/run calls this before
# scripts/test.sh on a fresh clone, so the target directory is cold anyway and every build
# script really runs here; the test build reuses the result (a second cold build would cost
# ~10 minutes of CI). Run by hand on a warm target directory it only proves what it rebuilds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[check-no-cxx] %s\n' "$*"; }

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
deny='^(cmake|ctest|cpack|c\+\+|g\+\+|clang\+\+|cc1plus|.*-g\+\+|.*-c\+\+|.*-clang\+\+|g\+\+-[0-9.]+|.*-g\+\+-[0-9.]+|clang\+\+-[0-9.]+)$'
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [[ -d "$d" ]] || continue
  for f in "$d"/*; do
    n="${f##*/}"
    [[ -x "$f" && ! -d "$f" && ! -e "$bin/$n" ]] || continue
    [[ "$n" =~ $deny ]] && continue
    ln -s "$f" "$bin/$n"
  done
done
for t in cmake c++ g++ clang++; do
  if PATH="$bin" command -v "$t" >/dev/null 2>&1; then
    log "ERROR: $t is still on the filtered PATH"; exit 1
  fi
done
for t in cargo rustc cc; do
  PATH="$bin" command -v "$t" >/dev/null 2>&1 || { log "ERROR: $t missing from PATH"; exit 1; }
done
log "PATH without cmake or a C++ compiler: cargo build -p radguard"
env -u CXXFLAGS PATH="$bin" CXX=/nonexistent/c++ CMAKE=/nonexistent/cmake \
  cargo build -p radguard --locked
for c in cmake charls charls-sys cxx cc-cpp; do
  if cargo tree -p radguard -e normal,build -i "$c" --locked >/dev/null 2>&1; then
    log "ERROR: $c is in radguard's dependency graph"; exit 1
  fi
done
log "ok: radguard built with no cmake or C++ compiler on PATH, and no cmake/CharLS crate"
