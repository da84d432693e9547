//! Reaching a node over SSH with russh: `~/.ssh/config` (HostName, User, Port, IdentityFile,
//! UserKnownHostsFile, GlobalKnownHostsFile, StrictHostKeyChecking), keys from ssh-agent and
//! `~/.ssh`, host keys and host certificates checked against the user's and the global
//! known-hosts files with OpenSSH's meaning (see `known_hosts.rs`), and the node's `mrun-agent`
//! found, or installed, and started.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use russh::client::{self, Handle};
use russh::keys::{self, PrivateKeyWithHashAlg};
use russh::ChannelMsg;

use super::known_hosts::{self, Verdict};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// `StrictHostKeyChecking accept-new` (or `no`): unknown hosts are learned.
    pub accept_new_host: bool,
    /// `UserKnownHostsFile` (default `~/.ssh/known_hosts ~/.ssh/known_hosts2`): read, and the
    /// first one learns new hosts.
    pub user_known_hosts: Vec<PathBuf>,
    /// `GlobalKnownHostsFile` (default `/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2`).
    pub global_known_hosts: Vec<PathBuf>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Resolve `name` (`[user@]host[:port]` or a `Host` alias of `~/.ssh/config`).
pub fn resolve(name: &str) -> Result<Destination> {
    let (user_part, rest) = match name.split_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, name),
    };
    let (alias, port_part) = match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (rest, None),
    };
    let config_path = home().join(".ssh/config");
    let params = if config_path.exists() {
        let file = std::fs::File::open(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config = ssh2_config::SshConfig::default()
            .parse(
                &mut std::io::BufReader::new(file),
                ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| anyhow!("cannot use {}: {e}", config_path.display()))?;
        Some(config.query(alias))
    } else {
        None
    };
    let host = params
        .as_ref()
        .and_then(|p| p.host_name.clone())
        .unwrap_or_else(|| alias.to_string());
    let port = port_part
        .or(params.as_ref().and_then(|p| p.port))
        .unwrap_or(22);
    let user = user_part
        .or(params.as_ref().and_then(|p| p.user.clone()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .ok_or_else(|| {
            anyhow!("cannot tell which user to log in as on {name}; give it as user@{name}")
        })?;
    let mut identity_files: Vec<PathBuf> = params
        .as_ref()
        .and_then(|p| p.identity_file.clone())
        .unwrap_or_default();
    for default in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let path = home().join(".ssh").join(default);
        if !identity_files.contains(&path) {
            identity_files.push(path);
        }
    }
    let local_user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let files = |field: &str, default: &[&str]| -> Vec<PathBuf> {
        let given = params
            .as_ref()
            .and_then(|p| p.unsupported_fields.get(field).cloned());
        let words: Vec<String> = match given {
            Some(words) => words,
            None => default.iter().map(|w| w.to_string()).collect(),
        };
        // `none` alone: no file.
        if words.len() == 1 && words[0].eq_ignore_ascii_case("none") {
            return Vec::new();
        }
        words
            .iter()
            .flat_map(|w| w.split_whitespace())
            .map(|w| known_hosts::expand_path(w, &home(), &local_user))
            .collect()
    };
    let user_known_hosts = files(
        "userknownhostsfile",
        &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"],
    );
    let global_known_hosts = files(
        "globalknownhostsfile",
        &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"],
    );
    let accept_new_host = params
        .as_ref()
        .and_then(|p| p.unsupported_fields.get("stricthostkeychecking").cloned())
        .and_then(|v| v.first().cloned())
        .is_some_and(|v| v.eq_ignore_ascii_case("accept-new") || v.eq_ignore_ascii_case("no"))
        || std::env::var("MRUN_ACCEPT_NEW_HOST_KEYS").is_ok_and(|v| v == "1");
    Ok(Destination {
        name: name.to_string(),
        host,
        port,
        user,
        identity_files,
        accept_new_host,
        user_known_hosts,
        global_known_hosts,
    })
}

/// Checks the server's key or certificate against the known-hosts lines for it; remembers why
/// it refused.
pub struct HostCheck {
    dest: Destination,
    lines: Vec<known_hosts::Line>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostCheck {
    /// Why the key or certificate `offered` is not accepted, or None if it is (learning it first
    /// when the host is new and the destination accepts new hosts).
    fn refusal_for(&self, offered: &keys::PublicKeyOrCertificate) -> Option<String> {
        let d = &self.dest;
        let verdict = match offered {
            keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                known_hosts::check_key(&self.lines, key.key_data())
            }
            keys::PublicKeyOrCertificate::Certificate(cert) => {
                let now = crate::jobs::unix_now().as_secs();
                known_hosts::check_certificate(&self.lines, cert, &d.host, now)
            }
        };
        let files = || {
            d.user_known_hosts
                .iter()
                .chain(&d.global_known_hosts)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match verdict {
            Verdict::Known => None,
            Verdict::Unknown if d.accept_new_host => {
                let Some(file) = d.user_known_hosts.first() else {
                    return Some(format!("cannot record the host key of {}: UserKnownHostsFile is none", d.name));
                };
                match keys::known_hosts::learn_known_hosts_path(&d.host, d.port, &offered.public_key(), file) {
                    Ok(()) => None,
                    Err(e) => Some(format!("cannot record the host key of {} in {}: {e}", d.name, file.display())),
                }
            }
            Verdict::Unknown => Some(format!(
                "the host key of {} ({}:{}) is not known (no entry in {}); connect once with `ssh -p {} {}@{}` to check and record it, or set StrictHostKeyChecking accept-new for it",
                d.name, d.host, d.port, files(), d.port, d.user, d.host
            )),
            Verdict::Changed { line } => Some(format!(
                "REMOTE HOST IDENTIFICATION HAS CHANGED for {} ({}:{}): its key does not match {line}; someone could be eavesdropping, or the host key was replaced; refusing to connect",
                d.name, d.host, d.port
            )),
            Verdict::Revoked { line } => Some(format!(
                "the host key of {} ({}:{}) is revoked ({line}); refusing to connect",
                d.name, d.host, d.port
            )),
            Verdict::BadCertificate { why, line } => Some(format!(
                "the host certificate of {} ({}:{}), from the CA of {line}, is not valid: {why}; refusing to connect",
                d.name, d.host, d.port
            )),
        }
    }
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let refusal = self.refusal_for(offered);
        let ok = refusal.is_none();
        if let (Some(why), Ok(mut slot)) = (refusal, self.refusal.lock()) {
            *slot = Some(why);
        }
        Ok(ok)
    }
}

pub type Session = Handle<HostCheck>;

/// Connect and authenticate.
pub async fn connect(dest: &Destination) -> Result<Session> {
    let files: Vec<PathBuf> = dest
        .user_known_hosts
        .iter()
        .chain(&dest.global_known_hosts)
        .cloned()
        .collect();
    let lines = known_hosts::lines_for(&files, &known_hosts::lookup_name(&dest.host, dest.port));
    // Ask for a host certificate only when a CA is listed for the host (as OpenSSH orders its
    // host key algorithms by what it knows); otherwise the plain key is checked.
    let mut preferred = russh::Preferred::default();
    if known_hosts::has_authority(&lines) {
        preferred.host_key_certificates = Cow::Owned(preferred.key.to_vec());
    }
    let config = Arc::new(client::Config {
        preferred,
        inactivity_timeout: None,
        keepalive_interval: Some(std::time::Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    });
    let refusal = Arc::new(Mutex::new(None));
    let check = HostCheck {
        dest: dest.clone(),
        lines,
        refusal: refusal.clone(),
    };
    let addr = (dest.host.as_str(), dest.port);
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client::connect(config, addr, check),
    )
    .await;
    let mut session = match connected {
        Err(_) => bail!(
            "node {} ({}:{}) did not answer within 20 s",
            dest.name,
            dest.host,
            dest.port
        ),
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let Some(why) = refusal.lock().ok().and_then(|mut r| r.take()) {
                bail!(why);
            }
            bail!(
                "cannot reach node {} ({}:{}): {e}",
                dest.name,
                dest.host,
                dest.port
            );
        }
    };
    if authenticate(&mut session, dest).await? {
        Ok(session)
    } else {
        bail!(
            "node {} refused every key for user {} (tried {}); add your public key to its ~/.ssh/authorized_keys",
            dest.name,
            dest.user,
            tried_keys(dest)
        )
    }
}

