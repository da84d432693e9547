//! Host keys checked as OpenSSH checks them, against real sshd nodes (see `common/sshd.rs`):
//! the global known-hosts file (`GlobalKnownHostsFile`, given per Host block so that no test
//! writes /etc/ssh), `UserKnownHostsFile`, host patterns with `*`, `?` and `!negation`,
//! `[host]:port`, names hashed by `ssh-keygen -H`, `@cert-authority` with host certificates
//! made by `ssh-keygen -s` and served with `HostCertificate`, and `@revoked`.
//!
//! Each case moves a running job to the node and back home (accepted), or asks for the move
//! and checks the one-line refusal and that the job still runs at home (refused).
//!
//! Runs as root (sshd must run as root to log a user in). Build first:
//! `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a refused move may take: mrun gives up connecting after 20 s itself.
const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

/// Node `a` (as set up by `opts`) and a client home with a Host block `a` for it (plus
/// `extra` lines), authorized there, with nothing in its own known_hosts.
fn node_and_client(sb: &Sandbox, opts: NodeOptions, extra: &[&str]) -> (Node, ClientHome) {
    let a = Node::start_with(sb, "a", opts);
    let mut client = ClientHome::new(sb);
    client.add_host("a", &a, extra);
    a.authorize(&[client.public_key()]);
    (a, client)
}

/// Starts `sleep 600` as an mrun job.
fn start_job(m: &SshMrun) -> Job {
    let sleep = m.mrun.sandbox().program(Path::new("/bin/sleep"));
    m.start("sleep 600", &sleep, &["600"], Input::Null, Output::Pipe)
}

/// The node's key is accepted: a job moves to `a` and back home.
fn accepted(m: &SshMrun, a: &Node) {
    let job = start_job(m);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[a], At::Node("a".into()));
    m.mrun.migrate_ok(&job, "home");
    assert_at(&job, &[a], At::Home);
}

/// The node is refused: `mrunctl migrate` exits 1 with one line on stderr holding every one of
/// `words`, and the job still runs at home. Returns that line.
fn refused(m: &SshMrun, a: &Node, words: &[&str]) -> String {
    let job = start_job(m);
    let out = m.migrate_within(&job, "a", REFUSAL_LIMIT);
    out.assert_exit_code(1);
    let line = out.stderr_text().trim().to_string();
    assert!(
        !line.contains('\n') && words.iter().all(|w| line.contains(w)),
        "expected one line with {words:?}: {}",
        out.describe()
    );
    assert_at(&job, &[a], At::Home);
    line
}

