//! qcow2, read as a stream: the raw image a qcow2 file describes, produced in order from the
//! file's bytes read once, front to back (the blob may come compressed, or out of a tar, so
//! it cannot be read out of order). The header, the L1 table and the L2 tables map each of
//! the image's clusters to where the file holds it; holes and zero clusters come out as
//! zeros (the writer zeroes those runs rather than writing them); compressed clusters
//! (deflate, or zstd with `compression_type` 1) are expanded.
//!
//! File clusters that arrive before the table that names them (a file not laid out by
//! qemu-img, tables first), and image clusters that arrive ahead of their turn, wait in
//! memory up to [`MAX_WAITING`]; past that the reader stops and says so. Written by hand: the
//! qcow2 crates read a seekable file, and a layer is a stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};

/// Memory for clusters that arrived before they could be placed.
pub const MAX_WAITING: usize = 256 << 20;

const MAGIC: &[u8] = b"QFI\xfb";
/// Offsets in L1 and standard L2 entries: bits 9 to 55.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
/// A standard L2 entry's "reads as zeros" bit (version 3).
const ZERO: u64 = 1;
/// Incompatible features: dirty (refcounts may be stale; the tables are sound), corrupt,
/// external data file, compression type, extended L2 entries.
const DIRTY: u64 = 1 << 0;
const CORRUPT: u64 = 1 << 1;
const EXTERNAL_DATA: u64 = 1 << 2;
const COMPRESSION_TYPE: u64 = 1 << 3;
const EXTENDED_L2: u64 = 1 << 4;
/// File clusters kept after their last use while tables are still to come (see `used_up`).
const USED_KEPT: usize = 2;
/// qemu refuses L1 tables over 32 MiB; so do we, before allocating one.
const MAX_L1_BYTES: u64 = 32 << 20;
/// The header's fields end here in version 2; version 3 adds up to the compression type.
const V2_HEADER: usize = 72;
const V3_HEADER: usize = 104;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Deflate,
    Zstd,
}

/// What a qcow2 header says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// The image's size in bytes.
    pub size: u64,
    pub codec: Codec,
    l1_entries: u64,
    l1_offset: u64,
}

fn be32(data: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&data[at..at + 4]);
    u32::from_be_bytes(bytes)
}

fn be64(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// What is wrong with a qcow2 file: its messages say "qcow2" themselves, so the layer's
/// decoder does not call it corrupt compressed data.
#[derive(Debug)]
pub struct Qcow2Error(String);

impl std::fmt::Display for Qcow2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Qcow2Error {}

impl Qcow2Error {
    /// Whether `error` is one.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<Qcow2Error>())
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Qcow2Error(message.into()))
}

