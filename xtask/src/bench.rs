//! `cargo xtask bench`: install speed against the original pipeline, measured in one run with
//! the cases interleaved (this machine is shared and noisy; ratios within a run are what
//! count).
//!
//! Images: a realistic disk (GPT + ext4 populated from /usr with `mkfs.ext4 -d`, so real files
//! and free space) and random data. Each is pushed to a local registry as plain gzip (one
//! stream, as the original's images are), as ocidd-chunked gzip and as chunked zstd. Cases:
//! the original pipeline (`curl | tee >(sha256sum) | busybox gunzip | busybox dd bs=64k`, as
//! the original's oras + jq + gunzip + dd do), `gzip -dc` to /dev/null (what one core can
//! inflate), `bmaptool copy` of the same gzip blob over HTTP from a static server with its
//! bmap (the peer a user would pick for sparse, checksummed writes), and ocidd into a file and
//! onto a loop device (the chunked image also on one core, to show how it scales).
//!
//! Then other producers' images (`--only formats`): the realistic image as multi-block and
//! single-block xz and as qcow2 from qemu-img (plain and compressed), each installed by
//! ocidd onto the loop device beside what a user would otherwise run (`xz -dc -T0`,
//! `qemu-img convert` from a local file).
//!
//! Then `dd.delta` (cases with "delta" in their label): the realistic image as v1 and a v2 in
//! which 5 % of the chunks differ, both chunked. On a loop device holding v1, v2 is installed
//! in full and with `dd.delta`; on a blank one too, to show what the read pass costs when
//! nothing matches. The page cache is dropped before each timed install, so that the read pass
//! reads the device.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::deps;
use crate::util::{LocalRegistry, cargo, exec, output, root};

pub struct Options {
    /// Size of the realistic image in MiB.
    pub size_mib: u64,
    /// Size of the random-data image in MiB.
    pub random_mib: u64,
    pub rounds: usize,
    /// An earlier ocidd binary whose installs are timed beside this one's.
    pub baseline: Option<PathBuf>,
    /// Only the ocidd cases whose label contains this.
    pub only: Option<String>,
}

const PACKAGES: &[&str] = &[
    "docker-registry",
    "xz-utils",
    "qemu-utils",
    "bmap-tools",
    "python3",
    "busybox-static",
    "curl",
    "gzip",
    "time",
    "fdisk",
    "e2fsprogs",
    "util-linux",
];

struct Measurement {
    seconds: f64,
    max_rss_kib: u64,
}

