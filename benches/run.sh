#!/usr/bin/env bash
# The benchmark, one command from a fresh clone:
#   bash benches/run.sh [--sizes 50,1024] [--lambda-mb 450] [--workdir /tmp/trailcopy-bench]
# Generates synthetic trails with tests/gen_trail.py (reused when present), then in the same run
# measures (a) `trailcopy copy` local -> local, (b) DuckDB converting the same files to Parquet,
# (c) decompression alone, each on 1 pinned core and on all cores, the floor of the work on one
# thread (inflate + JSON check + zstd of the pages: examples/floor), and (d) the copy Lambda's
# handler path on one ~64 MB (gzip) work item in process, (e) the S3 latency curve (576 files a day,
# over 1 and 7 days; --latency-days; and 1 day from a narrowed source): files/s of the
# CLI copy S3 -> local and of the handler path at 0/30/100 ms added per request (s3s-fs behind
# examples/delay_proxy; benches/latency.py), with each path's dependent round trips and the ratio
# they alone give. Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import duckdb' 2>/dev/null; then
  bash .ci/setup
fi
if [ ! -x /usr/bin/time ] || ! command -v taskset >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq time util-linux >/dev/null
fi
# The S3 latency curve's server: s3s-fs, pinned (0.14.1 is the newest that builds on rustc 1.95).
S3S_FS_VERSION=0.14.1
if ! .bench-tools/bin/s3s-fs --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  echo "[bench] installing s3s-fs $S3S_FS_VERSION into .bench-tools" >&2
  cargo install --quiet --locked "s3s-fs@$S3S_FS_VERSION" --features binary --root .bench-tools
fi
echo "[bench] building (release)" >&2
cargo build --release --quiet -p trailcopy-cli --bin trailcopy
cargo build --release --quiet -p trailcopy-core --example inflate --example floor --example copy_batch --example delay_proxy
exec .venv/bin/python benches/bench.py "$@"
