//! The install: resolve the image, check the target, stream the blob through digest check and
//! decompression onto the target, and commit it only once it verified.

pub mod boot_entry;
pub mod chunked;
pub mod content;
pub mod decompress;
pub mod gpt;
pub mod interrupt;
pub mod pipe;
pub mod prompt;
pub mod qcow2;
pub mod seed_partition;
pub mod stream;
pub mod target;
pub mod writer;

use std::io::{self, IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use indicatif::HumanBytes;

use crate::chunks::{ChunkIndex, MAX_INDEX_SIZE};
use crate::cmdline::Params;
use crate::compression::Compression;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Classify, Failure, classified, failure_of};
use crate::fail;
use crate::progress::{DeltaCounts, Display, Progress, Reporter};
use crate::reference::Platform;
use crate::registry::Registry;
use crate::registry::blob::{BlobReader, read_small_blob};
use crate::registry::manifest::ANNOTATION_IMAGE_SIZE;
use crate::report::Report;
use crate::report::event::Phase;
use crate::seed::{self, Seed};
use crate::signature::{Outcome, Policy};
use crate::{out, say};
use chunked::ChunkedSource;
use content::Content;
use prompt::InstallOptions;
use target::Target;
use writer::{ImageWriter, WriteFailure};

/// How much of a blob is read to tell its compression.
const HEAD: usize = 512;

/// What a successful install did.
#[derive(Debug)]
pub struct Summary {
    pub target: String,
    pub bytes: u64,
    pub seconds: f64,
    pub digest: Digest,
    /// Stdout carries JSON lines (`--json`): the summary goes to stderr.
    pub json_lines: bool,
    /// Installed without the signature required, as `oci.verify=warn` allows: why.
    pub unverified: Option<String>,
    /// What was verified ("blob … verified", "image blake3:… verified: …"), as the data
    /// path said it once everything was.
    pub verified: String,
    /// What `dd.delta` reused, fetched and zeroed.
    pub delta: Option<DeltaCounts>,
    /// The UEFI boot entry written: `Boot0004 (\EFI\debian\shimx64.efi)`.
    pub boot_entry: Option<String>,
}

/// Installs the image the parameters name, asking for what is missing. Progress is a bar on
/// a terminal, else a line every 5 s.
pub fn run(params: Params) -> Result<Summary> {
    let display = if io::stderr().is_terminal() {
        Display::Bar
    } else {
        Display::Lines(PROGRESS_INTERVAL)
    };
    run_with(params, display)
}

/// Interval of the plain progress lines.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// [`run`] with the progress shown as `display`.
pub fn run_with(params: Params, display: Display) -> Result<Summary> {
    let report = Report::new(&params.report, &params.registry)?;
    let json_lines = params.report.json_lines;
    let result = prompt::complete(params).and_then(|options| install(&options, display, &report));
    if let Err(error) = &result {
        report.fail(error);
    }
    report.close();
    result.map(|summary| Summary {
        json_lines,
        ..summary
    })
}

/// What the registry said the image is.
struct Plan {
    digest: Digest,
    blob_size: Option<u64>,
    /// Known from the media type; else detected from the blob's first bytes.
    compression: Option<Compression>,
    image_size: Option<u64>,
    index: Option<ChunkIndex>,
    signature: Option<Outcome>,
    /// The manifest the tag (or manifest digest) resolved to; none for `oci.blob`.
    manifest: Option<Digest>,
}

fn plan(registry: &Registry, options: &InstallOptions, policy: Option<&Policy>) -> Result<Plan> {
    if let Some(digest) = options.source.blob() {
        if policy.is_some() {
            say!("ocidd: oci.blob names the blob by its digest, so no signature is looked for");
        }
        return Ok(Plan {
            digest: digest.clone(),
            blob_size: None,
            compression: None,
            image_size: None,
            index: None,
            signature: None,
            manifest: None,
        });
    }
    let reference = options.source.reference();
    let platform = options
        .registry
        .platform
        .clone()
        .unwrap_or_else(Platform::current);
    let resolution = registry
        .resolve(reference, &platform)
        .with_context(|| format!("resolving {reference}"))?;
    // Before anything else is read from what the tag names: a signature must cover it.
    let signature = match policy {
        Some(policy) => Some(
            policy
                .check(registry, &resolution)
                .with_context(|| format!("verifying the signature of {reference}"))?,
        ),
        None => None,
    };
    let manifest = resolution.manifest;
    let layer = resolution.layer;
    if let Some(note) = &layer.note {
        say!("ocidd: {note}");
    }
    say!(
        "ocidd: {reference} is {} ({}, {}{})",
        layer.digest,
        HumanBytes(layer.size),
        layer
            .compression
            .map_or("told by its content".to_string(), |c| c.to_string()),
        if layer.chunk_index.is_some() {
            ", chunked"
        } else {
            ""
        }
    );
    let index = match &layer.chunk_index {
        Some((digest, size)) => {
            let Some(compression) = layer.compression else {
                fail!(
                    Failure::Verification,
                    "the image has a chunk index, but its layer's type does not say its compression"
                );
            };
            chunked::supports(compression)?;
            let data = read_small_blob(registry, digest, Some(*size), MAX_INDEX_SIZE)
                .context("fetching the chunk index")?;
            let index = ChunkIndex::parse(&data, &layer.digest, layer.size)?;
            if layer
                .image_size
                .is_some_and(|size| size != index.image_size)
            {
                fail!(
                    Failure::Verification,
                    "the chunk index's image size differs from the layer's {ANNOTATION_IMAGE_SIZE} annotation"
                );
            }
            Some(index)
        }
        None => None,
    };
    Ok(Plan {
        digest: layer.digest,
        blob_size: Some(layer.size),
        compression: layer.compression,
        image_size: index.as_ref().map(|i| i.image_size).or(layer.image_size),
        index,
        signature,
        manifest: Some(manifest),
    })
}

