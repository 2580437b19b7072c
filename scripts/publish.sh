#!/usr/bin/env bash
# Sign desired-state documents with the stock minisign and lay them out as the config
# API's static layout (docs/config-api.md, "Serving documents from a static server"),
# ready for nginx, Caddy or an object store to serve as is.
#
#   scripts/publish.sh --key kahuna.key --root /srv/kowabunga [--check 'kiwi' [--trusted-keys DIR]] DOC.toml...
#
# For each DOC (TOML, with `node = "<agent id>"` in its header):
#   ROOT/api/v1/agents/<node>/config           the document, byte for byte
#   ROOT/api/v1/agents/<node>/config.minisig   its detached signature
#
# --check AGENT    run `AGENT check DOC --node <node>` (with --trusted-keys DIR when
#                  given, so the fresh signature is verified too) before publishing;
#                  a document it rejects is not published.
# --force          publish a version not above the one already published (agents
#                  refuse it as a replay; only useful to roll a server back).
#
# Guarantees, so that an agent polling during a publish never gets stuck:
# - each file is written beside its target and renamed into place (never half-written);
# - the signature is renamed first, the document second: an agent that fetched the old
#   document and the new signature refuses that pair and, the document's ETag having
#   changed, fetches the new pair at its next poll;
# - the document's modification time always moves forward by at least one second, so
#   servers whose ETag is mtime and size (nginx, Caddy) never give two versions of the
#   same size one ETag;
# - files are world-readable (0644): the server's workers read them; documents are not
#   secret from whoever can reach the server (see docs/config-api.md).
# Exit: 0 all published, 1 an error (nothing more is published after it), 2 usage.
set -euo pipefail

usage() { sed -n '2,29p' "$0" >&2; exit 2; }
die() { echo "publish.sh: $*" >&2; exit 1; }

key="" root="" check="" keys="" force=0
docs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --key) [ $# -ge 2 ] || usage; key=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
    --check) [ $# -ge 2 ] || usage; check=$2; shift 2 ;;
    --trusted-keys) [ $# -ge 2 ] || usage; keys=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage ;;
    --) shift; docs+=("$@"); break ;;
    -*) echo "publish.sh: unknown option $1" >&2; usage ;;
    *) docs+=("$1"); shift ;;
  esac
done
[ -n "$key" ] && [ -n "$root" ] && [ ${#docs[@]} -gt 0 ] || usage
[ -f "$key" ] || die "$key: no such secret key"
command -v minisign >/dev/null || die "minisign not found (Debian package minisign)"

# A top-level key of the header: `name = value` before the first [table].
header() {
  awk -v key="$2" '
    /^[[:space:]]*\[/ { exit }
    $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*(#.*)?$/, ""); gsub(/^"|"$/, ""); print; exit
    }' "$1"
}

for doc in "${docs[@]}"; do
  [ -f "$doc" ] || die "$doc: no such file"
  case "$doc" in *.toml) ;; *) die "$doc: agents pull TOML documents (.toml)" ;; esac
  node=$(header "$doc" node)
  version=$(header "$doc" version)
  [[ "$node" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] \
    || die "$doc: node ${node:-(missing)} is not a usable agent id (letters, digits, . _ -)"
  [[ "$version" =~ ^[0-9]+$ ]] || die "$doc: version ${version:-(missing)} is not an integer"
  dir="$root/api/v1/agents/$node"
  mkdir -p "$dir"
  chmod 0755 "$dir"

  if [ -f "$dir/config" ] && [ "$force" = 0 ]; then
    old=$(header "$dir/config" version)
    if [[ "$old" =~ ^[0-9]+$ ]] && [ "$version" -le "$old" ]; then
      die "$doc: version $version is not above version $old already published for $node (agents would refuse it as a replay; --force to publish anyway)"
    fi
  fi

  staged=$(mktemp "$dir/.config.XXXXXX")
  trap 'rm -f "$staged" "$staged.minisig"' EXIT
  cp "$doc" "$staged"
  minisign -S -s "$key" -m "$staged" -x "$staged.minisig" >/dev/null \
    || die "$doc: minisign could not sign it"
  if [ -n "$check" ]; then
    # --node: the agent's own parser must read the node this script read from the
    # header, or the document would be laid out under the wrong agent.
    args=(check "$staged" --signature "$staged.minisig" --node "$node")
    [ -z "$keys" ] || args+=(--trusted-keys "$keys")
    # $check may be a command with arguments ('cargo run -q -p kiwi --').
    # shellcheck disable=SC2086
    $check "${args[@]}" >&2 || die "$doc: rejected by '$check check'; not published"
  fi
  chmod 0644 "$staged" "$staged.minisig"

  # The document's mtime moves forward: mtime-size ETags must change.
  if [ -f "$dir/config" ]; then
    before=$(stat -c %Y "$dir/config")
    now=$(stat -c %Y "$staged")
    if [ "$now" -le "$before" ]; then
      touch -d "@$((before + 1))" "$staged"
    fi
  fi
  mv -f "$staged.minisig" "$dir/config.minisig"
  mv -f "$staged" "$dir/config"
  trap - EXIT
  echo "published $node version $version: $dir/config (+ .minisig)"
done
