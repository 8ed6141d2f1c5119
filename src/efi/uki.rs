//! Unified kernel images: systemd's EFI stub with the kernel, the initrds and the command line
//! added to it as PE sections, one EFI binary that firmware starts as it is. UEFI HTTP Boot
//! fetches one file and passes it no arguments, so this is how ocidd boots there
//! (`ocidd uki`); `ocidd.after=kexec` reads the installed system's ([`crate::boot::kexec`]).
//!
//! The sections are added by hand: no Rust crate adds sections to an existing PE image
//! (`object`'s writer builds one from nothing, and would have to be taught every part of the
//! stub it copies), and the alternatives, `objcopy` and systemd's `ukify`, are not on the
//! machines that run ocidd. `object` reads and checks the stub; what is written is the stub's
//! bytes, a section header per part in the free space after its section table, and each
//! part's bytes at the end.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::LittleEndian as LE;
use object::pe::{self, ImageNtHeaders64, ImageSectionHeader};
use object::pod;
use object::read::pe::ImageNtHeaders;

use crate::cmdline::{DEFAULT_STUB, UkiParams, parse_words};
use crate::error::{Classify, Failure};
use crate::fail;

/// The kernel's section.
pub const LINUX: &str = ".linux";
/// The initrds', concatenated.
pub const INITRD: &str = ".initrd";
/// Microcode, which the stub loads before the initrds.
pub const UCODE: &str = ".ucode";
/// The kernel's command line, text.
pub const CMDLINE: &str = ".cmdline";
/// An os-release file naming what the image is, for boot menus.
pub const OSREL: &str = ".osrel";

/// Where each added section starts in memory: page-aligned, as systemd's tools place them.
const SECTION_ALIGNMENT: u32 = 4096;

/// What `ocidd uki` wrote.
pub struct Written {
    pub bytes: u64,
    pub kernel_bytes: u64,
    pub initrds: usize,
    pub initrd_bytes: u64,
    pub words: usize,
}

/// Writes `params`' UKI to `output`, with `words` as its command line. The words are checked
/// as an install reads them first, so that a typo fails here rather than on every machine.
pub fn write(params: &UkiParams, words: &[String], output: &Path) -> Result<Written> {
    let Some(linux) = &params.linux else {
        fail!(Failure::Usage, "ocidd uki needs --linux KERNEL");
    };
    if params.initrds.is_empty() {
        fail!(
            Failure::Usage,
            "ocidd uki needs --initrd FILE (the boot files' initramfs)"
        );
    }
    parse_words(words)?;
    let cmdline = command_line(words)?;
    let stub_path = params
        .stub
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STUB));
    let read = |what: &str, path: &Path| -> Result<Vec<u8>> {
        fs::read(path)
            .with_context(|| format!("reading {what} {}", path.display()))
            .classify(Failure::Usage)
    };
    let stub = read("--stub", &stub_path)?;
    let kernel = read("--linux", linux)?;
    if !kernel.starts_with(b"MZ") {
        fail!(
            Failure::Usage,
            "--linux {} is not an EFI binary: systemd's stub starts only kernels built with the EFI stub",
            linux.display()
        );
    }
    let mut initrd = Vec::new();
    for path in &params.initrds {
        // The kernel finds an archive after another only at a 4-byte boundary.
        initrd.resize(initrd.len().next_multiple_of(4), 0);
        initrd.extend(read("--initrd", path)?);
    }
    let osrel = format!(
        "ID=ocidd\nNAME=ocidd\nVERSION_ID={}\nPRETTY_NAME=\"ocidd {}\"\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
    let image = add_sections(
        &stub,
        &[
            (OSREL, osrel.as_bytes()),
            (CMDLINE, cmdline.as_bytes()),
            (LINUX, &kernel),
            (INITRD, &initrd),
        ],
    )
    .with_context(|| format!("--stub {}", stub_path.display()))
    .classify(Failure::Usage)?;
    fs::write(output, &image)
        .with_context(|| format!("writing {}", output.display()))
        .classify(Failure::Target)?;
    Ok(Written {
        bytes: image.len() as u64,
        kernel_bytes: kernel.len() as u64,
        initrds: params.initrds.len(),
        initrd_bytes: initrd.len() as u64,
        words: words.len(),
    })
}

/// The words as one kernel command line: a value with a space is quoted, as the kernel
/// reads `name="a b"`; a word the command line cannot carry is refused by its name.
fn command_line(words: &[String]) -> Result<String> {
    let mut line = Vec::with_capacity(words.len());
    for word in words {
        let name = word.split('=').next().unwrap_or(word);
        if word.contains('"') || word.chars().any(|c| c.is_control()) {
            fail!(
                Failure::Usage,
                "{name}: a quote or a control character cannot be in the kernel's command line"
            );
        }
        match word.split_once('=') {
            Some((name, value)) if value.contains(' ') => line.push(format!("{name}=\"{value}\"")),
            _ if word.contains(' ') => {
                fail!(Failure::Usage, "{name}: a word's name cannot hold a space")
            }
            _ => line.push(word.clone()),
        }
    }
    Ok(line.join(" "))
}

