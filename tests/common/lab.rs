//! A network of the test's own for a QEMU guest: a network namespace holding the servers a
//! data centre has (dnsmasq for DHCPv4, router advertisements and DHCPv6; chrony for NTP;
//! docker-registry), reached through tap devices, and a switch in userspace between those
//! taps and the guest's NICs (QEMU's `dgram` netdevs). The host kernel has no bonding or
//! 8021q modules, so the switch side of a VLAN trunk or an LACP bond is built here: a port
//! can pass only frames tagged with its VLAN (and strip the tag), or forward only after it
//! saw LACPDUs. The guest's side is Debian's kernel, the real thing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

static LABS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace with servers in it.
pub struct Lab {
    pub name: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    pub fn new() -> Lab {
        let name = format!(
            "ocidd-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Lab {
            name,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// Runs `f` on a thread inside the namespace: the sockets it opens and the processes it
    /// starts are in the lab's network.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    let namespace = File::open(&path).expect("the lab's namespace");
                    // SAFETY: setns takes a valid open descriptor (`namespace` lives across the
                    // call) and changes only this thread's network namespace.
                    let done = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(done, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("a thread in the lab")
        })
    }

    /// `ip ARGS` in the lab.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A tap device in the lab with `addresses` (`10.0.5.1/24`, `fd00:5::1/64`), up; the
    /// descriptor that is its other end (for a [`Switch`] uplink).
    pub fn tap(&self, name: &str, addresses: &[&str]) -> File {
        let tap = self.run(|| open_tap(name));
        for address in addresses {
            let mut args = vec!["address", "add", address, "dev", name];
            if address.contains(':') {
                args.push("nodad");
            }
            self.ip(&args);
        }
        self.ip(&["link", "set", name, "up"]);
        tap
    }

    /// Starts `command` in the lab; it is killed with the lab.
    pub fn spawn(&mut self, command: &mut Command) {
        let child = self.run(|| {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting a server in the lab")
        });
        self.children.push(child);
    }

