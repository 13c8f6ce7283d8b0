//! Sending the planned files to the device, and with --service the systemd unit.
//!
//! Each file is streamed over ssh to a remote `cat` (no scp, no sftp: the remote side sees
//! no file name it could misread, and the bytes are counted here for the progress bar),
//! written under a temporary name beside its destination, hashed on the device and renamed
//! into place only when the hash is the expected one: an interrupted or damaged copy never
//! leaves a wrong file under a real name, and a deploy run again resumes where it stopped.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::human;
use super::plan::{Item, Plan, BINARY};
use super::ssh::{sh_quote, Ssh};
use super::verify;

/// The unit `--service` installs, with `@OVE_DIR@`, `@BUNDLE_DIR@`, `@BUNDLE_NAME@`, `@USER@`.
const UNIT_TEMPLATE: &str = include_str!("../../../../targets/ove-ocr.service");
pub(super) const UNIT_NAME: &str = "ove-ocr.service";
/// Suffix of the temporary name a file is written under before it is renamed into place.
const PARTIAL_SUFFIX: &str = ".ove-partial";
/// Exit status of the copy script when the received file's sha256 is not the expected one.
const CHECKSUM_EXIT: i32 = 3;
/// Exit status of the unit install script when it has neither root nor sudo.
const NO_ROOT_EXIT: i32 = 4;

/// Sends the planned files in order; right after the binary (or, when it was already there,
/// after the last file) checks that the deployed `ove` runs, so that a binary the device
/// cannot run stops the deploy before the weights are sent. Returns the copy's seconds.
pub(super) fn send(ssh: &Ssh, plan: &Plan) -> Result<f64> {
    let started = Instant::now();
    for (n, &i) in plan.to_copy.iter().enumerate() {
        upload(ssh, &plan.dir, &plan.items[i], n + 1, plan.to_copy.len())?;
        if i == BINARY {
            verify::binary(ssh, plan)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if !plan.to_copy.contains(&BINARY) {
        verify::binary(ssh, plan)?;
    }
    Ok(secs)
}

/// Streams a file into `DIR/PATH.ove-partial`, checks its sha256 there and renames it.
fn upload(ssh: &Ssh, dir: &str, it: &Item, n: usize, of: usize) -> Result<()> {
    let (script, base) = upload_script(dir, it);
    let mut child = ssh
        .command(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
    // ssh's stderr is drained on a thread so that it can never block the copy.
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let label = format!("[{n}/{of}] {}", it.remote);
    let pb = progress_bar(&format!("[{n}/{of}] {base}"), &label, it.bytes);
    let t0 = Instant::now();
    // Dropping stdin at the end is the EOF: the remote cat ends, the script goes on.
    let sent = stream(&it.local, child.stdin.take().expect("piped"), &pb);
    let status = child.wait()?;
    let stderr = err_thread.join().unwrap_or_default();
    pb.finish_and_clear();
    let sent = upload_result(ssh, it, status, &stderr, sent)?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{label}: {} in {secs:.1} s{}",
        human(sent),
        if sent >= 1 << 20 && secs > 0.0 {
            format!(" ({}/s)", human((sent as f64 / secs) as u64))
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The remote side of [`upload`] (run in the deploy directory) and the file's base name.
fn upload_script<'a>(dir: &str, it: &'a Item) -> (String, &'a str) {
    let (parent, base) = match it.remote.rsplit_once('/') {
        Some((p, b)) => (format!("{p}/"), b),
        None => (String::new(), it.remote.as_str()),
    };
    let tmp = format!("{parent}.{base}{PARTIAL_SUFFIX}");
    let script = format!(
        "set -e\ncd -- {dir}\nt={tmp}\ncat > \"$t\"\nh=$(sha256sum < \"$t\")\nh=${{h%% *}}\n\
         if [ \"$h\" != {sum} ]; then rm -f -- \"$t\"; echo \"ove-deploy-checksum $h\" >&2; exit {CHECKSUM_EXIT}; fi\n\
         chmod {mode} -- \"$t\"\nmv -f -- \"$t\" {dest}\n",
        dir = sh_quote(dir),
        tmp = sh_quote(&tmp),
        sum = sh_quote(&it.sha256),
        mode = it.mode,
        dest = sh_quote(&it.remote),
    );
    (script, base)
}

/// Copies the local file into `to` in 1 MiB chunks, moving the progress bar; the bytes sent.
fn stream(local: &Path, mut to: impl Write, pb: &ProgressBar) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(local)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", local.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(sent);
        }
        to.write_all(&buf[..k])?;
        sent += k as u64;
        pb.set_position(sent);
    }
}

/// The outcome of one [`upload`]: the bytes sent, or an error naming the file and the cause
/// (no connection, a checksum mismatch on the device, a local read error, a remote failure).
fn upload_result(
    ssh: &Ssh,
    it: &Item,
    status: ExitStatus,
    stderr: &str,
    sent: std::io::Result<u64>,
) -> Result<u64> {
    ssh.check_connection(&Output {
        status,
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    })?;
    if status.code() == Some(CHECKSUM_EXIT) {
        let got = stderr
            .lines()
            .find_map(|l| l.strip_prefix("ove-deploy-checksum "))
            .unwrap_or("?");
        bail!(
            "{}: checksum mismatch after copy: the device received sha256 {got}, expected {} \
             (the local file changed during the copy, or the transfer or the device's storage is faulty); \
             nothing was replaced, run the deploy again",
            it.remote,
            it.sha256
        );
    }
    match sent {
        Err(e) => bail!(
            "{}: copying {} failed: {e}; {}",
            it.remote,
            it.local.display(),
            stderr.trim()
        ),
        Ok(_) if !status.success() => bail!(
            "{}: copy failed on {} ({status}): {}",
            it.remote,
            ssh.host,
            stderr.trim()
        ),
        Ok(sent) => Ok(sent),
    }
}

/// A byte progress bar on a terminal (`short` label); without one, a line when the copy starts.
fn progress_bar(short: &str, label: &str, bytes: u64) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(bytes);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb.set_message(short.to_string());
        pb
    } else {
        eprintln!("{label}: sending {}...", human(bytes));
        ProgressBar::hidden()
    }
}

