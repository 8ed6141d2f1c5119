//! Flaky networks and failing registries, injected by a proxy in front of the real registry
//! (and by killing the registry): the install resumes where it broke and finishes, or fails
//! clearly with no partition table left on the target. Each test prints a `fault-table:` line with the
//! bytes fetched relative to the blob size.

mod common;

use std::fs;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Action, Forward, Proxy, Request};
use common::*;

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
    /// The image layer's digest, and its size.
    layer: String,
    blob_size: u64,
}

/// How the image is pushed: as one gzip stream (installed by reading it in order) or in
/// chunks (installed by range requests in parallel).
#[derive(Debug, Clone, Copy)]
enum Layout {
    Stream,
    Chunked,
}

const LAYOUTS: [Layout; 2] = [Layout::Stream, Layout::Chunked];

/// A registry holding `disks/flaky:v1`, a 24 MiB image pushed as gzip (about 12 MB).
fn setup(layout: Layout) -> Setup {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(24 * MIB, 70);
    let source = write_file(dir.path(), "disk.raw", &image);
    let chunk_size = match layout {
        Layout::Stream => "0",
        // Small chunks: several range requests.
        Layout::Chunked => "1M",
    };
    let (_, layer) = push_with(
        &source,
        &format!("{}/disks/flaky:v1", registry.host()),
        &["--compression", "gzip", "--chunk-size", chunk_size],
    );
    let blob_size = fs::metadata(registry.blob_path(&layer)).unwrap().len();
    Setup {
        registry,
        dir,
        image,
        layer,
        blob_size,
    }
}

/// A rule that applies `per_get(n)` to the n-th GET of the image layer and passes everything
/// else on (the chunk index too).
fn on_blob_gets(
    layer: &str,
    per_get: impl Fn(usize, &Request) -> Action + Send + Sync + 'static,
) -> impl Fn(&Request) -> Action + Send + Sync + 'static {
    let count = Arc::new(AtomicUsize::new(0));
    let layer = layer.to_string();
    move |request| {
        if request.path.ends_with(&layer) && request.method == "GET" {
            let n = count.fetch_add(1, Ordering::SeqCst);
            per_get(n, request)
        } else {
            Action::forward()
        }
    }
}

fn cut(after: u64) -> Action {
    Action::Forward(Forward {
        cut_after: Some(after),
        ..Forward::default()
    })
}

fn report(layout: Layout, fault: &str, outcome: &str, proxy: &Proxy, blob_size: u64) -> f64 {
    let ratio = proxy.blob_bytes() as f64 / blob_size as f64;
    eprintln!("fault-table: {fault} | {layout:?} | {outcome} | {ratio:.3}");
    ratio
}

fn assert_installed(setup: &Setup, run: &Run, target: &std::path::Path) {
    run.assert_installed();
    assert!(
        read_prefix(target, setup.image.len()) == setup.image,
        "the target does not hold the image"
    );
}

impl Setup {
    /// `disks/flaky:v1`, reached through `proxy`.
    fn via(&self, proxy: &Proxy) -> String {
        format!("{}/disks/flaky:v1", proxy.host())
    }

    /// Installs through `proxy` into a fresh empty file, and checks it holds the image.
    fn install_through(&self, proxy: &Proxy, extra: &[&str]) -> Run {
        let target = write_file(self.dir.path(), "out.img", b"");
        let run = install_tag(&self.via(proxy), &target, extra);
        assert_installed(self, &run, &target);
        run
    }
}

/// The first blob GET is cut halfway; the ranges asked for after it are answered from
/// `shift` bytes away from where they were asked to start.
fn ranges_shifted_after_a_cut(
    layer: &str,
    blob_size: u64,
    shift: i64,
) -> impl Fn(&Request) -> Action + Send + Sync + 'static {
    on_blob_gets(layer, move |n, request| {
        let ranged = request
            .header("range")
            .is_some_and(|r| !r.starts_with("bytes=0-"));
        match n {
            0 => cut(blob_size / 2),
            _ if ranged => Action::Forward(Forward {
                shift_range: shift,
                ..Forward::default()
            }),
            _ => Action::forward(),
        }
    })
}

