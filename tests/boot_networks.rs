//! Networks as data centres wire them, booted in QEMU: IPv6-only (stateful DHCPv6 with router
//! advertisements, as Metal3 runs dnsmasq; SLAAC with RDNSS; static), dual stack, a tagged
//! VLAN on a trunk, an LACP bond, an active-backup bond that loses a link mid-install, the
//! PXE NIC among two (BOOTIF=), and a clock years off with a TLS registry and NTP. The
//! servers are the real ones (dnsmasq, chrony, docker-registry) in a network namespace of
//! the test's own ([`common::lab`]); the switch between them and the guest is a userspace one.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::lab::{Lab, Port, Switch, mac};
use common::vm::{Boot, Options, Vm};
use common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(420);

/// The image every test installs, and a blank disk for it.
fn image_and_disk(dir: &Path) -> (PathBuf, Vec<u8>, PathBuf) {
    let image = image_bytes(24 * MIB, 21);
    let source = write_file(dir, "disk.raw", &image);
    let disk = dir.join("vm-disk.img");
    fs::write(&disk, vec![0u8; 32 * MIB]).unwrap();
    (source, image, disk)
}

/// Boots with `nics` (netdev, MAC) and `words`, waits for the end; the VM, to read.
fn boot(disk: &Path, nics: Vec<(String, String)>, words: &str, options: Options) -> Vm {
    let append = format!("console=ttyS0 {words} dd.of=/dev/vda dd.bs=1M ocidd.reboot_delay=0");
    let options = Options { nics, ..options };
    Vm::start_with(
        "amd64",
        &[],
        &[(disk, "virtio-blk-pci")],
        Boot::Kernel { append: &append },
        options,
    )
}

fn assert_installed(vm: &mut Vm, disk: &Path, image: &[u8]) {
    vm.wait_exit(BOOT_LIMIT);
    let console = vm.ocidd_output();
    assert!(console.contains("ocidd: installed 24.00 MiB"), "{console}");
    assert!(
        read_prefix(disk, image.len()) == image,
        "the disk does not hold the image"
    );
}

/// Boots with the first `nics` ports of `switch` as NICs and `words`; asserts the install;
/// the console.
fn install_through(switch: &Switch, nics: usize, disk: &Path, image: &[u8], words: &str) -> String {
    let nics = (0..nics).map(|i| (switch.netdev(i), mac(i))).collect();
    let mut vm = boot(disk, nics, words, Options::default());
    assert_installed(&mut vm, disk, image);
    vm.ocidd_output()
}

/// A plain-HTTP registry on `host` in the lab, with the image pushed as `disks/vm:v1`.
fn serve_image(lab: &Lab, host: &str, source: &Path) -> Registry {
    lab.run(|| {
        let registry = Registry::start_at(host, None);
        push(source, &format!("{}/disks/vm:v1", registry.host()), "gzip");
        registry
    })
}

/// `ocidd push --ca CA`, for a registry in the lab that serves HTTPS.
fn push_with_ca(source: &Path, reference: &str, ca: &Path) {
    let pushed = Run::from(
        ocidd()
            .args(["push", "--ca"])
            .arg(ca)
            .arg(source)
            .arg(reference)
            .output()
            .unwrap(),
    );
    assert_eq!(pushed.code, 0, "push: {}", pushed.stderr);
}

/// The built initramfs with a site overlay of `files` (made by `ocidd overlay`) after it, as
/// boot loaders load the two, written to `to`.
fn initramfs_with_overlay(dir: &Path, files: &[(&Path, &str)], to: &Path) {
    let overlay = dir.join("site.img");
    let made = Run::from(
        ocidd()
            .args(["overlay", "--output"])
            .arg(&overlay)
            .args(
                files
                    .iter()
                    .map(|(file, at)| format!("{}={at}", file.display())),
            )
            .output()
            .unwrap(),
    );
    assert_eq!(made.code, 0, "overlay: {}", made.stderr);
    let (_, built) = common::vm::boot_files("amd64");
    fs::write(
        to,
        [fs::read(built).unwrap(), fs::read(&overlay).unwrap()].concat(),
    )
    .unwrap();
}

