//! The Raspberry Pi 4 card image (`scripts/build-image.sh kiwi --board rpi4`): its
//! firmware partition, personalization by `cmdline.txt`, and a boot on QEMU's `raspi4b`
//! with the kernel, device tree, initrd and command line taken from that partition.
//!
//! Outside CI (`scripts/test.sh --arm64` builds the card and runs these):
//! `KOWABUNGA_QEMU_TESTS=1 cargo test -p qemu-test --test board -- --ignored`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_test::artifacts::{self, ESP_TYPE};
use qemu_test::board::{self, CardImage};
use qemu_test::vm::{Arch, BOOT_BANNER, Boot, Vm, VmConfig};

const AGENT_ID: &str = "kiwi-rpi-01";
const API_KEY: &str = "kw-test-rpi-5d1e9b3a7c";
/// A raspi4b boot under TCG (four emulated cores on the machine's two) takes minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

/// What the Pi's firmware needs on the card, beside config.txt and cmdline.txt.
const FIRMWARE_FILES: [&str; 5] = [
    "/start4.elf",
    "/fixup4.dat",
    "/bcm2711-rpi-4-b.dtb",
    "/vmlinuz",
    "/initrd.img",
];

fn card() -> (CardImage, PathBuf) {
    assert!(
        qemu_test::enabled(),
        "set KOWABUNGA_QEMU_TESTS=1 (scripts/test.sh --arm64 does) to read and boot the card image"
    );
    let card = CardImage::find("kiwi").unwrap_or_else(|e| panic!("{e}"));
    (card, qemu_test::artifacts::dist_dir())
}

fn personalize(disk: &Path, dir: &Path, agent_id: &str) {
    let key = dir.join("api-key");
    std::fs::write(&key, format!("{API_KEY}\n")).unwrap_or_else(|e| panic!("{e}"));
    let key = key.display().to_string();
    artifacts::personalize(
        disk,
        &[
            "--kahuna",
            "http://10.0.2.100",
            "--agent-id",
            agent_id,
            "--api-key-file",
            &key,
            "--insecure",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn text(disk: &Path, path: &str) -> String {
    String::from_utf8(board::fat_read(disk, path).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{path} is not UTF-8: {e}"))
}

fn words(cmdline: &str) -> Vec<&str> {
    cmdline.split_whitespace().collect()
}

/// Whether the first `len` bytes of `a` and `b` are equal outside `[skip, skip+skip_len)`.
fn same_outside(a: &Path, b: &Path, len: u64, skip: (u64, u64)) -> Result<(), String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut pos = 0u64;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    while pos < len {
        let n = (len - pos).min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).map_err(|e| e.to_string())?;
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        for i in 0..n {
            let at = pos + i as u64;
            let in_skip = at >= skip.0 && at < skip.0 + skip.1;
            if !in_skip && ba[i] != bb[i] {
                return Err(format!("byte {at} differs (outside the FAT partition)"));
            }
        }
        pos += n as u64;
    }
    Ok(())
}

#[test]
#[ignore = "reads the rpi4 card image: scripts/test.sh --arm64"]
fn rpi4_card_has_its_firmware_partition_and_personalizing_edits_only_cmdline_txt() {
    let (card, _) = card();
    let dir = qemu_test::scratch_dir("rpi4_card");
    let files = board::fat_files(&card.img).unwrap_or_else(|e| panic!("{e}"));
    for f in FIRMWARE_FILES
        .iter()
        .chain(&["/config.txt", "/cmdline.txt"])
    {
        assert!(files.iter().any(|x| x == f), "{f} missing from {files:?}");
    }
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("/EFI/") || f.starts_with("/loader/")),
        "UEFI boot files left on the card's firmware partition: {files:?}"
    );

    let config = text(&card.img, "/config.txt");
    let settings: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in [
        "[pi4]",
        "arm_64bit=1",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
        "device_tree=bcm2711-rpi-4-b.dtb",
        "enable_uart=1",
    ] {
        assert!(
            settings.contains(&want),
            "config.txt lacks {want:?}:\n{config}"
        );
    }

    let shipped = text(&card.img, "/cmdline.txt");
    assert_eq!(
        shipped.lines().count(),
        1,
        "cmdline.txt is one line: {shipped:?}"
    );
    let shipped_words = words(&shipped);
    let roothash = shipped_words
        .iter()
        .find_map(|w| w.strip_prefix("roothash="))
        .unwrap_or_else(|| panic!("no roothash= in {shipped:?}"));
    assert!(
        roothash.len() == 64 && roothash.chars().all(|c| c.is_ascii_hexdigit()),
        "{roothash}"
    );
    assert!(shipped_words.contains(&"ro"), "{shipped}");
    assert!(
        !shipped.contains("kowabunga."),
        "an unpersonalized card carries no kowabunga.* key: {shipped}"
    );

    // Personalize a copy: cmdline.txt gains the keys after the image's own words...
    let copy = artifacts::grown_copy(&card.img, &dir, 4).unwrap_or_else(|e| panic!("{e}"));
    personalize(&copy, &dir, AGENT_ID);
    let edited = text(&copy, "/cmdline.txt");
    let edited_words = words(&edited);
    assert_eq!(&edited_words[..shipped_words.len()], &shipped_words[..]);
    for want in [
        "kowabunga.kahuna=http://10.0.2.100".to_owned(),
        format!("kowabunga.agent_id={AGENT_ID}"),
        format!("kowabunga.api_key={API_KEY}"),
        "kowabunga.insecure".to_owned(),
    ] {
        assert!(
            edited_words.contains(&want.as_str()),
            "{want} not in {edited}"
        );
    }
    // ...and nothing else changes: every other file of the partition, and every byte of
    // the card outside it.
    let after = board::fat_files(&copy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after, files, "the partition's file list changed");
    for f in files.iter().filter(|f| *f != "/cmdline.txt") {
        assert!(
            board::fat_read(&card.img, f).ok() == board::fat_read(&copy, f).ok(),
            "{f} changed"
        );
    }
    let fat = artifacts::partition_of_type(&copy, ESP_TYPE).unwrap_or_else(|e| panic!("{e}"));
    let len = std::fs::metadata(&card.img)
        .unwrap_or_else(|e| panic!("{e}"))
        .len();
    same_outside(&card.img, &copy, len, fat).unwrap_or_else(|e| panic!("{e}"));

    // Personalizing again replaces the keys rather than adding a second set.
    personalize(&copy, &dir, "kiwi-rpi-02");
    let again = text(&copy, "/cmdline.txt");
    let ids: Vec<&str> = words(&again)
        .into_iter()
        .filter(|w| w.starts_with("kowabunga.agent_id="))
        .collect();
    assert_eq!(ids, ["kowabunga.agent_id=kiwi-rpi-02"], "{again}");
    assert_eq!(&words(&again)[..shipped_words.len()], &shipped_words[..]);
}

