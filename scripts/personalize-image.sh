#!/usr/bin/env bash
# Give one node its Kahuna credentials in an already built disk image, without
# rebuilding it and without mounting anything.
#
#   scripts/personalize-image.sh IMAGE.raw --kahuna URL --agent-id ID --api-key-file FILE
#        [--pubkey BASE64]... [--config-url URL] [--interval S]
#        [--confirm-window S] [--ca-file PATH] [--insecure] [--cmdline "EXTRA ARGS"]
#        [--ceph-key CLIENT=FILE]...      (a Kaktus node's cephx keys, for rbd pools)
#
# Writes one file to the image's EFI system partition (with mtools, in place):
#   /loader/addons/kowabunga.addon.efi
#       a UKI command-line add-on: systemd-stub appends its command line
#       (kowabunga.kahuna=, kowabunga.agent_id=, kowabunga.api_key= and the
#       other options given) to the UKI's own. It lives outside the UKI, so it
#       survives an A/B update of the UKI; running the script again replaces it.
# On first boot the agent persists the credentials (0600) under /var, so a
# later boot works even without the add-on.
#
# The API key is on the kernel command line: readable in /proc/cmdline by
# root and in the kernel log of the node. The ESP is not encrypted either, so
# the image file itself must be handled as a secret once personalized. (A
# systemd credential on the ESP would keep it out of the command line, but
# the image's systemd only accepts encrypted ones there, and the build host's
# systemd-creds 254 cannot make the null-key ones: see docs/images.md.)
# A Raspberry Pi card image (ROLE-VERSION-rpi4.img, build-image.sh --board rpi4) has no
# UKI: there the keys are written into cmdline.txt on its FAT partition instead (the
# kowabunga.* words already there are replaced, every other byte of the card is left
# as it is), which is also what an operator can do by hand with a text editor.
# IMAGE must be the .raw disk (a qcow2 cannot be edited in place: personalize
# the .raw, then `qemu-img convert -c -O qcow2` it). With Secure Boot enabled
# the add-on must be signed by a key the firmware trusts (not done here).
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

die() { printf 'personalize-image: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'personalize-image: %s\n' "$*" >&2; }

image="" kahuna="" agent_id="" key_file="" config_url="" interval="" confirm="" ca_file="" insecure=0 extra=""
pubkeys=() ceph_keys=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kahuna|--agent-id|--api-key-file|--pubkey|--config-url|--interval|--confirm-window|--ca-file|--cmdline|--ceph-key)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --kahuna) kahuna=$2 ;; --agent-id) agent_id=$2 ;; --api-key-file) key_file=$2 ;;
        --pubkey) pubkeys+=("$2") ;; --config-url) config_url=$2 ;;
        --interval) interval=$2 ;; --confirm-window) confirm=$2 ;; --ca-file) ca_file=$2 ;;
        --cmdline) extra=$2 ;; --ceph-key) ceph_keys+=("$2") ;;
      esac
      shift 2 ;;
    --insecure) insecure=1; shift ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$image" ] || die "only one IMAGE may be given"; image=$1; shift ;;
  esac
done

# ---- validate everything before touching the image ----------------------------
[ -n "$image" ] || die "missing IMAGE (a .raw disk built by scripts/build-image.sh)"
[ -f "$image" ] || die "image '$image' does not exist"
[ -w "$image" ] || die "image '$image' is not writable"
[ -n "$kahuna" ] || die "missing --kahuna URL"
[ -n "$agent_id" ] || die "missing --agent-id ID"
[ -n "$key_file" ] || die "missing --api-key-file FILE"
case "$kahuna" in https://?*|http://?*) ;; *) die "--kahuna '$kahuna' is not an http(s) URL" ;; esac
case "$kahuna" in http://*) [ "$insecure" = 1 ] || die "--kahuna '$kahuna' is plain http: the agent refuses it unless --insecure is given" ;; esac
case "$agent_id" in *[!A-Za-z0-9._:-]*) die "--agent-id '$agent_id' has characters other than letters, digits and ._:-" ;; esac
[ -r "$key_file" ] || die "--api-key-file '$key_file' is not a readable file"
key=$(tr -d '\r\n' < "$key_file")
[ -n "$key" ] || die "--api-key-file '$key_file' is empty"
case "$key" in *[!\!-~]*) die "--api-key-file '$key_file': the key must be printable ASCII without spaces" ;; esac
for v in "$interval" "$confirm"; do
  case "$v" in ""|*[!0-9]*) [ -z "$v" ] || die "--interval/--confirm-window take whole seconds (got '$v')" ;; esac
done
for k in "${pubkeys[@]}"; do
  case "$k" in *[!A-Za-z0-9+/=]*|"") die "--pubkey '$k' is not base64 (the second line of a minisign .pub file)" ;; esac
done
case "$extra" in *kowabunga.api_key*) die "--cmdline must not carry kowabunga.api_key (use --api-key-file)" ;; esac
case "$extra" in *kowabunga.ceph_key*|*kowabunga.ceph-key*) die "--cmdline must not carry kowabunga.ceph_key (use --ceph-key CLIENT=FILE)" ;; esac
ceph_args=""
for spec in "${ceph_keys[@]}"; do
  client=${spec%%=*} file=${spec#*=}
  [ "$client" != "$spec" ] && [ -n "$client" ] || die "--ceph-key '$spec' is not CLIENT=FILE"
  case "$client" in -*|.*|*[!A-Za-z0-9_.-]*) die "--ceph-key: client '$client' is not a Ceph name (letters, digits, _ - .)" ;; esac
  [ -r "$file" ] || die "--ceph-key $client: '$file' is not a readable file"
  ckey=$(tr -d '\r\n' < "$file")
  case "$ckey" in ""|*[!A-Za-z0-9+/=]*) die "--ceph-key $client: '$file' does not hold a base64 key (as \`ceph auth get-key client.$client\` prints it)" ;; esac
  printf '%s' "$ckey" | base64 -d >/dev/null 2>&1 \
    || die "--ceph-key $client: '$file' does not hold a base64 key (as \`ceph auth get-key client.$client\` prints it)"
  ceph_args+=" kowabunga.ceph_key=$client:$ckey"
