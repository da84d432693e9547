//! Which host keys a node may present, with OpenSSH's meaning of its known-hosts files (sshd(8),
//! "SSH_KNOWN_HOSTS FILE FORMAT"): the user's files and the global ones (`UserKnownHostsFile`,
//! `GlobalKnownHostsFile`), host patterns with `*`, `?` and `!negation`, `[host]:port`, hashed
//! names (`|1|salt|hash`, HMAC-SHA1), `@cert-authority` lines (host certificates signed by a
//! listed CA) and `@revoked` lines (a key refused whatever else lists it).
//!
//! Lines are parsed by `ssh_key::known_hosts` (russh's key crate); this module only matches them
//! against a host and decides. It never writes a file (learning a new key is `ssh.rs`'s) and
//! never talks to the network.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{certificate::CertType, Certificate, HashAlg};

/// One parsed line of a known-hosts file, with where it came from (for messages).
pub struct Line {
    pub file: PathBuf,
    pub number: usize,
    entry: Entry,
}

impl Line {
    /// `FILE line N`.
    pub fn place(&self) -> String {
        format!("{} line {}", self.file.display(), self.number)
    }
}

/// The lines of `files` (in order) that concern `host` (see [`lookup_name`]). A missing file is
/// empty; a line that does not parse is skipped, as OpenSSH does.
pub fn lines_for(files: &[PathBuf], host: &str) -> Vec<Line> {
    let mut found = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (i, raw) in text.lines().enumerate() {
            let words: Vec<&str> = raw.split_whitespace().collect();
            if words.first().is_none_or(|w| w.starts_with('#')) {
                continue;
            }
            let Ok(entry) = words.join(" ").parse::<Entry>() else {
                continue;
            };
            if matches_host(entry.host_patterns(), host) {
                found.push(Line {
                    file: file.clone(),
                    number: i + 1,
                    entry,
                });
            }
        }
    }
    found
}

/// The name a host is listed under: `host`, or `[host]:port` when the port is not 22
/// (lower-cased, as OpenSSH compares names).
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Whether a line's host field names `host`: a hashed name hashes to it, or some pattern
/// matches it and no negated pattern does.
fn matches_host(patterns: &HostPatterns, host: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => Hmac::<sha1::Sha1>::new_from_slice(salt)
            .map(|mac| mac.chain_update(host.as_bytes()).verify_slice(hash).is_ok())
            .unwrap_or(false),
        HostPatterns::Patterns(list) => {
            let mut positive = false;
            for p in list {
                let p = p.to_ascii_lowercase();
                match p.strip_prefix('!') {
                    Some(negated) if wildcard_match(negated.as_bytes(), host.as_bytes()) => {
                        return false
                    }
                    Some(_) => {}
                    None => positive |= wildcard_match(p.as_bytes(), host.as_bytes()),
                }
            }
            positive
        }
    }
}

/// `*` (any run of characters, also none) and `?` (one character) against the whole of `text`.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    // Greedy with backtracking to the last `*`: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What the known-hosts lines say of the key or certificate a node presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Listed (a plain line with this key), or a valid certificate of a listed CA.
    Known,
    /// Not listed, and no other key of its type is: a new host.
    Unknown,
    /// Another key of the same type is listed for the host (the first such line).
    Changed { line: String },
    /// The key, or the CA that signed its certificate, is on a `@revoked` line.
    Revoked { line: String },
    /// A certificate signed by a listed CA that does not hold for this host (why, then which
    /// line lists the CA).
    BadCertificate { why: String, line: String },
}

/// The verdict on a plain host key, as OpenSSH's `check_key_in_hostkeys`: revoked beats
/// everything, then a plain line with the same key, then a plain line with another key of the
/// same type (changed); `@cert-authority` lines say nothing about plain keys.
pub fn check_key(lines: &[Line], key: &KeyData) -> Verdict {
    if let Some(l) = revoked(lines, key) {
        return Verdict::Revoked { line: l.place() };
    }
    let plain = || lines.iter().filter(|l| l.entry.marker().is_none());
    if plain().any(|l| l.entry.public_key().key_data() == key) {
        return Verdict::Known;
    }
    match plain().find(|l| l.entry.public_key().key_data().algorithm() == key.algorithm()) {
        Some(l) => Verdict::Changed { line: l.place() },
        None => Verdict::Unknown,
    }
}

