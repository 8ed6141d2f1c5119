//! Installing a fleet: through mirrors and a real pull-through cache (docker-registry in proxy
//! mode, `proxy: remoteurl:`) with byte counters on both of its links, through a real forward
//! proxy (tinyproxy), with status reports to a receiver, and with site defaults.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Action, Forward, Proxy};
use common::receiver::Receiver;
use common::tinyproxy::ForwardProxy;
use common::*;

/// An upstream registry behind a byte counter, and a cache of it behind another:
/// ocidd → `cache_link` → cache → `upstream_link` → upstream.
struct Fleet {
    dir: tempfile::TempDir,
    upstream: Registry,
    upstream_link: Proxy,
    cache: Registry,
    cache_link: Proxy,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        // The upstream first: the cache checks it when it starts.
        let upstream = Registry::start();
        let upstream_link = Proxy::start(upstream.port, |_| Action::forward());
        let cache = Registry::start_cache(&format!("http://{}", upstream_link.host()));
        let cache_link = Proxy::start(cache.port, |_| Action::forward());
        Fleet {
            dir,
            upstream,
            upstream_link,
            cache,
            cache_link,
        }
    }

    /// Pushes a chunked image of `size` bytes to the upstream; returns the image, its
    /// reference through the upstream link, and the blob's size.
    fn push(&self, size: usize, chunk_size: &str) -> (Vec<u8>, String, u64) {
        let image = image_bytes(size, 13);
        let file = write_file(self.dir.path(), "disk.img", &image);
        let direct = format!("{}/fleet/disk:v1", self.upstream.host());
        let (_, layer) = push_with(
            &file,
            &direct,
            &["--compression", "gzip", "--chunk-size", chunk_size],
        );
        let blob_size = fs::metadata(self.upstream.blob_path(&layer)).unwrap().len();
        let reference = format!("{}/fleet/disk:v1", self.upstream_link.host());
        (image, reference, blob_size)
    }

    /// Pushes another image of `size` bytes; returns its blob's size and digest.
    fn push_other(&self, size: usize, chunk_size: &str) -> (u64, String) {
        let file = write_file(self.dir.path(), "other.img", &image_bytes(size, 14));
        let direct = format!("{}/fleet/other:v1", self.upstream.host());
        let (_, layer) = push_with(
            &file,
            &direct,
            &["--compression", "gzip", "--chunk-size", chunk_size],
        );
        (
            fs::metadata(self.upstream.blob_path(&layer)).unwrap().len(),
            layer,
        )
    }

    fn mirror(&self) -> String {
        format!("oci.mirror={}", self.cache_link.host())
    }
}

