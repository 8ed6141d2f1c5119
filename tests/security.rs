//! Security properties: certificates are verified (an extra CA can be given), plain HTTP only
//! when allowed, no Authorization header to a redirect target on another host, no credentials
//! in output, manifests capped before parsing, sha256 and sha512 digests only.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::proxy::{Action, Forward, Proxy, Request};
use common::*;

#[test]
fn certificates_are_verified_and_an_extra_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let registry = Registry::start_tls(&certificate, &key);
    // A bundle: every certificate in it is trusted, not only the first.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path());
    let bundle = dir.path().join("bundle.pem");
    fs::write(
        &bundle,
        [fs::read(&other_ca).unwrap(), fs::read(&ca).unwrap()].concat(),
    )
    .unwrap();
    let ca = bundle;
    let image = image_bytes(2 * MIB, 80);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/tls:v1", registry.host());
    let push = Run::from(
        ocidd()
            .args(["push", "--ca"])
            .arg(&ca)
            .arg(&source)
            .arg(&reference)
            .output()
            .unwrap(),
    );
    assert_eq!(push.code, 0, "{}", push.stderr);

    let target = write_file(dir.path(), "out.img", b"");
    let of = format!("dd.of={}", target.display());
    let tag = format!("oci.tag={reference}");
    // Not trusted: refused at once (a certificate does not get better by retrying).
    let run = install_words(&[&tag, &of, "dd.bs=1M"]);
    run.assert_failed(3, "certificate");
    assert!(
        run.stderr.contains("give its CA with oci.ca= or --ca"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    // Trusted through oci.ca.
    let ca_word = format!("oci.ca={}", ca.display());
    install_words(&[&tag, &of, "dd.bs=1M", &ca_word]).assert_installed();
    assert!(fs::read(&target).unwrap() == image);
    // oci.allow_no_tls means plain HTTP, which this registry does not speak.
    install_words(&[&tag, &of, "dd.bs=1M", "oci.allow_no_tls", "oci.retries=0"])
        .assert_failed(3, "400");
}

/// A registry behind a proxy that demands a bearer token and redirects blob downloads to
/// "object storage" on another port, which records what it was sent.
#[test]
fn no_authorization_header_reaches_a_redirect_target() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 81);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(
        &source,
        &format!("{}/disks/redirect:v1", registry.host()),
        "gzip",
    );

    let storage_seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let seen = Arc::clone(&storage_seen);
    let storage = Proxy::start(registry.port, move |request| {
        seen.lock().unwrap().push(request.clone());
        Action::forward()
    });
    let tokens = Proxy::start(free_port(), |_| Action::Respond {
        status: 200,
        headers: vec![],
        body: br#"{"token":"secret-token-value"}"#.to_vec(),
    });
    let realm = format!("http://{}/token", tokens.host());
    let storage_host = storage.host();
    let front = Proxy::start(registry.port, move |request| {
        if request.header("authorization") != Some("Bearer secret-token-value") {
            return Action::Respond {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!(r#"Bearer realm="{realm}",service="s""#),
                )],
                body: vec![],
            };
        }
        if request.is_blob() {
            return Action::Respond {
                status: 307,
                headers: vec![(
                    "Location".into(),
                    format!("http://{storage_host}{}", request.path),
                )],
                body: vec![],
            };
        }
        Action::forward()
    });
    let target = write_file(dir.path(), "out.img", b"");
    let run = install_tag(&format!("{}/disks/redirect:v1", front.host()), &target, &[]);
    run.assert_installed();
    assert!(fs::read(&target).unwrap() == image);
    let seen = storage_seen.lock().unwrap();
    assert!(!seen.is_empty(), "the redirect was not followed");
    for request in seen.iter() {
        assert_eq!(
            request.header("authorization"),
            None,
            "token sent to {}",
            request.path
        );
    }
    assert!(
        !run.stderr.contains("secret-token-value") && !run.stdout.contains("secret-token-value")
    );
}

#[test]
fn manifests_are_capped_before_parsing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = write_file(dir.path(), "disk.raw", &image_bytes(MIB, 82));
    push(
        &source,
        &format!("{}/disks/huge:v1", registry.host()),
        "gzip",
    );
    let mut huge = b"{\"schemaVersion\":2,\"padding\":\"".to_vec();
    huge.resize(5 * MIB, b'x');
    huge.extend_from_slice(b"\"}");
    let proxy = Proxy::start(registry.port, move |request| {
        if request.path.contains("/manifests/") {
            Action::Forward(Forward {
                replace_body: Some(huge.clone()),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    });
    let target = target_file(dir.path(), "t.img", 2 * MIB);
    install_tag(&format!("{}/disks/huge:v1", proxy.host()), &target, &[])
        .assert_failed(4, "larger than the 4 MiB limit");
    assert_untouched(&target);
}

#[test]
fn sha512_digests_work_and_other_algorithms_are_refused() {
    use sha2::Digest as _;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB + 99, 83);
    let blob = gzip(&image);
    let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&blob)));
    registry.put_blob_as("disks/sha512", &blob, &digest);
    let target = write_file(dir.path(), "out.img", b"");
    install_blob(
        &format!("{}/disks/sha512@{digest}", registry.host()),
        &target,
    )
    .assert_installed();
    assert!(fs::read(&target).unwrap() == image);

    let sha384 = format!(
        "{}/disks/sha512@sha384:{}",
        registry.host(),
        "ab".repeat(48)
    );
    install_blob(&sha384, &target).assert_failed(2, "only sha256 and sha512");
    // A manifest whose layer has another algorithm is refused too.
    let layer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"{GZIP}","digest":"sha384:{}","size":10}}]}}"#,
        registry.put_blob("disks/sha512", b"{}"),
        "cd".repeat(48)
    );
    let proxy = Proxy::start(registry.port, move |request| {
        if request.path.contains("/manifests/") {
            Action::Respond {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: layer.clone().into_bytes(),
            }
        } else {
            Action::forward()
        }
    });
    install_tag(&format!("{}/disks/sha512:v1", proxy.host()), &target, &[])
        .assert_failed(4, "only sha256 and sha512");
}

