//! The one ssh connection every step of `ove deploy` runs its remote scripts over.
//!
//! Planning, sending and verifying all talk to the device the same way, so the plumbing
//! lives here once: the `ssh` command line (the user's options first, BatchMode, keep-alive,
//! port, identity), OpenSSH connection multiplexing (one login for the whole deploy, closed
//! on drop), the quoting that makes each script reach the remote `sh -c` as one word, and
//! turning ssh's own failures (status 255) into an error with a hint.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Result};

use super::Args;

/// The ssh command line shared by every step, and the multiplexed connection's socket.
pub(super) struct Ssh {
    /// The device, as given to --host.
    pub(super) host: String,
    options: Vec<OsString>,
    control_dir: Option<PathBuf>,
}

impl Ssh {
    pub(super) fn new(args: &Args) -> Result<Self> {
        // Fail early and clearly when there is no ssh at all.
        match Command::new("ssh")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("ssh not found: install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)")
            }
            Err(e) => bail!("cannot run ssh: {e}"),
            Ok(_) => {}
        }
        let mut options: Vec<OsString> = Vec::new();
        let mut opt = |o: OsString| {
            options.push("-o".into());
            options.push(o);
        };
        // ssh keeps the first value it gets for an option: the user's come first.
        for o in &args.ssh_options {
            opt(o.into());
        }
        for o in [
            "BatchMode=yes",
            "ConnectTimeout=15",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=4",
        ] {
            opt(o.into());
        }
        if let Some(p) = args.port {
            options.push("-p".into());
            options.push(p.to_string().into());
        }
        if let Some(key) = &args.identity {
            if !key.is_file() {
                bail!("--identity {}: no such file", key.display());
            }
            options.push("-i".into());
            options.push(key.into());
            options.push("-o".into());
            options.push("IdentitiesOnly=yes".into());
        }
        let control_dir = control_dir();
        if let Some(d) = &control_dir {
            let mut path = OsString::from("ControlPath=");
            path.push(d.join("%C"));
            for o in [
                "ControlMaster=auto".into(),
                path,
                "ControlPersist=60".into(),
            ] {
                options.push("-o".into());
                options.push(o);
            }
        }
        Ok(Self {
            host: args.host.clone(),
            options,
            control_dir,
        })
    }

    /// `ssh OPTIONS -- HOST "sh -c 'SCRIPT'"`: the login shell only sees a quoted word.
    pub(super) fn command(&self, script: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.options)
            .arg("--")
            .arg(&self.host)
            .arg(format!("sh -c {}", sh_quote(script)));
        c
    }

    /// Runs a script, stdin closed; ssh's own failures (status 255) become a connection error.
    pub(super) fn run(&self, script: &str) -> Result<Output> {
        let out = self
            .command(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
        self.check_connection(&out)?;
        Ok(out)
    }

    /// Runs a script that must succeed; returns its stdout.
    pub(super) fn run_ok(&self, script: &str, what: &str) -> Result<String> {
        let out = self.run(script)?;
        if !out.status.success() {
            bail!(
                "{}: {what} failed ({}): {}",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An error when ssh itself failed (status 255: no connection, no login).
    pub(super) fn check_connection(&self, out: &Output) -> Result<()> {
        if out.status.code() == Some(255) {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            bail!(
                "cannot reach {} over ssh: {msg}{}",
                self.host,
                connection_hint(&msg)
            );
        }
        Ok(())
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        if let Some(d) = &self.control_dir {
            // Close the shared connection (if one was opened), then its socket directory.
            let _ = Command::new("ssh")
                .args(&self.options)
                .arg("-O")
                .arg("exit")
                .arg("--")
                .arg(&self.host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A private directory for the multiplexing socket (unix socket paths are short: /tmp).
/// None when it cannot be made: every step then opens its own connection.
fn control_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = PathBuf::from(format!("/tmp/ove-deploy-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&d).ok()?;
    Some(d)
}

fn connection_hint(msg: &str) -> &'static str {
    if msg.contains("Permission denied") {
        " (key login failed: install your key with ssh-copy-id, or pass --identity)"
    } else if msg.contains("Host key verification failed") {
        " (the device's host key is not known: connect once with `ssh HOST true`, or pass --ssh-option StrictHostKeyChecking=accept-new)"
    } else if msg.contains("Connection refused") {
        " (is sshd running on the device, on this --port?)"
    } else if msg.contains("timed out") || msg.contains("No route to host") {
        " (is the device on and on this network?)"
    } else {
        ""
    }
}

/// Single-quotes a word for a POSIX shell: nothing inside is interpreted.
pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        for s in [
            "plain",
            "with space",
            "it's",
            "'",
            "$(rm -rf /)",
            "`x`",
            "a\"b",
            "a\\b",
            "*",
            "",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