impl Header {
    /// Reads and checks the header at the start of `data`. Backing files, encryption,
    /// external data files and extended L2 entries are refused by name.
    pub fn parse(data: &[u8]) -> io::Result<Header> {
        if data.len() < V2_HEADER || !data.starts_with(MAGIC) {
            return Err(invalid("not a qcow2 header"));
        }
        let version = be32(data, 4);
        if version != 2 && version != 3 {
            return Err(invalid(format!(
                "qcow2 version {version} is not supported (2 and 3 are)"
            )));
        }
        if be64(data, 8) != 0 {
            return Err(invalid(
                "the qcow2 image has a backing file, which ocidd cannot fetch; flatten it with `qemu-img convert -O qcow2`",
            ));
        }
        let cluster_bits = be32(data, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(format!(
                "the qcow2 cluster_bits {cluster_bits} is out of range (9 to 21)"
            )));
        }
        if be32(data, 32) != 0 {
            return Err(invalid(
                "the qcow2 image is encrypted, which ocidd does not read",
            ));
        }
        let mut codec = Codec::Deflate;
        if version == 3 {
            if data.len() < V3_HEADER {
                return Err(invalid("the qcow2 version 3 header is cut short"));
            }
            let incompatible = be64(data, 72);
            if incompatible & EXTERNAL_DATA != 0 {
                return Err(invalid(
                    "the qcow2 image keeps its data in an external data file, which ocidd does not read",
                ));
            }
            if incompatible & EXTENDED_L2 != 0 {
                return Err(invalid(
                    "the qcow2 image has extended L2 entries (subclusters), which ocidd does not read; convert it with `qemu-img convert -O qcow2`",
                ));
            }
            if incompatible & CORRUPT != 0 {
                return Err(invalid("the qcow2 image is marked corrupt"));
            }
            let unknown =
                incompatible & !(DIRTY | CORRUPT | EXTERNAL_DATA | COMPRESSION_TYPE | EXTENDED_L2);
            if unknown != 0 {
                return Err(invalid(format!(
                    "the qcow2 image has incompatible features {unknown:#x} that ocidd does not know"
                )));
            }
            if incompatible & COMPRESSION_TYPE != 0 {
                let header_length = be32(data, 100) as usize;
                if header_length <= V3_HEADER || data.len() <= V3_HEADER {
                    return Err(invalid(
                        "the qcow2 header names a compression type but holds none",
                    ));
                }
                codec = match data[V3_HEADER] {
                    0 => Codec::Deflate,
                    1 => Codec::Zstd,
                    other => {
                        return Err(invalid(format!(
                            "the qcow2 compression type {other} is not supported (0 deflate, 1 zstd)"
                        )));
                    }
                };
            }
        }
        let header = Header {
            version,
            cluster_bits,
            size: be64(data, 24),
            codec,
            l1_entries: u64::from(be32(data, 36)),
            l1_offset: be64(data, 40),
        };
        let needed = header.clusters().div_ceil(header.entries_per_table());
        if header.l1_entries < needed || header.l1_entries * 8 > MAX_L1_BYTES {
            return Err(invalid(format!(
                "the qcow2 L1 table has {} entries where the image needs {needed}",
                header.l1_entries
            )));
        }
        if header.l1_offset == 0
            || !header.l1_offset.is_multiple_of(header.cluster_size())
            || header.l1_offset > OFFSET_MASK
        {
            return Err(invalid("the qcow2 L1 table's offset is not a cluster's"));
        }
        Ok(header)
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// How many clusters the image has.
    fn clusters(&self) -> u64 {
        self.size.div_ceil(self.cluster_size())
    }

    fn entries_per_table(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Where an L2 entry puts the image's cluster.
    fn place(&self, entry: u64) -> Place {
        if entry & COMPRESSED != 0 {
            // Bits 0 to x-1 the offset, x to 61 the sectors after the first.
            let x = 62 - (self.cluster_bits - 8);
            let start = entry & ((1 << x) - 1);
            let sectors = (entry >> x) & ((1 << (self.cluster_bits - 8)) - 1);
            let end = (start & !511) + (sectors + 1) * 512;
            Place::Compressed { start, end }
        } else if entry & ZERO != 0 || entry & OFFSET_MASK == 0 {
            Place::Zeros
        } else {
            Place::Data(entry & OFFSET_MASK)
        }
    }
}

/// Where the image's cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Reads as zeros: unallocated (there is no backing file), or a zero cluster.
    Zeros,
    /// A whole cluster at this offset in the file.
    Data(u64),
    /// Compressed, in the file's bytes `start..end` (`end` may pass the file's end).
    Compressed { start: u64, end: u64 },
}

