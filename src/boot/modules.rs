//! Kernel modules for the hardware that is there: the devices' modaliases (in /sys) matched
//! against modules.alias, loaded with their dependencies (modules.dep) and soft dependencies
//! (modules.softdep), until no new device asks for a module.
//!
//! Written here rather than linking libkmod: static linking of it into a musl binary is
//! impractical, and the part /init needs (alias match, dependency order, finit_module) is small.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::say;
use anyhow::{Context, Result};

/// The module tree of the running kernel, indexed.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Module name → its file (relative to `root`) and its dependencies' names, in modules.dep
    /// order (a module's dependencies come after it; the last is loaded first).
    modules: HashMap<String, (PathBuf, Vec<String>)>,
    aliases: Vec<(glob::Pattern, String)>,
    /// Module name → modules to load before it, and after it.
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
}

/// `virtio-blk` and `virtio_blk` name the same module.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

impl ModuleIndex {
    /// Reads modules.dep, modules.alias and modules.softdep under `root`
    /// (`/lib/modules/RELEASE`).
    pub fn read(root: &Path) -> Result<ModuleIndex> {
        let dep = fs::read_to_string(root.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", root.display()))?;
        let alias = fs::read_to_string(root.join("modules.alias")).unwrap_or_default();
        let softdep = fs::read_to_string(root.join("modules.softdep")).unwrap_or_default();
        Ok(ModuleIndex::parse(root, &dep, &alias, &softdep))
    }

    fn parse(root: &Path, dep: &str, alias: &str, softdep: &str) -> ModuleIndex {
        let mut index = ModuleIndex {
            root: root.to_path_buf(),
            ..ModuleIndex::default()
        };
        for line in dep.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(name_of).collect();
            index
                .modules
                .insert(name_of(module), (PathBuf::from(module.trim()), deps));
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
                && let Ok(pattern) = glob::Pattern::new(pattern)
            {
                index.aliases.push((pattern, normalize(module)));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut into_post = false;
            for word in words {
                match word {
                    "pre:" => into_post = false,
                    "post:" => into_post = true,
                    name if into_post => post.push(normalize(name)),
                    name => pre.push(normalize(name)),
                }
            }
            index.softdeps.insert(normalize(module), (pre, post));
        }
        index
    }

    /// The modules whose aliases match a device's modalias.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        let mut found: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(pattern, _)| pattern.matches_with(modalias, options))
            .map(|(_, module)| module.as_str())
            .collect();
        found.dedup();
        found
    }

    /// The order to load `module` in: soft pre-dependencies, hard dependencies (deepest
    /// first), the module, soft post-dependencies. Modules not in the tree are left out.
    pub fn load_order(&self, module: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(module), &mut order, &mut seen);
        order
    }

    fn visit(&self, module: &str, order: &mut Vec<String>, seen: &mut HashSet<String>) {
        if !seen.insert(module.to_string()) {
            return;
        }
        let Some((_, deps)) = self.modules.get(module) else {
            return;
        };
        let (pre, post) = self.softdeps.get(module).cloned().unwrap_or_default();
        for name in &pre {
            self.visit(name, order, seen);
        }
        for dep in deps.iter().rev() {
            self.visit(dep, order, seen);
        }
        order.push(module.to_string());
        for name in &post {
            self.visit(name, order, seen);
        }
    }

    /// Loads one module file into the kernel; a module that is already there is fine.
    fn insert(&self, module: &str) -> Result<()> {
        let Some((path, _)) = self.modules.get(module) else {
            return Ok(());
        };
        let file = fs::File::open(self.root.join(path))
            .with_context(|| format!("opening module {}", path.display()))?;
        let no_params: &CStr = c"";
        match rustix::system::finit_module(&file, no_params, 0) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => {
                Err(std::io::Error::from(e)).with_context(|| format!("loading module {module}"))
            }
        }
    }
}

/// Every modalias of the devices under `/sys/devices`.
fn device_modaliases(sys_devices: &Path) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut stack = vec![sys_devices.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() == "modalias"
                && let Ok(alias) = fs::read_to_string(entry.path())
            {
                let alias = alias.trim();
                if !alias.is_empty() {
                    found.insert(alias.to_string());
                }
            }
        }
    }
    found
}

/// Loads `module` and what it depends on (a driver that no device asks for: `bonding` for
/// `bond=`, `8021q` for `vlan=`). A module the kernel has built in is not in the tree, and
/// is fine.
pub fn load(index: &ModuleIndex, module: &str) -> Result<Vec<String>> {
    let order = index.load_order(module);
    for name in &order {
        index.insert(name)?;
    }
    Ok(order)
}

/// Loads the modules the machine's devices ask for, again as loaded drivers reveal more
/// devices (a PCI bus driver, then the disks behind it). Returns the modules loaded; failures
/// to load single modules are reported and skipped.
pub fn load_for_hardware(index: &ModuleIndex) -> Vec<String> {
    let mut loaded: HashSet<String> = HashSet::new();
    let mut handled: HashSet<String> = HashSet::new();
    let mut order = Vec::new();
    for _round in 0..10 {
        let aliases = device_modaliases(Path::new("/sys/devices"));
        let new: Vec<String> = aliases.difference(&handled).cloned().collect();
        if new.is_empty() {
            break;
        }
        let mut progress = false;
        for alias in new {
            for module in index.modules_for(&alias) {
                for name in index.load_order(module) {
                    if loaded.contains(&name) {
                        continue;
                    }
                    match index.insert(&name) {
                        Ok(()) => {
                            order.push(name.clone());
                            progress = true;
                        }
                        Err(e) => say!("ocidd: {e:#}"),
                    }
                    loaded.insert(name);
                }
            }
            handled.insert(alias);
        }
        if !progress {
            break;
        }
        // Let the new drivers probe and register their devices.
        thread::sleep(Duration::from_millis(300));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            Path::new("/lib/modules/x"),
            "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/lib/libcrc32c.ko:\n",
            "# Aliases extracted from modules themselves.\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n\
             alias pci:v00008086d0000[1-2]5*sv*sd*bc*sc*i* e1000e\n",
            "softdep libcrc32c pre: crc32c_generic\n\
             softdep virtio_blk pre: libcrc32c post: e1000e\n",
        )
    }

    #[test]
    fn matches_aliases_with_globs() {
        let index = index();
        assert_eq!(
            index.modules_for("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert_eq!(
            index.modules_for("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ["e1000e"]
        );
        assert_eq!(
            index.modules_for("pci:v00008086d00001502sv0sd0bc02sc00i00"),
            ["e1000e"]
        );
        assert!(index.modules_for("virtio:d00000001v00001AF4").is_empty());
    }

    #[test]
    fn orders_dependencies_before_dependents() {
        let index = index();
        assert_eq!(
            index.load_order("virtio-blk"),
            [
                "crc32c_generic",
                "libcrc32c",
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "e1000e"
            ]
        );
        assert!(index.load_order("unknown").is_empty());
    }

    #[test]
    fn finds_modaliases_in_a_device_tree() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("pci0000:00/0000:00:03.0");
        fs::create_dir_all(device.join("virtio0")).unwrap();
        fs::write(device.join("modalias"), "pci:v00001AF4d00001000\n").unwrap();
        fs::write(
            device.join("virtio0/modalias"),
            "virtio:d00000001v00001AF4\n",
        )
        .unwrap();
        fs::write(dir.path().join("modalias"), "\n").unwrap();
        let found = device_modaliases(dir.path());
        assert_eq!(found.len(), 2);
        assert!(found.contains("virtio:d00000001v00001AF4"));
    }
}