    /// dnsmasq on `interface` with `settings` (dnsmasq's long options without the dashes:
    /// `dhcp-range=10.0.5.50,10.0.5.99`, `enable-ra`). Its log (with the DHCP exchanges) is
    /// [`Lab::dnsmasq_log`]; its leases are in `leases-INTERFACE`.
    pub fn dnsmasq(&mut self, interface: &str, settings: &[&str]) {
        let log = self.dir.path().join(format!("dnsmasq-{interface}.log"));
        let leases = self.dir.path().join(format!("leases-{interface}"));
        let mut command = Command::new("dnsmasq");
        command
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--user=root",
            ])
            // Addresses that come later (the tap's link-local one, after DAD) are served too;
            // names under .lab are answered here, never forwarded.
            .args(["--bind-dynamic", "--log-dhcp", "--pid-file="])
            .args(["--no-resolv", "--no-hosts", "--local=/lab/"])
            .arg(format!("--interface={interface}"))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .args(settings.iter().map(|s| format!("--{s}")));
        self.spawn(&mut command);
        // dnsmasq is ready once it logged that it started.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(&log).is_ok_and(|l| l.contains("started")) {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {:?}",
                fs::read_to_string(&log)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What dnsmasq on `interface` logged.
    pub fn dnsmasq_log(&self, interface: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("dnsmasq-{interface}.log")))
            .unwrap_or_default()
    }

    /// chrony as an NTP server of its own clock (the host's, which is right), never setting
    /// the host's (`-x`).
    pub fn ntp_server(&mut self) {
        let dir = self.dir.path();
        let config = dir.join("chrony.conf");
        fs::write(
            &config,
            format!(
                "local stratum 8\nallow all\nport 123\ncmdport 0\npidfile {}\ndriftfile {}\n",
                dir.join("chronyd.pid").display(),
                dir.join("chrony.drift").display()
            ),
        )
        .unwrap();
        let mut command = Command::new("chronyd");
        command.args(["-x", "-d", "-f"]).arg(&config);
        self.spawn(&mut command);
        thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Opens a new tap device `name` (in this thread's namespace): Ethernet frames, no packet
/// information header.
fn open_tap(name: &str) -> File {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    #[repr(C)]
    struct InterfaceRequest {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut request = InterfaceRequest {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one struct ifreq (name, then flags, 40 bytes in all),
    // which `request` is laid out as and outlives the call; `tun` is an open descriptor.
    let done = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    assert_eq!(
        done,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    tun
}

/// One port of the switch, where a guest NIC plugs in.
#[derive(Clone, Copy, Debug, Default)]
pub struct Port {
    /// Which uplink (tap) its frames go to.
    pub uplink: usize,
    /// A trunk port: only frames tagged with this VLAN pass, the tag removed (and added on
    /// the way back); untagged frames are dropped.
    pub vlan: Option<u16>,
    /// Ports of one link aggregation: a frame from the uplink goes out on one of them (the
    /// one the guest sent from last), as a switch sends it once to a bond.
    pub group: Option<usize>,
    /// Forward nothing until the guest sent an LACPDU on this port (a switch whose LACP
    /// trunk is not up yet).
    pub lacp: bool,
}

#[derive(Default)]
struct State {
    lacp_seen: Vec<bool>,
    lacpdus: Vec<u64>,
    dropped: Vec<u64>,
    passed: Vec<u64>,
    /// Per group: the member the guest sent from last.
    last_member: Vec<Option<usize>>,
}

/// The switch between a guest's NICs and the lab's taps.
pub struct Switch {
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_SLOW: u16 = 0x8809;

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

impl Switch {
    pub fn start(uplinks: Vec<File>, ports: &[Port]) -> Switch {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Mutex::new(State {
            lacp_seen: vec![false; ports.len()],
            lacpdus: vec![0; ports.len()],
            dropped: vec![0; ports.len()],
            passed: vec![0; ports.len()],
            last_member: vec![None; ports.len()],
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let sockets: Vec<Arc<UnixDatagram>> = (0..ports.len())
            .map(|i| {
                let socket =
                    UnixDatagram::bind(dir.path().join(format!("switch{i}.sock"))).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                Arc::new(socket)
            })
            .collect();
        let guests: Vec<PathBuf> = (0..ports.len())
            .map(|i| dir.path().join(format!("guest{i}.sock")))
            .collect();
        let uplinks: Vec<Arc<Mutex<File>>> = uplinks
            .into_iter()
            .map(|f| Arc::new(Mutex::new(f)))
            .collect();
        let mut threads = Vec::new();
        // Guest to uplink.
        for (i, port) in ports.iter().copied().enumerate() {
            let socket = Arc::clone(&sockets[i]);
            let guest = guests[i].clone();
            let uplink = Arc::clone(&uplinks[port.uplink]);
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let mut buffer = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buffer) else {
                        continue;
                    };
                    if n < 14 {
                        continue;
                    }
                    let frame = &buffer[..n];
                    let mut state = state.lock().unwrap();
                    if ethertype(frame) == ETHERTYPE_SLOW {
                        // Slow protocols (LACP, marker) end at the switch, which answers
                        // LACPDUs as an LACP partner on the ports that speak it.
                        if frame.get(14) == Some(&1) && n >= 56 {
                            state.lacp_seen[i] = true;
                            state.lacpdus[i] += 1;
                            if port.lacp {
                                let _ = socket.send_to(&lacp_answer(frame, i), &guest);
                            }
                        }
                        continue;
                    }
                    if port.lacp && !state.lacp_seen[i] {
                        state.dropped[i] += 1;
                        continue;
                    }
                    let out: Vec<u8> = match port.vlan {
                        Some(vlan) => {
                            let tagged = ethertype(frame) == ETHERTYPE_VLAN
                                && n >= 18
                                && u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff == vlan;
                            if !tagged {
                                state.dropped[i] += 1;
                                continue;
                            }
                            [&frame[..12], &frame[16..]].concat()
                        }
                        None => frame.to_vec(),
                    };
                    if let Some(group) = port.group {
                        state.last_member[group] = Some(i);
                    }
                    state.passed[i] += 1;
                    drop(state);
                    let _ = uplink.lock().unwrap().write_all(&out);
                }
            }));
        }
        // Uplink to guests.
        for (u, uplink) in uplinks.iter().enumerate() {
            let reader = uplink.lock().unwrap().try_clone().unwrap();
            let sockets: Vec<Arc<UnixDatagram>> = sockets.iter().map(Arc::clone).collect();
            let guests = guests.clone();
            let ports = ports.to_vec();
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let mut reader = reader;
                let mut buffer = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&reader, 200) {
                        continue;
                    }
                    let Ok(n) = reader.read(&mut buffer) else {
                        break;
                    };
                    if n < 14 {
                        continue;
                    }
                    let frame = &buffer[..n];
                    let state = state.lock().unwrap();
                    let mut sent_groups = Vec::new();
                    for (i, port) in ports.iter().enumerate() {
                        if port.uplink != u || (port.lacp && !state.lacp_seen[i]) {
                            continue;
                        }
                        if let Some(group) = port.group {
                            let member = state.last_member[group].unwrap_or(i);
                            if member != i || sent_groups.contains(&group) {
                                continue;
                            }
                            sent_groups.push(group);
                        }
                        let out = match port.vlan {
                            Some(vlan) => {
                                let tag = [0x81, 0x00, (vlan >> 8) as u8, vlan as u8];
                                [&frame[..12], &tag[..], &frame[12..]].concat()
                            }
                            None => frame.to_vec(),
                        };
                        let _ = sockets[i].send_to(&out, &guests[i]);
                    }
                }
            }));
        }
        Switch {
            dir,
            state,
            stop,
            threads,
        }
    }

    /// The netdev for port `i`, for [`super::vm::Options::nics`].
    pub fn netdev(&self, i: usize) -> String {
        let path = |name: &str| self.dir.path().join(name);
        format!(
            "dgram,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            path(&format!("guest{i}.sock")).display(),
            path(&format!("switch{i}.sock")).display()
        )
    }

    /// The guest's frames port `i` dropped (untagged on a trunk, before LACP).
    pub fn dropped(&self, i: usize) -> u64 {
        self.state.lock().unwrap().dropped[i]
    }

    /// The guest's frames port `i` passed on.
    pub fn passed(&self, i: usize) -> u64 {
        self.state.lock().unwrap().passed[i]
    }

    /// The LACPDUs the guest sent on port `i`.
    pub fn lacpdus(&self, i: usize) -> u64 {
        self.state.lock().unwrap().lacpdus[i]
    }
}