done

for tool in sfdisk mmd mcopy mdir; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh --for qemu)"
done
ukify=/usr/lib/systemd/ukify

# ---- locate the ESP -------------------------------------------------------------
esp=$(sfdisk --json "$image" 2>/dev/null | /usr/bin/python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
if t.get("label") != "gpt":
    sys.exit("not a GPT disk")
ss = t.get("sectorsize", 512)
for p in t["partitions"]:
    if p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B":
        print(p["start"] * ss)
        break
') || die "'$image' is not a GPT disk image (is it a qcow2? personalize the .raw)"
[ -n "$esp" ] || die "'$image' has no EFI system partition"
img="$image@@$esp"
board=0
if mdir -i "$img" ::/config.txt >/dev/null 2>&1 && mdir -i "$img" ::/cmdline.txt >/dev/null 2>&1; then
  board=1
else
  mdir -i "$img" ::/loader >/dev/null 2>&1 || die "the ESP of '$image' has no /loader directory (nor a Raspberry Pi's config.txt and cmdline.txt): not a Kowabunga image?"
  [ -e "$ukify" ] || die "$ukify not found (systemd-boot from bookworm-backports: scripts/install-deps.sh --for qemu)"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- the node's command line -------------------------------------------------------
cmdline="kowabunga.kahuna=$kahuna kowabunga.agent_id=$agent_id kowabunga.api_key=$key"
[ -z "$config_url" ] || cmdline+=" kowabunga.config_url=$config_url"
for k in "${pubkeys[@]}"; do cmdline+=" kowabunga.pubkey=$k"; done
[ -z "$interval" ] || cmdline+=" kowabunga.interval=$interval"
[ -z "$confirm" ] || cmdline+=" kowabunga.confirm_window=$confirm"
[ -z "$ca_file" ] || cmdline+=" kowabunga.ca_file=$ca_file"
[ "$insecure" = 0 ] || cmdline+=" kowabunga.insecure"
[ -z "$ceph_args" ] || cmdline+="$ceph_args"
[ -z "$extra" ] || cmdline+=" $extra"

# ---- a Raspberry Pi card: cmdline.txt ----------------------------------------------------
if [ "$board" = 1 ]; then
  mcopy -n -i "$img" ::/cmdline.txt "$tmp/cmdline.old" || die "cannot read cmdline.txt from the card's FAT partition"
  # One line; the image's own words kept, earlier kowabunga.* keys replaced.
  kept=$(tr -s ' \r\n\t' '\n\n\n\n' < "$tmp/cmdline.old" | grep -v -e '^kowabunga\.' -e '^$' | tr '\n' ' ')
  case "$kept" in *roothash=*) ;; *) die "cmdline.txt of '$image' has no roothash=: not a Kowabunga card image?" ;; esac
  printf '%s%s\n' "$kept" "$cmdline" > "$tmp/cmdline.txt"
  mcopy -o -i "$img" "$tmp/cmdline.txt" ::/cmdline.txt || die "cannot write cmdline.txt to the card's FAT partition"
  say "$image: node $agent_id, Kahuna $kahuna"
  say "  cmdline.txt: ${cmdline//$key/<api key>}"
  exit 0
fi

# ---- the add-on stub ---------------------------------------------------------------
# The image's own (its architecture, its systemd): /loader/kowabunga/ on the ESP
# (image/mkosi.finalize). Images built before it was there are x86-64: the host's.
stub_name=$(mdir -b -i "$img" ::/loader/kowabunga 2>/dev/null | sed -n 's#.*/\(addon[a-z0-9]*\.efi\.stub\)$#\1#p' | head -n1)
if [ -n "$stub_name" ]; then
  mcopy -n -i "$img" "::/loader/kowabunga/$stub_name" "$tmp/$stub_name" || die "cannot read /loader/kowabunga/$stub_name from the ESP"
  stub=$tmp/$stub_name
elif mdir -i "$img" ::/EFI/BOOT/BOOTX64.EFI >/dev/null 2>&1; then
  stub=/usr/lib/systemd/boot/efi/addonx64.efi.stub
  [ -e "$stub" ] || die "$stub not found (systemd-boot-efi from bookworm-backports: scripts/install-deps.sh --for qemu)"
else
  die "the ESP of '$image' has no add-on stub in /loader/kowabunga and is not an x86-64 image: rebuild it with scripts/build-image.sh"
fi

# ---- build the add-on -------------------------------------------------------------
/usr/bin/python3 "$ukify" build --stub "$stub" --cmdline "$cmdline" --output "$tmp/kowabunga.addon.efi" >/dev/null 2>"$tmp/ukify.log" \
  || { cat "$tmp/ukify.log" >&2; die "ukify could not build the command-line add-on"; }

# ---- write them to the ESP -----------------------------------------------------------
for d in ::/loader/addons; do
  mdir -i "$img" "$d" >/dev/null 2>&1 || mmd -i "$img" "$d" || die "cannot create $d on the ESP"
done
mcopy -o -i "$img" "$tmp/kowabunga.addon.efi" ::/loader/addons/kowabunga.addon.efi || die "cannot write the add-on to the ESP"
say "$image: node $agent_id, Kahuna $kahuna"
say "  add-on /loader/addons/kowabunga.addon.efi: ${cmdline//$key/<api key>}"
