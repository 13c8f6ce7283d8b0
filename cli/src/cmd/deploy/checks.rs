//! The checks `ove deploy` makes of its arguments and of the binary before anything else:
//! small pure functions, kept apart from the plan so that each can be read and tested alone.
//!
//! --host must be a word ssh cannot take for an option, --dir is rewritten the way the
//! remote shell sees it (`~/x` relative to the home directory), a bundle name must be a
//! plain file name, and the binary's ELF header says which machine it is for, spelled the
//! way the device's `uname -m` is (normalised) so the two can be compared.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

pub(super) fn check_host(host: &str) -> Result<()> {
    if host.is_empty()
        || host.starts_with('-')
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("--host {host:?}: expected USER@HOST");
    }
    Ok(())
}

/// The deploy directory as the remote shell should see it: `~/x` is made relative (ssh
/// commands start in the home directory); quoting takes care of everything else.
pub(super) fn remote_dir(dir: &str) -> Result<String> {
    let d = dir.trim_end_matches('/');
    let d = if dir.starts_with('/') && d.is_empty() {
        "/"
    } else {
        d
    };
    let d = match d {
        "~" => ".",
        _ => d.strip_prefix("~/").unwrap_or(d),
    };
    if d.is_empty() || d.contains('\n') || d.contains('\0') {
        bail!("--dir {dir:?}: not a usable directory");
    }
    if d.starts_with('~') {
        bail!("--dir {dir:?}: ~user is not supported: give the absolute path");
    }
    Ok(d.to_string())
}

pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        bail!("bundle name {name:?}: use letters, digits and . _ + - (pass --name)");
    }
    Ok(())
}

/// The architecture an ELF executable is for, as `uname -m` spells it. The caller names
/// the file (its --binary) in the error.
pub(super) fn elf_arch(path: &Path) -> Result<String> {
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| anyhow!("cannot read the executable: {e}"))?;
    elf_arch_of(&head).ok_or_else(|| anyhow!("not a Linux (ELF) executable"))
}

fn elf_arch_of(head: &[u8; 20]) -> Option<String> {
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some(match machine {
        0xB7 => "aarch64".into(),
        0x3E => "x86_64".into(),
        0x28 => "arm".into(),
        0x03 => "i686".into(),
        0xF3 => "riscv64".into(),
        m => format!("ELF machine {m:#x}"),
    })
}

pub(super) fn normalize_arch(uname_m: &str) -> String {
    match uname_m {
        "arm64" | "aarch64_be" => "aarch64".into(),
        "amd64" => "x86_64".into(),
        a if a.starts_with("armv") => "arm".into(),
        a if a.len() == 4 && a.starts_with('i') && a.ends_with("86") => "i686".into(),
        a => a.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_dirs() {
        assert_eq!(remote_dir("/opt/ove/").unwrap(), "/opt/ove");
        assert_eq!(remote_dir("~/ove").unwrap(), "ove");
        assert_eq!(remote_dir("~").unwrap(), ".");
        assert_eq!(remote_dir("/").unwrap(), "/");
        assert!(remote_dir("~bob/ove").is_err());
        assert!(remote_dir("").is_err());
    }

    #[test]
    fn hosts_and_names() {
        assert!(check_host("nvidia@orin.local").is_ok());
        assert!(check_host("-oProxyCommand=x").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_name("ocr-int4_v1.2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a'b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn elf_machines() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 0xB7;
        assert_eq!(elf_arch_of(&h).as_deref(), Some("aarch64"));
        h[18] = 0x3E;
        assert_eq!(elf_arch_of(&h).as_deref(), Some("x86_64"));
        h[0] = b'#';
        assert_eq!(elf_arch_of(&h), None);
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(normalize_arch("aarch64"), "aarch64");
        // The binary running this test is an ELF for the machine it runs on.
        let me = elf_arch(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(me, std::env::consts::ARCH);
    }
}