/// Runs `script` with bash under /usr/bin/time; returns wall time and peak RSS of the largest
/// process in it.
fn measure(script: &str) -> Result<Measurement> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "RSS %M", "bash", "-o", "pipefail", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{script} failed:\n{stderr}");
    }
    let max_rss_kib = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("RSS "))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .unwrap_or(0);
    Ok(Measurement {
        seconds,
        max_rss_kib,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn run(options: &Options) -> Result<()> {
    deps::ensure_packages(PACKAGES)?;
    cargo(&["build", "--release", "--package", "ocidd"])?;
    let ocidd = root().join("target/release/ocidd");
    let work = root().join("target/bench");
    fs::create_dir_all(&work)?;

    let realistic = work.join(format!("realistic-{}M.img", options.size_mib));
    if !realistic.exists() {
        make_realistic_image(&realistic, &work, options.size_mib)?;
    }
    let random = work.join(format!("random-{}M.img", options.random_mib));
    if !random.exists() {
        exec(
            Command::new("head")
                .arg("-c")
                .arg(format!("{}M", options.random_mib))
                .arg("/dev/urandom")
                .stdout(fs::File::create(&random)?),
        )?;
    }

    let registry_dir = work.join("registry");
    let _ = fs::remove_dir_all(&registry_dir);
    let registry = LocalRegistry::start(&registry_dir)?;
    let host = format!("127.0.0.1:{}", registry.port);

    // Targets: a file that is replaced for every run, and a loop device over a sparse file.
    let file_target = work.join("target.img");
    let backing = work.join("loop-backing.img");
    let size = fs::metadata(&realistic)?
        .len()
        .max(fs::metadata(&random)?.len());
    fs::File::create(&backing)?.set_len(size + (64 << 20))?;
    let loop_device = output(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing),
    )?
    .trim()
    .to_string();
    let only_delta = options
        .only
        .as_deref()
        .is_some_and(|o| o.contains("delta") || o.contains("formats"));
    let mut result = if only_delta {
        Ok(())
    } else {
        bench_images(
            options,
            &ocidd,
            &host,
            &registry_dir,
            &[("realistic", &realistic), ("random", &random)],
            &file_target,
            &loop_device,
        )
    };
    if result.is_ok()
        && options
            .only
            .as_deref()
            .is_none_or(|o| o.contains("formats"))
    {
        result = bench_formats(options, &ocidd, &host, &realistic, &work, &loop_device);
    }
    if result.is_ok() && options.only.as_deref().is_none_or(|o| o.contains("delta")) {
        result = bench_delta(options, &ocidd, &host, &realistic, &work, &loop_device);
    }
    let _ = Command::new("losetup").args(["-d", &loop_device]).status();
    let _ = fs::remove_file(&backing);
    let _ = fs::remove_file(&file_target);
    result
}

#[allow(clippy::too_many_arguments)]
fn bench_images(
    options: &Options,
    ocidd: &Path,
    host: &str,
    registry_dir: &Path,
    images: &[(&str, &Path)],
    file_target: &Path,
    loop_device: &str,
) -> Result<()> {
    let ocidd = ocidd.display();
    for (name, image) in images {
        let image_size = fs::metadata(image)?.len();
        eprintln!("bench: pushing {name} ({} MiB)", image_size >> 20);
        let mut blobs = BTreeMap::new();
        // The baseline installs what it pushed itself: an earlier build may not read this
        // one's chunk index.
        if let Some(baseline) = &options.baseline {
            for (variant, args) in [
                ("gzip", "--compression gzip --chunk-size 0"),
                ("chunked", "--compression gzip"),
                ("zstd", "--compression zstd"),
            ] {
                output(Command::new("bash").arg("-c").arg(format!(
                    "{} push --plain-http {args} {} {host}/bench/{name}:{variant}-baseline",
                    baseline.display(),
                    image.display()
                )))?;
            }
        }
        for (variant, args) in [
            ("gzip", "--compression gzip --chunk-size 0"),
            ("chunked", "--compression gzip"),
            ("zstd", "--compression zstd"),
        ] {
            let pushed = output(Command::new("bash").arg("-c").arg(format!(
                "{ocidd} push --plain-http {args} {} {host}/bench/{name}:{variant}",
                image.display()
            )))?;
            let layer = pushed
                .lines()
                .find_map(|l| l.strip_prefix("layer "))
                .context("no layer digest from push")?
                .trim()
                .to_string();
            let hex = layer.trim_start_matches("sha256:");
            let stored = registry_dir.join(format!(
                "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            ));
            eprintln!(
                "bench:   {variant}: {} MiB",
                fs::metadata(&stored)?.len() >> 20
            );
            blobs.insert(variant, (layer, stored));
        }
        let gzip_layer = &blobs["gzip"].0;
        let gzip_file = blobs["gzip"].1.display().to_string();
        // bmaptool's input: the same gzip blob, named so that it knows the compression, and
        // the image's bmap, on a static HTTP server.
        let served = registry_dir.with_file_name("served");
        fs::create_dir_all(&served)?;
        let served_gzip = served.join(format!("{name}.img.gz"));
        let _ = fs::remove_file(&served_gzip);
        std::os::unix::fs::symlink(&blobs["gzip"].1, &served_gzip)?;
        let bmap = served.join(format!("{name}.img.bmap"));
        if !bmap.exists() {
            exec(
                Command::new("bmaptool")
                    .args(["create", "-o"])
                    .arg(&bmap)
                    .arg(image),
            )?;
        }
        let static_server = StaticServer::start(&served)?;
        let bmap_url = format!("http://127.0.0.1:{}/{name}.img.gz", static_server.port);
        let url = format!("http://{host}/v2/bench/{name}/blobs/{gzip_layer}");
        let file = file_target.display();
        let install = |variant: &str, target: &str| {
            format!(
                "{ocidd} oci.tag={host}/bench/{name}:{variant} oci.allow_no_tls dd.of={target} dd.bs=1M"
            )
        };
        let cases: Vec<(String, String)> = vec![
            (
                "original (curl|gunzip|dd)".into(),
                format!(
                    "curl -sf {url} | tee >(sha256sum >/dev/null) | busybox gunzip | busybox dd bs=64k of={file} conv=fsync 2>/dev/null"
                ),
            ),
            (
                "gzip -dc >/dev/null".into(),
                format!("gzip -dc {gzip_file} >/dev/null"),
            ),
            (
                "bmaptool copy (gzip, HTTP) → loop".into(),
                format!(
                    "bmaptool -q copy --bmap {} {bmap_url} {loop_device}",
                    bmap.display()
                ),
            ),
            (
                "ocidd gzip → file".into(),
                install("gzip", &file.to_string()),
            ),
            ("ocidd gzip → loop".into(), install("gzip", loop_device)),
            (
                "ocidd chunked → file".into(),
                install("chunked", &file.to_string()),
            ),
            (
                "ocidd chunked → loop".into(),
                install("chunked", loop_device),
            ),
            // The same on one core: how the chunked install scales with cores.
            (
                "ocidd chunked → loop, 1 core".into(),
                format!("taskset -c 0 {}", install("chunked", loop_device)),
            ),
            (
                "ocidd zstd → file".into(),
                install("zstd", &file.to_string()),
            ),
            ("ocidd zstd → loop".into(), install("zstd", loop_device)),
        ];
        // Only the ocidd cases asked for (the three references stay: the ratios need them).
        let mut cases: Vec<(String, String)> = cases
            .into_iter()
            .enumerate()
            .filter(|(i, (label, _))| {
                *i < 3
                    || options
                        .only
                        .as_ref()
                        .is_none_or(|only| label.contains(only.as_str()))
            })
            .map(|(_, case)| case)
            .collect();
        // The baseline binary's twin of every ocidd case, timed in the same rounds.
        if let Some(baseline) = &options.baseline {
            let twins: Vec<(String, String)> = cases
                .iter()
                .filter(|(label, _)| label.starts_with("ocidd "))
                .map(|(label, script)| {
                    // Its own push of the same variant: the tag's `-baseline` twin.
                    let script = script
                        .replacen(&ocidd.to_string(), &baseline.display().to_string(), 1)
                        .replacen(" oci.allow_no_tls", "-baseline oci.allow_no_tls", 1);
                    (label.replacen("ocidd ", "baseline ", 1), script)
                })
                .collect();
            cases.extend(twins);
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        let mut rss: Vec<u64> = vec![0; cases.len()];
        for round in 0..options.rounds {
            for (i, (label, script)) in cases.iter().enumerate() {
                // Every case starts from an empty target file, made (and the previous one
                // deleted, which takes ~0.3 s for 2 GiB) outside the timing.
                let _ = fs::remove_file(file_target);
                fs::File::create(file_target)?;
                exec(&mut Command::new("sync"))?;
                let m = measure(script)?;
                eprintln!("bench: {name} round {round}: {label}: {:.2} s", m.seconds);
                times[i].push(m.seconds);
                rss[i] = rss[i].max(m.max_rss_kib);
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        let (original, limit, bmaptool) = (medians[0], medians[1], medians[2]);
        drop(static_server);
        println!();
        println!(
            "{name}: {} MiB image, gzip {} MiB; medians of {} interleaved rounds",
            image_size >> 20,
            fs::metadata(&blobs["gzip"].1)?.len() >> 20,
            options.rounds
        );
        println!(
            "| case | median s | MiB/s | original / case | case / gzip -dc | case / bmaptool | peak RSS MiB |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (i, (label, _)) in cases.iter().enumerate() {
            println!(
                "| {label} | {:.2} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.1} |",
                medians[i],
                (image_size as f64 / (1 << 20) as f64) / medians[i],
                original / medians[i],
                medians[i] / limit,
                medians[i] / bmaptool,
                rss[i] as f64 / 1024.0
            );
        }
        if options.baseline.is_some() {
            println!();
            println!("| case | this build s | baseline s | this / baseline |");
            println!("| --- | --- | --- | --- |");
            for (i, (label, _)) in cases.iter().enumerate() {
                let twin = label.replacen("ocidd ", "baseline ", 1);
                if let Some(j) = cases.iter().position(|(l, _)| *l == twin && twin != *label) {
                    println!(
                        "| {label} | {:.2} | {:.2} | {:.3} |",
                        medians[i],
                        medians[j],
                        medians[i] / medians[j]
                    );
                }
            }
        }
    }
    Ok(())
}

/// Uploads `file` as the one layer (of `media_type`) of an image at `host/repo:tag`, with an
/// empty config, as other tools push disks.
fn put_artifact(host: &str, repo: &str, tag: &str, media_type: &str, file: &Path) -> Result<()> {
    let script = format!(
        r#"set -e
put_blob() {{
  digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -D - -o /dev/null http://{host}/v2/{repo}/blobs/uploads/ | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$location" in /*) location="http://{host}$location" ;; esac
  case "$location" in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$location${{sep}}digest=$digest" >/dev/null
  echo "$digest"
}}
printf '{{}}' > "$0.config"
config=$(put_blob "$0.config")
layer=$(put_blob {file})
size=$(stat -c %s {file})
manifest='{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"'$config'","size":2}},"layers":[{{"mediaType":"{media_type}","digest":"'$layer'","size":'$size'}}]}}'
curl -sSf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' -d "$manifest" http://{host}/v2/{repo}/manifests/{tag} >/dev/null
"#,
        file = file.display()
    );
    exec(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(file.with_extension("put")),
    )
}

/// xz and qcow2 made by their own tools, installed by ocidd and by those tools, onto the
/// loop device.
fn bench_formats(
    options: &Options,
    ocidd: &Path,
    host: &str,
    image: &Path,
    work: &Path,
    loop_device: &str,
) -> Result<()> {
    let image_size = fs::metadata(image)?.len();
    let ocidd = ocidd.display();
    let source = image.display();
    let made: [(&str, &str, String); 4] = [
        (
            "xz-blocks",
            "application/octet-stream+xz",
            format!("xz -1 -T2 --block-size=8MiB -c {source} > OUT"),
        ),
        (
            "xz-single",
            "application/octet-stream+xz",
            format!("xz -1 -T1 -c {source} > OUT"),
        ),
        (
            "qcow2",
            "application/vnd.oci.image.layer.v1.tar",
            format!("qemu-img convert -f raw -O qcow2 {source} OUT"),
        ),
        (
            "qcow2-c",
            "application/vnd.oci.image.layer.v1.tar",
            format!("qemu-img convert -f raw -O qcow2 -c {source} OUT"),
        ),
    ];
    let mut cases: Vec<(String, String)> = Vec::new();
    for (name, media_type, make) in &made {
        let file = work.join(format!("formats-{name}"));
        if !file.exists() {
            eprintln!("bench: formats: making {name}");
            let partial = file.with_extension("partial");
            exec(
                Command::new("bash")
                    .arg("-c")
                    .arg(make.replace("OUT", &partial.display().to_string())),
            )?;
            fs::rename(&partial, &file)?;
        }
        eprintln!(
            "bench: formats: {name}: {} MiB",
            fs::metadata(&file)?.len() >> 20
        );
        put_artifact(host, "bench/formats", name, media_type, &file)?;
        let theirs = if name.starts_with("xz") {
            format!(
                "xz -dc -T0 {} | dd of={loop_device} bs=1M oflag=direct status=none",
                file.display()
            )
        } else {
            format!(
                "qemu-img convert -n -f qcow2 -O raw {} {loop_device}",
                file.display()
            )
        };
        let tool = if name.starts_with("xz") {
            "xz -dc -T0"
        } else {
            "qemu-img convert"
        };
        cases.push((format!("{tool} {name} → loop"), theirs));
        cases.push((
            format!("ocidd {name} → loop"),
            format!(
                "{ocidd} oci.tag={host}/bench/formats:{name} oci.allow_no_tls dd.of={loop_device} dd.bs=1M"
            ),
        ));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rss: Vec<u64> = vec![0; cases.len()];
    for round in 0..options.rounds {
        for (i, (label, script)) in cases.iter().enumerate() {
            exec(&mut Command::new("sync"))?;
            let m = measure(script)?;
            eprintln!("bench: formats round {round}: {label}: {:.2} s", m.seconds);
            times[i].push(m.seconds);
            rss[i] = rss[i].max(m.max_rss_kib);
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!();
    println!(
        "formats: the {} MiB realistic image; medians of {} interleaved rounds",
        image_size >> 20,
        options.rounds
    );
    println!("| case | median s | MiB/s | ocidd / tool | peak RSS MiB |");
    println!("| --- | --- | --- | --- | --- |");
    for (i, (label, _)) in cases.iter().enumerate() {
        let tool = medians[i - i % 2];
        println!(
            "| {label} | {:.2} | {:.0} | {:.2} | {:.1} |",
            medians[i],
            (image_size as f64 / (1 << 20) as f64) / medians[i],
            medians[i] / tool,
            rss[i] as f64 / 1024.0
        );
    }
    Ok(())
}

/// `python3 -m http.server` over a directory, on a free loopback port, stopped when dropped.
struct StaticServer {
    port: u16,
    child: std::process::Child,
}

impl StaticServer {
    fn start(dir: &Path) -> Result<StaticServer> {
        let port = crate::util::free_port()?;
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3 -m http.server")?;
        let server = StaticServer { port, child };
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the static HTTP server did not start on port {port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chunk size the delta images are pushed with (ocidd's default).
const DELTA_CHUNK: usize = 4 << 20;

/// Writes `v1` with 5 % of its chunks changed (4 KiB of noise in every 20th) to `v2`.
fn make_v2(v1: &Path, v2: &Path) -> Result<usize> {
    let mut data = fs::read(v1)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut changed = 0;
    for (i, chunk) in data.chunks_mut(DELTA_CHUNK).enumerate() {
        if i % 20 == 10 && chunk.len() > 12 << 10 {
            for byte in &mut chunk[8192..12288] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            changed += 1;
        }
    }
    fs::write(v2, &data)?;
    Ok(changed)
}

/// `dd.delta` against full installs, on a loop device holding v1 and on a blank one.
fn bench_delta(
    options: &Options,
    ocidd: &Path,
    host: &str,
    v1: &Path,
    work: &Path,
    loop_device: &str,
) -> Result<()> {
    let v2 = work.join("delta-v2.img");
    let changed = make_v2(v1, &v2)?;
    let image_size = fs::metadata(v1)?.len();
    let chunks = image_size.div_ceil(DELTA_CHUNK as u64);
    eprintln!("bench: delta: {changed} of {chunks} chunks differ between v1 and v2");
    // Each binary installs what it pushed itself: an earlier build may not read this one's
    // chunk index.
    let mut binaries = vec![("", ocidd.to_path_buf())];
    if let Some(baseline) = &options.baseline {
        binaries.push(("baseline ", baseline.clone()));
    }
    let blank = format!(
        "blkdiscard -z {loop_device} 2>/dev/null || dd if=/dev/zero of={loop_device} bs=4M conv=fsync 2>/dev/null"
    );
    // What each case does beforehand (untimed), and the install it times.
    let mut cases: Vec<(String, String, String)> = Vec::new();
    for (who, binary) in &binaries {
        let repo = if who.is_empty() {
            "delta"
        } else {
            "delta-baseline"
        };
        let binary = binary.display();
        for (tag, image) in [("v1", v1), ("v2", v2.as_path())] {
            output(Command::new("bash").arg("-c").arg(format!(
                "{binary} push --plain-http {} {host}/bench/{repo}:{tag}",
                image.display()
            )))?;
        }
        let install = |tag: &str, extra: &str| {
            format!(
                "{binary} oci.tag={host}/bench/{repo}:{tag} oci.allow_no_tls dd.of={loop_device} dd.bs=1M {extra}"
            )
        };
        let holding_v1 = format!("{} >/dev/null 2>&1", install("v1", ""));
        cases.extend([
            (
                format!("{who}full v2 onto v1"),
                holding_v1.clone(),
                install("v2", ""),
            ),
            (
                format!("{who}delta v2 onto v1"),
                holding_v1,
                install("v2", "dd.delta"),
            ),
            (
                format!("{who}full v2 onto blank"),
                blank.clone(),
                install("v2", ""),
            ),
            (
                format!("{who}delta v2 onto blank"),
                blank.clone(),
                install("v2", "dd.delta"),
            ),
        ]);
    }
    let drop_caches = "sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true";
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..options.rounds {
        for (i, (label, setup, script)) in cases.iter().enumerate() {
            exec(
                Command::new("bash")
                    .arg("-c")
                    .arg(format!("{setup}; {drop_caches}")),
            )?;
            let m = measure(script)?;
            eprintln!("bench: delta round {round}: {label}: {:.2} s", m.seconds);
            times[i].push(m.seconds);
        }
    }
    // What dd.delta said it did, from one more run onto v1.
    exec(Command::new("bash").arg("-c").arg(&cases[1].1))?;
    let said = output(Command::new("bash").arg("-c").arg(format!(
        "{} 2>&1 >/dev/null | grep 'dd.delta: the target holds' || true",
        cases[1].2
    )))?;
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!();
    println!(
        "delta: {} MiB image, {changed} of {chunks} chunks changed; medians of {} interleaved rounds",
        image_size >> 20,
        options.rounds
    );
    println!("{}", said.trim());
    println!("| case | median s | / full onto the same disk |");
    println!("| --- | --- | --- |");
    for (i, (label, _, _)) in cases.iter().enumerate() {
        let full = medians[i - i % 2];
        println!("| {label} | {:.2} | {:.2} |", medians[i], medians[i] / full);
    }
    if options.baseline.is_some() {
        println!();
        println!("| case | this build s | baseline s | this / baseline |");
        println!("| --- | --- | --- | --- |");
        for i in 0..4 {
            println!(
                "| {} | {:.2} | {:.2} | {:.3} |",
                cases[i].0,
                medians[i],
                medians[i + 4],
                medians[i] / medians[i + 4]
            );
        }
    }
    let _ = fs::remove_file(&v2);
    Ok(())
}

/// A GPT disk of `size_mib` whose ext4 partition is filled from /usr to about 70 %.
fn make_realistic_image(image: &Path, work: &Path, size_mib: u64) -> Result<()> {
    eprintln!("bench: building a {size_mib} MiB GPT + ext4 image from /usr");
    let rootfs = work.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let mut budget = (size_mib * 7 / 10) << 20;
    for dir in ["bin", "lib", "share", "libexec", "sbin", "include"] {
        let from = PathBuf::from("/usr").join(dir);
        if from.exists() {
            crate::image::copy_files(&from, &rootfs.join("usr").join(dir), &mut budget)?;
        }
    }
    let partial = image.with_extension("partial");
    crate::image::gpt_ext4(&partial, size_mib, &rootfs)?;
    fs::rename(&partial, image)?;
    let _ = fs::remove_dir_all(&rootfs);
    Ok(())
}
