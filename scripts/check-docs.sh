#!/usr/bin/env bash
# Run the walkthroughs of the docs exactly as written, so that they cannot rot.
#
#   scripts/check-docs.sh                 every walkthrough in README.md and docs/*.md
#   scripts/check-docs.sh FILE...         those in FILE...
#   scripts/check-docs.sh --print FILE    print the scripts it would run, run nothing
#
# A walkthrough is the ```sh blocks between two markers in a Markdown file:
#
#   <!-- check-docs: begin NAME -->
#   ...prose, ```sh blocks...
#   <!-- check-docs: end -->
#
# Its blocks run in order, in one bash with `set -euo pipefail`, from the repository
# root, as root (as the README says), so every command must succeed: a step that is
# meant to fail is written `command || test $? = N` (N being the exit code the text
# explains). Other ```sh blocks (build an image, run the test suite) are not run.
#
# Each walkthrough runs in a private mount namespace with its own /run/netns and /tmp
# (tmpfs): the network namespaces it creates (`ip netns add try`) cannot collide with
# the host's and disappear with it, and its files in /tmp never touch the host's.
# Exit status: 0 when every walkthrough passed, 1 otherwise (its output is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

print_only=0
if [ "${1:-}" = --print ]; then print_only=1; shift; fi
case "${1:-}" in -h|--help) sed -n '2,22p' "$0"; exit 0 ;; esac
if [ $# -eq 0 ]; then set -- README.md docs/*.md; fi
if [ "$print_only" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "scripts/check-docs.sh: run as root (the walkthroughs create network namespaces)" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/check-docs.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Split FILE's walkthroughs into $work/<n>.sh (first line: a comment naming it).
extract() {
  awk -v out="$work" -v src="$1" '
    /<!-- check-docs: begin [^ ]+ -->/ {
      if (name != "") { printf "%s:%d: begin inside walkthrough %s\n", src, NR, name > "/dev/stderr"; exit 2 }
      name = $0; sub(/.*begin /, "", name); sub(/ -->.*/, "", name)
      n = 0; while ((getline line < (out "/count")) > 0) n = line; close(out "/count")
      n++; print n > (out "/count"); close(out "/count")
      file = sprintf("%s/%03d.sh", out, n)
      printf "# %s: %s (line %d)\n", src, name, NR > file
      next
    }
    /<!-- check-docs: end -->/ {
      if (name == "") { printf "%s:%d: end without begin\n", src, NR > "/dev/stderr"; exit 2 }
      if (blocks == 0) { printf "%s: walkthrough %s has no sh block\n", src, name > "/dev/stderr"; exit 2 }
      close(file); name = ""; blocks = 0; next
    }
    name != "" && !inblock && /^```sh[[:space:]]*$/ { inblock = 1; blocks++; printf "\n# %s:%d\n", src, NR + 1 >> file; next }
    inblock && /^```[[:space:]]*$/ { inblock = 0; next }
    inblock { print >> file }
    END { if (name != "") { printf "%s: walkthrough %s has no end marker\n", src, name > "/dev/stderr"; exit 2 } }
  ' "$1"
}

for doc in "$@"; do
  [ -f "$doc" ] || { echo "scripts/check-docs.sh: $doc: no such file" >&2; exit 1; }
  extract "$doc"
done

scripts=("$work"/[0-9]*.sh)
if [ ! -e "${scripts[0]}" ]; then
  echo "scripts/check-docs.sh: no walkthrough in $*" >&2
  exit 1
fi

failed=0
for script in "${scripts[@]}"; do
  title=$(head -n1 "$script" | sed 's/^# //')
  if [ "$print_only" = 1 ]; then
    echo "#### $title"; cat "$script"; echo
    continue
  fi
  log="$script.log"
  start=$SECONDS
  # The script is handed over on fd 3: /tmp is replaced inside.
  # The repository stays reachable at its own path even when it lives under /tmp (a CI
  # clone): it is bind-mounted aside before /tmp is replaced, then back in place.
  if unshare --mount --propagation private -- bash -c '
        set -e
        mkdir -p /run/netns "$2/repo"
        mount --bind "$1" "$2/repo"
        mount -t tmpfs -o mode=0755 check-docs-netns /run/netns
        mount -t tmpfs -o mode=1777 check-docs-tmp /tmp
        if [ ! -d "$1" ]; then
          mkdir -p "$1"
          mount --bind "$2/repo" "$1"
        fi
        cd "$1"
        exec bash -euxo pipefail /dev/fd/3
      ' check-docs "$repo" "$work" 3<"$script" </dev/null >"$log" 2>&1; then
    echo "ok      $title ($((SECONDS - start)) s)"
  else
    status=$?
    failed=1
    echo "FAILED  $title (exit $status after $((SECONDS - start)) s); its output:"
    sed 's/^/    /' "$log"
  fi
done
exit "$failed"