#[test]
fn cuts_at_30_60_and_90_percent_resume() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        // The first three GETs of the blob are cut: read in order, each after 30 % of the
        // blob, so at 30 %, 60 % and 90 %; read in parallel ranges, each halfway through its
        // range.
        let proxy = Proxy::start(
            setup.registry.port,
            on_blob_gets(&setup.layer, move |n, request| {
                if n > 2 {
                    return Action::forward();
                }
                let closed_range = request.header("range").and_then(|r| {
                    let (a, b) = r.trim_start_matches("bytes=").split_once('-')?;
                    Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
                });
                match closed_range {
                    Some((a, b)) => cut((b - a).div_ceil(2)),
                    None => cut(size * 3 / 10),
                }
            }),
        );
        let run = setup.install_through(&proxy, &[]);
        let interruptions = run.stderr.matches("download interrupted at byte").count();
        assert_eq!(interruptions, 3, "{}", run.stderr);
        assert!(proxy.log().iter().any(|l| l.ends_with("-> 206")));
        let ratio = report(layout, "cut at 30 %, 60 %, 90 %", "completed", &proxy, size);
        assert!(ratio < 1.1, "fetched {ratio} times the blob");
    }
}

#[test]
fn a_stalled_stream_is_resumed() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        let proxy = Proxy::start(
            setup.registry.port,
            on_blob_gets(&setup.layer, move |n, _| match n {
                0 => Action::Forward(Forward {
                    stall_after: Some((size / 4, Duration::from_secs(20))),
                    ..Forward::default()
                }),
                _ => Action::forward(),
            }),
        );
        let run = setup.install_through(&proxy, &["oci.stall_timeout=2"]);
        // Cut short, not waited out: the stalled GET would have gone on after 20 s, with no
        // message and no second GET.
        assert!(
            run.stderr.contains("no data within the stall timeout"),
            "{}",
            run.stderr
        );
        let layer_gets = proxy
            .log()
            .iter()
            .filter(|l| l.starts_with("GET") && l.contains(&setup.layer))
            .count();
        assert!(layer_gets >= 2, "{:?}", proxy.log());
        let ratio = report(layout, "stall (socket open)", "completed", &proxy, size);
        assert!(ratio < 1.1);
    }
}

fn spawn_install(reference: &str, target: &std::path::Path, extra: &[&str]) -> Child {
    ocidd()
        .arg(format!("oci.tag={reference}"))
        .args(["oci.allow_no_tls", "dd.bs=64k"])
        .arg(format!("dd.of={}", target.display()))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Throttles blob GETs so that the registry can be killed during them, and breaks the first
/// ones after the given byte counts (the proxy has the rest in its socket buffers when the
/// registry dies; a real network would lose them).
fn throttled_then_cut(
    layer: &str,
    cuts: Vec<u64>,
) -> impl Fn(&Request) -> Action + Send + Sync + 'static {
    on_blob_gets(layer, move |n, _| {
        Action::Forward(Forward {
            throttle: Some(3 * MIB as u64),
            cut_after: cuts.get(n).copied(),
            ..Forward::default()
        })
    })
}