/// Two networks with a DHCP server each, 10.0.9.0/24 on the switch's port 0 and
/// 10.0.2.0/24 on port 1.
fn two_networks(lab: &mut Lab) -> Switch {
    let first = lab.tap("upa", &["10.0.9.1/24"]);
    let second = lab.tap("upb", &["10.0.2.2/24"]);
    lab.dnsmasq("upa", &["dhcp-range=10.0.9.50,10.0.9.99", "port=0"]);
    lab.dnsmasq("upb", &["dhcp-range=10.0.2.50,10.0.2.99", "port=0"]);
    Switch::start(
        vec![first, second],
        &[
            Port::default(),
            Port {
                uplink: 1,
                ..Port::default()
            },
        ],
    )
}

/// Metal3's dnsmasq: router advertisements and a stateful DHCPv6 range, nothing for IPv4; the
/// registry found by name through the DNS server DHCPv6 names, the NTP server it names asked.
#[test]
fn installs_on_an_ipv6_only_network_with_stateful_dhcpv6() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["fd00:5::1/64"]);
    lab.dnsmasq(
        "up0",
        &[
            "enable-ra",
            "dhcp-range=fd00:5::10,fd00:5::ff,64",
            "host-record=registry.lab,fd00:5::1",
            "dhcp-option=option6:ntp-server,[fd00:5::1]",
        ],
    );
    lab.ntp_server();
    let registry = serve_image(&lab, "[fd00:5::1]", &source);
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let console = install_through(
        &switch,
        1,
        &disk,
        &image,
        &format!(
            "oci.tag=registry.lab:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
    );
    assert!(console.contains("(DHCPv6)"), "{console}");
    let dns = console
        .lines()
        .find(|l| l.contains(": DNS "))
        .unwrap_or_default();
    assert!(dns.contains("fd00:5::1"), "{console}");
    // The NTP server DHCPv6 named (option 56) was asked; this guest's clock is right.
    assert!(
        console.contains("ocidd: the clock is right (within") && console.contains("of fd00:5::1)"),
        "{console}"
    );
    eprintln!("{console}");
}

/// BOOTIF= as iPXE writes it (`01-${net0/mac:hexhyp}`).
fn bootif(mac: &str) -> String {
    format!("BOOTIF=01-{}", mac.replace(':', "-"))
}

/// SLAAC only (dnsmasq's `ra-only`: no DHCPv6), and the DNS server only in the
/// advertisement's RDNSS option (dnsmasq's own link-local address): the registry is found by
/// name through it.
#[test]
fn installs_with_slaac_and_the_dns_server_the_router_advertises() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["fd00:6::1/64"]);
    lab.dnsmasq(
        "up0",
        &[
            "enable-ra",
            "dhcp-range=fd00:6::,ra-only",
            "host-record=registry.lab,fd00:6::1",
        ],
    );
    let registry = serve_image(&lab, "[fd00:6::1]", &source);
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let console = install_through(
        &switch,
        1,
        &disk,
        &image,
        &format!(
            "oci.tag=registry.lab:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
    );
    assert!(console.contains("/64 (SLAAC)"), "{console}");
    assert!(console.contains("DNS fe80::"), "{console}");
    assert!(!console.contains("(DHCP from"), "{console}");
}

/// A static IPv6 address in dracut's bracketed form, the registry named through the
/// nameserver= given beside it (dnsmasq as a DNS server only: no DHCP, no advertisements).
#[test]
fn installs_with_a_static_ipv6_address_and_a_nameserver_word() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["fd00:7::1/64"]);
    lab.dnsmasq("up0", &["host-record=registry.lab,fd00:7::1"]);
    let registry = serve_image(&lab, "[fd00:7::1]", &source);
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let console = install_through(
        &switch,
        1,
        &disk,
        &image,
        &format!(
            "ip=[fd00:7::10]::[fd00:7::1]:64::eth0:none nameserver=[fd00:7::1] oci.tag=registry.lab:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
    );
    assert!(
        console.contains("eth0: fd00:7::10/64 (static, from ip=)"),
        "{console}"
    );
    assert!(console.contains("default via fd00:7::1"), "{console}");
}