/// The switch's LACPDU in answer to the guest's `received` on port `i` (IEEE 802.1AX): the
/// switch as actor (in sync, collecting and distributing, one key for all its ports), the
/// guest's actor information as the partner's.
fn lacp_answer(received: &[u8], i: usize) -> Vec<u8> {
    let mut frame = vec![0u8; 124];
    frame[..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0x00, 0x00, 0x02]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x10 + i as u8]);
    frame[12..14].copy_from_slice(&ETHERTYPE_SLOW.to_be_bytes());
    frame[14] = 1; // LACP
    frame[15] = 1; // version
    // Actor: system priority, system, key, port priority, port, state.
    frame[16] = 1;
    frame[17] = 20;
    frame[18..20].copy_from_slice(&0x8000u16.to_be_bytes());
    frame[20..26].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[26..28].copy_from_slice(&1u16.to_be_bytes());
    frame[28..30].copy_from_slice(&0x8000u16.to_be_bytes());
    frame[30..32].copy_from_slice(&(i as u16 + 1).to_be_bytes());
    // Activity, short timeout, aggregation, synchronization, collecting, distributing.
    frame[32] = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20;
    // Partner: what the guest says of itself.
    frame[36] = 2;
    frame[37] = 20;
    frame[38..56].copy_from_slice(&received[18..36]);
    // Collector information, then the terminator.
    frame[56] = 3;
    frame[57] = 16;
    frame
}

fn readable(file: &File, timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the length of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A MAC address for NIC `i` of a test VM.
pub fn mac(i: usize) -> String {
    format!("52:54:00:0c:1d:{:02x}", 0x10 + i)
}
