#!/usr/bin/env bash
# Tests of scripts/make-update.sh on small fake files (no image build, a second or
# two): file names as the sysupdate transfer files expect them, SHA256SUMS, the
# minisign signature, the unsigned case, and what it refuses.
#
#   scripts/test-make-update.sh
#
# Needs zstd, minisign, sha256sum. Exit 0 when every check passes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mk="$repo/scripts/make-update.sh"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fails=0
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
check() { # DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >"$t/out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/     | /' "$t/out"; fi
}
refused() { # DESCRIPTION EXPECTED-MESSAGE-PART COMMAND...
  local what=$1 msg=$2; shift 2
  if "$@" >"$t/out" 2>&1; then
    fail "$what: accepted"
  elif grep -qF -- "$msg" "$t/out"; then
    ok "$what"
  else
    fail "$what: refused without naming '$msg'"; sed 's/^/     | /' "$t/out"
  fi
}

for tool in zstd minisign sha256sum; do
  command -v "$tool" >/dev/null || { echo "test-make-update: $tool not found" >&2; exit 1; }
done

head -c 300000 /dev/urandom > "$t/root.raw"
head -c 20000 /dev/urandom > "$t/verity.raw"
printf 'MZ fake uki\n' > "$t/uki.efi"
minisign -G -W -p "$t/update.pub" -s "$t/update.key" >/dev/null
hash=0123456789ABCDEF0123456789abcdeffedcba9876543210fedcba9876543210
args=(--role kiwi --version 0.1.1 --roothash "$hash" --root "$t/root.raw" --verity "$t/verity.raw" --uki "$t/uki.efi")

# Signed.
check "signed run succeeds" "$mk" "${args[@]}" --out "$t/u" --key "$t/update.key"
expected="SHA256SUMS
SHA256SUMS.minisig
kowabunga-kiwi_0.1.1_x86-64.efi.zst
kowabunga-kiwi_0.1.1_x86-64.root.01234567-89ab-cdef-0123-456789abcdef.raw.zst
kowabunga-kiwi_0.1.1_x86-64.verity.fedcba98-7654-3210-fedc-ba9876543210.raw.zst"
got=$(cd "$t/u" && LC_ALL=C ls -A)
if [ "$got" = "$expected" ]; then ok "file names (root and verity UUIDs are the root hash halves)"; else fail "file names"; diff <(echo "$expected") <(echo "$got") | sed 's/^/     | /'; fi
check "SHA256SUMS lists the three files and they match" \
  bash -c "cd '$t/u' && [ \$(wc -l < SHA256SUMS) = 3 ] && sha256sum --quiet -c SHA256SUMS"
check "SHA256SUMS.minisig verifies with the public key" minisign -V -q -p "$t/update.pub" -m "$t/u/SHA256SUMS"
check "the files decompress to the inputs" bash -c "
  zstd -dcq '$t/u/kowabunga-kiwi_0.1.1_x86-64.root.01234567-89ab-cdef-0123-456789abcdef.raw.zst' | cmp - '$t/root.raw' &&
  zstd -dcq '$t/u/kowabunga-kiwi_0.1.1_x86-64.verity.fedcba98-7654-3210-fedc-ba9876543210.raw.zst' | cmp - '$t/verity.raw' &&
  zstd -dcq '$t/u/kowabunga-kiwi_0.1.1_x86-64.efi.zst' | cmp - '$t/uki.efi'"
printf 'x' >> "$t/u/SHA256SUMS"
refused "a changed SHA256SUMS no longer verifies" "verification failed" minisign -V -p "$t/update.pub" -m "$t/u/SHA256SUMS"

# A second version into the same directory replaces the first, signature included.
check "unsigned run succeeds" env -u KOWABUNGA_UPDATE_KEY "$mk" "${args[@]/0.1.1/0.1.2}" --out "$t/u"
if grep -q 'NOT SIGNED' "$t/out" && grep -q 'nodes refuse' "$t/out"; then ok "unsigned: says nodes will refuse it"; else fail "unsigned: no warning"; sed 's/^/     | /' "$t/out"; fi
if [ ! -e "$t/u/SHA256SUMS.minisig" ] && ! ls "$t/u" | grep -q '0\.1\.1' && [ "$(ls "$t/u" | grep -c '_0\.1\.2_')" = 3 ]; then
  ok "unsigned: no .minisig, only the new version's files"
else
  fail "unsigned: directory holds $(ls "$t/u" | tr '\n' ' ')"
fi
check "key from KOWABUNGA_UPDATE_KEY" env KOWABUNGA_UPDATE_KEY="$t/update.key" "$mk" "${args[@]}" --out "$t/e"
[ -f "$t/e/SHA256SUMS.minisig" ] && ok "KOWABUNGA_UPDATE_KEY signs" || fail "KOWABUNGA_UPDATE_KEY did not sign"

# Refusals.
refused "version with '+' (the boot counter's separator)" "invalid version" "$mk" "${args[@]/0.1.1/0.1.1+b1}" --out "$t/r"
refused "version with '_' (the field separator)" "invalid version" "$mk" "${args[@]/0.1.1/0.1_1}" --out "$t/r"
refused "version not starting with a digit" "must start with a digit" "$mk" "${args[@]/0.1.1/v0.1.1}" --out "$t/r"
refused "label longer than GPT's 36 characters" "GPT allows 36" \
  "$mk" "${args[@]/kiwi/kontroller}" --out "$t/r" --version 0.1.1-rc.123
refused "a root hash that is not 64 hex digits" "not 64 hex digits" "$mk" "${args[@]/$hash/abc}" --out "$t/r"
refused "a missing input file" "missing or empty" "$mk" "${args[@]/uki.efi/nope.efi}" --out "$t/r"
refused "a missing key file" "no such file" "$mk" "${args[@]}" --out "$t/r" --key "$t/nope.key"
[ ! -e "$t/r" ] || [ -z "$(ls -A "$t/r")" ] && ok "nothing written by a refused run" || fail "a refused run left $(ls "$t/r")"

if [ "$fails" = 0 ]; then echo "test-make-update: all checks passed"; else echo "test-make-update: $fails check(s) failed"; exit 1; fi