#[test]
fn credentials_never_show_in_output() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let password = "pa55-w0rd-never-shown";
    let encoded = "dXNlcjpwYTU1LXcwcmQtbmV2ZXItc2hvd24="; // user:pa55-w0rd-never-shown
    let tokens = Proxy::start(free_port(), |_| Action::Respond {
        status: 401,
        headers: vec![],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#.to_vec(),
    });
    let realm = format!("http://{}/token", tokens.host());
    let front = Proxy::start(registry.port, move |_| Action::Respond {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!(r#"Bearer realm="{realm}",service="s""#),
        )],
        body: vec![],
    });
    let config = write_file(
        dir.path(),
        "config.json",
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{encoded}"}}}}}}"#,
            front.host()
        )
        .as_bytes(),
    );
    let target = target_file(dir.path(), "t.img", MIB);
    let run = install_tag(
        &format!("{}/disks/x:v1", front.host()),
        &target,
        &[&format!("oci.auth={}", config.display())],
    );
    run.assert_failed(3, "token");
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains(password) && !text.contains(encoded),
            "{text}"
        );
    }
}

/// An HTTPS server that answers every request with a redirect to `location` (plain HTTP).
fn tls_redirector(certificate: &Path, key: &Path, location: String) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificates = CertificateDer::pem_file_iter(certificate)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let connection = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let _ = write!(
                tls,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tls.flush();
        }
    });
    port
}

/// An HTTPS registry that redirects to plain HTTP: refused at once (not retried), naming
/// where it went and what would allow it.
#[test]
fn a_redirect_from_https_to_http_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let port = tls_redirector(
        &certificate,
        &key,
        "http://127.0.0.1:9/blobs/secret?X-Amz-Signature=abc".to_string(),
    );
    let target = target_file(dir.path(), "t.img", MIB);
    let run = install_words(&[
        &format!("oci.tag=127.0.0.1:{port}/disks/redirect:v1"),
        &format!("oci.ca={}", ca.display()),
        &format!("dd.of={}", target.display()),
        "dd.bs=1M",
    ]);
    run.assert_failed(
        3,
        "the registry redirected to plain HTTP (http://127.0.0.1:9/…), which is refused without oci.allow_no_tls or --plain-http",
    );
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    assert!(!run.stderr.contains("Signature"), "{}", run.stderr);
    assert_untouched(&target);
}

/// A password in a mirror's value is never printed; a mirror prefix cannot leave `/v2/`.
#[test]
fn mirror_values_keep_secrets_and_stay_under_v2() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", MIB);
    let run = install_tag(
        "127.0.0.1:9/disks/x:v1",
        &target,
        &["oci.mirror=https://ops:S3CRET-M1RROR@cache.example:5000"],
    );
    run.assert_failed(2, "invalid oci.mirror");
    assert!(!run.stderr.contains("S3CRET-M1RROR"), "{}", run.stderr);
    for prefix in ["..", "a/../..", ".", "..%2f"] {
        let run = install_tag(
            "127.0.0.1:9/disks/x:v1",
            &target,
            &[&format!("oci.mirror=127.0.0.1:9/{prefix}")],
        );
        run.assert_failed(2, "repository path components");
    }
    assert_untouched(&target);
}

/// A report token or a report URL's credentials go over plain HTTP only with
/// oci.allow_no_tls, as registry credentials do; and never both at once (two Authorization
/// headers).
#[test]
fn report_credentials_follow_the_plain_http_rule() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", MIB);
    let token = write_file(dir.path(), "token", b"t0ken-never-shown\n");
    let token_word = format!("ocidd.report_token={}", token.display());
    let of = format!("dd.of={}", target.display());
    let tag = "oci.tag=127.0.0.1:9/disks/x:v1";
    for (words, message) in [
        (
            vec![
                tag,
                &of,
                "dd.bs=1M",
                "ocidd.report=http://127.0.0.1:9/r",
                &token_word,
            ],
            "the report token would cross the network in the clear",
        ),
        (
            vec![
                tag,
                &of,
                "dd.bs=1M",
                "ocidd.report=http://u:pw-never-shown@127.0.0.1:9/r",
            ],
            "the credentials in its URL would cross",
        ),
        (
            vec![
                tag,
                &of,
                "dd.bs=1M",
                "oci.allow_no_tls",
                "ocidd.report=http://u:pw-never-shown@127.0.0.1:9/r",
                &token_word,
            ],
            "give one of them",
        ),
    ] {
        let run = install_words(&words);
        run.assert_failed(2, message);
        for secret in ["pw-never-shown", "t0ken-never-shown"] {
            assert!(!run.stderr.contains(secret), "{}", run.stderr);
        }
    }
    assert_untouched(&target);
}