/// DHCPv4 and SLAAC on one network: both addresses are configured, and the install reaches
/// the registry's IPv6 address.
#[test]
fn installs_on_a_dual_stack_network_with_both_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.8.1/24", "fd00:8::1/64"]);
    lab.dnsmasq(
        "up0",
        &[
            "enable-ra",
            "dhcp-range=10.0.8.50,10.0.8.99",
            "dhcp-range=fd00:8::,ra-only",
            "port=0",
        ],
    );
    let (registry, receiver) = lab.run(|| {
        let registry = Registry::start_at("[fd00:8::1]", None);
        push(&source, &format!("{}/disks/vm:v1", registry.host()), "gzip");
        (registry, common::receiver::Receiver::start_on("0.0.0.0:0"))
    });
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let console = install_through(
        &switch,
        1,
        &disk,
        &image,
        &format!(
            "oci.tag=[fd00:8::1]:{}/disks/vm:v1 oci.allow_no_tls ocidd.report=http://10.0.8.1:{}/events",
            registry.port, receiver.port
        ),
    );
    assert!(console.contains("(DHCP from 10.0.8.1)"), "{console}");
    assert!(console.contains("/64 (SLAAC)"), "{console}");
    // The status reports say which addresses the machine used.
    let events = receiver.events();
    let last = events.last().expect("status events");
    let addresses = last["node"]["addresses"].to_string();
    assert!(
        addresses.contains("\"10.0.8.") && addresses.contains("\"fd00:8::"),
        "{addresses}"
    );
}

/// The provisioning network as VLAN 100 on a trunk that drops untagged frames.
fn vlan_trunk(lab: &mut Lab, source: &Path) -> (Registry, Switch) {
    let uplink = lab.tap("up0", &["10.0.2.2/24"]);
    lab.dnsmasq("up0", &["dhcp-range=10.0.2.50,10.0.2.99", "port=0"]);
    let registry = serve_image(lab, "10.0.2.2", source);
    let trunk = Port {
        vlan: Some(100),
        ..Port::default()
    };
    (registry, Switch::start(vec![uplink], &[trunk]))
}

#[test]
fn installs_over_a_tagged_vlan_and_without_vlan_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let (registry, switch) = vlan_trunk(&mut lab, &source);
    let tag = format!(
        "oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
        registry.port
    );
    // Without vlan=, nothing answers: the message says what was tried and what would help.
    let mut vm = boot(
        &disk,
        vec![(switch.netdev(0), mac(0))],
        &format!("{tag} ocidd.net_timeout=20"),
        Options::default(),
    );
    vm.wait_for(
        "ocidd: error: no interface got an address in 20 s",
        BOOT_LIMIT,
    );
    let console = vm.ocidd_output();
    let error = console
        .lines()
        .find(|l| l.starts_with("ocidd: error:"))
        .unwrap_or_default();
    assert!(
        error.contains("eth0: no DHCP offer") && error.contains("no router advertisement"),
        "{error}"
    );
    assert!(
        error.contains("vlan=NAME:PARENT") && error.contains("bond="),
        "{error}"
    );
    assert!(switch.dropped(0) > 0);
    drop(vm);
    // With it, the install runs over VLAN 100.
    let console = install_through(
        &switch,
        1,
        &disk,
        &image,
        &format!("{tag} vlan=eth0.100:eth0"),
    );
    assert!(
        console.contains("ocidd: eth0.100: VLAN 100 on eth0"),
        "{console}"
    );
    assert!(console.contains("eth0.100: 10.0.2."), "{console}");
    assert!(console.contains("(DHCP from 10.0.2.2)"), "{console}");
}

