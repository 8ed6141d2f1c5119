//! Registries that demand a bearer token (anonymous, as ghcr.io, Docker Hub and quay.io do
//! for public images, or with credentials from a docker config.json), emulated by a proxy in
//! front of the real registry and a token server on another port.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::proxy::{Action, Proxy, Request};
use common::*;

const TOKEN: &str = "opaque-test-token";
const USER_PASS_BASE64: &str = "b3BlcmF0b3I6czNjcjN0"; // operator:s3cr3t

/// A token server; `require_basic` makes it demand the test credentials.
fn token_server(require_basic: bool, seen: Arc<Mutex<Vec<Request>>>) -> Proxy {
    Proxy::start(free_port(), move |request| {
        seen.lock().unwrap().push(request.clone());
        let authorized =
            request.header("authorization") == Some(&format!("Basic {USER_PASS_BASE64}"));
        if require_basic && !authorized {
            return Action::Respond {
                status: 401,
                headers: vec![],
                body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#
                    .to_vec(),
            };
        }
        Action::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#).into_bytes(),
        }
    })
}

/// The registry behind a proxy that answers 401 with a Bearer challenge unless the request
/// carries the token.
fn guarded_registry(registry: &Registry, token_server: &Proxy) -> Proxy {
    let realm = format!("http://{}/token", token_server.host());
    Proxy::start(registry.port, move |request| {
        if request.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            return Action::forward();
        }
        Action::Respond {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="{realm}",service="test-registry",scope="repository:disks/auth:pull""#
                ),
            )],
            body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_vec(),
        }
    })
}

fn setup() -> (Registry, tempfile::TempDir, Vec<u8>) {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 40);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(
        &source,
        &format!("{}/disks/auth:v1", registry.host()),
        "gzip",
    );
    (registry, dir, image)
}

#[test]
fn anonymous_bearer_token_is_fetched_without_credentials() {
    let (registry, dir, image) = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tokens = token_server(false, Arc::clone(&seen));
    let guarded = guarded_registry(&registry, &tokens);
    let target = write_file(dir.path(), "out.img", b"");
    install_tag(&format!("{}/disks/auth:v1", guarded.host()), &target, &[]).assert_installed();
    assert!(fs::read(&target).unwrap() == image);
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "no token was requested");
    for request in seen.iter() {
        assert!(
            request
                .path
                .contains("scope=repository%3Adisks%2Fauth%3Apull"),
            "{}",
            request.path
        );
        assert!(
            request.path.contains("service=test-registry"),
            "{}",
            request.path
        );
        assert_eq!(
            request.header("authorization"),
            None,
            "sent credentials it does not have"
        );
    }
}

#[test]
fn credentials_from_a_docker_config_reach_the_token_server() {
    let (registry, dir, image) = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tokens = token_server(true, Arc::clone(&seen));
    let guarded = guarded_registry(&registry, &tokens);
    let reference = format!("{}/disks/auth:v1", guarded.host());
    let target = write_file(dir.path(), "out.img", b"");

    // Without credentials the token server refuses: a registry failure naming oci.auth.
    install_tag(&reference, &target, &[])
        .assert_failed(3, "no credentials were given: oci.auth= or --auth");

    let config = write_file(
        dir.path(),
        "config.json",
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{USER_PASS_BASE64}"}}}}}}"#,
            guarded.host()
        )
        .as_bytes(),
    );
    let auth = format!("oci.auth={}", config.display());
    let run = install_tag(&reference, &target, &[&auth]);
    run.assert_installed();
    assert!(fs::read(&target).unwrap() == image);
    assert!(!run.stderr.contains("s3cr3t") && !run.stderr.contains(USER_PASS_BASE64));

    // At a shell, DOCKER_CONFIG is honoured.
    let docker_dir = dir.path().join("docker");
    fs::create_dir(&docker_dir).unwrap();
    fs::copy(&config, docker_dir.join("config.json")).unwrap();
    let target = write_file(dir.path(), "out2.img", b"");
    let run = Run::from(
        ocidd()
            .env("DOCKER_CONFIG", &docker_dir)
            .args([
                &format!("oci.tag={reference}"),
                "oci.allow_no_tls",
                "dd.bs=1M",
            ])
            .arg(format!("dd.of={}", target.display()))
            .output()
            .unwrap(),
    );
    run.assert_installed();

    // A broken oci.auth file is a parameter error.
    let broken = write_file(dir.path(), "broken.json", b"{not json");
    install_tag(
        &reference,
        &target,
        &[&format!("oci.auth={}", broken.display())],
    )
    .assert_failed(2, "the credentials file");
}

/// Basic authentication against a real docker-registry with TLS and an htpasswd file, as a
/// private registry is often run: push and install with the credentials from a docker config
/// and the CA from oci.ca=; a wrong password and none at all say which it was.
#[test]
fn basic_auth_against_a_tls_registry_with_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let htpasswd = htpasswd(dir.path(), "fleet", "s3cret pass");
    let registry = Registry::start_with_htpasswd(&certificate, &key, &htpasswd);
    let config_file = |name: &str, user_pass: &str| {
        write_file(
            dir.path(),
            name,
            docker_config(&registry.host(), user_pass).as_bytes(),
        )
    };
    let good = config_file("good.json", "fleet:s3cret pass");
    let wrong = config_file("wrong.json", "fleet:guess");
    let image = image_bytes(4 * MIB, 90);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/private:v1", registry.host());
    let pushed = Run::from(
        ocidd()
            .args(["push", "--ca"])
            .arg(&ca)
            .arg("--auth")
            .arg(&good)
            .arg(&source)
            .arg(&reference)
            .output()
            .unwrap(),
    );
    assert_eq!(pushed.code, 0, "push: {}", pushed.stderr);
    // Without the credentials: the registry's refusal, not the compressor seeing the upload go.
    let refused = Run::from(
        ocidd()
            .args(["push", "--ca"])
            .arg(&ca)
            .arg(&source)
            .arg(format!("{}/disks/private:v2", registry.host()))
            .output()
            .unwrap(),
    );
    refused.assert_failed(3, "uploading the image");
    assert!(
        refused.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("upload stopped"),
        "{}",
        refused.stderr
    );

    let target = write_file(dir.path(), "out.img", b"");
    let words = |config: Option<&std::path::Path>| {
        let mut words = vec![
            format!("oci.tag={reference}"),
            format!("oci.ca={}", ca.display()),
            format!("dd.of={}", target.display()),
            "dd.bs=1M".to_string(),
        ];
        if let Some(config) = config {
            words.push(format!("oci.auth={}", config.display()));
        }
        words
    };
    let run = |config| {
        let words = words(config);
        install_words(&words.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let installed = run(Some(&good));
    installed.assert_installed();
    assert!(fs::read(&target).unwrap() == image);
    assert!(!installed.stderr.contains("s3cret"), "{}", installed.stderr);
    run(Some(&wrong)).assert_failed(3, "the registry refused the credentials given");
    run(None).assert_failed(3, "no credentials were given");
}