/// The raw image of the qcow2 file read from `input`, as a reader.
pub struct Qcow2Reader<R: Read> {
    input: R,
    header: Header,
    /// How far `input` was read: always a cluster boundary, but at the end.
    position: u64,
    at_end: bool,
    /// The L1 table: each entry's L2 table offset (0: none), once read.
    l1: Option<Vec<u64>>,
    /// The L2 tables read, by L1 index, until the image passes them.
    tables: HashMap<u64, Vec<u64>>,
    /// L1 indexes whose table was read, and how many the L1 table names that were not.
    tables_read: Vec<bool>,
    tables_left: usize,
    /// File clusters read and not yet used, by offset: named by a table and waiting for
    /// the rest of what they hold, or not named yet (until every table is read).
    held: BTreeMap<u64, Vec<u8>>,
    /// For a held file cluster, the image clusters that still need it.
    needed_by: HashMap<u64, Vec<u64>>,
    /// Held file clusters whose uses were all made, oldest first (see `used_up`).
    used: VecDeque<u64>,
    /// Image clusters whose data was found before their turn.
    ready: HashMap<u64, Vec<u8>>,
    /// Bytes in `held` and `ready`, and how many may be.
    waiting: usize,
    limit: usize,
    /// The image cluster being produced, its bytes, and how many were taken.
    next: u64,
    current: Vec<u8>,
    taken: usize,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl<R: Read> Qcow2Reader<R> {
    /// Reads and checks the header (in the file's first cluster).
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut first = vec![0u8; V3_HEADER + 1];
        let got = read_full(&mut input, &mut first)?;
        first.truncate(got);
        let header = Header::parse(&first)?;
        let cluster_size = header.cluster_size() as usize;
        if first.len() < cluster_size {
            let mut rest = vec![0u8; cluster_size - first.len()];
            let got = read_full(&mut input, &mut rest)?;
            first.extend_from_slice(&rest[..got]);
        }
        let position = first.len() as u64;
        Ok(Qcow2Reader {
            input,
            at_end: position < cluster_size as u64,
            position,
            l1: None,
            tables: HashMap::new(),
            tables_read: Vec::new(),
            tables_left: 0,
            held: BTreeMap::new(),
            needed_by: HashMap::new(),
            used: VecDeque::new(),
            ready: HashMap::new(),
            waiting: 0,
            limit: MAX_WAITING,
            next: 0,
            current: Vec::new(),
            taken: 0,
            zstd: None,
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Every table was read: a file cluster no table names is never needed.
    fn tables_complete(&self) -> bool {
        self.l1.is_some() && self.tables_left == 0
    }

    /// Reads the file's next cluster and uses what it can; false at the end of the file.
    fn read_cluster(&mut self) -> io::Result<bool> {
        if self.at_end {
            return Ok(false);
        }
        let mut data = vec![0u8; self.cluster_size() as usize];
        let got = read_full(&mut self.input, &mut data)?;
        if got < data.len() {
            self.at_end = true;
            if got == 0 {
                return Ok(false);
            }
            data.truncate(got);
        }
        let offset = self.position;
        self.position += got as u64;
        self.hold(offset, data)?;
        self.use_held(offset)?;
        Ok(true)
    }

    fn hold(&mut self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.waiting += data.len();
        self.held.insert(offset, data);
        self.check_waiting()
    }

    fn check_waiting(&self) -> io::Result<()> {
        if self.waiting > self.limit {
            return Err(invalid(format!(
                "the qcow2 file holds more than {} MiB of clusters before the tables that place them (a stream is read once, in order); rewrite it with `qemu-img convert -O qcow2`, or push the raw image",
                self.limit >> 20
            )));
        }
        Ok(())
    }

    /// Uses the held file cluster at `offset`, now that it came or a table named it.
    fn use_held(&mut self, offset: u64) -> io::Result<()> {
        let l1_start = self.header.l1_offset;
        let l1_end = l1_start + self.header.l1_entries * 8;
        if self.l1.is_none() && offset < l1_end && offset + self.cluster_size() > l1_start {
            self.try_l1()?;
        }
        if let Some(l1) = &self.l1 {
            let tables: Vec<u64> = l1
                .iter()
                .enumerate()
                .filter(|(n, table)| **table == offset && !self.tables_read[*n])
                .map(|(n, _)| n as u64)
                .collect();
            for n in tables {
                self.read_table(n, offset)?;
            }
        }
        if let Some(clusters) = self.needed_by.get(&offset).cloned() {
            for cluster in clusters {
                self.try_cluster(cluster)?;
            }
        }
        self.drop_unneeded(offset);
        Ok(())
    }

    /// Reads the L1 table if all of it was read from the file.
    fn try_l1(&mut self) -> io::Result<()> {
        let start = self.header.l1_offset;
        let len = self.header.l1_entries * 8;
        let Some(bytes) = self.gather(start, start + len) else {
            return Ok(());
        };
        let l1: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|e| be64(e, 0) & OFFSET_MASK)
            .collect();
        let size = self.cluster_size();
        if l1.iter().any(|t| !t.is_multiple_of(size)) {
            return Err(invalid(
                "the qcow2 L1 table names an L2 table off a cluster",
            ));
        }
        // The L1 table's clusters are used.
        let mut offset = start;
        while offset < start + len {
            self.release(offset);
            offset += size;
        }
        let tables: Vec<(u64, u64)> = l1
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != 0)
            .map(|(n, t)| (n as u64, *t))
            .collect();
        self.tables_read = vec![false; l1.len()];
        self.tables_left = tables.len();
        self.l1 = Some(l1);
        if self.tables_left == 0 {
            self.sweep();
        }
        // Tables already read from the file.
        for (n, table) in tables {
            if self.held.contains_key(&table) {
                self.read_table(n, table)?;
            }
        }
        Ok(())
    }

    /// Reads L2 table `n` from the held file cluster at `offset`, and names the clusters
    /// it places.
    fn read_table(&mut self, n: u64, offset: u64) -> io::Result<()> {
        let Some(data) = self.held.get(&offset) else {
            return Ok(());
        };
        if data.len() as u64 != self.cluster_size() {
            return Err(invalid("the qcow2 file ends inside an L2 table"));
        }
        let entries: Vec<u64> = data.chunks_exact(8).map(|e| be64(e, 0)).collect();
        self.release(offset);
        self.tables_read[n as usize] = true;
        self.tables_left -= 1;
        let first = n * self.header.entries_per_table();
        let mut wanted = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let cluster = first + i as u64;
            if cluster >= self.header.clusters() || cluster < self.next {
                continue;
            }
            let place = self.header.place(*entry);
            if let Place::Data(data) = place
                && !data.is_multiple_of(self.cluster_size())
            {
                return Err(invalid(format!(
                    "the qcow2 L2 table places the image's cluster {cluster} off a cluster"
                )));
            }
            for file_cluster in self.file_clusters(place)? {
                self.needed_by
                    .entry(file_cluster)
                    .or_default()
                    .push(cluster);
                wanted.push(cluster);
            }
        }
        self.tables.insert(n, entries);
        wanted.dedup();
        for cluster in wanted {
            self.try_cluster(cluster)?;
        }
        if self.tables_left == 0 {
            self.sweep();
        }
        Ok(())
    }