/// Two NICs in one LACP aggregation, on switch ports that forward nothing before they saw
/// LACPDUs: the bond negotiates, then installs. A VLAN on the bond, as trunks carry it.
#[test]
fn installs_over_an_lacp_bond_with_a_vlan_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.2.2/24"]);
    lab.dnsmasq("up0", &["dhcp-range=10.0.2.50,10.0.2.99", "port=0"]);
    let registry = serve_image(&lab, "10.0.2.2", &source);
    let member = Port {
        vlan: Some(30),
        group: Some(0),
        lacp: true,
        ..Port::default()
    };
    let switch = Switch::start(vec![uplink], &[member, member]);
    let console = install_through(
        &switch,
        2,
        &disk,
        &image,
        &format!(
            "bond=bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast vlan=vlan30:bond0 oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
    );
    assert!(
        console.contains(
            "ocidd: bond0: a bond of eth0, eth1 (mode=802.3ad,miimon=100,lacp_rate=fast)"
        ),
        "{console}"
    );
    assert!(console.contains("vlan30: 10.0.2."), "{console}");
    assert!(switch.lacpdus(0) > 0 && switch.lacpdus(1) > 0);
    eprintln!("{console}");
}

/// An active-backup bond whose active link is cut while the image is being fetched: the
/// bond fails over and the install completes.
#[test]
fn an_active_backup_bond_survives_a_link_cut_mid_install() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(96 * MIB, 22);
    let source = write_file(dir.path(), "disk.raw", &image);
    let disk = dir.path().join("vm-disk.img");
    fs::write(&disk, vec![0u8; 100 * MIB]).unwrap();
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.2.2/24"]);
    lab.dnsmasq("up0", &["dhcp-range=10.0.2.50,10.0.2.99", "port=0"]);
    let registry = serve_image(&lab, "10.0.2.2", &source);
    let member = Port {
        group: Some(0),
        ..Port::default()
    };
    let switch = Switch::start(vec![uplink], &[member, member]);
    let mut vm = boot(
        &disk,
        vec![(switch.netdev(0), mac(0)), (switch.netdev(1), mac(1))],
        &format!(
            "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
        Options {
            monitor: true,
            ..Options::default()
        },
    );
    vm.wait_for("ocidd: writing onto /dev/vda", BOOT_LIMIT);
    // The active link is the one the guest sends on.
    let active = if switch.passed(0) >= switch.passed(1) {
        0
    } else {
        1
    };
    let before = switch.passed(1 - active);
    vm.monitor(&format!("set_link net{active} off"));
    vm.wait_exit(BOOT_LIMIT);
    let console = vm.ocidd_output();
    assert!(console.contains("ocidd: installed 96.00 MiB"), "{console}");
    assert!(
        read_prefix(&disk, image.len()) == image,
        "the disk does not hold the image"
    );
    assert!(
        switch.passed(1 - active) > before,
        "nothing went over the backup link after the cut"
    );
}

/// Two NICs on two networks, each with a DHCP server; the registry is only on the second.
/// BOOTIF= names the second (renamed by ifname=, as a site may): only it is configured, and
/// the first network's server never hears from the machine.
#[test]
fn bootif_picks_the_nic_the_machine_booted_from() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let switch = two_networks(&mut lab);
    let registry = serve_image(&lab, "10.0.2.2", &source);
    let console = install_through(
        &switch,
        2,
        &disk,
        &image,
        &format!(
            "ifname=prov0:{} {} oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
            mac(1),
            bootif(&mac(1)),
            registry.port
        ),
    );
    assert!(
        console.contains("ocidd: configuring prov0 (DHCP, IPv6)"),
        "{console}"
    );
    assert!(console.contains("prov0: 10.0.2."), "{console}");
    let first_log = lab.dnsmasq_log("upa");
    assert!(!first_log.contains("DHCPDISCOVER"), "{first_log}");
}