fn wait_for_bytes(proxy: &Proxy, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.blob_bytes() < bytes {
        assert!(Instant::now() < deadline, "the download did not start");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_registry_restarting_mid_download_is_ridden_out() {
    for layout in LAYOUTS {
        let mut setup = setup(layout);
        let size = setup.blob_size;
        let proxy = Proxy::start(
            setup.registry.port,
            throttled_then_cut(&setup.layer, vec![size / 4]),
        );
        let target = write_file(setup.dir.path(), "out.img", b"");
        let child = spawn_install(&setup.via(&proxy), &target, &[]);
        wait_for_bytes(&proxy, size / 10);
        setup.registry.stop();
        thread::sleep(Duration::from_secs(3));
        setup.registry.restart();
        let run = Run::from(child.wait_with_output().unwrap());
        assert_installed(&setup, &run, &target);
        assert!(run.stderr.contains("retrying in"), "{}", run.stderr);
        assert!(run.stderr.contains("502 Bad Gateway"), "{}", run.stderr);
        let ratio = report(
            layout,
            "registry killed mid-download, back 3 s later",
            "completed",
            &proxy,
            size,
        );
        assert!(ratio < 1.1);
    }
}

#[test]
fn a_registry_that_stays_down_fails_clearly_and_wipes() {
    for layout in LAYOUTS {
        let mut setup = setup(layout);
        let size = setup.blob_size;
        // The download from the blob's start is slow and breaks: read in order, at 75 % of
        // the blob; read in parallel ranges, halfway through the first range, while the
        // other ranges arrive at once and are written.
        let proxy = Proxy::start(setup.registry.port, move |request: &Request| {
            let range = request.header("range");
            if !request.is_blob() || range.is_some_and(|r| !r.starts_with("bytes=0-")) {
                return Action::forward();
            }
            let range_end =
                range.and_then(|r| r.trim_start_matches("bytes=0-").parse::<u64>().ok());
            Action::Forward(Forward {
                throttle: Some(3 * MIB as u64),
                cut_after: Some(range_end.map_or(size * 3 / 4, |end| end.div_ceil(2))),
                ..Forward::default()
            })
        });
        let target = target_file(setup.dir.path(), "out.img", 32 * MIB);
        let child = spawn_install(&setup.via(&proxy), &target, &["oci.retries=3"]);
        wait_for_bytes(&proxy, size * 4 / 10);
        setup.registry.stop();
        let run = Run::from(child.wait_with_output().unwrap());
        run.assert_failed(3, "after 3 retries");
        assert!(
            run.stderr.contains("bytes of the image were written"),
            "{}",
            run.stderr
        );
        assert_no_table_left(&run, &target);
        report(
            layout,
            "registry killed mid-download, stays down",
            "exit 3, no partition table left",
            &proxy,
            size,
        );
    }
}

#[test]
fn busy_and_failing_registries_are_waited_for() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        let blob_gets = Arc::new(AtomicUsize::new(0));
        let proxy = Proxy::start(setup.registry.port, move |request| {
            if request.index < 2 {
                return Action::Respond {
                    status: 503,
                    headers: vec![],
                    body: br#"{"errors":[{"code":"UNAVAILABLE","message":"restarting"}]}"#.to_vec(),
                };
            }
            if request.is_blob() && blob_gets.fetch_add(1, Ordering::SeqCst) == 0 {
                return Action::Respond {
                    status: 429,
                    headers: vec![("Retry-After".into(), "3".into())],
                    body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#
                        .to_vec(),
                };
            }
            Action::forward()
        });
        let started = Instant::now();
        let run = setup.install_through(&proxy, &[]);
        assert_eq!(
            run.stderr.matches("503 Service Unavailable").count(),
            2,
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("retrying in 3 s: HTTP 429"),
            "{}",
            run.stderr
        );
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "Retry-After was not honoured"
        );
        report(
            layout,
            "503 twice, then 429 with Retry-After: 3",
            "completed",
            &proxy,
            size,
        );
    }
}

#[test]
fn a_server_that_ignores_range_is_read_past_what_arrived() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        let proxy = Proxy::start(
            setup.registry.port,
            on_blob_gets(&setup.layer, move |n, _| match n {
                0 => Action::Forward(Forward {
                    strip_range: true,
                    cut_after: Some(size / 2),
                    ..Forward::default()
                }),
                _ => Action::Forward(Forward {
                    strip_range: true,
                    ..Forward::default()
                }),
            }),
        );
        let run = setup.install_through(&proxy, &[]);
        assert!(
            proxy
                .log()
                .iter()
                .all(|l| !l.contains("/blobs/") || l.ends_with("-> 200"))
        );
        let ratio = report(
            layout,
            "Range ignored (200 instead of 206)",
            "completed",
            &proxy,
            size,
        );
        // Reading in order, only the resumption re-reads what arrived; in parallel, every
        // range costs the blob up to its end.
        if let Layout::Stream = layout {
            assert!(run.stderr.contains("skipping"), "{}", run.stderr);
            assert!(ratio < 1.6, "{ratio}");
        }
    }
}

#[test]
fn a_range_answered_from_elsewhere_is_aligned_or_refused() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        // From earlier than asked: the overlap is dropped.
        let proxy = Proxy::start(
            setup.registry.port,
            ranges_shifted_after_a_cut(&setup.layer, size, -1000),
        );
        let run = setup.install_through(&proxy, &[]);
        // The image came out right (install_through checks it) because the 1000 bytes sent
        // twice were dropped.
        assert!(run.stderr.contains("skipping 1000 bytes"), "{}", run.stderr);
        report(
            layout,
            "Content-Range starts 1000 bytes early",
            "completed",
            &proxy,
            size,
        );

        // From later than asked: bytes would be missing; refused.
        let proxy = Proxy::start(
            setup.registry.port,
            ranges_shifted_after_a_cut(&setup.layer, size, 1000),
        );
        let target = target_file(setup.dir.path(), "late.img", 32 * MIB);
        let run = install_tag(&setup.via(&proxy), &target, &[]);
        run.assert_failed(3, "with bytes from");
        report(
            layout,
            "Content-Range starts 1000 bytes late",
            "exit 3",
            &proxy,
            size,
        );
    }
}

