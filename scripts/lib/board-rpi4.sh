# Sourced by scripts/build-image.sh --board rpi4 once mkosi has built the arm64 disk:
# turns it into a Raspberry Pi 4 card image and exits. The Pi's boot ROM and EEPROM
# bootloader read the first FAT partition of the card (a GPT card needs an EEPROM
# from 2020-09-03 or later), its config.txt, then load the kernel, initrd and device
# tree named there, with cmdline.txt as the kernel's command line. No UEFI: no
# systemd-boot, no UKI.
#
# Uses build-image.sh's variables (work, name, out, role, version, raw) and helpers.

stage "writing the Raspberry Pi 4 card image (firmware partition: config.txt, cmdline.txt)"
board_name="$role-$version-rpi4"
img="$out/$board_name.img"
rm -f "$out/$board_name".* "$out/SHA256SUMS"
cp --sparse=always "$raw" "$img"
# The FAT partition (mkosi's ESP): start and length in 512-byte sectors.
read -r esp_start esp_sectors < <(sfdisk --json "$img" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
assert t.get("sectorsize", 512) == 512, "512-byte sectors expected (SectorSize= in image/mkosi.conf)"
for p in t["partitions"]:
    if p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B":
        print(p["start"], p["size"])
        break
') && [ -n "${esp_sectors:-}" ] || die "no FAT (EFI system) partition in $raw"
fat="$img@@$(( esp_start * 512 ))"

# The UKI's command line carries roothash= (the verity root) and the image's
# options; the consoles are the Pi's: HDMI, then the GPIO header's mini UART (ttyS1
# with the mainline device tree), the last one being /dev/console.
uki=$(uki_cmdline "$work/out/$name.efi") || die "cannot read the UKI command line"
cmdline=$(printf '%s\n' "$uki" | tr ' ' '\n' | grep -v -e '^console=' -e '^$' | tr '\n' ' ')
cmdline="${cmdline}console=tty1 console=ttyS1,115200"
case "$cmdline" in *roothash=*) ;; *) die "no roothash= on the UKI command line" ;; esac

dtb=bcm2711-rpi-4-b.dtb
board_tmp=$(mktemp -d)
mkdir "$board_tmp/fat"
for f in start4.elf fixup4.dat "$dtb"; do
  mcopy -n -i "$fat" "::/$f" "$board_tmp/fat/$f" 2>/dev/null || die "the firmware partition has no $f (image/mkosi.postinst did not run?)"
done
# A new FAT32 file system in place of the ESP: what UEFI boots (systemd-boot, the UKI,
# the add-on stub) has no use here, and the freed space is zeros again (a hole in the
# sparse image), so the card and its .xz carry no stale UKI.
fallocate --punch-hole --offset $(( esp_start * 512 )) --length $(( esp_sectors * 512 )) "$img" \
  || die "cannot clear the firmware partition"
mformat -i "$fat" -T "$esp_sectors" -H "$esp_start" -h 64 -s 32 -F -v KOWABUNGA :: \
  || die "mformat of the firmware partition failed"
mcopy -i "$fat" "$board_tmp"/fat/* :: || die "cannot write the firmware to the firmware partition"
{
  printf '# Kowabunga OS %s %s for the Raspberry Pi 4 (64-bit), read by the Pi'"'"'s\n' "$role" "$version"
  printf '# firmware. The node'"'"'s credentials (kowabunga.* keys) go in cmdline.txt:\n'
  printf '# scripts/personalize-image.sh, or any text editor on a computer that mounts the card.\n'
  printf '[pi4]\narm_64bit=1\nupstream_kernel=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n'
  printf 'device_tree=%s\nenable_uart=1\ndisable_splash=1\n\n[all]\n' "$dtb"
} > "$board_tmp/config.txt"
printf '%s\n' "$cmdline" > "$board_tmp/cmdline.txt"
mcopy -o -i "$fat" "$work/out/$name.vmlinuz" ::/vmlinuz || die "cannot write the kernel to the firmware partition"
mcopy -o -i "$fat" "$work/out/$name.initrd" ::/initrd.img || die "cannot write the initrd to the firmware partition"
mcopy -o -i "$fat" "$board_tmp/config.txt" "$board_tmp/cmdline.txt" :: || die "cannot write config.txt and cmdline.txt"
rm -rf "$board_tmp"
say "cmdline.txt: $cmdline"
mdir -b -i "$fat" :: | sed 's#^::/#    firmware partition: #' >&2

stage "compressing the card image (xz)"
xz -T0 -6 -k -f "$img" || die "xz $img failed"

stage "checksums"
(cd "$out" && sha256sum "$board_name".img "$board_name".img.xz > SHA256SUMS)
for f in img img.xz; do
  say "$(printf '%-40s %8s KiB (allocated %s KiB)' "$board_name.$f" "$(( $(stat -c %s "$out/$board_name.$f") / 1024 ))" "$(du -k "$out/$board_name.$f" | cut -f1)")"
done
stage "done in $(( $(date +%s) - t0 ))s: $out"
exit 0
