#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s) on the kept corpus.
#
#   fuzz/run.sh [SECONDS] [--keep]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Only the stable toolchain exists here,
# so its nightly-only flags are allowed with RUSTC_BOOTSTRAP=1. libFuzzer's new inputs go to a
# scratch directory; with --keep they are merged (minimised) into fuzz/corpus/<target>. A crash
# stops the run with the input in fuzz/artifacts/<target>/ (commit it: the regular tests replay
# every file there).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
keep="${2:-}"
export RUSTC_BOOTSTRAP=1
sanitizer=address
if ! cargo fuzz build --sanitizer address -O sync_decode >/dev/null 2>&1; then
  echo "address sanitizer unavailable: fuzzing without a sanitizer" >&2
  sanitizer=none
fi
for target in sync_decode ingest; do
  scratch="$(mktemp -d)"
  mkdir -p "artifacts/$target"
  echo "== fuzz $target for ${secs}s (sanitizer: $sanitizer)"
  cargo fuzz run --sanitizer "$sanitizer" -O "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>&1 | tail -n 25
  if [ "$keep" = "--keep" ]; then
    cargo fuzz run --sanitizer "$sanitizer" -O "$target" "corpus/$target" "$scratch" -- \
      -merge=1 2>&1 | tail -n 2
  fi
  rm -rf "$scratch"
done