/// The blob bytes through `link` once they stop growing: the cache may still be storing
/// what it fetched after its client has everything.
fn settled(link: &Proxy) -> u64 {
    let mut last = link.blob_bytes();
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = link.blob_bytes();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Runs `ocidd WORDS` in the background.
fn spawn_words(words: &[String]) -> Child {
    ocidd()
        .args(words)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn tag_words(reference: &str, target: &Path, extra: &[&str]) -> Vec<String> {
    let mut words = vec![
        format!("oci.tag={reference}"),
        "oci.allow_no_tls".to_string(),
        format!("dd.of={}", target.display()),
        "dd.bs=1M".to_string(),
    ];
    words.extend(extra.iter().map(|w| w.to_string()));
    words
}

#[test]
fn cold_cache_streams_once_and_warm_cache_spares_the_upstream() {
    let fleet = Fleet::start();
    let (image, reference, blob_size) = fleet.push(24 * MIB, "1M");
    let mirror = fleet.mirror();

    // Cold: the cache answers the first range with the whole blob while it fills.
    let target = target_file(fleet.dir.path(), "cold.img", 0);
    let run = install_tag(&reference, &target, &[&mirror]);
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    assert!(
        run.stderr.contains("from mirror"),
        "the mirror served nothing:\n{}",
        run.stderr
    );
    let (from_cache, from_upstream) = (
        fleet.cache_link.blob_bytes(),
        fleet.upstream_link.blob_bytes(),
    );
    println!(
        "fleet-table: cold cache: {:.2}x the blob from the cache, {:.2}x from the upstream",
        from_cache as f64 / blob_size as f64,
        from_upstream as f64 / blob_size as f64
    );
    assert!(
        from_cache * 2 <= blob_size * 3,
        "{from_cache} bytes from the cache for a {blob_size}-byte blob:\n{:#?}\n{}",
        fleet.cache_link.log(),
        run.stderr
    );
    // docker-registry's proxy mode itself fetches a missed blob from its upstream twice (one
    // copy to store, one to stream), whoever asks: measured with one plain GET of another blob
    // of the same kind. ocidd may add at most half a blob to that.
    let (other, other_blob) = fleet.push_other(24 * MIB, "1M");
    let before = fleet.upstream_link.blob_bytes();
    let plain = fleet
        .cache
        .client()
        .get(format!(
            "{}/v2/fleet/other/blobs/{other_blob}",
            fleet.cache.url()
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(plain.len() as u64, other);
    let plain_get = settled(&fleet.upstream_link) - before;
    println!(
        "fleet-table: cold cache, one plain GET: {:.2}x the blob from the upstream",
        plain_get as f64 / other as f64
    );
    let allowance = plain_get as f64 / other as f64 + 0.5;
    assert!(
        from_upstream as f64 <= allowance * blob_size as f64,
        "{from_upstream} bytes from the upstream for a {blob_size}-byte blob:\n{:#?}",
        fleet.upstream_link.log()
    );
    // Mirrors are asked with the registry's name, as containerd does.
    let ns = format!("ns={}", fleet.upstream_link.host().replace(':', "%3A"));
    assert!(
        fleet.cache_link.log().iter().all(|line| line.contains(&ns)),
        "{:#?}",
        fleet.cache_link.log()
    );

    // Warm: eight machines at once take the blob from the cache, not from the upstream.
    let before = fleet.upstream_link.blob_bytes();
    let installs: Vec<(Child, std::path::PathBuf)> = (0..8)
        .map(|i| {
            let target = target_file(fleet.dir.path(), &format!("warm{i}.img"), 0);
            (
                spawn_words(&tag_words(&reference, &target, &[&mirror])),
                target,
            )
        })
        .collect();
    for (child, target) in installs {
        Run::from(child.wait_with_output().unwrap()).assert_installed();
        assert_eq!(fs::read(&target).unwrap(), image);
    }
    let upstream = settled(&fleet.upstream_link) - before;
    println!(
        "fleet-table: 8 warm installs: {:.3}x the blob from the upstream",
        upstream as f64 / blob_size as f64
    );
    assert!(
        upstream * 10 < blob_size,
        "{upstream} blob bytes from the upstream for 8 warm installs"
    );
    drop(fleet.cache);
    drop(fleet.upstream);
}

#[test]
fn mirrors_that_fail_pass_the_request_on() {
    let fleet = Fleet::start();
    let (image, reference, _) = fleet.push(6 * MIB, "1M");
    // A mirror where nothing listens, and one that has nothing (404): the registry serves.
    let dead = free_port();
    let empty = Registry::start();
    let words = [
        format!("oci.mirror=127.0.0.1:{dead}"),
        format!("oci.mirror={}", empty.host()),
    ];
    let target = target_file(fleet.dir.path(), "t.img", 0);
    let run = install_tag(&reference, &target, &[&words[0], &words[1]]);
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    assert!(
        run.stderr
            .contains(&format!("mirror 127.0.0.1:{dead} did not serve")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("mirror {} did not serve", empty.host()))
            && run.stderr.contains("404"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("from registry {}", fleet.upstream_link.host())),
        "{}",
        run.stderr
    );
    // A dead mirror is passed over at once, not retried with backoff.
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
}

/// What a failing mirror did is said as the mirror's: one that takes the connection and
/// says nothing is given up on within seconds (it never answers, and the reason is the
/// mirror's timeout, long before the 20 s it would hold the request); one that wants
/// credentials says that oci.auth has none for it; one that speaks plain HTTP where HTTPS
/// was meant says how to give a plain-HTTP mirror.
#[test]
fn what_a_failing_mirror_did_is_said() {
    let fleet = Fleet::start();
    let (image, reference, _) = fleet.push(2 * MIB, "1M");
    let target = target_file(fleet.dir.path(), "t.img", 0);
    let silent = Proxy::start(fleet.upstream.port, |_| {
        Action::Hang(Duration::from_secs(20))
    });
    let run = install_tag(
        &reference,
        &target,
        &[&format!("oci.mirror={}", silent.host())],
    );
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    assert!(
        run.stderr
            .contains(&format!("mirror {} did not serve", silent.host()))
            && run.stderr.contains("timed out"),
        "{}",
        run.stderr
    );

    let guarded = Proxy::start(fleet.upstream.port, |_| Action::Respond {
        status: 401,
        headers: vec![("WWW-Authenticate".into(), r#"Basic realm="cache""#.into())],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            .to_vec(),
    });
    let auth = write_file(
        fleet.dir.path(),
        "auth.json",
        docker_config(&fleet.upstream_link.host(), "u:p").as_bytes(),
    );
    let run = install_tag(
        &reference,
        &target,
        &[
            &format!("oci.mirror={}", guarded.host()),
            &format!("oci.auth={}", auth.display()),
        ],
    );
    run.assert_installed();
    assert!(
        run.stderr.contains(&format!(
            "{} has no credentials for {}",
            auth.display(),
            guarded.host()
        )) && !run.stderr.contains("no credentials were given"),
        "{}",
        run.stderr
    );

    // An HTTPS registry, and a plain-HTTP mirror given without http://.
    let file = write_file(fleet.dir.path(), "tls.img", &image);
    let tls = TlsRegistry::with_image(&file, "fleet/disk:v1");
    let run = install_words(&[
        &format!("oci.tag={}", tls.reference),
        &format!("oci.ca={}", tls.ca.display()),
        &format!("oci.mirror={}", fleet.upstream.host()),
        &format!("dd.of={}", target.display()),
        "dd.bs=1M",
    ]);
    run.assert_installed();
    assert!(
        run.stderr.contains("the mirror does not speak TLS")
            && !run.stderr.contains("the registry does not speak TLS"),
        "{}",
        run.stderr
    );
}

#[test]
fn mirror_prefix_and_tags_resolved_at_the_registry() {
    let fleet = Fleet::start();
    let (image, reference, _) = fleet.push(3 * MIB, "1M");
    // A Harbor-style proxy-cache project: the same image under a prefix on another registry.
    let harbor = Registry::start();
    let file = write_file(fleet.dir.path(), "again.img", &image);
    push_with(
        &file,
        &format!("{}/hub/fleet/disk:v1", harbor.host()),
        &["--compression", "gzip", "--chunk-size", "1M"],
    );
    let harbor_link = Proxy::start(harbor.port, |_| Action::forward());
    let mirror = format!("oci.mirror={}/hub", harbor_link.host());
    let target = target_file(fleet.dir.path(), "t.img", 0);
    let run = install_tag(&reference, &target, &[&mirror]);
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    let log = harbor_link.log();
    assert!(
        log.iter()
            .any(|l| l.contains("/v2/hub/fleet/disk/blobs/sha256:")),
        "{log:#?}"
    );
    // The tag went to the registry only; with oci.mirror_resolve, the mirror resolves it.
    assert!(!log.iter().any(|l| l.contains("/manifests/v1")), "{log:#?}");
    let run = install_tag(&reference, &target, &[&mirror, "oci.mirror_resolve"]);
    run.assert_installed();
    assert!(
        harbor_link
            .log()
            .iter()
            .any(|l| l.contains("/v2/hub/fleet/disk/manifests/v1") && l.ends_with("200")),
        "{:#?}",
        harbor_link.log()
    );
}

#[test]
fn a_mirror_cannot_change_what_is_written() {
    let fleet = Fleet::start();
    let (image, reference, _) = fleet.push(3 * MIB, "1M");
    // A mirror that serves other bytes for every blob.
    let evil = Proxy::start(fleet.upstream.port, |request| {
        if request.is_blob() {
            Action::Forward(Forward {
                replace_body: Some(vec![0x5a; 4096]),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    });
    let target = target_file(fleet.dir.path(), "t.img", 0);
    let mirror = format!("oci.mirror={}", evil.host());
    let run = install_tag(&reference, &target, &[&mirror]);
    // Either refused (exit 4) or installed correctly from the registry: never the mirror's bytes.
    if run.code == 0 {
        assert_eq!(fs::read(&target).unwrap(), image);
    } else {
        assert_eq!(run.code, 4, "{}", run.stderr);
        assert!(!run.stdout.contains("installed"));
    }
}

#[test]
fn installs_through_a_forward_proxy() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(3 * MIB, 5);
    let file = write_file(dir.path(), "disk.img", &image);
    let reference = format!("{}/proxied/disk:v1", registry.host());
    push(&file, &reference, "zstd");
    let proxy = ForwardProxy::start();
    let target = target_file(dir.path(), "t.img", 0);
    let via = format!("oci.proxy=http://127.0.0.1:{}", proxy.port);
    let run = install_tag(&reference, &target, &[&via]);
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    let log = proxy.log();
    assert!(
        log.contains("/v2/proxied/disk/manifests/v1"),
        "the proxy saw no manifest request:\n{log}"
    );
    assert!(log.contains("/v2/proxied/disk/blobs/sha256:"), "{log}");

    // oci.no_proxy: the registry is reached directly.
    let before = proxy.log().len();
    let run = install_tag(&reference, &target, &[&via, "oci.no_proxy=127.0.0.1"]);
    run.assert_installed();
    assert_eq!(proxy.log().len(), before, "{}", proxy.log());

    // HTTPS goes through the proxy too, tunnelled with CONNECT, and its certificate checked.
    let tls = TlsRegistry::with_image(&file, "proxied/disk:v1");
    let run = install_words(&[
        &format!("oci.tag={}", tls.reference),
        &format!("oci.ca={}", tls.ca.display()),
        &via,
        &format!("dd.of={}", target.display()),
        "dd.bs=1M",
    ]);
    run.assert_installed();
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT {}", tls.registry.host())),
        "{}",
        proxy.log()
    );

    // A proxy that is down fails as a network failure that says the proxy may be why.
    let dead = format!("oci.proxy=http://127.0.0.1:{}", free_port());
    let run = install_tag(&reference, &target, &[&dead, "oci.retries=0"]);
    run.assert_failed(
        3,
        "Connection refused (os error 111) (through the proxy in oci.proxy)",
    );
    // oci.no_proxy without a proxy is a mistake worth saying.
    let run = install_tag(&reference, &target, &["oci.no_proxy=127.0.0.1"]);
    run.assert_failed(2, "oci.no_proxy");
}

fn phases(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}{}",
                e["event_type"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
                e["result"]
                    .as_str()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        })
        .filter(|p| !p.starts_with("progress"))
        .collect()
}

#[test]
fn reports_start_progress_and_finish() {
    let fleet = Fleet::start();
    let (image, _, blob_size) = fleet.push(6 * MIB, "1M");
    // Slow enough for progress events every second.
    let slow = Proxy::start(fleet.upstream.port, |request| {
        Action::Forward(Forward {
            throttle: request.is_blob().then_some(2 << 20),
            ..Forward::default()
        })
    });
    let receiver = Receiver::start();
    let token = write_file(fleet.dir.path(), "token", b"s3cret-token\n");
    let target = target_file(fleet.dir.path(), "t.img", 0);
    let reference = format!("{}/fleet/disk:v1", slow.host());
    let report = format!("ocidd.report={}", receiver.url());
    let token_word = format!("ocidd.report_token={}", token.display());
    let run = install_tag(
        &reference,
        &target,
        &[&report, "ocidd.report_interval=1", &token_word],
    );
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    let posts = receiver.posts();
    assert!(
        posts
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer s3cret-token")),
        "{posts:#?}"
    );
    let events = receiver.events();
    assert_eq!(
        phases(&events),
        [
            "start select-disk",
            "finish select-disk SUCCESS",
            "start resolve",
            "finish resolve SUCCESS",
            "start write",
            "finish write SUCCESS",
            "start verify",
            "finish verify SUCCESS",
            "start finalize",
            "finish finalize SUCCESS",
        ],
        "{events:#?}"
    );
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event_type"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "no progress events: {events:#?}");
    assert!(progress.iter().all(|e| e["name"] == "write"));
    let last = events.last().unwrap();
    assert_eq!(last["origin"], "ocidd");
    assert_eq!(last["exit_code"], 0);
    assert!(last["timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(last["image"]["reference"], reference.as_str());
    let digest = last["image"]["digest"].as_str().unwrap();
    let blob = last["image"]["blob"].as_str().unwrap();
    assert!(digest.starts_with("sha256:") && blob.starts_with("sha256:"));
    assert_ne!(digest, blob, "the manifest's digest and the blob's");
    assert_eq!(last["disk"]["path"], target.display().to_string());
    assert_eq!(last["bytes_total"], blob_size);
    assert_eq!(last["bytes_fetched"], blob_size);
    assert_eq!(last["bytes_written"], image.len() as u64);
    assert!(last["node"].is_object(), "{last:#}");
    assert!(last["node"].get("macs").is_some(), "{last:#}");
}

#[test]
fn a_failing_install_reports_its_exit_code() {
    let receiver = Receiver::start();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", 0);
    let reference = format!("{}/missing/disk:v1", registry.host());
    let report = format!("ocidd.report={}", receiver.url());
    let run = install_tag(&reference, &target, &[&report]);
    assert_ne!(run.code, 0);
    let events = receiver.events();
    let last = events.last().expect("no events");
    assert_eq!(last["event_type"], "finish", "{events:#?}");
    assert_eq!(last["name"], "resolve", "{events:#?}");
    assert_eq!(last["result"], "FAIL");
    assert_eq!(last["exit_code"], run.code);
    let error = last["error"].as_str().unwrap();
    assert!(
        run.stderr.contains(error),
        "the report's error is not the console's:\n{error}\n{}",
        run.stderr
    );

    // A wrong disk fails in select-disk, with the target exit code.
    let run = install_words(&[
        &format!("oci.tag={reference}"),
        "oci.allow_no_tls",
        "dd.of=/dev/ocidd-test-missing",
        "dd.bs=1M",
        &report,
    ]);
    run.assert_failed(5, "does not exist");
    let last = receiver.events().last().cloned().unwrap();
    assert_eq!(
        (
            last["name"].as_str(),
            last["result"].as_str(),
            last["exit_code"].as_i64()
        ),
        (Some("select-disk"), Some("FAIL"), Some(5))
    );
}

#[test]
fn receivers_that_are_down_or_hang_do_not_hold_the_install() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 3);
    let file = write_file(dir.path(), "disk.img", &image);
    let reference = format!("{}/r/disk:v1", registry.host());
    push(&file, &reference, "gzip");
    let hanging = Receiver::start_hanging();
    let reports = [
        format!("ocidd.report=http://127.0.0.1:{}/down", free_port()),
        format!("ocidd.report={}", hanging.url()),
    ];
    let target = target_file(dir.path(), "t.img", 0);
    let run = install_tag(&reference, &target, &[&reports[0], &reports[1]]);
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
    // The install ended though the hanging receiver took a report and never answered (it
    // holds the request until the test ends): the sender gave up on it.
    assert!(!hanging.posts().is_empty(), "{}", run.stderr);
    assert!(
        run.stderr.contains("undelivered") || run.stderr.contains("not delivered"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_lines_on_stdout() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB, 4);
    let file = write_file(dir.path(), "disk.img", &image);
    let reference = format!("{}/j/disk:v1", registry.host());
    push(&file, &reference, "gzip");
    let target = target_file(dir.path(), "t.img", 0);
    let output = ocidd()
        .args(["install", "--plain-http", "--json", "--bs", "1M", "--tag"])
        .arg(&reference)
        .arg("--target")
        .arg(&target)
        .output()
        .unwrap();
    let run = Run::from(output);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(phases(&events).last().unwrap(), "finish finalize SUCCESS");
    assert!(run.stderr.contains("ocidd: installed"), "{}", run.stderr);
}

#[test]
fn bad_report_and_overlay_inputs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", MIB);
    // A token file that is not there: exit 2 before the disk or the network.
    let run = install_words(&[
        "oci.tag=r.example/d:v1",
        &format!("dd.of={}", target.display()),
        "dd.bs=1M",
        "ocidd.report=http://127.0.0.1:9/x",
        "ocidd.report_token=/nonexistent/token",
    ]);
    run.assert_failed(2, "reading the report token file /nonexistent/token");
    let empty = write_file(dir.path(), "empty-token", b"\n");
    let run = install_words(&[
        "oci.tag=r.example/d:v1",
        &format!("dd.of={}", target.display()),
        "dd.bs=1M",
        "ocidd.report=http://127.0.0.1:9/x",
        &format!("ocidd.report_token={}", empty.display()),
    ]);
    run.assert_failed(2, "is empty");

    // Overlays: a missing source, and default words with a typo, write nothing.
    let output = dir.path().join("site.img");
    let overlay = |files: &[String]| {
        Run::from(
            ocidd()
                .args(["overlay", "--output"])
                .arg(&output)
                .args(files)
                .output()
                .unwrap(),
        )
    };
    let run = overlay(&["/nonexistent/ca.pem=/etc/ocidd/ca.pem".to_string()]);
    run.assert_failed(2, "reading /nonexistent/ca.pem");
    let words = write_file(dir.path(), "cmdline", b"oci.mirorr=cache:5000\n");
    let run = overlay(&[format!("{}=/etc/ocidd/cmdline", words.display())]);
    run.assert_failed(2, "/etc/ocidd/cmdline: unknown parameter oci.mirorr");
    let run = overlay(&["ca.pem=etc/ocidd/ca.pem".to_string()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not an absolute path"),
        "{}",
        run.stderr
    );
    assert!(!output.exists());
}

#[test]
fn a_stopped_install_reports_its_signal() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(8 * MIB, 6);
    let file = write_file(dir.path(), "disk.img", &image);
    push(&file, &format!("{}/stop/disk:v1", registry.host()), "zstd");
    // Slow enough to be stopped while writing.
    let slow = Proxy::start(registry.port, |request| {
        Action::Forward(Forward {
            throttle: request.is_blob().then_some(512 << 10),
            ..Forward::default()
        })
    });
    let receiver = Receiver::start();
    let target = target_file(dir.path(), "t.img", 0);
    let mut words = tag_words(&format!("{}/stop/disk:v1", slow.host()), &target, &[]);
    words.push(format!("ocidd.report={}", receiver.url()));
    let child = spawn_words(&words);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !receiver
        .events()
        .iter()
        .any(|e| e["event_type"] == "start" && e["name"] == "write")
    {
        assert!(Instant::now() < deadline, "the write phase never started");
        thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_failed(143, "stopped by SIGTERM");
    let events = receiver.events();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last["event_type"].as_str(),
            last["name"].as_str(),
            last["result"].as_str(),
            last["exit_code"].as_i64()
        ),
        (Some("finish"), Some("write"), Some("FAIL"), Some(143)),
        "{events:#?}"
    );
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .starts_with("stopped by SIGTERM"),
        "{last:#}"
    );
}