/// The verdict on a host certificate for `principal` (the host name as given, without port) at
/// `now` (seconds since the epoch). Signed by a CA listed for the host: valid or not, said
/// why. Signed by no listed CA: judged by its plain key, as OpenSSH retries.
pub fn check_certificate(lines: &[Line], cert: &Certificate, principal: &str, now: u64) -> Verdict {
    for key in [cert.public_key(), cert.signature_key()] {
        if let Some(l) = revoked(lines, key) {
            return Verdict::Revoked { line: l.place() };
        }
    }
    let Some(ca) = lines.iter().find(|l| {
        l.entry.marker() == Some(&Marker::CertAuthority)
            && l.entry.public_key().key_data() == cert.signature_key()
    }) else {
        return check_key(lines, cert.public_key());
    };
    let bad = |why: String| Verdict::BadCertificate {
        why,
        line: ca.place(),
    };
    if now < cert.valid_after() {
        return bad("it is not valid yet".to_string());
    }
    if now >= cert.valid_before() {
        return bad("it has expired".to_string());
    }
    let fingerprint = ca.entry.public_key().fingerprint(HashAlg::Sha256);
    if cert.validate_at(now, [&fingerprint]).is_err() {
        return bad("its signature does not verify with that CA's key".to_string());
    }
    if cert.cert_type() != CertType::Host {
        return bad("it is a user certificate, not a host certificate".to_string());
    }
    if let Some(option) = cert.critical_options().keys().next() {
        return bad(format!(
            "it has a critical option mrun does not know ({option})"
        ));
    }
    let principals = cert.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|p| p.eq_ignore_ascii_case(principal)) {
        return bad(format!(
            "it names {} as its hosts, not {principal}",
            principals.join(", ")
        ));
    }
    Verdict::Known
}

/// Whether some `@cert-authority` line concerns the host (then mrun asks for certificates).
pub fn has_authority(lines: &[Line]) -> bool {
    lines
        .iter()
        .any(|l| l.entry.marker() == Some(&Marker::CertAuthority))
}

fn revoked<'a>(lines: &'a [Line], key: &KeyData) -> Option<&'a Line> {
    lines.iter().find(|l| {
        l.entry.marker() == Some(&Marker::Revoked) && l.entry.public_key().key_data() == key
    })
}