/// A TLS registry (its certificate valid for two days from now) on a network with an NTP
/// server, and a guest whose clock says 2005: the CA comes in a site overlay.
struct ClockLab {
    /// Held for its servers, which live as long as it does.
    _lab: Lab,
    switch: Switch,
    registry: Registry,
    initrd: PathBuf,
    image: Vec<u8>,
    disk: PathBuf,
    _dir: tempfile::TempDir,
}

fn clock_lab(dhcp_names_ntp: bool, ntp_server: bool) -> ClockLab {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let (ca, certificate, key) = certificates(dir.path());
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.2.2/24"]);
    let mut settings = vec!["dhcp-range=10.0.2.50,10.0.2.99", "port=0"];
    if dhcp_names_ntp {
        settings.push("dhcp-option=option:ntp-server,10.0.2.2");
    }
    lab.dnsmasq("up0", &settings);
    if ntp_server {
        lab.ntp_server();
    }
    let registry = lab.run(|| {
        let registry = Registry::start_at("10.0.2.2", Some((certificate, key)));
        push_with_ca(&source, &format!("{}/disks/vm:v1", registry.host()), &ca);
        registry
    });
    let initrd = dir.path().join("initrd.img");
    initramfs_with_overlay(dir.path(), &[(&ca, "/etc/ocidd/ca.pem")], &initrd);
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    ClockLab {
        _lab: lab,
        switch,
        registry,
        initrd,
        image,
        disk,
        _dir: dir,
    }
}

impl ClockLab {
    fn boot(&self, words: &str) -> Vm {
        boot(
            &self.disk,
            vec![(self.switch.netdev(0), mac(0))],
            &format!(
                "oci.tag=10.0.2.2:{}/disks/vm:v1 oci.ca=/etc/ocidd/ca.pem {words}",
                self.registry.port
            ),
            Options {
                extra: vec!["-rtc".into(), "base=2005-01-01".into()],
                initrd: Some(self.initrd.clone()),
                ..Options::default()
            },
        )
    }
}

#[test]
fn a_clock_years_off_is_set_from_ntp_before_tls() {
    // The NTP server DHCP names.
    let site = clock_lab(true, true);
    let mut vm = site.boot("");
    assert_installed(&mut vm, &site.disk, &site.image);
    let console = vm.ocidd_output();
    assert!(
        console.contains("ocidd: the clock was ") && console.contains(" days behind; set from"),
        "{console}"
    );
    assert!(console.contains("set from 10.0.2.2"), "{console}");
    eprintln!("{console}");
    drop(vm);
    drop(site);
    // ocidd.ntp=, with no NTP option from DHCP.
    let site = clock_lab(false, true);
    let mut vm = site.boot("ocidd.ntp=10.0.2.2");
    assert_installed(&mut vm, &site.disk, &site.image);
    assert!(vm.ocidd_output().contains("set from 10.0.2.2"));
}

#[test]
fn without_an_ntp_server_a_clock_years_off_is_named_as_the_cause() {
    let site = clock_lab(false, false);
    let mut vm = site.boot("");
    vm.wait_for("ocidd: error:", BOOT_LIMIT);
    // The rest of the error line.
    std::thread::sleep(Duration::from_millis(500));
    let console = vm.ocidd_output();
    let error = console
        .lines()
        .find(|l| l.starts_with("ocidd: error:"))
        .unwrap_or_default();
    assert!(
        error.contains("not valid yet by this machine's clock, which says")
            && error.contains("2005")
            && error.contains("ocidd.ntp="),
        "{error}"
    );
    eprintln!("{error}");
}

/// A snippet of the docs (a fenced block holding `marker`), as written there.
fn doc_snippet(marker: &str) -> String {
    let page =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/booting.md")).unwrap();
    page.split("```")
        .skip(1)
        .step_by(2)
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("no snippet with {marker:?} in docs/booting.md"))
        .trim_start_matches('\n')
        .to_string()
}

/// Two networks, each with a DHCP server: the first NIC's has the boot files (TFTP and
/// HTTP), the (HTTPS) registry, and a site overlay with its CA after the initramfs; the
/// second's has nothing else.
struct BootSite {
    lab: Lab,
    switch: Switch,
    registry: Registry,
    files: common::files::FileServer,
    root: PathBuf,
    image: Vec<u8>,
    dir: tempfile::TempDir,
}

