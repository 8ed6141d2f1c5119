//! Through a real forward proxy (tinyproxy): `oci.no_proxy` entries with a port, a proxy that
//! wants credentials, and the environment's proxies at a shell, named when they fail and
//! refused when malformed.

mod common;

use std::fs;

use common::tinyproxy::ForwardProxy;
use common::*;

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
    reference: String,
}

fn setup(repo: &str) -> Setup {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 60);
    let file = write_file(dir.path(), "disk.img", &image);
    let reference = format!("{}/{repo}:v1", registry.host());
    push(&file, &reference, "gzip");
    Setup {
        registry,
        dir,
        image,
        reference,
    }
}

impl Setup {
    fn target(&self) -> std::path::PathBuf {
        target_file(self.dir.path(), "t.img", 0)
    }

    fn assert_holds_the_image(&self, target: &std::path::Path) {
        assert_eq!(fs::read(target).unwrap(), self.image);
    }
}

/// Whether tinyproxy's log shows a request for the registry's manifests.
fn went_through(proxy: &ForwardProxy, repo: &str) -> bool {
    proxy.log().contains(&format!("/v2/{repo}/manifests/v1"))
}

/// `host:port` entries bypass the proxy for that port only; `localhost` and IP forms too.
#[test]
fn no_proxy_entries_with_a_port() {
    let s = setup("proxied/ports");
    let proxy = ForwardProxy::start();
    let via = format!("oci.proxy=http://127.0.0.1:{}", proxy.port);
    let target = s.target();
    let port = s.registry.port;
    for bypass in [
        format!("127.0.0.1:{port}"),
        format!("10.0.0.0/8, 127.0.0.0/8:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let run = install_tag(
            &s.reference,
            &target,
            &[&via, &format!("oci.no_proxy={bypass}")],
        );
        run.assert_installed();
        s.assert_holds_the_image(&target);
        assert!(
            !went_through(&proxy, "proxied/ports"),
            "{bypass}: {}",
            proxy.log()
        );
    }
    // Another port of the same host goes through the proxy.
    let other = format!("oci.no_proxy=127.0.0.1:{}", port + 1);
    install_tag(&s.reference, &target, &[&via, &other]).assert_installed();
    assert!(went_through(&proxy, "proxied/ports"), "{}", proxy.log());
    // localhost:port, with the registry named localhost.
    let proxy = ForwardProxy::start();
    let via = format!("oci.proxy=http://127.0.0.1:{}", proxy.port);
    let by_name = format!("localhost:{port}/proxied/ports:v1");
    let bypass = format!("oci.no_proxy=localhost:{port}");
    install_tag(&by_name, &target, &[&via, &bypass]).assert_installed();
    assert!(!went_through(&proxy, "proxied/ports"), "{}", proxy.log());
    // A malformed entry is the operator's mistake, said before anything is fetched.
    let run = install_tag(&s.reference, &target, &[&via, "oci.no_proxy=[::1"]);
    run.assert_failed(2, "invalid oci.no_proxy");
}

/// A proxy that wants credentials says so as the proxy's demand, not the registry's; with
/// them in its URL the install goes through, over plain HTTP and over CONNECT to HTTPS.
#[test]
fn a_proxy_that_wants_credentials() {
    let s = setup("proxied/auth");
    let proxy = ForwardProxy::start_with_auth("ops", "pr0xy");
    let target = s.target();
    let bare = format!("oci.proxy=http://127.0.0.1:{}", proxy.port);
    let run = install_tag(&s.reference, &target, &[&bare, "oci.retries=0"]);
    run.assert_failed(3, "the proxy answered HTTP 407");
    assert!(
        !run.stderr.contains("no credentials were given"),
        "{}",
        run.stderr
    );
    let with = format!("oci.proxy=http://ops:pr0xy@127.0.0.1:{}", proxy.port);
    let run = install_tag(&s.reference, &target, &[&with]);
    run.assert_installed();
    s.assert_holds_the_image(&target);
    assert!(!run.stderr.contains("pr0xy"), "{}", run.stderr);

    let file = write_file(s.dir.path(), "disk.img", &s.image);
    let tls = TlsRegistry::with_image(&file, "proxied/auth:v1");
    let words = |proxy: &str| {
        install_words(&[
            &format!("oci.tag={}", tls.reference),
            &format!("oci.ca={}", tls.ca.display()),
            proxy,
            "oci.retries=0",
            &format!("dd.of={}", target.display()),
            "dd.bs=1M",
        ])
    };
    words(&with).assert_installed();
    s.assert_holds_the_image(&target);
    let run = words(&bare);
    run.assert_failed(3, "407");
    assert!(run.stderr.contains("oci.proxy"), "{}", run.stderr);
}

/// At a shell, the environment's proxy is used, named when the connection fails, and
/// refused when malformed; NO_PROXY entries with a port bypass it.
#[test]
fn the_environment_proxies() {
    let s = setup("proxied/env");
    let target = s.target();
    let of = format!("dd.of={}", target.display());
    let tag = format!("oci.tag={}", s.reference);
    let run_with = |env: &[(&str, String)]| {
        let mut command = ocidd();
        command.args([&tag, "oci.allow_no_tls", &of, "dd.bs=1M", "oci.retries=0"]);
        for name in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        Run::from(command.output().unwrap())
    };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = run_with(&[("http_proxy", dead.clone())]);
    run.assert_failed(3, "(through the proxy in http_proxy)");
    let run = run_with(&[
        ("HTTP_PROXY", dead.clone()),
        ("NO_PROXY", format!("127.0.0.1:{}", s.registry.port)),
    ]);
    run.assert_installed();
    for malformed in ["http://", "socks5://127.0.0.1:1080", "http://[::1"] {
        let run = run_with(&[("HTTP_PROXY", malformed.to_string())]);
        run.assert_failed(2, "invalid HTTP_PROXY");
    }
    let proxy = ForwardProxy::start();
    let run = run_with(&[("http_proxy", format!("127.0.0.1:{}", proxy.port))]);
    run.assert_installed();
    assert!(went_through(&proxy, "proxied/env"), "{}", proxy.log());
}
