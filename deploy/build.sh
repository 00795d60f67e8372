#!/usr/bin/env bash
# The deploy tools, then `sam validate --lint` and `sam build` (README "Deploy to AWS").
#
# SAM CLI cannot share the test venv (.venv): its boto3 and cfn-lint pins conflict with .ci's, so
# it gets its own, .deploy-venv, with pinned versions: SAM CLI 1.170.0 (rust-cargolambda builds
# without the beta prompt older SAM CLIs showed) and cargo-lambda 1.9.2 (from PyPI, with zig).
# `sam build` runs `cargo lambda build --release --arm64` for each of the four functions; SAM shows
# cargo's output only when a function is built, so the script says how long to expect first.
# Outside CI: it needs no AWS account, but it builds release binaries for arm64.
set -euo pipefail
cd "$(dirname "$0")/.."
SAM_CLI_VERSION=1.170.0
CARGO_LAMBDA_VERSION=1.9.2
if ! .deploy-venv/bin/sam --version 2>/dev/null | grep -q "$SAM_CLI_VERSION"; then
  python3 -m venv .deploy-venv
  .deploy-venv/bin/pip install --quiet --disable-pip-version-check \
    "aws-sam-cli==$SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
fi
export PATH="$PWD/.deploy-venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0
sam --version
cargo lambda --version
# Validation is local (the SAM transform and cfn-lint); a region is all it needs.
sam validate --lint --region "${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
echo "sam build: four release arm64 builds; the first takes about 9 minutes on 2 cores (later ones reuse target/)"
start=$(date +%s)
sam build
for f in EnumerateFunction PrepareFunction CopyFunction FinalizeFunction; do
  test -x ".aws-sam/build/$f/bootstrap" || { echo "sam build made no $f/bootstrap" >&2; exit 1; }
done
echo "sam build: $(( $(date +%s) - start )) s; next: sam deploy --guided"