    /// Once every table was read: forgets the held clusters nothing needs (the header's
    /// extensions, refcounts, snapshots).
    fn sweep(&mut self) {
        let unneeded: Vec<u64> = self
            .held
            .keys()
            .filter(|offset| !self.needed_by.contains_key(offset))
            .copied()
            .collect();
        for offset in unneeded {
            self.release(offset);
        }
    }

    /// The file clusters a place needs.
    fn file_clusters(&self, place: Place) -> io::Result<Vec<u64>> {
        let size = self.cluster_size();
        Ok(match place {
            Place::Zeros => Vec::new(),
            Place::Data(offset) => vec![offset],
            Place::Compressed { start, end } => {
                if end <= start || end - start > 2 * size + 512 {
                    return Err(invalid("a qcow2 compressed cluster's size is out of range"));
                }
                let first = start / size * size;
                (0..)
                    .map(|k| first + k * size)
                    .take_while(|offset| *offset < end)
                    .collect()
            }
        })
    }

    /// Where the image's cluster is, if the tables are read that far.
    fn place_of(&self, cluster: u64) -> Option<Place> {
        let l1 = self.l1.as_ref()?;
        let per_table = self.header.entries_per_table();
        let n = cluster / per_table;
        if l1.get(n as usize).copied().unwrap_or(0) == 0 {
            return Some(Place::Zeros);
        }
        let table = self.tables.get(&n)?;
        Some(self.header.place(table[(cluster % per_table) as usize]))
    }