/// The keys `authenticate` offers, for messages.
fn tried_keys(dest: &Destination) -> String {
    let mut tried: Vec<String> = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        tried.push("ssh-agent".into());
    }
    tried.extend(
        dest.identity_files
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string()),
    );
    if tried.is_empty() {
        "no key: no ssh-agent and no key file".into()
    } else {
        tried.join(", ")
    }
}

async fn authenticate(session: &mut Session, dest: &Destination) -> Result<bool> {
    let rsa_hash = session
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if let Ok(mut agent) = keys::agent::client::AgentClient::connect_env().await {
            for id in agent.request_identities().await.unwrap_or_default() {
                let key = id.public_key().into_owned();
                let hash = if key.algorithm().is_rsa() {
                    rsa_hash
                } else {
                    None
                };
                if let Ok(r) = session
                    .authenticate_publickey_with(&dest.user, key, hash, &mut agent)
                    .await
                {
                    if r.success() {
                        return Ok(true);
                    }
                }
            }
        }
    }
    for path in &dest.identity_files {
        if !path.exists() {
            continue;
        }
        let Ok(key) = keys::load_secret_key(path, None) else {
            continue;
        };
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        let r = session
            .authenticate_publickey(&dest.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .with_context(|| format!("authenticating to {}", dest.name))?;
        if r.success() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Output and exit status of a command run on the node.
struct Ran {
    stdout: String,
    stderr: String,
    status: Option<u32>,
}

/// Run `command` on the node, its stdin the file `input` (streamed), else nothing.
async fn run(session: &Session, command: &str, input: Option<&Path>) -> Result<Ran> {
    let input = match input {
        Some(path) => Some(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    let mut ch = session
        .channel_open_session()
        .await
        .context("opening an SSH channel")?;
    ch.exec(true, command)
        .await
        .context("running a command over SSH")?;
    // Feed the input from a task of its own: if the command ends early (say it cannot write
    // the file), nobody reads the rest and the send would wait for window space forever.
    let feeder = input.map(|mut file| {
        let mut writer = ch.make_writer();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::io::copy(&mut file, &mut writer).await;
            let _ = writer.shutdown().await;
        })
    });
    let mut ran = Ran {
        stdout: String::new(),
        stderr: String::new(),
        status: None,
    };
    let mut eof_sent = feeder.is_none();
    let mut feeder = feeder;
    loop {
        tokio::select! {
            msg = ch.wait() => match msg {
                Some(ChannelMsg::Data { data }) => ran.stdout.push_str(&String::from_utf8_lossy(&data)),
                Some(ChannelMsg::ExtendedData { data, .. }) => ran.stderr.push_str(&String::from_utf8_lossy(&data)),
                Some(ChannelMsg::ExitStatus { exit_status }) => ran.status = Some(exit_status),
                Some(_) => {}
                None => break,
            },
            _ = async {
                match feeder.as_mut() {
                    Some(f) => {
                        let _ = f.await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }, if !eof_sent => {
                eof_sent = true;
                feeder = None;
                let _ = ch.eof().await;
            }
        }
    }
    if let Some(f) = feeder {
        f.abort();
    }
    Ok(ran)
}

/// The command that starts `mrun-agent` on the node: `$MRUN_REMOTE_AGENT` (every node), the
/// node's entry in `[agents]` of config.toml, the node's PATH, our cached copy, or our own
/// agent installed into `~/.cache/mrun/` (same architecture only).
pub async fn agent_command(
    session: &Session,
    dest: &Destination,
    local_agent: &Path,
) -> Result<String> {
    if let Ok(command) = std::env::var("MRUN_REMOTE_AGENT") {
        // A command line for the node's shell, used as given.
        return Ok(command);
    }
    if let Some(command) = crate::nodes::config()
        .ok()
        .and_then(|c| c.agents.get(&dest.name).cloned())
    {
        return Ok(command);
    }
    let digest = super::agent_digest::of(local_agent).await?;
    let cached = format!("mrun-agent-{}-{}", env!("CARGO_PKG_VERSION"), &digest[..12]);
    let probe = format!(
        "uname -m; command -v mrun-agent || true; f=\"$HOME/.cache/mrun/{cached}\"; if [ -x \"$f\" ]; then echo \"$f\"; fi; {}",
        OLD_AGENTS_CLEANUP
    );
    let ran = run(session, &probe, None).await?;
    let mut lines = ran.stdout.lines();
    let arch = lines.next().unwrap_or("").trim().to_string();
    let found: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(path) = found.first() {
        return Ok(shell_quote(path));
    }
    if arch != std::env::consts::ARCH {
        bail!(
            "mrun-agent is not installed on {} and it cannot take this machine's agent ({} there, {} here); install mrun there",
            dest.name,
            if arch.is_empty() { "unknown architecture" } else { &arch },
            std::env::consts::ARCH
        );
    }
    let install = format!(
        "d=\"$HOME/.cache/mrun\" && mkdir -p \"$d\" && chmod 700 \"$d\" && t=\"$d/.upload.$$\" && cat > \"$t\" && chmod 700 \"$t\" && \
         s=$(sha256sum \"$t\" | cut -d' ' -f1) && if [ \"$s\" = {digest} ]; then mv \"$t\" \"$d/{cached}\" && echo \"$d/{cached}\"; else rm -f \"$t\"; echo \"checksum mismatch: $s\" >&2; exit 1; fi"
    );
    let ran = run(session, &install, Some(local_agent)).await?;
    let path = ran.stdout.trim();
    if ran.status != Some(0) || path.is_empty() {
        bail!(
            "mrun-agent is not installed on {} and installing it into ~/.cache/mrun there failed: {}",
            dest.name,
            ran.stderr.trim().lines().last().unwrap_or("no reason given")
        );
    }
    Ok(shell_quote(path))
}

/// Shell code (for the probe, after `f` is set to the current agent's path) that removes the
/// agents earlier versions of mrun uploaded into `~/.cache/mrun` (`mrun-agent-VERSION-DIGEST`,
/// see [`agent_command`]): every one but `$f`, and none that a process still runs (an old
/// daemon's agent restoring jobs needs its file: it starts its helpers from it). Nothing else
/// in that directory is touched, and `/proc` is read only when there is something to remove.
const OLD_AGENTS_CLEANUP: &str = r#"old=; for a in "$HOME"/.cache/mrun/mrun-agent-*-????????????; do if [ -f "$a" ] && [ "$a" != "$f" ]; then old="$old$a
"; fi; done; if [ -n "$old" ]; then running="$(ls -l /proc/[0-9]*/exe 2>/dev/null)
"; printf %s "$old" | while IFS= read -r a; do case "$running" in *" -> $a
"*) ;; *) rm -f -- "$a" ;; esac; done; fi"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
