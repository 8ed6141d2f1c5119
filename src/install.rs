//! The install: resolve the image, check the target, stream the blob through digest check and
//! decompression onto the target, and commit it only once it verified.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use indicatif::HumanBytes;

use crate::blockdev::{ImageWriter, Target};
use crate::cmdline::Params;
use crate::decompress::{Compression, Decoder};
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Classify, Failure, classified, failure_of};
use crate::progress::{Display, Progress, Reporter};
use crate::prompt::{self, InstallOptions};
use crate::reference::{ImageSource, Platform};
use crate::registry::{self, Registry};
use crate::source::BlobReader;

/// Read size of the compressed stream.
const INPUT_BUFFER: usize = 256 << 10;
/// Size of the reads from the decompressor.
const OUTPUT_BUFFER: usize = 256 << 10;

/// What a successful install did.
#[derive(Debug)]
pub struct Summary {
    pub target: String,
    pub bytes: u64,
    pub seconds: f64,
    pub digest: Digest,
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
    let options = prompt::complete(params)?;
    install(&options, display)
}

fn install(options: &InstallOptions, display: Display) -> Result<Summary> {
    let target = Target::open(&options.target)?;
    let http = registry::http_client(&options.registry)?;
    let reference = options.source.reference();
    let registry = Registry::new(reference, &options.registry, http)?;

    let (digest, blob_size, compression, image_size) = match &options.source {
        ImageSource::Tag(reference) => {
            let platform = options
                .registry
                .platform
                .clone()
                .unwrap_or_else(Platform::current);
            let layer = registry
                .resolve(reference, &platform)
                .with_context(|| format!("resolving {reference}"))?;
            eprintln!(
                "ocidd: {reference} is {} ({}, {})",
                layer.digest,
                HumanBytes(layer.size),
                layer.compression
            );
            (
                layer.digest,
                Some(layer.size),
                Some(layer.compression),
                layer.image_size,
            )
        }
        ImageSource::Blob(_, digest) => (digest.clone(), None, None, None),
    };
    if let Some(size) = image_size {
        target.check_fits(size)?;
    }
    eprintln!(
        "ocidd: writing onto {} in {} blocks",
        target.describe(),
        HumanBytes(options.block_size as u64)
    );
    if options.wait {
        prompt::confirm(&target.describe())?;
    }

    let progress = Arc::new(Progress::default());
    let blob = BlobReader::open(
        &registry,
        &digest,
        blob_size,
        options.registry.backoff(),
        Arc::clone(&progress),
    )
    .with_context(|| format!("fetching {reference}"))?;
    let blob_size = blob.size();
    progress.set_total(blob_size);
    let mut input = BufReader::with_capacity(
        INPUT_BUFFER,
        VerifyingReader::new(blob, digest.clone(), blob_size),
    );
    let compression = match compression {
        Some(compression) => compression,
        None => {
            let head = input
                .fill_buf()
                .map_err(anyhow::Error::from)
                .context("reading the blob")?;
            Compression::detect(head)
                .map_err(|e| anyhow!(e))
                .classify(Failure::Verification)?
        }
    };
    let image_size = match compression {
        Compression::None => image_size.or(blob_size),
        _ => image_size,
    };
    if let Some(size) = image_size {
        target.check_fits(size)?;
    }

    let reporter = Reporter::start(Arc::clone(&progress), display);
    let mut writer = ImageWriter::new(&target, options.block_size, Arc::clone(&progress));
    let result = match stream(&mut input, compression, image_size, &mut writer) {
        Ok(()) => {
            let written = writer.written();
            writer.finish().map_err(|e| (e, Some(written)))
        }
        Err(e) => Err((e, writer.touched().then(|| writer.written()))),
    };
    reporter.finish();
    match result {
        Ok(bytes) => {
            if let Err(e) = target.reread_partitions() {
                eprintln!("ocidd: note: {e:#}");
            }
            Ok(Summary {
                target: target.path().display().to_string(),
                bytes,
                seconds: progress.elapsed().as_secs_f64(),
                digest,
            })
        }
        Err((error, written)) => Err(after_failure(error, written, &target, options)),
    }
}