/// `~/`, `%d` (home), `%u` (local user name) and `%%` in a file name of ssh_config, as OpenSSH
/// expands them in `UserKnownHostsFile` and `GlobalKnownHostsFile`.
pub fn expand_path(raw: &str, home: &Path, user: &str) -> PathBuf {
    let home_text = home.to_string_lossy();
    let raw = match raw.strip_prefix("~/") {
        Some(rest) => format!("{home_text}/{rest}"),
        None if raw == "~" => home_text.to_string(),
        None => raw.to_string(),
    };
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&home_text),
            Some('u') => out.push_str(user),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9dG4kjRhQTtWTVzd2t27+t0DEHBPW7iOD23TUiYLio";

    fn patterns(s: &str) -> HostPatterns {
        s.parse().expect("host patterns")
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"node*", b"node12"));
        assert!(wildcard_match(b"node*", b"node"));
        assert!(wildcard_match(b"10.0.0.?", b"10.0.0.7"));
        assert!(!wildcard_match(b"10.0.0.?", b"10.0.0.17"));
        assert!(wildcard_match(b"*.example.*", b"a.example.org"));
        assert!(wildcard_match(b"a*b*c", b"axxbyybzc"));
        assert!(!wildcard_match(b"a*b*c", b"axxbyyb"));
        assert!(wildcard_match(b"*", b""));
        assert!(!wildcard_match(b"", b"x"));
    }

    #[test]
    fn pattern_lists_with_negation_and_ports() {
        let p = patterns("node*,10.0.0.*,!node13");
        assert!(matches_host(&p, "node12"));
        assert!(matches_host(&p, "10.0.0.7"));
        assert!(!matches_host(&p, "node13"), "a negation wins");
        assert!(!matches_host(&p, "other"));
        assert!(
            !matches_host(&p, "[node12]:2222"),
            "a pattern without brackets is for port 22"
        );
        assert!(matches_host(&patterns("[node*]:2222"), "[node12]:2222"));
        assert!(!matches_host(&patterns("[node*]:2222"), "[node12]:2223"));
        assert!(
            matches_host(&patterns("NODE1"), &lookup_name("Node1", 22)),
            "case does not matter"
        );
        assert!(
            !matches_host(&patterns("!node1"), "node2"),
            "only negations: no match"
        );
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222" with this salt (HMAC-SHA1 by OpenSSH).
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("hmac key");
        mac.update(b"[127.0.0.1]:2222");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let p = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash,
        };
        assert!(matches_host(&p, &lookup_name("127.0.0.1", 2222)));
        assert!(!matches_host(&p, &lookup_name("127.0.0.1", 2223)));
    }

    #[test]
    fn lookup_names() {
        assert_eq!(lookup_name("Build1", 22), "build1");
        assert_eq!(lookup_name("10.0.0.7", 2222), "[10.0.0.7]:2222");
    }

    #[test]
    fn files_are_read_in_order_and_bad_lines_skipped() {
        let dir = std::env::temp_dir().join(format!("mrun-known-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let user = dir.join("user");
        let global = dir.join("global");
        std::fs::write(&user, format!("# comment\n\ngarbage line\nother {KEY_A}\n"))
            .expect("write");
        std::fs::write(
            &global,
            format!("node*,!node9\t{KEY_A} comment with words\n@revoked * {KEY_A}\n"),
        )
        .expect("write");
        let files = [user.clone(), dir.join("missing"), global.clone()];
        let found = lines_for(&files, "node1");
        let places: Vec<String> = found.iter().map(Line::place).collect();
        assert_eq!(
            places,
            vec![
                format!("{} line 1", global.display()),
                format!("{} line 2", global.display())
            ]
        );
        let key: russh::keys::PublicKey = KEY_A.parse().expect("key");
        assert_eq!(
            check_key(&found, key.key_data()),
            Verdict::Revoked {
                line: format!("{} line 2", global.display())
            }
        );
        assert_eq!(
            lines_for(&files, "node9").len(),
            1,
            "only the @revoked line"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_matching_line_wins_over_another_key_of_the_type() {
        const KEY_B: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE58n3vIwSvK/qgM07VGsnk35jnQIea0YQ3T/Stj7sL3";
        let dir = std::env::temp_dir().join(format!("mrun-known-hosts-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("known_hosts");
        std::fs::write(
            &file,
            format!("node1 {KEY_B}\n@cert-authority node1 {KEY_A}\nnode1 {KEY_A}\n"),
        )
        .expect("write");
        let lines = lines_for(std::slice::from_ref(&file), "node1");
        let a: russh::keys::PublicKey = KEY_A.parse().expect("key a");
        let b: russh::keys::PublicKey = KEY_B.parse().expect("key b");
        assert_eq!(check_key(&lines, a.key_data()), Verdict::Known);
        assert_eq!(check_key(&lines, b.key_data()), Verdict::Known);
        // Only the CA line names key a: a CA key is no host key.
        let only_ca = lines_for(std::slice::from_ref(&file), "node1")
            .into_iter()
            .filter(|l| l.number != 3)
            .collect::<Vec<_>>();
        assert_eq!(
            check_key(&only_ca, a.key_data()),
            Verdict::Changed {
                line: format!("{} line 1", file.display())
            }
        );
        assert_eq!(check_key(&[], a.key_data()), Verdict::Unknown);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths_expand_like_openssh() {
        let home = Path::new("/home/al");
        assert_eq!(
            expand_path("~/.ssh/known_hosts", home, "al"),
            PathBuf::from("/home/al/.ssh/known_hosts")
        );
        assert_eq!(
            expand_path("/etc/ssh/%u_hosts%%", home, "al"),
            PathBuf::from("/etc/ssh/al_hosts%")
        );
        assert_eq!(
            expand_path("%d/kh", home, "al"),
            PathBuf::from("/home/al/kh")
        );
    }
}