fn install(options: &InstallOptions, display: Display, report: &Report) -> Result<Summary> {
    if options.source.implied_registry() {
        say!(
            "ocidd: no registry was named, so the image is {} (Docker Hub)",
            options.source
        );
    }
    // Keys first: a missing key file is the operator's mistake, found before anything else.
    let policy = Policy::new(&options.verify)?;
    // The disk first: a wrong dd.match or dd.of fails at once, without the network.
    report.start(Phase::SelectDisk, "choosing the target disk".to_string());
    let (path, disk) = prompt::choose_target(&options.selection, options.target.as_deref())?;
    let target = Target::open(&path)?;
    // What the disk's table names before the install: the entries that name it are stale.
    let variables = boot_entry::variables_for(&target, options.boot_order);
    let before = match variables {
        Some(_) => boot_entry::signatures(&target),
        None => Default::default(),
    };
    report.set_disk(
        &path,
        disk.as_ref().and_then(|d| d.serial()),
        disk.as_ref().map(|d| d.size).or(target.capacity()),
    );
    report.succeed(Phase::SelectDisk, target.describe());

    let source = options.source.to_string();
    let pinned = options.source.blob().map(|d| d.to_string());
    report.set_image(&source, None, pinned.as_deref());
    report.start(Phase::Resolve, format!("resolving {source}"));
    let reference = options.source.reference();
    let registry = Registry::new(reference, &options.registry)?;
    let plan = plan(&registry, options, policy.as_ref())?;
    report.set_image(
        &source,
        plan.manifest.as_ref().map(|d| d.to_string()).as_deref(),
        Some(&plan.digest.to_string()),
    );
    if let Some(size) = plan.image_size {
        target.check_fits(size, plan.index.as_ref().map(ChunkIndex::data_bytes))?;
    }
    // The seed and its partition are checked before anything is written: a seed that cannot
    // be fetched or has the wrong label, or an image with no room for it, stops here.
    let seed = seed::prepare(&options.seed, &options.registry)?.map(Arc::new);
    if let Some(seed) = &seed {
        check_seed_fits(&registry, &plan, &target)
            .with_context(|| format!("{}: adding the seed's partition", seed.word))?;
        say!("ocidd: {}", seed.describe());
    }
    report.succeed(Phase::Resolve, format!("{source} is {}", plan.digest));
    if options.wait {
        prompt::confirm(&target.describe())?;
    }
    say!(
        "ocidd: writing onto {} in {} blocks",
        target.describe(),
        HumanBytes(options.block_size as u64)
    );

    let progress = Arc::new(Progress::default());
    report.track(&progress, plan.blob_size);
    report.start(
        Phase::Write,
        format!("writing {} onto {}", plan.digest, target.path().display()),
    );
    // The data paths call this once the blob matched its digest, before they write the
    // held-back first and last MiB.
    let verified = |what: &str| {
        report.succeed(
            Phase::Write,
            "written but for the first and last MiB".to_string(),
        );
        report.start(Phase::Verify, "checking the digests".to_string());
        report.succeed(Phase::Verify, what.to_string());
        report.start(
            Phase::Finalize,
            "writing the first and last MiB and syncing".to_string(),
        );
    };
    let result = match (&plan.index, plan.compression, plan.blob_size) {
        (Some(index), Some(compression), Some(blob_size)) => {
            let source = ChunkedSource {
                registry: &registry,
                digest: &plan.digest,
                blob_size,
                index,
                compression,
            };
            let commit = Commit {
                seed,
                on_verified: &verified,
            };
            install_chunked(&source, &target, options, commit, &progress, display)
        }
        _ => {
            if options.delta {
                say!(
                    "ocidd: dd.delta needs an image pushed in chunks (ocidd push); installing the whole image"
                );
            }
            let commit = Commit {
                seed,
                on_verified: &verified,
            };
            install_sequential(
                &registry, &plan, &target, options, commit, &progress, display,
            )
        }
    };
    match result {
        Ok((bytes, what_verified)) => {
            if let Err(e) = target.reread_partitions() {
                say!("ocidd: note: {e:#}");
            }
            let mut boot_entry = None;
            if let Some(variables) = &variables {
                match boot_entry::write(&target, &before, options.boot_order, variables)? {
                    boot_entry::Outcome::Written(written) => {
                        say!(
                            "ocidd: {}",
                            written.describe(&target.path().display().to_string())
                        );
                        boot_entry = Some(format!("{} ({})", written.name, written.path));
                    }
                    boot_entry::Outcome::Skipped(why) => {
                        say!("ocidd: no boot entry written: {why}")
                    }
                }
            }
            let summary = Summary {
                target: target.path().display().to_string(),
                bytes,
                seconds: progress.elapsed().as_secs_f64(),
                digest: plan.digest,
                verified: what_verified,
                delta: progress.delta(),
                boot_entry,
                json_lines: false,
                unverified: match plan.signature {
                    Some(Outcome::Unverified(why)) => Some(why),
                    _ => None,
                },
            };
            report.succeed(Phase::Finalize, summary_line(&summary));
            Ok(summary)
        }
        Err(failure) => Err(after_failure(failure, &target, options)),
    }
}