/// The first GET is cut halfway; the resumption is answered from byte 0 (Range ignored, as a
/// cold pull-through cache does) and stalls before it reaches the cut; the GETs after it are
/// served. `gets` counts the GETs of the blob this applies to.
fn cut_then_from_the_start_and_stalled(n: usize, cut_at: u64) -> Action {
    match n {
        0 => cut(cut_at),
        1 => Action::Forward(Forward {
            strip_range: true,
            stall_after: Some((cut_at / 2, Duration::from_secs(20))),
            ..Forward::default()
        }),
        _ => Action::forward(),
    }
}

#[test]
fn a_resumption_from_the_start_that_stalls_is_resumed_again() {
    for layout in LAYOUTS {
        let setup = setup(layout);
        let size = setup.blob_size;
        let proxy = Proxy::start(
            setup.registry.port,
            on_blob_gets(&setup.layer, move |n, _| {
                cut_then_from_the_start_and_stalled(n, size / 2)
            }),
        );
        let run = setup.install_through(&proxy, &["oci.stall_timeout=2"]);
        assert!(
            run.stderr.contains("no data within the stall timeout"),
            "{}",
            run.stderr
        );
        let ratio = report(
            layout,
            "cut, then Range ignored and a stall",
            "completed",
            &proxy,
            size,
        );
        assert!(ratio < 2.1, "{ratio}");
    }
}

#[test]
fn a_chunk_index_download_that_breaks_is_resumed() {
    let setup = setup(Layout::Chunked);
    let layer = setup.layer.clone();
    let index_gets = Arc::new(AtomicUsize::new(0));
    // The chunk index is the one other blob an install fetches; it is about 2 KB.
    let proxy = Proxy::start(setup.registry.port, move |request: &Request| {
        if request.is_blob() && request.method == "GET" && !request.path.ends_with(&layer) {
            let n = index_gets.fetch_add(1, Ordering::SeqCst);
            cut_then_from_the_start_and_stalled(n, 400)
        } else {
            Action::forward()
        }
    });
    let run = setup.install_through(&proxy, &["oci.stall_timeout=2"]);
    assert_eq!(
        run.stderr.matches("download interrupted at byte").count(),
        2,
        "{}",
        run.stderr
    );
    report(
        Layout::Chunked,
        "chunk index: cut, then Range ignored and a stall",
        "completed",
        &proxy,
        setup.blob_size,
    );
}

/// Other producers' images read as one stream: xz in blocks (decoded on all cores) and
/// qcow2 from qemu-img, each cut halfway, resume where they broke.
#[test]
fn xz_and_qcow2_streams_cut_halfway_resume() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut image = image_bytes(24 * MIB, 71);
    image[8 * MIB..12 * MIB].fill(0);
    let source = write_file(dir.path(), "disk.raw", &image);
    let packed = dir.path().join("disk.xz");
    let xz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -1 -T2 --block-size=2MiB -c {} > {}",
            source.display(),
            packed.display()
        ))
        .status()
        .expect("xz (xz-utils)");
    assert!(xz.success());
    let qcow2 = dir.path().join("disk.qcow2");
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2", "-c"])
        .arg(&source)
        .arg(&qcow2)
        .status()
        .expect("qemu-img (qemu-utils)");
    assert!(converted.success());
    for (tag, media_type, file) in [
        ("xz", "application/octet-stream+xz", &packed),
        ("qcow2", "application/vnd.oci.image.layer.v1.tar", &qcow2),
    ] {
        let blob = fs::read(file).unwrap();
        registry.put_image("disks/other", tag, &[(media_type, &blob)]);
        let size = blob.len() as u64;
        let proxy = Proxy::start(
            registry.port,
            on_blob_gets(&sha256(&blob), move |n, _| match n {
                0 => cut(size / 2),
                _ => Action::forward(),
            }),
        );
        let target = write_file(dir.path(), "out.img", b"");
        let run = install_tag(&format!("{}/disks/other:{tag}", proxy.host()), &target, &[]);
        run.assert_installed();
        assert!(
            run.stderr.contains("download interrupted at byte"),
            "{tag}: {}",
            run.stderr
        );
        assert!(
            read_prefix(&target, image.len()) == image,
            "{tag}: not the image"
        );
        let ratio = proxy.blob_bytes() as f64 / size as f64;
        eprintln!("fault-table: cut at 50 % | {tag} | completed | {ratio:.3}");
        assert!(ratio < 1.1, "{tag}: fetched {ratio} times the blob");
    }
}
