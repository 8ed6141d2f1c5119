//! An install stopped at random points, by kill -9 (as a power cut would) and by SIGTERM,
//! onto a file and a loop device that held a GPT disk: at every instant the target holds its
//! old contents, no partition table at all, or the verified image; SIGTERM says which and
//! exits 143. With a NoCloud seed, the seed's partition comes with the image's tables or not
//! at all.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::proxy::{Action, Forward, Proxy};
use common::*;

const DISK: usize = 64 * MIB;

/// What a target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Old,
    NoTable,
    Image,
}

/// A disk image of `size` bytes with a GPT and data that is not zeros.
fn gpt_disk(dir: &Path, name: &str, size: usize, seed: u64) -> Vec<u8> {
    let path = dir.join(name);
    fs::write(&path, image_bytes(size, seed)).unwrap();
    gpt_label(&path);
    fs::read(&path).unwrap()
}

fn classify(on_disk: &[u8], old: &[u8], image: &[u8]) -> Option<State> {
    if on_disk == old {
        return Some(State::Old);
    }
    let start = &on_disk[..MIB];
    let end = &on_disk[on_disk.len() - MIB..];
    if start.iter().all(|&b| b == 0) && end.iter().all(|&b| b == 0) {
        return Some(State::NoTable);
    }
    // The image, with its GPT's backup moved to the disk's end (the primary header and the
    // protective MBR's size changed).
    let image_there =
        on_disk[..446 + 12] == image[..446 + 12] && on_disk[1024..image.len()] == image[1024..];
    image_there.then_some(State::Image)
}

