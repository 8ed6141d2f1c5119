//! The install of an image read as one stream (plain gzip, zstd, or raw; any image without a
//! chunk index), in three threads joined by bounded pipes of reusable buffers: fetch and
//! digest, decompress, write. The total time approaches the slowest stage, not the sum.

use std::io::{self, Read, Write};
use std::thread;

use anyhow::{Result, anyhow};

use crate::compression::Compression;
use crate::error::{Failure, classified, failure_of};
use crate::install::content;
use crate::install::decompress::Decoder;
use crate::install::pipe::{PipeReader, PipeWriter, is_broken, pipe};
use crate::install::qcow2::Qcow2Error;
use crate::install::writer::ImageWriter;

/// Buffers per pipe, and their size.
const BUFFERS: usize = 4;
const BUFFER_SIZE: usize = 1 << 20;

/// Streams `blob` (whose first bytes, `head`, were already read from it) decompressed onto
/// `writer`, and checks that the image has `image_size` bytes when that is known. The blob
/// reader checks the digest at its end. `by_content`: the layer's type did not say what it
/// holds, so the decompressed stream is looked at ([`content`]).
pub fn install(
    blob: impl Read + Send,
    head: Vec<u8>,
    compression: Compression,
    by_content: bool,
    image_size: Option<u64>,
    writer: &mut ImageWriter,
) -> Result<()> {
    let (mut raw_out, raw_in) = pipe(BUFFERS, BUFFER_SIZE);
    let (image_out, mut image_in) = pipe(BUFFERS, BUFFER_SIZE);
    let (fetched, decoded, written) = thread::scope(|scope| {
        let fetch = thread::Builder::new()
            .name("fetch".into())
            .spawn_scoped(scope, move || {
                fetch(blob, head, &mut raw_out)?;
                Ok(raw_out.finish()?)
            })
            .map_err(|e| anyhow!(e));
        let decode = thread::Builder::new()
            .name("decompress".into())
            .spawn_scoped(scope, move || {
                decode(raw_in, compression, by_content, image_out)
            })
            .map_err(|e| anyhow!(e));
        let written = write(&mut image_in, writer);
        // If writing stopped, this lets the other stages see it.
        drop(image_in);
        let join = |handle: Result<thread::ScopedJoinHandle<'_, Result<()>>>| {
            handle.and_then(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a stage panicked")))
            })
        };
        (join(fetch), join(decode), written)
    });
    choose(fetched, decoded, written)?;
    match image_size {
        Some(expected) if writer.written() != expected => Err(classified(
            Failure::Verification,
            anyhow!(
                "the image is {} bytes but its manifest says {expected}",
                writer.written()
            ),
        )),
        _ => Ok(()),
    }
}

/// The failure to report when stages failed: a blob that did not verify explains everything
/// after it; then corrupt data; then the download; then the target. Errors that only say
/// another stage stopped are never the reason.
fn choose(fetched: Result<()>, decoded: Result<()>, written: Result<()>) -> Result<()> {
    let real = |r: &Result<()>| r.as_ref().err().is_some_and(|e| !is_broken(e));
    let unverified = fetched
        .as_ref()
        .err()
        .is_some_and(|e| failure_of(e) == Some(Failure::Verification));
    if unverified {
        return fetched;
    }
    if real(&decoded) {
        return decoded;
    }
    if real(&fetched) {
        return fetched;
    }
    if real(&written) {
        return written;
    }
    fetched.and(decoded).and(written)
}

/// Stage 1: the blob, digest-checked by its reader, into the pipe.
fn fetch(mut blob: impl Read, head: Vec<u8>, out: &mut PipeWriter) -> Result<()> {
    out.write_all(&head)?;
    loop {
        match out.fill_from(&mut blob) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stage 2: decompression, the image taken out of what holds it when only the content tells
/// (`by_content`, see [`content`]), and the check that the blob ends where the image does.
fn decode(
    input: PipeReader,
    compression: Compression,
    by_content: bool,
    mut out: PipeWriter,
) -> Result<()> {
    let mut decoder = Decoder::new(compression, input).map_err(|e| decode_error(e, compression))?;
    let mut pump = |image: &mut dyn Read| -> Result<()> {
        loop {
            match out.fill_from(&mut &mut *image) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(decode_error(e, compression)),
            }
        }
    };
    let pumped = if by_content {
        // What follows the image inside (a tar's end blocks) is dropped.
        content::with_image(&mut decoder, &mut pump).and_then(|()| {
            io::copy(&mut decoder, &mut io::sink())
                .map(drop)
                .map_err(|e| decode_error(e, compression))
        })
    } else {
        pump(&mut decoder)
    };
    if let Err(error) = pumped {
        if !is_broken(&error)
            && let Some(input) = decoder.get_mut()
        {
            // Read on, so that the fetch stage reaches the digest check: a blob that does
            // not match its digest explains corrupt data better.
            let _ = io::copy(input, &mut io::sink());
        }
        return Err(error);
    }
    // The decoders stop where the image ends; anything left is data after it.
    let Some(input) = decoder.get_mut() else {
        return Err(classified(
            Failure::Verification,
            anyhow!("the {compression} data is corrupt: a member could not be decoded"),
        ));
    };
    let left = io::copy(input, &mut io::sink()).map_err(|e| decode_error(e, compression))?;
    if left > 0 {
        return Err(classified(
            Failure::Verification,
            anyhow!("the blob has {left} bytes of data after the end of the {compression} image"),
        ));
    }
    Ok(out.finish()?)
}

/// An error on the decompressing side: tagged errors come from the download or the digest
/// check, broken pipes from another stage; anything else is the decompressor finding
/// corrupt data.
fn decode_error(error: io::Error, compression: Compression) -> anyhow::Error {
    if Qcow2Error::is(&error) {
        return classified(Failure::Verification, error.into());
    }
    let error = anyhow::Error::from(error);
    if failure_of(&error).is_some() || is_broken(&error) {
        error
    } else {
        classified(
            Failure::Verification,
            error.context(format!("the {compression} data is corrupt")),
        )
    }
}

/// Stage 3 (the calling thread): the image onto the target.
fn write(input: &mut PipeReader, writer: &mut ImageWriter) -> Result<()> {
    while let Some(buffer) = input.next_buffer()? {
        writer
            .write_all(&buffer)
            .map_err(|e| classified(Failure::Target, e.into()))?;
        input.recycle(buffer);
    }
    Ok(())
}