/// QEMU's raspi4b lacks devices the Pi 4's device tree describes, and their drivers
/// fault on the missing registers: the HDMI block at 0x7ef00000 (an interrupt
/// controller, clocks, HDMI and its I2C). Its card sits on the Arasan SDHCI, whose node
/// waits for the Wi-Fi chip's power sequence (the firmware's GPIO expander, not
/// emulated). These edits are QEMU's, made to a copy; the card's own device tree is
/// what a Pi boots.
fn dtb_for_qemu(dtb: &Path) {
    let fdtput = |args: &[&str]| {
        let out = Command::new("fdtput")
            .arg(dtb)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("fdtput (device-tree-compiler): {e}"));
        assert!(
            out.status.success(),
            "fdtput {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for node in [
        "/soc/clock@7ef00000",
        "/soc/interrupt-controller@7ef00100",
        "/soc/hdmi@7ef00700",
        "/soc/i2c@7ef04500",
        "/soc/hdmi@7ef05700",
        "/soc/i2c@7ef09500",
    ] {
        fdtput(&["-t", "s", node, "status", "disabled"]);
    }
    fdtput(&["-d", "/soc/mmc@7e300000", "mmc-pwrseq"]);
}

#[test]
#[ignore = "boots the rpi4 card image on QEMU's raspi4b: scripts/test.sh --arm64"]
fn rpi4_card_boots_on_qemu_raspi4b_to_its_verity_root_and_the_agent_reads_cmdline_txt() {
    let (card, _) = card();
    let dir = qemu_test::scratch_dir("rpi4_boot");
    // QEMU's SD card must be a power of two; 2 GiB holds the B slot and /var, and keeps
    // the first boot's zeroing of them (emulated SD writes) short.
    let sd = artifacts::grown_copy(&card.img, &dir, 2).unwrap_or_else(|e| panic!("{e}"));
    personalize(&sd, &dir, AGENT_ID);
    let file = |name: &str| {
        let dest = dir.join(name);
        board::fat_copy_out(&sd, &format!("/{name}"), &dest).unwrap_or_else(|e| panic!("{e}"));
        dest
    };
    let (kernel, initrd, dtb) = (
        file("vmlinuz"),
        file("initrd.img"),
        file("bcm2711-rpi-4-b.dtb"),
    );
    dtb_for_qemu(&dtb);
    // The card's command line, and QEMU's first UART (the PL011) as the console the test
    // reads: on a Pi that UART drives Bluetooth, so the card names the GPIO header's.
    let cmdline = format!(
        "{} console=ttyAMA0,115200",
        text(&sd, "/cmdline.txt").trim()
    );
    let mut config = VmConfig::new(
        "rpi4",
        Boot::Raspi4 {
            kernel,
            dtb,
            initrd,
            cmdline,
            sd,
        },
    );
    config.arch = Arch::Aarch64;
    config.management_nic = false;
    let mut vm = Vm::start(&config, &dir).unwrap_or_else(|e| panic!("{e}"));
    let line = |vm: &mut Vm, needle: &str| {
        vm.wait_console(needle, BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    line(&mut vm, BOOT_BANNER);
    let root = line(&mut vm, "kowabunga: root ");
    assert!(
        root.contains("source=/dev/mapper/root fstype=erofs mode=ro"),
        "{root}"
    );
    let verity = line(&mut vm, "kowabunga: verity ");
    assert!(verity.contains("status=V"), "{verity}");
    // /var made by systemd-repart on the card's first boot.
    let var = line(&mut vm, "kowabunga: var ");
    assert!(
        var.contains("/dev/mmcblk0") && var.contains("ext4"),
        "{var}"
    );
    // The agent started with the credentials of cmdline.txt (no network here: it cannot
    // reach Kahuna) and knows it was not started by UEFI.
    let ready = line(&mut vm, "kowabunga: kiwi ready {");
    assert!(
        ready.contains(&format!("\"node\": \"{AGENT_ID}\"")),
        "{ready}"
    );
    assert!(ready.contains("\"boot\": \"board_firmware\""), "{ready}");
    assert!(
        !vm.console().contains(API_KEY),
        "the API key appeared on the console"
    );
    eprintln!(
        "rpi4 on raspi4b: agent ready after {:.0}s",
        vm.uptime().as_secs_f32()
    );
}
