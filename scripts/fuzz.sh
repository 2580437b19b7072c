#!/usr/bin/env bash
# Fuzz every parser that takes bytes from outside the node (fuzz/fuzz_targets/*).
#
#   scripts/fuzz.sh                   every target for 60 s (what CI runs)
#   scripts/fuzz.sh --seconds 3600    the long run
#   scripts/fuzz.sh --seconds 600 document_toml rpc_frame
#
# libFuzzer through cargo-fuzz on the nightly toolchain (installed with the machine's
# rustup; cargo-fuzz from crates.io on first use). Seeds live in fuzz/seeds/<target>
# (committed); the growing corpus in fuzz/corpus/<target> (not committed). A crash
# stops the run with the input saved under fuzz/artifacts/<target>/: turn it into a
# regression test next to the parser (docs/security.md says how), then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || { echo "fuzz.sh: --seconds needs a number" >&2; exit 2; }; seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds takes whole seconds, not '$seconds'" >&2; exit 2 ;; esac

for dir in "$HOME/.cargo/bin" /root/.cargo/bin; do
  [ -d "$dir" ] && case ":$PATH:" in *":$dir:"*) ;; *) PATH="$dir:$PATH" ;; esac
done
command -v rustup >/dev/null || { echo "fuzz.sh: rustup not found (needed for the nightly toolchain)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' \
  || { echo "fuzz.sh: the nightly toolchain is not installed (rustup toolchain install nightly)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --quiet
fi

[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
echo "[fuzz] building ${#targets[@]} targets" >&2
(cd fuzz && cargo +nightly fuzz build -O)
failed=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  echo "[fuzz] $target for ${seconds}s" >&2
  if ! (cd fuzz && cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"../target/fuzz-$target.log"); then
    failed+=("$target")
    tail -n 30 "target/fuzz-$target.log" >&2
  else
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "target/fuzz-$target.log" \
      | sed "s/^/[fuzz] $target: /" >&2 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