    /// Makes the image's cluster ready if the file clusters it needs were all read.
    fn try_cluster(&mut self, cluster: u64) -> io::Result<()> {
        if cluster < self.next || self.ready.contains_key(&cluster) {
            return Ok(());
        }
        let Some(place) = self.place_of(cluster) else {
            return Ok(());
        };
        let data = match place {
            Place::Zeros => return Ok(()),
            Place::Data(offset) => {
                let only_here = self
                    .needed_by
                    .get(&offset)
                    .is_some_and(|needers| needers.as_slice() == [cluster]);
                let mut data = match (only_here, self.held.get(&offset)) {
                    (_, None) => return Ok(()),
                    (false, Some(data)) => data.clone(),
                    (true, Some(_)) => {
                        let data = self.held.remove(&offset).unwrap_or_default();
                        self.waiting -= data.len();
                        data
                    }
                };
                // The file's last cluster may be cut short.
                data.resize(self.cluster_size() as usize, 0);
                data
            }
            Place::Compressed { start, end } => {
                // At the file's end, the last sector may be cut short.
                let clamped = if self.at_end {
                    end.min(self.position)
                } else {
                    end
                };
                let Some(compressed) = self.gather(start, clamped) else {
                    return Ok(());
                };
                match self.expand(&compressed) {
                    Ok(data) => data,
                    Err(_) if clamped < end => return Err(self.cut_short(cluster)),
                    Err(e) => return Err(e),
                }
            }
        };
        for file_cluster in self.file_clusters(place)? {
            if let Some(needers) = self.needed_by.get_mut(&file_cluster) {
                needers.retain(|c| *c != cluster);
                if needers.is_empty() {
                    self.needed_by.remove(&file_cluster);
                    self.used_up(file_cluster);
                }
            }
        }
        self.waiting += data.len();
        self.ready.insert(cluster, data);
        self.check_waiting()
    }

    /// The file's bytes `start..end`, if every cluster they lie in is held.
    fn gather(&self, start: u64, end: u64) -> Option<Vec<u8>> {
        if end < start {
            return None;
        }
        let size = self.cluster_size();
        let mut bytes = Vec::with_capacity((end - start) as usize);
        let mut offset = start / size * size;
        while offset < end {
            let data = self.held.get(&offset)?;
            let from = start.max(offset) - offset;
            let to = (end.min(offset + size) - offset).min(data.len() as u64);
            if from < to {
                bytes.extend_from_slice(&data[from as usize..to as usize]);
            }
            offset += size;
        }
        (bytes.len() as u64 == end - start).then_some(bytes)
    }

    /// Expands one compressed cluster.
    fn expand(&mut self, compressed: &[u8]) -> io::Result<Vec<u8>> {
        let size = self.cluster_size() as usize;
        let mut out = vec![0u8; size];
        let produced = match self.header.codec {
            Codec::Deflate => {
                let mut inflater = flate2::Decompress::new(false);
                inflater
                    .decompress(compressed, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| invalid(format!("a qcow2 compressed cluster is corrupt: {e}")))?;
                inflater.total_out() as usize
            }
            Codec::Zstd => {
                // The sectors after the frame are padding.
                let frame = zstd::zstd_safe::find_frame_compressed_size(compressed)
                    .map_err(|_| invalid("a qcow2 zstd cluster is corrupt"))?;
                let zstd = match &mut self.zstd {
                    Some(z) => z,
                    None => self.zstd.insert(zstd::bulk::Decompressor::new()?),
                };
                zstd.decompress_to_buffer(&compressed[..frame], &mut out)
                    .map_err(|e| invalid(format!("a qcow2 zstd cluster is corrupt: {e}")))?
            }
        };
        if produced != size {
            return Err(invalid(format!(
                "a qcow2 compressed cluster expanded to {produced} bytes, not {size}"
            )));
        }
        Ok(out)
    }

    /// Forgets a held file cluster once it was used.
    fn release(&mut self, offset: u64) {
        if let Some(data) = self.held.remove(&offset) {
            self.waiting -= data.len();
        }
    }

    /// Forgets a file cluster whose every named use was made. Until every table was read, the
    /// last few stay: a compressed cluster that the next table names may start in the
    /// cluster where the last one of this table ended.
    fn used_up(&mut self, offset: u64) {
        if self.tables_complete() {
            self.release(offset);
            return;
        }
        self.used.push_back(offset);
        while self.used.len() > USED_KEPT {
            if let Some(oldest) = self.used.pop_front()
                && !self.needed_by.contains_key(&oldest)
            {
                self.release(oldest);
            }
        }
    }