/// Gives a file that grows its final length up front (sparse), so that writes do not extend
/// it one by one (direct writes that extend a file are slow on some file systems).
fn grow_target(target: &Target, size: u64) -> Result<()> {
    target
        .set_image_length(size)
        .with_context(|| format!("setting the length of {}", target.path().display()))
        .classify(Failure::Target)
}

/// What happens once the image verified: the report hears what was verified, and the held
/// tables are written with the seed's partition, if any.
struct Commit<'a> {
    seed: Option<Arc<Seed>>,
    on_verified: &'a dyn Fn(&str),
}

/// The image in chunks, in parallel.
fn install_chunked(
    source: &ChunkedSource,
    target: &Target,
    options: &InstallOptions,
    commit: Commit,
    progress: &Arc<Progress>,
    display: Display,
) -> Result<(u64, String), WriteFailure> {
    grow_target(target, source.index.image_size)?;
    progress.set_total(Some(source.blob_size));
    let reporter = Reporter::start(Arc::clone(progress), display);
    let result = chunked::install(
        source,
        target,
        options.block_size,
        progress,
        options.delta,
        commit.seed,
        commit.on_verified,
    );
    reporter.finish();
    result.map(|installed| (installed.image_size, installed.verified))
}

/// The image as one stream.
fn install_sequential(
    registry: &Registry,
    plan: &Plan,
    target: &Target,
    options: &InstallOptions,
    commit: Commit,
    progress: &Arc<Progress>,
    display: Display,
) -> Result<(u64, String), WriteFailure> {
    let mut blob =
        BlobReader::whole(registry, &plan.digest, plan.blob_size).counting(Arc::clone(progress));
    blob.connect()
        .with_context(|| format!("fetching {}", options.source))?;
    let blob_size = blob.size();
    progress.set_total(blob_size);
    let mut blob = VerifyingReader::new(blob, plan.digest.clone(), blob_size);
    let mut head = Vec::with_capacity(HEAD);
    (&mut blob)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(anyhow::Error::from)
        .context("reading the blob")?;
    let compression = match plan.compression {
        Some(labelled) => labelled.check_label(&head).map(|()| labelled),
        None => Compression::detect(&head),
    }
    .map_err(|e| anyhow!(e))
    .classify(Failure::Verification)?;
    // A layer whose type does not say what it holds is looked at once decompressed; an
    // uncompressed one here already.
    let by_content = plan.compression.is_none();
    // An uncompressed qcow2's header says the image's size: a disk too small is refused
    // before anything is written.
    let image_size = match compression {
        Compression::None if !by_content || Content::detect(&head) == Content::Raw => {
            plan.image_size.or(blob_size)
        }
        Compression::None if Content::detect(&head) == Content::Qcow2 => {
            qcow2::Header::parse(&head).ok().map(|header| header.size)
        }
        _ => plan.image_size,
    };
    if let Some(size) = image_size {
        target.check_fits(size, None)?;
        grow_target(target, size)?;
    }
    let reporter = Reporter::start(Arc::clone(progress), display);
    let mut writer = ImageWriter::with_seed(
        target,
        options.block_size,
        Arc::clone(progress),
        commit.seed,
    );
    let result = match stream::install(blob, head, compression, by_content, image_size, &mut writer)
    {
        Ok(()) => {
            let what = format!("blob {} verified", plan.digest);
            (commit.on_verified)(&what);
            let written = writer.written();
            writer
                .finish()
                .map(|bytes| (bytes, what))
                .map_err(|error| WriteFailure {
                    error,
                    written: Some(written),
                })
        }
        Err(error) => Err(WriteFailure {
            error,
            written: writer.touched().then(|| writer.written()),
        }),
    };
    reporter.finish();
    result
}