/// Copies the decompressed image into the writer, and checks that the blob ended with it.
fn stream<R: Read>(
    input: &mut BufReader<VerifyingReader<R>>,
    compression: Compression,
    image_size: Option<u64>,
    writer: &mut ImageWriter,
) -> Result<()> {
    copy(input, compression, writer).and_then(|copied| {
        // The decoders read their input to its end, where the digest is checked; anything
        // they left unread is data after the image.
        let left = input.buffer().len() as u64
            + input
                .get_mut()
                .read_to_end_and_verify()
                .map_err(|e| read_error(e, compression))?;
        if left > 0 {
            return Err(classified(
                Failure::Verification,
                anyhow!(
                    "the blob has {left} bytes of data after the end of the {compression} image"
                ),
            ));
        }
        match image_size {
            Some(expected) if copied != expected => Err(classified(
                Failure::Verification,
                anyhow!("the image is {copied} bytes but its manifest says {expected}"),
            )),
            _ => Ok(()),
        }
    })
}

fn copy<R: Read>(
    input: &mut BufReader<VerifyingReader<R>>,
    compression: Compression,
    writer: &mut ImageWriter,
) -> Result<u64> {
    let mut decoder =
        Decoder::new(compression, &mut *input).map_err(|e| read_error(e, compression))?;
    let mut buffer = vec![0u8; OUTPUT_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let error = read_error(e, compression);
                drop(decoder);
                return Err(explain_corruption(error, input));
            }
        };
        writer
            .write_all(&buffer[..n])
            .map_err(|e| classified(Failure::Target, e.into()))?;
        copied += n as u64;
    }
}

/// An error from the decompressing side: tagged errors come from the download or the digest
/// check; anything else is the decompressor finding corrupt data.
fn read_error(error: io::Error, compression: Compression) -> anyhow::Error {
    let error = anyhow::Error::from(error);
    if failure_of(&error).is_some() {
        error
    } else {
        classified(
            Failure::Verification,
            error.context(format!("the {compression} data is corrupt")),
        )
    }
}

/// When the decompressor finds corrupt data, a blob that does not match its digest explains it
/// better: read the rest of the blob to find out.
fn explain_corruption<R: Read>(
    error: anyhow::Error,
    input: &mut BufReader<VerifyingReader<R>>,
) -> anyhow::Error {
    if failure_of(&error) != Some(Failure::Verification) || input.get_ref().verified() {
        return error;
    }
    match input.get_mut().read_to_end_and_verify() {
        Err(digest_error) => {
            let digest_error = anyhow::Error::from(digest_error);
            if failure_of(&digest_error) == Some(Failure::Verification) {
                digest_error
            } else {
                error
            }
        }
        Ok(_) => error,
    }
}

/// Makes the target unbootable if writing had begun (`written` is then how much of the image
/// was), unless told to keep it, and says so in the error.
fn after_failure(
    error: anyhow::Error,
    written: Option<u64>,
    target: &Target,
    options: &InstallOptions,
) -> anyhow::Error {
    let failure = failure_of(&error).unwrap_or(Failure::Target);
    let path = target.path().display();
    let note = match written {
        None => format!("nothing was written to {path}"),
        Some(bytes) if options.keep_on_error => format!(
            "{bytes} bytes of the image were written; {path} holds a partial image (left as it is: oci.keep_on_error)"
        ),
        Some(bytes) => match target.wipe_start() {
            Ok(()) => format!(
                "{bytes} bytes of the image were written; zeroed the first MiB of {path} so it cannot boot a partial image"
            ),
            Err(e) => format!(
                "{bytes} bytes of the image were written; {path} holds a partial image and zeroing its first MiB failed: {e:#}"
            ),
        },
    };
    classified(failure, anyhow!("{error:#}; {note}"))
}

/// Prints the final line of a successful install.
pub fn print_summary(summary: &Summary) {
    let rate = summary.bytes as f64 / summary.seconds.max(0.001);
    let line = format!(
        "ocidd: installed {} ({} bytes) onto {} in {:.1} s ({}/s); blob {} verified",
        HumanBytes(summary.bytes),
        summary.bytes,
        summary.target,
        summary.seconds,
        HumanBytes(rate as u64),
        summary.digest
    );
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