    /// Forgets a held file cluster nothing needs, once no table still to come can name it.
    fn drop_unneeded(&mut self, offset: u64) {
        if !self.needed_by.contains_key(&offset) && self.tables_complete() {
            self.release(offset);
        }
    }

    fn cut_short(&self, cluster: u64) -> io::Error {
        invalid(format!(
            "the qcow2 file ends before the data of the image's cluster {cluster} (offset {})",
            cluster * self.cluster_size()
        ))
    }

    /// Fills `current` with the image's next cluster; false past the image's end.
    fn next_cluster(&mut self) -> io::Result<bool> {
        let clusters = self.header.clusters();
        if self.next >= clusters {
            return Ok(false);
        }
        let cluster = self.next;
        loop {
            match self.place_of(cluster) {
                Some(Place::Zeros) => {
                    self.current.clear();
                    self.current.resize(self.cluster_size() as usize, 0);
                    break;
                }
                Some(_) => {
                    if let Some(data) = self.ready.remove(&cluster) {
                        self.waiting -= data.len();
                        self.current = data;
                        break;
                    }
                }
                None => {}
            }
            if !self.read_cluster()? {
                return Err(self.cut_short(cluster));
            }
        }
        // The last cluster may pass the image's end.
        let end = self.header.size - cluster * self.cluster_size();
        self.current.truncate(end.min(self.cluster_size()) as usize);
        self.taken = 0;
        self.next += 1;
        // Tables the image has passed are no longer needed.
        let per_table = self.header.entries_per_table();
        if self.next.is_multiple_of(per_table) {
            self.tables.remove(&(self.next / per_table - 1));
        }
        Ok(true)
    }
}