fn boot_site(bootfile: impl Fn(u16) -> String) -> BootSite {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, _) = image_and_disk(dir.path());
    let (ca, certificate, key) = certificates(dir.path());
    let mut lab = Lab::new();
    let provisioning = lab.tap("upb", &["10.0.2.2/24"]);
    let other = lab.tap("upa", &["10.0.9.1/24"]);
    let root = dir.path().join("boot");
    fs::create_dir_all(&root).unwrap();
    let (registry, files) = lab.run(|| {
        let registry = Registry::start_at("10.0.2.2", Some((certificate, key)));
        push_with_ca(&source, &format!("{}/disks/base:v1", registry.host()), &ca);
        (
            registry,
            common::files::FileServer::start_on(&root, "0.0.0.0:0"),
        )
    });
    lab.dnsmasq(
        "upb",
        &[
            "dhcp-range=10.0.2.50,10.0.2.99",
            "port=0",
            "enable-tftp",
            &format!("tftp-root={}", root.display()),
            &format!("dhcp-boot={}", bootfile(files.port)),
        ],
    );
    lab.dnsmasq("upa", &["dhcp-range=10.0.9.50,10.0.9.99", "port=0"]);
    // The site's CA, as a site overlay after the initramfs (served under the same name).
    let defaults = write_file(dir.path(), "cmdline", b"oci.ca=/etc/ocidd/ca.pem\n");
    initramfs_with_overlay(
        dir.path(),
        &[
            (&ca, "/etc/ocidd/ca.pem"),
            (&defaults, "/etc/ocidd/cmdline"),
        ],
        &root.join("initramfs-amd64.img"),
    );
    let (kernel, _) = common::vm::boot_files("amd64");
    fs::copy(kernel, root.join("vmlinuz-amd64")).unwrap();
    let switch = Switch::start(
        vec![provisioning, other],
        &[
            Port::default(),
            Port {
                uplink: 1,
                ..Port::default()
            },
        ],
    );
    BootSite {
        lab,
        switch,
        registry,
        files,
        root,
        image,
        dir,
    }
}

impl BootSite {
    /// `snippet` with the example hosts replaced, and no countdown before the reboot.
    fn localize(&self, snippet: &str) -> String {
        let text = snippet
            .replace(
                "oci.tag=registry.example.com/",
                &format!("oci.tag=10.0.2.2:{}/", self.registry.port),
            )
            .replace("boot.example.com", &format!("10.0.2.2:{}", self.files.port));
        assert!(!text.contains("example.com"), "{text}");
        text.replace(" console=tty0", " ocidd.reboot_delay=0 console=tty0")
    }

    /// Boots through the firmware's network boot (SeaBIOS, QEMU's iPXE ROM) with the two
    /// NICs; the install must use only the first.
    fn boot_and_check(&self, what: &str) {
        let disk = self.dir.path().join("disk.img");
        fs::write(&disk, vec![0u8; 32 * MIB]).unwrap();
        let mut vm = Vm::start_with(
            "amd64",
            &[],
            &[(&disk, "ide-hd,bus=ide.0")],
            Boot::Network {
                firmware: common::vm::Firmware::Bios,
                bootfile: "",
                tftp: None,
            },
            Options {
                nics: vec![
                    (self.switch.netdev(0), mac(0)),
                    (self.switch.netdev(1), mac(1)),
                ],
                ..Options::default()
            },
        );
        vm.wait_exit(BOOT_LIMIT);
        let console = vm.ocidd_output();
        assert!(
            console.contains("ocidd: installed 24.00 MiB"),
            "{what}: {console}"
        );
        assert!(
            read_prefix(&disk, self.image.len()) == self.image,
            "{what}: the disk does not hold the image"
        );
        assert!(
            console.contains("ocidd: configuring eth0 (DHCP, IPv6)"),
            "{what}: {console}"
        );
        assert!(!console.contains("eth1"), "{what}: {console}");
        let other_log = self.lab.dnsmasq_log("upa");
        assert!(!other_log.contains("DHCPDISCOVER"), "{what}: {other_log}");
    }
}