// --- the systemd unit -------------------------------------------------------------------------

/// --service: renders the unit (the built-in template or --unit FILE) for this deploy, keeps
/// it as DIR/ove-ocr.service and installs, enables and starts it.
pub(super) fn install_service(ssh: &Ssh, plan: &Plan, unit: Option<&Path>) -> Result<()> {
    let name = plan
        .bundle
        .as_ref()
        .expect("clap: --service requires --bundle");
    let template = match unit {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("--unit {}", p.display()))?,
        None => UNIT_TEMPLATE.to_string(),
    };
    let user = plan.info.get("user").unwrap_or("root");
    let unit = render_unit(&template, &plan.dir, name, user)?;
    install_unit(ssh, &plan.dir, &unit)
}

fn install_unit(ssh: &Ssh, dir: &str, unit: &str) -> Result<()> {
    let script = format!(
        "set -e\ncd -- {dir}\ncat > .{UNIT_NAME}{PARTIAL_SUFFIX}\nmv -f -- .{UNIT_NAME}{PARTIAL_SUFFIX} {UNIT_NAME}\n\
         if [ \"$(id -u)\" -eq 0 ]; then S=; elif command -v sudo >/dev/null 2>&1; then S='sudo -n'; \
         else echo 'neither root nor sudo' >&2; exit {NO_ROOT_EXIT}; fi\n\
         $S install -m 0644 {UNIT_NAME} /etc/systemd/system/{UNIT_NAME}\n\
         $S systemctl daemon-reload\n$S systemctl enable {UNIT_NAME}\n$S systemctl restart --no-block {UNIT_NAME}\n",
        dir = sh_quote(dir)
    );
    let mut child = ssh
        .command(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(unit.as_bytes())
        .with_context(|| format!("sending {dir}/{UNIT_NAME} to {}", ssh.host))?;
    let out = child.wait_with_output()?;
    ssh.check_connection(&out)?;
    if !out.status.success() {
        bail!(
            "installing {UNIT_NAME} failed: {}\n(the unit is in {dir}/{UNIT_NAME}; install it by hand: \
             sudo install -m 0644 {dir}/{UNIT_NAME} /etc/systemd/system/ && sudo systemctl daemon-reload && \
             sudo systemctl enable --now {UNIT_NAME})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn render_unit(template: &str, dir: &str, name: &str, user: &str) -> Result<String> {
    // systemd splits ExecStart on spaces and expands % and $: keep the paths plain.
    for (what, v) in [("the deploy directory", dir), ("the device user", user)] {
        if v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "%$\\\"';".contains(c))
        {
            bail!("{what} {v:?} cannot be written into a systemd unit: use a plain path/name");
        }
    }
    let unit = template
        .replace("@BUNDLE_DIR@", &format!("{dir}/bundles/{name}"))
        .replace("@BUNDLE_NAME@", name)
        .replace("@OVE_DIR@", dir)
        .replace("@USER@", user);
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_template_renders() {
        let u = render_unit(UNIT_TEMPLATE, "/opt/ove", "ocr", "nvidia").unwrap();
        assert!(!u.contains('@'), "a placeholder was left:\n{u}");
        assert!(u.contains(
            "ExecStart=/opt/ove/bin/ove serve --bundle /opt/ove/bundles/ocr --host 127.0.0.1 --port 8080\n"
        ));
        assert!(u.contains("Restart=on-failure\n"));
        assert!(u.contains("User=nvidia\n"));
        assert!(render_unit(UNIT_TEMPLATE, "/opt/my ove", "ocr", "nvidia").is_err());
    }
}