/// `stub` with `sections` (name, bytes) added after its own, in that order.
pub fn add_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let dos = pe::ImageDosHeader::parse(stub).context("not a PE file")?;
    let mut offset = dos.nt_headers_offset().into();
    let (nt, directories) =
        ImageNtHeaders64::parse(stub, &mut offset).context("not a 64-bit PE image (PE32+)")?;
    let machine = nt.file_header.machine.get(LE);
    if !matches!(
        machine,
        pe::IMAGE_FILE_MACHINE_AMD64 | pe::IMAGE_FILE_MACHINE_ARM64
    ) {
        bail!("not an x86-64 or arm64 EFI binary (machine {machine:#x})");
    }
    let optional = &nt.optional_header;
    let security = directories.get(pe::IMAGE_DIRECTORY_ENTRY_SECURITY);
    if security.is_some_and(|d| d.size.get(LE) != 0) {
        bail!("it is signed; give the unsigned stub and sign the UKI");
    }
    let table = nt
        .sections(stub, offset)
        .context("its section table is cut short")?;
    for (name, _) in sections {
        if table.iter().any(|s| s.raw_name() == name.as_bytes()) {
            bail!("it has a {name} section already: it is a UKI, not a stub");
        }
    }
    let file_alignment = optional.file_alignment.get(LE).max(1);
    let section_alignment = optional.section_alignment.get(LE).max(1);
    if !SECTION_ALIGNMENT.is_multiple_of(section_alignment) {
        bail!("its section alignment {section_alignment:#x} does not divide a page");
    }
    let header_end =
        offset as usize + (table.len() + sections.len()) * size_of::<ImageSectionHeader>();
    let first_data = table
        .iter()
        .map(|s| s.pointer_to_raw_data.get(LE))
        .filter(|&p| p != 0)
        .min()
        .unwrap_or(optional.size_of_headers.get(LE)) as usize;
    if header_end > first_data || header_end > optional.size_of_headers.get(LE) as usize {
        bail!(
            "its headers have no room for {} more sections",
            sections.len()
        );
    }
    let data_end = table
        .iter()
        .map(|s| s.pointer_to_raw_data.get(LE) as u64 + s.size_of_raw_data.get(LE) as u64)
        .max()
        .unwrap_or(first_data as u64) as usize;
    let mut next_address = table
        .iter()
        .map(|s| s.virtual_address.get(LE) + s.virtual_size.get(LE).max(s.size_of_raw_data.get(LE)))
        .max()
        .unwrap_or(0)
        .max(optional.size_of_image.get(LE));

    let mut image = stub
        .get(..data_end)
        .context("its sections end past the file")?
        .to_vec();
    let mut headers = Vec::new();
    let mut initialized = 0u32;
    for (name, data) in sections {
        if name.len() > 8 {
            bail!("{name}: a section name has at most 8 bytes");
        }
        image.resize(image.len().next_multiple_of(file_alignment as usize), 0);
        let raw_size = (data.len() as u32).next_multiple_of(file_alignment);
        let address = next_address.next_multiple_of(SECTION_ALIGNMENT);
        let mut header = ImageSectionHeader::default();
        header.name[..name.len()].copy_from_slice(name.as_bytes());
        header
            .virtual_size
            .set(LE, u32::try_from(data.len()).context("a part over 4 GiB")?);
        header.virtual_address.set(LE, address);
        header.size_of_raw_data.set(LE, raw_size);
        header.pointer_to_raw_data.set(
            LE,
            u32::try_from(image.len()).context("an image over 4 GiB")?,
        );
        header.characteristics.set(
            LE,
            pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_READ,
        );
        headers.push(header);
        image.extend_from_slice(data);
        image.resize(image.len().next_multiple_of(file_alignment as usize), 0);
        initialized = initialized.saturating_add(raw_size);
        next_address = address
            .checked_add(data.len() as u32)
            .context("an image over 4 GiB")?;
    }
    let table_end = offset as usize + table.len() * size_of::<ImageSectionHeader>();
    for (i, header) in headers.iter().enumerate() {
        let at = table_end + i * size_of::<ImageSectionHeader>();
        image[at..at + size_of::<ImageSectionHeader>()].copy_from_slice(pod::bytes_of(header));
    }
    let nt_offset = dos.nt_headers_offset() as usize;
    let (nt, _) = pod::from_bytes_mut::<ImageNtHeaders64>(&mut image[nt_offset..])
        .map_err(|()| anyhow::anyhow!("its headers are cut short"))?;
    let count = nt.file_header.number_of_sections.get(LE) as usize + headers.len();
    nt.file_header
        .number_of_sections
        .set(LE, u16::try_from(count).context("too many sections")?);
    let optional = &mut nt.optional_header;
    optional
        .size_of_image
        .set(LE, next_address.next_multiple_of(section_alignment));
    let total = optional
        .size_of_initialized_data
        .get(LE)
        .saturating_add(initialized);
    optional.size_of_initialized_data.set(LE, total);
    // Firmware does not check it, and the old one is wrong now.
    optional.check_sum.set(LE, 0);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection};

    /// The smallest PE32+ image with one section and room for more, as a stub is laid out.
    fn tiny_stub() -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[..2].copy_from_slice(b"MZ");
        image[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        let mut nt_bytes = vec![0u8; size_of::<ImageNtHeaders64>()];
        let (nt, _) = pod::from_bytes_mut::<ImageNtHeaders64>(&mut nt_bytes).unwrap();
        nt.signature.set(LE, pe::IMAGE_NT_SIGNATURE);
        nt.file_header.machine.set(LE, pe::IMAGE_FILE_MACHINE_AMD64);
        nt.file_header.number_of_sections.set(LE, 1);
        nt.file_header
            .size_of_optional_header
            .set(LE, size_of::<pe::ImageOptionalHeader64>() as u16 + 16 * 8);
        let o = &mut nt.optional_header;
        o.magic.set(LE, pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC);
        o.section_alignment.set(LE, 0x200);
        o.file_alignment.set(LE, 0x200);
        o.size_of_image.set(LE, 0x1200);
        o.size_of_headers.set(LE, 0x200);
        o.subsystem.set(LE, pe::IMAGE_SUBSYSTEM_EFI_APPLICATION);
        o.number_of_rva_and_sizes.set(LE, 16);
        image[0x80..0x80 + nt_bytes.len()].copy_from_slice(&nt_bytes);
        let table = 0x80 + nt_bytes.len() + 16 * 8;
        let mut text = ImageSectionHeader::default();
        text.name[..5].copy_from_slice(b".text");
        text.virtual_size.set(LE, 0x10);
        text.virtual_address.set(LE, 0x1000);
        text.size_of_raw_data.set(LE, 0x200);
        text.pointer_to_raw_data.set(LE, 0x200);
        text.characteristics
            .set(LE, pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_EXECUTE);
        image[table..table + 40].copy_from_slice(pod::bytes_of(&text));
        image[0x200..0x210].copy_from_slice(b"stub code here!!");
        image
    }

    #[test]
    fn added_sections_read_back_in_place_and_the_stub_is_kept() {
        let stub = tiny_stub();
        let kernel = vec![7u8; 5000];
        let image = add_sections(
            &stub,
            &[(CMDLINE, b"console=ttyS0 dd.bs=4M"), (LINUX, &kernel)],
        )
        .unwrap();
        let pe = object::File::parse(&*image).unwrap();
        let section = |name: &str| pe.section_by_name(name).unwrap();
        assert_eq!(section(".text").data().unwrap()[..16], *b"stub code here!!");
        assert_eq!(
            section(CMDLINE).data().unwrap()[..22],
            *b"console=ttyS0 dd.bs=4M"
        );
        assert_eq!(section(LINUX).data().unwrap()[..5000], kernel[..]);
        assert_eq!(section(LINUX).size(), 5000);
        // Page-aligned, after the stub's, without overlapping each other.
        let cmdline = section(CMDLINE).address();
        let linux = section(LINUX).address();
        assert_eq!((cmdline % 4096, linux % 4096), (0, 0));
        assert!(cmdline >= 0x1200 && linux >= cmdline + 22);
    }

    #[test]
    fn a_uki_given_as_the_stub_is_refused() {
        let uki = add_sections(&tiny_stub(), &[(LINUX, b"MZ")]).unwrap();
        let again = add_sections(&uki, &[(LINUX, b"MZ")]).unwrap_err();
        assert!(
            format!("{again}").contains("a .linux section already"),
            "{again}"
        );
        assert!(add_sections(b"not a PE", &[]).is_err());
    }

    #[test]
    fn words_with_spaces_are_quoted_and_quotes_refused() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&words(&["console=ttyS0", "x=a b"])).unwrap(),
            "console=ttyS0 x=\"a b\""
        );
        let e = command_line(&words(&["oci.tag=\"x\""])).unwrap_err();
        assert!(format!("{e}").starts_with("oci.tag: a quote"), "{e}");
    }
}