impl<R: Read> Read for Qcow2Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.taken == self.current.len() && !self.next_cluster()? {
            // The rest of the file (refcount blocks, snapshots) is read, so that the
            // stream under it reaches its end and its checks.
            io::copy(&mut self.input, &mut io::sink())?;
            return Ok(0);
        }
        let n = buf.len().min(self.current.len() - self.taken);
        buf[..n].copy_from_slice(&self.current[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

/// Fills `buffer` from `input` as far as it goes; how many bytes it got (fewer only at the
/// end).
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buffer.len() {
        match input.read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: usize = 512;

    /// A version 3 qcow2 of 512-byte clusters: the header, the L1 table at cluster 1, then
    /// `clusters` (file cluster 2 onwards), for an image of `size` bytes.
    fn qcow2(size: u64, l2_at: u64, clusters: &[Vec<u8>]) -> Vec<u8> {
        let mut file = vec![0u8; CLUSTER * 2];
        file[..4].copy_from_slice(MAGIC);
        file[4..8].copy_from_slice(&3u32.to_be_bytes());
        file[20..24].copy_from_slice(&9u32.to_be_bytes());
        file[24..32].copy_from_slice(&size.to_be_bytes());
        file[36..40].copy_from_slice(&1u32.to_be_bytes());
        file[40..48].copy_from_slice(&(CLUSTER as u64).to_be_bytes());
        file[100..104].copy_from_slice(&104u32.to_be_bytes());
        file[CLUSTER..CLUSTER + 8].copy_from_slice(&(l2_at * CLUSTER as u64).to_be_bytes());
        for cluster in clusters {
            let mut cluster = cluster.clone();
            cluster.resize(CLUSTER, 0);
            file.extend(cluster);
        }
        file
    }

    fn l2(entries: &[u64]) -> Vec<u8> {
        entries.iter().flat_map(|e| e.to_be_bytes()).collect()
    }

    fn expand(file: &[u8], limit: usize) -> io::Result<Vec<u8>> {
        let mut reader = Qcow2Reader::new(file)?;
        reader.limit = limit;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn clusters_come_out_in_the_images_order_whatever_the_files() {
        let at = |n: u64| n * CLUSTER as u64;
        // File cluster 2 holds image cluster 1's data before the L2 table (cluster 3) that
        // places it; image cluster 0 is at file cluster 4; 2 reads as zeros; 3 was never
        // written.
        let file = qcow2(
            4 * CLUSTER as u64 - 100,
            3,
            &[
                vec![b'b'; CLUSTER],
                l2(&[at(4) | 1 << 63, at(2), at(5) | ZERO, 0]),
                vec![b'a'; CLUSTER],
            ],
        );
        let mut expected = vec![b'a'; CLUSTER];
        expected.extend(vec![b'b'; CLUSTER]);
        expected.extend(vec![0u8; 2 * CLUSTER - 100]);
        assert_eq!(expand(&file, MAX_WAITING).unwrap(), expected);
        // With no room for the early cluster, the reader says why it stops.
        let e = expand(&file, 100).unwrap_err();
        assert!(
            e.to_string().contains("before the tables that place them"),
            "{e}"
        );
        // A file cut before image cluster 0's data.
        let e = expand(&file[..4 * CLUSTER], MAX_WAITING).unwrap_err();
        assert!(
            e.to_string()
                .contains("ends before the data of the image's cluster 0"),
            "{e}"
        );
    }

    #[test]
    fn compressed_clusters_expand() {
        let data: Vec<u8> = (0..CLUSTER).map(|i| (i % 7) as u8).collect();
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut deflate, &data).unwrap();
        let compressed = deflate.finish().unwrap();
        assert!(compressed.len() < CLUSTER);
        // x = 62 - (9 - 8) = 61: the offset in bits 0 to 60, no sectors after the first.
        let entry = COMPRESSED | (3 * CLUSTER as u64);
        let file = qcow2(CLUSTER as u64, 2, &[l2(&[entry]), compressed]);
        assert_eq!(expand(&file, MAX_WAITING).unwrap(), data);
    }

    #[test]
    fn headers_refuse_what_a_disk_cannot_be() {
        let file = qcow2(CLUSTER as u64, 2, &[l2(&[0])]);
        let with = |at: usize, value: &[u8]| {
            let mut header = file[..CLUSTER].to_vec();
            header[at..at + value.len()].copy_from_slice(value);
            Header::parse(&header).unwrap_err().to_string()
        };
        assert!(Header::parse(&file).is_ok());
        assert!(with(8, &1u64.to_be_bytes()).contains("backing file"));
        assert!(with(32, &1u32.to_be_bytes()).contains("encrypted"));
        assert!(with(72, &EXTENDED_L2.to_be_bytes()).contains("extended L2"));
        assert!(with(72, &EXTERNAL_DATA.to_be_bytes()).contains("external data file"));
        assert!(with(72, &(1u64 << 40).to_be_bytes()).contains("incompatible features"));
        assert!(with(4, &4u32.to_be_bytes()).contains("version 4"));
        assert!(with(20, &30u32.to_be_bytes()).contains("cluster_bits"));
        // An image larger than its L1 table maps.
        assert!(with(24, &(1u64 << 40).to_be_bytes()).contains("L1 table has 1 entries"));
        assert!(with(40, &7u64.to_be_bytes()).contains("offset"));
    }

    /// What the fuzz target does, on stable: mutated files end in an image or an error,
    /// never a panic (debug builds panic on arithmetic overflow) or a hang.
    #[test]
    fn mutated_files_never_panic() {
        let at = |n: u64| n * CLUSTER as u64;
        let data: Vec<u8> = (0..CLUSTER).map(|i| (i % 5) as u8).collect();
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut deflate, &data).unwrap();
        let compressed = deflate.finish().unwrap();
        let good = qcow2(
            3 * CLUSTER as u64,
            2,
            &[
                l2(&[at(3), COMPRESSED | at(4), at(5) | ZERO]),
                vec![b'x'; CLUSTER],
                compressed,
            ],
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut file = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % file.len() as u64) as usize;
                file[i] = next() as u8;
            }
            if next() % 8 == 0 {
                file.truncate((next() % file.len() as u64) as usize);
            }
            let _ = expand(&file, 1 << 20);
        }
    }
}