/// A proxy in front of the registry at `port` that sends blobs at 3 MiB/s: about 4 s to
/// fetch the image, a window in which to stop it.
fn throttled_proxy(port: u16) -> Proxy {
    Proxy::start(port, |request| {
        if request.is_blob() {
            Action::Forward(Forward {
                throttle: Some(3 * MIB as u64),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    })
}

/// A seed for [`Random`]: `OCIDD_TEST_SEED` to replay a run (the tests print theirs), else
/// from the clock.
fn test_seed() -> u64 {
    if let Ok(seed) = std::env::var("OCIDD_TEST_SEED") {
        return seed
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("OCIDD_TEST_SEED={seed}: {e}"))
            | 1;
    }
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// A small random number generator, from [`test_seed`] (the seed is printed).
struct Random(u64);

impl Random {
    fn below(&mut self, limit: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % limit
    }
}

#[test]
fn an_install_stopped_anywhere_leaves_old_tables_none_or_the_image() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = gpt_disk(dir.path(), "image.raw", 24 * MIB, 41);
    let source = dir.path().join("image.raw");
    let old = gpt_disk(dir.path(), "old.raw", DISK, 42);
    for (tag, chunk_size) in [("stream", "0"), ("chunked", "1M")] {
        push_with(
            &source,
            &format!("{}/disks/stop:{tag}", registry.host()),
            &["--compression", "gzip", "--chunk-size", chunk_size],
        );
    }
    let proxy = throttled_proxy(registry.port);
    let seed = test_seed();
    eprintln!("interrupts: seed {seed} (OCIDD_TEST_SEED={seed} replays it)");
    let mut random = Random(seed);
    let device = LoopDevice::new(dir.path(), DISK);
    let file = dir.path().join("target.img");
    let mut seen = Vec::new();
    for round in 0..12 {
        let on_loop = round % 2 == 1;
        let layout = if round % 4 < 2 { "stream" } else { "chunked" };
        let signal = if round % 8 < 4 { "KILL" } else { "TERM" };
        let target: &Path = if on_loop { &device.device } else { &file };
        // The old disk, in place again (through the device: its page cache stays true).
        fs::write(target, &old).unwrap();
        let mut install = ocidd()
            .arg(format!("oci.tag={}/disks/stop:{layout}", proxy.host()))
            .args(["oci.allow_no_tls", "dd.bs=256k"])
            .arg(format!("dd.of={}", target.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(200 + random.below(5000));
        let started = Instant::now();
        while started.elapsed() < delay && install.try_wait().unwrap().is_none() {
            thread::sleep(Duration::from_millis(10));
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(install.id().to_string())
            .status()
            .unwrap();
        let run = Run::from(install.wait_with_output().unwrap());
        let on_disk = read_prefix(target, DISK);
        let state = classify(&on_disk, &old, &image).unwrap_or_else(|| {
            panic!(
                "round {round} (seed {seed}): {layout} onto {} stopped by SIG{signal} after {delay:?} left a mix of old and new tables:\n{}",
                target.display(),
                run.stderr
            )
        });
        match (signal, run.code) {
            // Finished before the signal.
            (_, 0) => {
                run.assert_installed();
                assert_eq!(state, State::Image);
            }
            ("KILL", code) => assert_eq!(code, -1, "{}", run.stderr),
            (_, code) => {
                assert!(status.success());
                assert_eq!(code, 143, "{}", run.stderr);
                let said = match state {
                    State::Old => "nothing was written to",
                    State::NoTable => "no partition table",
                    State::Image => "the installed and verified image",
                };
                run.assert_failed(143, "stopped by SIGTERM; ");
                assert!(run.stderr.contains(said), "{state:?}:\n{}", run.stderr);
            }
        }
        if state == State::Image {
            assert_gpt_consistent(target);
        }
        eprintln!(
            "interrupts: {layout} onto {} SIG{signal} after {delay:?}: {state:?}",
            if on_loop { "loop" } else { "file" }
        );
        seen.push(state);
    }
    // The window is wide enough that writing was caught in the middle.
    assert!(seen.contains(&State::NoTable), "{seen:?}");
}

/// Whether neither a GPT nor an MBR is left: no `EFI PART` at the first or the last LBA,
/// no boot signature.
fn no_table(on_disk: &[u8]) -> bool {
    let last = &on_disk[on_disk.len() - 512..];
    &on_disk[512..520] != b"EFI PART"
        && &last[..8] != b"EFI PART"
        && on_disk[510..512] != [0x55, 0xAA]
}

/// [`no_table`], reading only the first and the last sector of `target`.
fn tables_gone(target: &Path, size: usize) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut ends = read_prefix(target, 1024);
    let mut file = fs::File::open(target).unwrap();
    file.seek(SeekFrom::Start((size - 512) as u64)).unwrap();
    let mut last = [0u8; 512];
    file.read_exact(&mut last).unwrap();
    ends.extend_from_slice(&last);
    no_table(&ends)
}

#[test]
fn an_install_with_a_seed_killed_anywhere_leaves_old_tables_none_or_the_image_and_seed() {
    const SEEDED_DISK: usize = 128 * MIB;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = gpt_disk(dir.path(), "image.raw", 24 * MIB, 51);
    let source = dir.path().join("image.raw");
    let old = gpt_disk(dir.path(), "old.raw", SEEDED_DISK, 52);
    push_with(
        &source,
        &format!("{}/disks/seeded:v1", registry.host()),
        &["--compression", "gzip", "--chunk-size", "1M"],
    );
    let served = dir.path().join("served/node-1");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("meta-data"), "instance-id: node-1\n").unwrap();
    fs::write(
        served.join("user-data"),
        "#cloud-config\nhostname: node-1\n",
    )
    .unwrap();
    let files = common::files::FileServer::start(&dir.path().join("served"));
    let proxy = throttled_proxy(registry.port);
    let seed = test_seed();
    eprintln!("interrupts with a seed: seed {seed}");
    let mut random = Random(seed);
    let device = LoopDevice::new(dir.path(), SEEDED_DISK);
    let file = dir.path().join("target.img");
    let mut seen = Vec::new();
    for round in 0..8 {
        let on_loop = round % 2 == 1;
        let target: &Path = if on_loop { &device.device } else { &file };
        fs::write(target, &old).unwrap();
        let mut install = ocidd()
            .arg(format!("oci.tag={}/disks/seeded:v1", proxy.host()))
            .args(["oci.allow_no_tls", "dd.bs=256k"])
            .arg(format!(
                "ocidd.nocloud=http://127.0.0.1:{}/node-1/",
                files.port
            ))
            .arg(format!("dd.of={}", target.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Half the rounds are killed as soon as both old tables are gone (the image is being
        // written: the disk must have no table then); the others at a random point, up to
        // past the end.
        let at_first_write = round % 4 < 2;
        let delay = Duration::from_millis(200 + random.below(8_000));
        let started = Instant::now();
        while install.try_wait().unwrap().is_none() {
            let due = if at_first_write {
                tables_gone(target, SEEDED_DISK) || started.elapsed() > Duration::from_secs(60)
            } else {
                started.elapsed() >= delay
            };
            if due {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let delay = started.elapsed();
        let _ = install.kill();
        let run = Run::from(install.wait_with_output().unwrap());
        let on_disk = read_prefix(target, SEEDED_DISK);
        // The image with its seed: the image's bytes past the partition entries (the seed's
        // entry is new), and tables that sgdisk finds whole.
        let image_there = on_disk[..446 + 12] == image[..446 + 12]
            && on_disk[17408..image.len()] == image[17408..];
        let state = if on_disk == old {
            State::Old
        } else if no_table(&on_disk) {
            State::NoTable
        } else if image_there {
            State::Image
        } else {
            panic!(
                "round {round} (seed {seed}) onto {} killed after {delay:?} left a mix of old and new tables:\n{}",
                target.display(),
                run.stderr
            )
        };
        match run.code {
            0 => {
                run.assert_installed();
                assert_eq!(state, State::Image);
            }
            code => assert_eq!(code, -1, "{}", run.stderr),
        }
        if state == State::Image {
            // Killed once the tables were down, or finished: the seed is there too.
            assert_gpt_consistent(target);
            let listed = Command::new("sgdisk")
                .arg("-p")
                .arg(target)
                .output()
                .unwrap();
            let listed = String::from_utf8_lossy(&listed.stdout);
            assert!(listed.contains("seed"), "{listed}");
        }
        eprintln!(
            "interrupts with a seed: onto {} {} after {delay:?}: {state:?}",
            if on_loop { "loop" } else { "file" },
            if run.code == 0 { "finished" } else { "SIGKILL" }
        );
        if at_first_write && run.code != 0 {
            assert_eq!(state, State::NoTable, "{}", run.stderr);
        }
        seen.push(state);
    }
    assert!(seen.contains(&State::NoTable), "{seen:?}");
}