/// Refuses, before anything is written, an image whose table cannot take the seed's
/// partition or that leaves no room for it: the image's first MiB is read (and thrown away;
/// the commit checks the verified one again).
fn check_seed_fits(registry: &Registry, plan: &Plan, target: &Target) -> Result<()> {
    let mut start = image_start(registry, plan).context("reading the image's partition table")?;
    let image_size = plan.image_size.unwrap_or(0);
    let disk_size = target
        .capacity()
        .unwrap_or_else(|| seed_partition::disk_size_for(image_size));
    seed_partition::add(&mut start, target.sector_size(), image_size, disk_size)?;
    Ok(())
}

/// The image's first [`writer::HOLDBACK`] bytes, decompressed from the blob's start.
fn image_start(registry: &Registry, plan: &Plan) -> Result<Vec<u8>> {
    let mut blob = BlobReader::whole(registry, &plan.digest, plan.blob_size);
    blob.connect()?;
    let mut input = io::BufReader::new(blob);
    let head = io::BufRead::fill_buf(&mut input)?;
    let compression = match plan.compression {
        Some(compression) => compression,
        None => Compression::detect(head)
            .map_err(|e| anyhow!(e))
            .classify(Failure::Verification)?,
    };
    let mut decoder = decompress::Decoder::new(compression, input)?;
    let mut first = |image: &mut dyn Read| -> Result<Vec<u8>> {
        let mut start = Vec::with_capacity(writer::HOLDBACK);
        image
            .take(writer::HOLDBACK as u64)
            .read_to_end(&mut start)?;
        Ok(start)
    };
    match plan.compression {
        Some(_) => first(&mut decoder),
        None => content::with_image(&mut decoder, &mut first),
    }
}

/// Makes the target unbootable if writing had begun, unless told to keep it, and says so in
/// the error.
fn after_failure(
    WriteFailure { error, written }: WriteFailure,
    target: &Target,
    options: &InstallOptions,
) -> anyhow::Error {
    let failure = failure_of(&error);
    let path = target.path().display();
    let note = match written {
        None => format!("nothing was written to {path}"),
        Some(bytes) if options.keep_on_error => format!(
            "{bytes} bytes of the image were written; {path} holds a partial image (left as it is, as asked: keep on error)"
        ),
        Some(bytes) => match target.wipe() {
            Ok(holds) => format!(
                "{bytes} bytes of the image were written; {path} {holds}, so it cannot boot a partial image"
            ),
            Err(e) => format!(
                "{bytes} bytes of the image were written; {path} holds a partial image and wiping its partition tables failed: {e:#}"
            ),
        },
    };
    let error = anyhow!("{error:#}; {note}");
    // What no stage tagged stays untagged (exit 1, a bug to fix): guessing "target" would
    // send the operator to the disk for what may be the network.
    match failure {
        Some(failure) => classified(failure, error),
        None => error,
    }
}

/// The final line of a successful install.
fn summary_line(summary: &Summary) -> String {
    let rate = summary.bytes as f64 / summary.seconds.max(0.001);
    let unsigned = if summary.unverified.is_some() {
        "; WARNING: its signature did not verify (oci.verify=warn)"
    } else {
        ""
    };
    let delta = summary.delta.map_or(String::new(), |d| {
        format!(
            "; dd.delta reused {} of {} chunks ({}), fetched {}, zeroed {}",
            d.reused,
            d.total,
            HumanBytes(d.reused_bytes),
            d.fetched,
            d.zeroed
        )
    });
    let verified = &summary.verified;
    let boot_entry = summary
        .boot_entry
        .as_ref()
        .map_or(String::new(), |entry| format!("; boot entry {entry}"));
    format!(
        "installed {} ({} bytes) onto {} in {:.1} s ({}/s){delta}; {verified}{boot_entry}{unsigned}",
        HumanBytes(summary.bytes),
        summary.bytes,
        summary.target,
        summary.seconds,
        HumanBytes(rate as u64),
    )
}

/// Prints the final line of a successful install: on stdout, unless that carries JSON lines.
pub fn print_summary(summary: &Summary) {
    if summary.json_lines {
        say!("ocidd: {}", summary_line(summary));
    } else {
        out!("ocidd: {}", summary_line(summary));
    }
}
