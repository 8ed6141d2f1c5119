//! A bounded pipe between two threads of the byte stream, made of reusable buffers: the
//! writing end fills a buffer and passes it on, the reading end hands it back when read, so
//! memory stays at `buffers × size` and nothing is allocated per buffer.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// What travels down the pipe.
enum Message {
    Data(Vec<u8>),
    /// The writer finished; anything after this is not coming.
    End,
}

/// A pipe of `buffers` buffers of `size` bytes.
pub fn pipe(buffers: usize, size: usize) -> (PipeWriter, PipeReader) {
    let (full_tx, full_rx) = sync_channel(buffers);
    let (empty_tx, empty_rx) = sync_channel(buffers);
    for _ in 1..buffers {
        let _ = empty_tx.send(Vec::with_capacity(size));
    }
    (
        PipeWriter {
            full: full_tx,
            empty: empty_rx,
            current: vec![0; size],
            filled: 0,
            size,
        },
        PipeReader {
            full: full_rx,
            empty: empty_tx,
            current: Vec::new(),
            position: 0,
            ended: false,
        },
    )
}

/// The error an end of the pipe gets when the other end went away: the stage there failed
/// and reports why itself.
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the other end of the pipeline stopped")
    }
}

impl std::error::Error for Broken {}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, Broken)
}

/// Whether `error` only says that another stage of the pipeline stopped.
pub fn is_broken(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<Broken>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<Broken>())
    })
}

pub struct PipeWriter {
    full: SyncSender<Message>,
    empty: Receiver<Vec<u8>>,
    /// The buffer being filled, always `size` bytes long (zeroed once, when first used), so
    /// that reads go straight into it without clearing it again each time.
    current: Vec<u8>,
    /// How much of `current` holds data.
    filled: usize,
    size: usize,
}

impl PipeWriter {
    fn send_current(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let mut next = self.empty.recv().map_err(|_| broken())?;
        // A recycled buffer is full length already; only a new one is zeroed here.
        next.resize(self.size, 0);
        let mut full = std::mem::replace(&mut self.current, next);
        full.truncate(self.filled);
        self.filled = 0;
        self.full.send(Message::Data(full)).map_err(|_| broken())
    }

    /// Reads once from `reader` straight into the pipe's buffer (no copy); returns how many
    /// bytes that was, 0 at the reader's end.
    pub fn fill_from(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        if self.filled == self.size {
            self.send_current()?;
        }
        let n = reader.read(&mut self.current[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    /// Passes on what is buffered and tells the reader that the stream ended.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_current()?;
        self.full.send(Message::End).map_err(|_| broken())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.filled == self.size {
            self.send_current()?;
        }
        let n = buf.len().min(self.size - self.filled);
        self.current[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct PipeReader {
    full: Receiver<Message>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    ended: bool,
}

impl PipeReader {
    /// The next full buffer, for a consumer that takes whole buffers; `None` at the end.
    /// Give it back with [`PipeReader::recycle`].
    pub fn next_buffer(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.ended {
            return Ok(None);
        }
        match self.full.recv() {
            Ok(Message::Data(data)) => Ok(Some(data)),
            Ok(Message::End) => {
                self.ended = true;
                Ok(None)
            }
            // The writer went away without finishing: it failed, and says why itself.
            Err(_) => Err(broken()),
        }
    }

    /// Returns a buffer from [`PipeReader::next_buffer`] for reuse (as it is: the writer
    /// overwrites it).
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        let _ = self.empty.try_send(buffer);
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.position == self.current.len() && !self.ended {
            let previous = std::mem::take(&mut self.current);
            if previous.capacity() > 0 {
                self.recycle(previous);
            }
            self.position = 0;
            if let Some(next) = self.next_buffer()? {
                self.current = next;
            }
        }
        Ok(&self.current[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.current.len());
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn carries_a_stream_across_threads() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7) as u8).collect();
        let (mut writer, mut reader) = pipe(3, 4096);
        let expected = data.clone();
        let producer = thread::spawn(move || {
            let mut source = &data[..];
            while writer.fill_from(&mut source).unwrap() > 0 {}
            writer.finish().unwrap();
        });
        let mut received = Vec::new();
        reader.read_to_end(&mut received).unwrap();
        producer.join().unwrap();
        assert_eq!(received, expected);
    }

    #[test]
    fn a_writer_that_stops_without_finishing_is_an_error() {
        let (mut writer, mut reader) = pipe(2, 16);
        writer.write_all(&[1; 20]).unwrap();
        drop(writer);
        let mut received = Vec::new();
        let error = reader.read_to_end(&mut received).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn whole_buffers_can_be_taken() {
        let (mut writer, mut reader) = pipe(2, 8);
        let producer = thread::spawn(move || {
            writer.write_all(b"0123456789abcdef01").unwrap();
            writer.finish().unwrap();
        });
        let mut sizes = Vec::new();
        while let Some(buffer) = reader.next_buffer().unwrap() {
            sizes.push(buffer.len());
            reader.recycle(buffer);
        }
        producer.join().unwrap();
        assert_eq!(sizes, [8, 8, 2]);
    }
}