/// The docs' iPXE script with `BOOTIF=01-${net0/mac:hexhyp}`: iPXE boots from the first
/// NIC, and /init configures only it.
#[test]
fn the_docs_ipxe_bootif_script_configures_only_the_nic_ipxe_booted_from() {
    let site = boot_site(|port| format!("http://10.0.2.2:{port}/ocidd.ipxe"));
    let script = site.localize(&doc_snippet("BOOTIF=01-${net0/mac:hexhyp}"));
    fs::write(site.root.join("ocidd.ipxe"), script).unwrap();
    site.boot_and_check("iPXE");
}

/// The docs' PXELINUX entry with `IPAPPEND 2`, from dnsmasq's TFTP server.
#[test]
fn the_docs_pxelinux_ipappend_entry_configures_only_the_nic_it_booted_from() {
    let site = boot_site(|_| "pxelinux.0".to_string());
    fs::copy("/usr/lib/PXELINUX/pxelinux.0", site.root.join("pxelinux.0")).unwrap();
    fs::copy(
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        site.root.join("ldlinux.c32"),
    )
    .unwrap();
    fs::create_dir_all(site.root.join("pxelinux.cfg")).unwrap();
    let config = site.localize(&doc_snippet("IPAPPEND 2"));
    fs::write(site.root.join("pxelinux.cfg/default"), config).unwrap();
    site.boot_and_check("PXELINUX");
}

/// `ip=` naming two interfaces configures both (dracut's meaning), not the first to answer.
#[test]
fn ip_words_that_name_two_interfaces_configure_both() {
    let dir = tempfile::tempdir().unwrap();
    let (source, image, disk) = image_and_disk(dir.path());
    let mut lab = Lab::new();
    let switch = two_networks(&mut lab);
    let registry = serve_image(&lab, "10.0.2.2", &source);
    let console = install_through(
        &switch,
        2,
        &disk,
        &image,
        &format!(
            "ip=eth0:dhcp ip=eth1:dhcp oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        ),
    );
    assert!(
        console.contains("ocidd: configuring eth0 (DHCP); eth1 (DHCP)"),
        "{console}"
    );
    assert!(console.contains("eth0: 10.0.9."), "{console}");
    assert!(console.contains("eth1: 10.0.2."), "{console}");
}

/// Words that name what the machine does not have stop the boot before any network, with
/// one line naming the word and what there is.
#[test]
fn network_words_naming_what_is_not_there_stop_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, disk) = image_and_disk(dir.path());
    for (words, expected) in [
        (
            "BOOTIF=01-52-54-00-ff-ff-ff",
            "BOOTIF=52:54:00:ff:ff:ff: no NIC has that MAC address (NICs: eth0 52:54:00:12:34:56)",
        ),
        (
            "ip=eth5:dhcp",
            "ip= names eth5, which is not an interface here (interfaces: eth0 52:54:00:12:34:56)",
        ),
        (
            "bond=bond0:eth0,eth7",
            "bond=bond0: there is no interface eth7",
        ),
    ] {
        let mut vm = Vm::boot(
            "amd64",
            &disk,
            &format!("console=ttyS0 {words} oci.tag=10.0.2.2:1/disks/vm:v1 dd.of=/dev/vda"),
        );
        vm.wait_for("ocidd: error:", BOOT_LIMIT);
        std::thread::sleep(Duration::from_millis(500));
        let console = vm.ocidd_output();
        let error = console
            .lines()
            .find(|l| l.starts_with("ocidd: error:"))
            .unwrap_or_default();
        assert_eq!(
            error.trim_end(),
            format!("ocidd: error: {expected}"),
            "{words}"
        );
        assert!(!console.contains("installed"), "{console}");
    }
}
