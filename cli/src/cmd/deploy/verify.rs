//! Checking on the device that what arrived is what was meant.
//!
//! A copy that ended without an error is not yet a working deploy: a file can be changed on
//! the device after its copy, and a binary can be for the wrong glibc or be another build.
//! So every file is hashed on the device and compared with its expected sha256 (the same
//! script also tells the plan what is already there), the deployed `ove --version` must run
//! and say this build's version, and with --warm the bundle is run once there (`ove bench`,
//! which also builds the TensorRT engine cache).

use anyhow::{bail, Result};

use super::human;
use super::plan::{Item, Plan};
use super::ssh::{sh_quote, Ssh};

/// Hashes every item on the device again and compares with the expected sha256.
pub(super) fn files(ssh: &Ssh, plan: &Plan) -> Result<()> {
    let total_bytes: u64 = plan.items.iter().map(|it| it.bytes).sum();
    eprintln!(
        "verifying {} file(s) ({}) on the device...",
        plan.items.len(),
        human(total_bytes)
    );
    let out = ssh.run_ok(
        &format!(
            "cd -- {}\n{}",
            sh_quote(&plan.dir),
            hash_script(&plan.items)
        ),
        "verifying the deployed files",
    )?;
    let now = parse_hashes(&out, plan.items.len());
    let mut bad = Vec::new();
    for (it, h) in plan.items.iter().zip(&now) {
        match h {
            Some(h) if h.eq_ignore_ascii_case(&it.sha256) => {}
            Some(h) => bad.push(format!(
                "{}: sha256 {h}, expected {} (checksum mismatch)",
                it.remote, it.sha256
            )),
            None => bad.push(format!("{}: missing on the device", it.remote)),
        }
    }
    if !bad.is_empty() {
        bail!(
            "{}:{}: verification failed after the copy:\n  {}",
            plan.host,
            plan.dir,
            bad.join("\n  ")
        );
    }
    Ok(())
}

/// A script printing `ove-sha256 INDEX HASH` for every item present (run in the deploy dir).
pub(super) fn hash_script(items: &[Item]) -> String {
    let files: Vec<String> = items.iter().map(|it| sh_quote(&it.remote)).collect();
    format!(
        "i=0\nfor f in {}; do\n  if [ -f \"$f\" ]; then h=$(sha256sum < \"$f\") || exit 1; \
         printf 'ove-sha256 %s %s\\n' \"$i\" \"${{h%% *}}\"; fi\n  i=$((i + 1))\ndone\n",
        files.join(" ")
    )
}

/// [`hash_script`]'s output: the sha256 (lowercase) of each of `n` items, None if absent.
pub(super) fn parse_hashes(out: &str, n: usize) -> Vec<Option<String>> {
    let mut v = vec![None; n];
    for l in out.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("ove-sha256") {
            continue;
        }
        if let (Some(Ok(i)), Some(h)) = (w.next().map(str::parse::<usize>), w.next()) {
            if i < n && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                v[i] = Some(h.to_ascii_lowercase());
            }
        }
    }
    v
}

/// What `ove --version` of this build prints (the deployed binary must say the same).
pub(super) fn expected_version() -> String {
    format!("ove {}", env!("CARGO_PKG_VERSION"))
}

/// Runs the deployed `DIR/bin/ove --version`: it must run and be this build's version.
pub(super) fn binary(ssh: &Ssh, plan: &Plan) -> Result<()> {
    let dir = &plan.dir;
    let out = ssh.run(&format!("cd -- {} && ./bin/ove --version", sh_quote(dir)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let hint = if stderr.contains("GLIBC_") {
            format!(
                " (the binary needs a newer glibc than the device's {}: see targets/README.md, JetPack 5)",
                plan.info.get("glibc").unwrap_or("glibc")
            )
        } else if stderr.contains("xec format") || stderr.contains("cannot execute") {
            " (wrong architecture)".to_string()
        } else {
            String::new()
        };
        bail!("{dir}/bin/ove does not run on {}: {stderr}{hint}", ssh.host);
    }
    if stdout != expected_version() {
        bail!(
            "{dir}/bin/ove --version says {stdout:?}, this ove is {:?}: rebuild the device binary \
             from this checkout (targets/build-aarch64) or deploy with the matching ove",
            expected_version()
        );
    }
    eprintln!("{dir}/bin/ove --version: {stdout}");
    Ok(())
}

/// --warm: `ove bench` once on the device, so that the bundle is known to load there and
/// ONNX Runtime builds and caches the TensorRT engines next to it; its report goes to stderr.
pub(super) fn warm(ssh: &Ssh, plan: &Plan) -> Result<()> {
    let name = plan
        .bundle
        .as_ref()
        .expect("clap: --warm requires --bundle");
    let bundle_dir = format!("{}/bundles/{name}", plan.dir);
    eprintln!("warming {bundle_dir} on the device (ove bench builds the TensorRT engine cache)");
    let report = ssh.run_ok(
        &format!(
            "cd -- {} && ./bin/ove bench --bundle {} --decode-tokens 1",
            sh_quote(&plan.dir),
            sh_quote(&bundle_dir)
        ),
        "warming the bundle (ove bench on the device)",
    )?;
    eprint!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    #[test]
    fn hash_script_reports_present_files_by_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub dir")).unwrap();
        std::fs::write(dir.path().join("sub dir/it's"), b"abc").unwrap();
        let item = |remote: &str| Item {
            local: PathBuf::new(),
            remote: remote.into(),
            bytes: 0,
            sha256: String::new(),
            mode: "0644",
        };
        let items = [item("missing"), item("sub dir/it's")];
        let out = Command::new("sh")
            .arg("-c")
            .arg(hash_script(&items))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let got = parse_hashes(&String::from_utf8(out.stdout).unwrap(), 2);
        assert_eq!(got[0], None);
        assert_eq!(
            got[1].as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }
}