/// Writes `lines` into the file `name` of the sandbox; returns its path.
fn write_lines(sb: &Sandbox, name: &str, lines: &[String]) -> PathBuf {
    let path = sb.path(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn option(name: &str, path: &Path) -> String {
    format!("{name} {}", path.display())
}

/// A key pair made by ssh-keygen: (private key path, "TYPE BASE64").
fn key_pair(sb: &Sandbox, name: &str) -> (PathBuf, String) {
    let path = sb.path(name);
    let public = keygen(&path, name);
    let fields: Vec<&str> = public.split_whitespace().take(2).collect();
    (path, fields.join(" "))
}

/// Only the global file knows the node, under patterns (`?`, `*`, a list); the user's file
/// (`UserKnownHostsFile`) is empty. Then a negation excludes it: "not known", naming both files.
#[test]
fn global_known_hosts_with_patterns() {
    let sb = Sandbox::new("hostkeys-global");
    let user = write_lines(&sb, "user_known_hosts", &["# nothing here".into()]);
    let global = sb.path("global_known_hosts");
    let extra = [
        option("UserKnownHostsFile", &user),
        option("GlobalKnownHostsFile", &global),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (a, client) = node_and_client(&sb, NodeOptions::default(), &extra);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let key = a.host_key();
    write_lines(
        &sb,
        "global_known_hosts",
        &[format!("node*,[127.0.0.?]:{},10.0.0.* {key}", a.port())],
    );
    accepted(&m, &a);
    write_lines(
        &sb,
        "global_known_hosts",
        &[format!("[127.0.0.*]:*,![127.0.0.1]:{} {key}", a.port())],
    );
    let line = refused(&m, &a, &["is not known"]);
    assert!(
        line.contains(&global.display().to_string()) && line.contains(&user.display().to_string()),
        "the refusal does not name the files it read: {line}"
    );
    assert_eq!(
        read(&user),
        b"# nothing here\n",
        "the user's file changed after a refusal"
    );
}

/// known_hosts hashed by OpenSSH's own `ssh-keygen -H` (`|1|salt|hash`).
#[test]
fn hashed_host_names() {
    let sb = Sandbox::new("hostkeys-hashed");
    let (a, mut client) = node_and_client(&sb, NodeOptions::default(), &[]);
    client.add_known(&a.known_hosts_line());
    let known = client.known_hosts_path();
    let out = Command::new("/usr/bin/ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known)
        .output()
        .expect("run ssh-keygen -H");
    assert!(
        out.status.success(),
        "ssh-keygen -H: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = client.read_known_hosts();
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0.1"),
        "not hashed: {text:?}"
    );
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    accepted(&m, &a);
}

/// The user's file lists the node's key, the global file revokes it: refused as revoked.
#[test]
fn revoked_key_refused_although_listed() {
    let sb = Sandbox::new("hostkeys-revoked");
    let global = sb.path("global_known_hosts");
    let extra = option("GlobalKnownHostsFile", &global);
    let (a, mut client) = node_and_client(&sb, NodeOptions::default(), &[&extra]);
    client.add_known(&a.known_hosts_line());
    write_lines(
        &sb,
        "global_known_hosts",
        &[format!("@revoked * {}", a.host_key())],
    );
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let line = refused(&m, &a, &["revoked", "global_known_hosts line 1"]);
    eprintln!("{line}");
}

/// A node serving a host certificate signed by `ca` for `principals` (valid `validity`).
fn certified(ca: &Path, principals: &str, validity: Option<&str>) -> NodeOptions {
    NodeOptions {
        host_certificate: Some(HostCertificate {
            ca: ca.to_path_buf(),
            principals: principals.to_string(),
            validity: validity.map(str::to_string),
        }),
        ..NodeOptions::default()
    }
}

/// `@cert-authority` for `[127.0.0.1]:*`: a node whose certificate that CA signed for
/// 127.0.0.1 is accepted although its key is listed nowhere.
#[test]
fn host_certificate_of_a_listed_ca_accepted() {
    let sb = Sandbox::new("hostkeys-ca");
    let (ca, ca_pub) = key_pair(&sb, "ca");
    let (a, mut client) = node_and_client(&sb, certified(&ca, "127.0.0.1,node-a", None), &[]);
    client.add_known(&format!("@cert-authority [127.0.0.1]:* {ca_pub}"));
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    accepted(&m, &a);
}

/// Certificates of a listed CA that do not hold: for another host, expired; and the CA
/// revoked. Each refused with its reason.
#[test]
fn host_certificates_that_do_not_hold_refused() {
    let sb = Sandbox::new("hostkeys-ca-bad");
    let (ca, ca_pub) = key_pair(&sb, "ca");
    let listed = format!("@cert-authority [127.0.0.1]:* {ca_pub}");

    let (a, mut client) = node_and_client(&sb, certified(&ca, "other.example", None), &[]);
    client.add_known(&listed);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    refused(&m, &a, &["host certificate", "other.example", "not valid"]);
    drop(m);
    drop(client);
    drop(a);

    let sb = Sandbox::new("hostkeys-ca-expired");
    let (a, mut client) = node_and_client(
        &sb,
        certified(&ca, "127.0.0.1", Some("20200101:20200102")),
        &[],
    );
    client.add_known(&listed);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    refused(&m, &a, &["host certificate", "expired"]);
    drop(m);
    drop(client);
    drop(a);

    let sb = Sandbox::new("hostkeys-ca-revoked");
    let (a, mut client) = node_and_client(&sb, certified(&ca, "127.0.0.1", None), &[]);
    client.add_known(&listed);
    client.add_known(&format!("@revoked * {ca_pub}"));
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    refused(&m, &a, &["revoked"]);
}

/// A certificate from a CA that is not the listed one: judged by its plain key, as OpenSSH
/// retries, so a node whose key is listed is accepted.
#[test]
fn host_certificate_of_another_ca_falls_back_to_the_plain_key() {
    let sb = Sandbox::new("hostkeys-ca-other");
    let (ca, _) = key_pair(&sb, "ca");
    let (_, other_ca_pub) = key_pair(&sb, "other-ca");
    let (a, mut client) = node_and_client(&sb, certified(&ca, "127.0.0.1", None), &[]);
    client.add_known(&format!("@cert-authority * {other_ca_pub}"));
    client.add_known(&a.known_hosts_line());
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    accepted(&m, &a);
}
