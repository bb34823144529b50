//! Tests for TLS settings and peer identity: every new config key (valid forms, and each
//! error with its line and field), and every identity condition of `admit_with`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{EncodingKey, Header};
use radguard_dicom::AeTitle;

use radguard_policy::*;

// ------------------------------------------------------------------------------------------
// Helpers.

fn ae(s: &str) -> AeTitle {
    AeTitle::new(s).expect("test AE title")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// Files a config can name: PEM-looking files in a temporary directory (the policy only checks
/// they are readable), and the JWT test keys from tests/fixtures/jwt.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tmp");
        for name in [
            "gw.pem",
            "gw-key.pem",
            "ca.pem",
            "up-ca.pem",
            "client.pem",
            "client-key.pem",
        ] {
            std::fs::write(
                dir.path().join(name),
                "-----BEGIN X-----\n-----END X-----\n",
            )
            .expect("write");
        }
        std::fs::create_dir(dir.path().join("a-dir")).expect("mkdir");
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `[server]` with a TLS listener whose client CA is set.
    fn server(&self) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:11112\"]\ntls_listen = [\"127.0.0.1:2762\"]\n\n[server.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            self.path("gw.pem"),
            self.path("gw-key.pem"),
            self.path("ca.pem")
        )
    }
}

fn jwt_key(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
        .display()
        .to_string()
}

const VAULT_ROUTE: &str = "\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n";

fn parse_ok(src: &str) -> Config {
    match parse_config(src, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n---\n{src}"),
    }
}

fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    src[..at].matches('\n').count() + 1
}

/// Exactly one error, on the line of `needle`, about `field`, whose message contains `msg`.
fn one_err(src: &str, needle: &str, field: &str, msg: &str) {
    let errs = match parse_config(src, "test.toml") {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.errors,
    };
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got: {errs:#?}\n---\n{src}"
    );
    let e = &errs[0];
    assert_eq!(e.line, Some(line_of(src, needle)), "line of {e}");
    assert_eq!(e.field, field, "field of {e}");
    assert!(
        e.problem.contains(msg),
        "message of {e} should contain {msg:?}"
    );
}

/// A cheap Argon2id hash (tests only: real ones come from `radguard passwd`).
fn cheap_hash(passcode: &str) -> String {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).expect("params");
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(passcode.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn facts(source: &str, calling: &str, called: &str) -> AssociationFacts {
    AssociationFacts {
        source: ip(source),
        calling_ae: ae(calling),
        called_ae: ae(called),
    }
}

fn cert(sha: &str, cn: Option<&str>, sans: &[&str]) -> CertFacts {
    CertFacts {
        sha256_hex: sha.to_string(),
        subject_cn: cn.map(str::to_string),
        sans: sans.iter().map(|s| s.to_string()).collect(),
    }
}

fn with_cert(c: CertFacts) -> IdentityFacts {
    IdentityFacts {
        client_cert: Some(c),
        user: None,
    }
}

fn claim(kind: u8, primary: &[u8], secondary: &[u8], positive: bool) -> UserIdentityClaim {
    UserIdentityClaim {
        kind: UserIdentityKind::from_code(kind),
        primary: primary.to_vec(),
        secondary: secondary.to_vec(),
        positive_response_requested: positive,
    }
}

fn with_user(c: UserIdentityClaim) -> IdentityFacts {
    IdentityFacts {
        client_cert: None,
        user: Some(c),
    }
}

fn refused(why: PeerMismatch) -> Result<Admission, AssociationRefusal> {
    Err(AssociationRefusal::CallingAeNotRecognized { why })
}

const FP_A: &str = "aa00000000000000000000000000000000000000000000000000000000000001";
const FP_B: &str = "bb00000000000000000000000000000000000000000000000000000000000002";

// ------------------------------------------------------------------------------------------
// Config: valid forms.

#[test]
fn server_tls_settings() {
    let f = Files::new();
    let c = parse_ok(&format!("{}\n{}", f.server(), peer_echo("")));
    let s = &c.server;
    assert_eq!(s.listen, vec!["127.0.0.1:11112".parse().expect("addr")]);
    assert_eq!(s.tls_listen, vec!["127.0.0.1:2762".parse().expect("addr")]);
    let tls = s.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, PathBuf::from(f.path("gw.pem")));
    assert_eq!(tls.key, PathBuf::from(f.path("gw-key.pem")));
    assert_eq!(tls.client_ca, Some(PathBuf::from(f.path("ca.pem"))));
    assert_eq!(tls.client_auth, ClientCertMode::Optional);
    let text = c.describe();
    assert!(text.contains("listen: 127.0.0.1:11112\n"), "{text}");
    assert!(
        text.contains("TLS listen: 127.0.0.1:2762 (certificate ") && text.contains("optional, CA"),
        "{text}"
    );

    // client_auth = "required"; no client_ca → no client certificates.
    let c = parse_ok(&format!(
        "{}client_auth = \"required\"\n{}",
        f.server(),
        peer_echo("")
    ));
    assert_eq!(
        c.server.tls.as_ref().map(|t| t.client_auth),
        Some(ClientCertMode::Required)
    );
    let c = parse_ok(&format!(
        "[server]\ntls_listen = [\"[::1]:2762\"]\n[server.tls]\ncert = {:?}\nkey = {:?}\n{}",
        f.path("gw.pem"),
        f.path("gw-key.pem"),
        peer_echo("")
    ));
    let tls = c.server.tls.as_ref().expect("tls");
    assert_eq!(tls.client_ca, None);
    assert_eq!(tls.client_auth, ClientCertMode::None);
    // Only TLS listeners: no plain listener by default.
    assert!(c.server.listen.is_empty());
    assert!(c.describe().contains("listen: (no plain listener)"));
    // ... or explicitly, with listen = [].
    let c = parse_ok(&format!(
        "[server]\nlisten = []\ntls_listen = [\"[::1]:2762\"]\n[server.tls]\ncert = {:?}\nkey = {:?}\n{}",
        f.path("gw.pem"),
        f.path("gw-key.pem"),
        peer_echo("")
    ));
    assert!(c.server.listen.is_empty());
    // Without TLS keys nothing changes.
    assert_eq!(parse_ok(&peer_echo("")).server, ServerSettings::default());
}

#[test]
fn relative_paths_follow_the_config_file() {
    let f = Files::new();
    let sub = f.dir.path().join("etc");
    std::fs::create_dir_all(sub.join("certs")).expect("mkdir");
    for n in ["gw.pem", "gw-key.pem"] {
        std::fs::write(sub.join("certs").join(n), "x").expect("write");
    }
    let src = format!(
        "[server]\ntls_listen = [\"127.0.0.1:2762\"]\n[server.tls]\ncert = \"certs/gw.pem\"\nkey = \"certs/gw-key.pem\"\n{}",
        peer_echo("")
    );
    let path = sub.join("radguard.toml");
    std::fs::write(&path, &src).expect("write");
    let c = load_file(&path).expect("loads");
    assert_eq!(
        c.server.tls.as_ref().map(|t| t.cert.clone()),
        Some(sub.join("certs/gw.pem"))
    );
    // parse_config_in with the same base; parse_config resolves against the current
    // directory, where the files are not.
    assert!(parse_config_in(&src, "x", &sub).is_ok());
    let e = parse_config(&src, "x").expect_err("not found from cwd");
    assert_eq!(e.errors[0].field, "server.tls.cert");
    assert!(
        e.errors[0].problem.contains("cannot read certs/gw.pem"),
        "{e}"
    );
}

/// A one-peer config (plain, echo only, 10.0.0.1, AE "A") with `extra` keys in the peer.
fn peer_echo(extra: &str) -> String {
    format!(
        "[[peer]]\nname = \"p\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n{extra}\n{VAULT_ROUTE}"
    )
}

#[test]
fn route_tls_settings() {
    let f = Files::new();
    let route = |upstream: &str, tls: &str| {
        format!(
            "{}\n[[route]]\ncalled_ae = \"PACS\"\nupstream = {upstream:?}\nupstream_ae = \"ORTHANC\"\ntls = {{ {tls} }}\n",
            peer_echo("")
        )
    };
    let ca = format!("ca = {:?}", f.path("up-ca.pem"));
    let cases = [
        ("pacs.example.org:2762", ca.clone(), "pacs.example.org"),
        ("10.0.0.5:2762", ca.clone(), "10.0.0.5"),
        ("[fd00::5]:2762", ca.clone(), "fd00::5"),
        (
            "10.0.0.5:2762",
            format!("{ca}, server_name = \"archive.example.org\""),
            "archive.example.org",
        ),
        (
            "10.0.0.5:2762",
            format!("{ca}, server_name = \"[fd00::9]\""),
            "fd00::9",
        ),
    ];
    for (up, tls, want) in cases {
        let c = parse_ok(&route(up, &tls));
        let entry = c.policy.route_entry(&ae("PACS")).expect("route");
        let t = entry.tls.as_ref().expect("tls");
        assert_eq!(t.server_name, want);
        assert_eq!(t.ca, PathBuf::from(f.path("up-ca.pem")));
        assert_eq!(t.client_cert_and_key(), None);
        // The vault route stays plain.
        assert_eq!(
            c.policy.route_entry(&ae("RADGUARD")).map(|r| r.tls.clone()),
            Some(None)
        );
    }
    let c = parse_ok(&route(
        "pacs:2762",
        &format!(
            "{ca}, client_cert = {:?}, client_key = {:?}",
            f.path("client.pem"),
            f.path("client-key.pem")
        ),
    ));
    let entry = c.policy.route_entry(&ae("PACS")).expect("route");
    let t = entry.tls.as_ref().expect("tls");
    assert_eq!(
        t.client_cert_and_key(),
        Some((
            Path::new(&f.path("client.pem")),
            Path::new(&f.path("client-key.pem"))
        ))
    );
    // The admission carries it; the route itself is unchanged.
    let adm = c
        .policy
        .admit(&facts("10.0.0.1", "A", "PACS"))
        .expect("admitted");
    assert_eq!(adm.upstream_tls(), Some(t));
    assert!(matches!(adm.route(), Route::Upstream { .. }));
    assert!(c.describe().contains("over TLS (server name pacs, CA "));
    let plain = c
        .policy
        .admit(&facts("10.0.0.1", "A", "RADGUARD"))
        .expect("admitted");
    assert_eq!(plain.upstream_tls(), None);
}

#[test]
fn peer_identity_settings() {
    let f = Files::new();
    let colons: String = FP_A
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let src = format!(
        "{}\n{}\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{}\"\n",
        f.server(),
        peer_echo(&format!(
            "cert_sha256 = [{colons:?}, \"{FP_B}\"]\ncert_subject_cn = [\"CT01\"]\ncert_san = [\"CT01.Example.ORG\", \"fd00:0::5\", \"urn:oid:1.2.3\"]\nuser_identity = \"required\"\nusers = [\"alice\", \"bob\"]"
        )),
        cheap_hash("pw")
    );
    let c = parse_ok(&src);
    let p = c.policy.peers().next().expect("peer");
    let id = p.identity();
    assert_eq!(id.tls(), TlsRequirement::Required, "implied by cert_*");
    assert_eq!(id.cert_sha256(), [FP_A, FP_B]);
    assert_eq!(id.cert_subject_cn(), ["CT01"]);
    assert_eq!(
        id.cert_san(),
        ["ct01.example.org", "fd00::5", "urn:oid:1.2.3"]
    );
    assert_eq!(id.user_identity(), UserIdentityRequirement::Required);
    assert_eq!(
        id.users(),
        Some(&["alice".to_string(), "bob".to_string()][..])
    );
    assert!(id.is_constrained());
    assert_eq!(c.policy.user_names().collect::<Vec<_>>(), ["alice"]);
    assert!(!c.policy.has_jwt());
    let text = c.describe();
    assert!(text.contains("client certificate: required (SHA-256 one of 2 listed; CN in CT01; SAN in ct01.example.org, fd00::5, urn:oid:1.2.3)"), "{text}");
    assert!(
        text.contains("user identity: required (type 2 or 5); users alice, bob"),
        "{text}"
    );
    assert!(text.contains("users with a passcode: alice"), "{text}");
    assert!(!text.contains("$argon2id"), "hashes are not printed");

    // tls = "required" alone; tls = "optional" explicitly; user_identity = "ignore".
    let c = parse_ok(&format!(
        "{}\n{}",
        f.server(),
        peer_echo("tls = \"required\"")
    ));
    let id = c
        .policy
        .peers()
        .next()
        .map(|p| p.identity().clone())
        .expect("peer");
    assert_eq!(id.tls(), TlsRequirement::Required);
    assert!(id.cert_sha256().is_empty());
    let c = parse_ok(&peer_echo("tls = \"optional\"\nuser_identity = \"ignore\""));
    let id = c
        .policy
        .peers()
        .next()
        .map(|p| p.identity().clone())
        .expect("peer");
    // Only the user identity differs from a plain peer's (seen through the accessors).
    let plain = PeerIdentity::default();
    assert_eq!(id.user_identity(), UserIdentityRequirement::Ignore);
    assert_ne!(plain.user_identity(), UserIdentityRequirement::Ignore);
    assert_eq!(id.tls(), plain.tls());
    assert_eq!(id.cert_sha256(), plain.cert_sha256());
    assert_eq!(id.cert_subject_cn(), plain.cert_subject_cn());
    assert_eq!(id.cert_san(), plain.cert_san());
    assert_eq!(id.users(), plain.users());
    assert!(!id.is_constrained());
    assert!(c.describe().contains("user identity: ignored"));
    // A plain peer has no conditions at all.
    let c = parse_ok(&peer_echo(""));
    assert_eq!(
        c.policy.peers().next().map(|p| p.identity().clone()),
        Some(PeerIdentity::default())
    );
}

fn jwt_table(keys: &str) -> String {
    format!("\n[jwt]\nissuer = \"https://idp.hospital.example\"\naudience = \"radguard\"\nkeys = [{keys}]\n")
}

#[test]
fn users_and_jwt_settings() {
    let keys = format!(
        "{{ kid = \"ec\", alg = \"ES256\", public_key = {:?} }}, {{ kid = \"ed\", alg = \"EdDSA\", public_key = {:?} }}, {{ kid = \"rsa\", alg = \"RS256\", public_key = {:?} }}",
        jwt_key("es256-public.pem"),
        jwt_key("ed25519-public.pem"),
        jwt_key("rs256-public.pem")
    );
    let src = format!(
        "{}{}\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{}\"\n\n[[user]]\nname = \"Dr. Bob Müller\"\npasscode_argon2 = \"{}\"\n",
        peer_echo("user_identity = \"required\""),
        jwt_table(&keys),
        cheap_hash("a"),
        cheap_hash("b")
    );
    let c = parse_ok(&src);
    assert!(c.policy.has_jwt());
    assert_eq!(
        c.policy.user_names().collect::<Vec<_>>(),
        ["Dr. Bob Müller", "alice"]
    );
    let text = c.describe();
    assert!(
        text.contains("JWT: issuer \"https://idp.hospital.example\", audience \"radguard\", keys ec (ES256), ed (EdDSA), rsa (RS256)"),
        "{text}"
    );
    // Debug output never shows hashes.
    assert!(!format!("{:?}", c.policy).contains("argon2id"));
}

// ------------------------------------------------------------------------------------------
// Config errors, each with its line and field.

#[test]
fn server_tls_errors() {
    let f = Files::new();
    let gw = f.path("gw.pem");
    let key = f.path("gw-key.pem");
    let tls_table = format!("[server.tls]\ncert = {gw:?}\nkey = {key:?}\n");
    let src = format!(
        "[server]\ntls_listen = [\"127.0.0.1:2762\"]\n{}",
        peer_echo("")
    );
    one_err(
        &src,
        "tls_listen",
        "server.tls_listen",
        "needs a [server.tls] table",
    );

    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n{tls_table}{}",
        peer_echo("")
    );
    one_err(&src, "[server.tls]", "server.tls", "without `tls_listen`");

    let src = format!("[server]\ntls_listen = []\n{tls_table}{}", peer_echo(""));
    one_err(&src, "tls_listen", "server.tls_listen", "at least one");

    let listen = |l: &str, t: &str| {
        format!(
            "[server]\nlisten = {l}\ntls_listen = {t}\n{tls_table}{}",
            peer_echo("")
        )
    };
    one_err(
        &listen("[\"127.0.0.1:1\"]", "[\"localhost:2762\"]"),
        "tls_listen",
        "server.tls_listen[0]",
        "invalid socket address",
    );
    one_err(
        &listen("[\"127.0.0.1:1\"]", "[\"127.0.0.1:2\", \"127.0.0.1:2\"]"),
        "tls_listen",
        "server.tls_listen[1]",
        "duplicate",
    );
    one_err(
        &listen("[\"127.0.0.1:2762\"]", "[\"127.0.0.1:2762\"]"),
        "tls_listen",
        "server.tls_listen[0]",
        "plain or TLS, not both",
    );
    // listen = [] needs TLS listeners.
    one_err(
        &format!("[server]\nlisten = []\n{}", peer_echo("")),
        "listen",
        "server.listen",
        "or configure tls_listen",
    );

    let server = |body: &str| {
        format!(
            "[server]\ntls_listen = [\"127.0.0.1:2762\"]\n[server.tls]\n{body}\n{}",
            peer_echo("")
        )
    };
    let src = server(&format!("key = {key:?}"));
    one_err(
        &src,
        "[server.tls]",
        "server.tls.cert",
        "missing required key `cert`",
    );
    let src = server(&format!("cert = {gw:?}"));
    one_err(
        &src,
        "[server.tls]",
        "server.tls.key",
        "missing required key `key`",
    );
    let missing = f.path("nope.pem");
    let src = server(&format!("cert = {missing:?}\nkey = {key:?}"));
    one_err(&src, "cert =", "server.tls.cert", "cannot read");
    let src = server(&format!("cert = {gw:?}\nkey = {:?}", f.path("a-dir")));
    one_err(&src, "key =", "server.tls.key", "is a directory");
    let src = server(&format!("cert = {gw:?}\nkey = \"\""));
    one_err(&src, "key =", "server.tls.key", "empty path");
    let src = server(&format!(
        "cert = {gw:?}\nkey = {key:?}\nclient_ca = {missing:?}"
    ));
    one_err(&src, "client_ca", "server.tls.client_ca", "cannot read");
    let src = server(&format!(
        "cert = {gw:?}\nkey = {key:?}\nclient_auth = \"required\""
    ));
    one_err(
        &src,
        "client_auth",
        "server.tls.client_auth",
        "needs `client_ca`",
    );
    let src = server(&format!(
        "cert = {gw:?}\nkey = {key:?}\nclient_ca = {:?}\nclient_auth = \"maybe\"",
        f.path("ca.pem")
    ));
    one_err(
        &src,
        "client_auth",
        "server.tls.client_auth",
        "unknown value \"maybe\"",
    );
    let src = server(&format!("cert = {gw:?}\nkey = {key:?}\ninsecure = true"));
    one_err(
        &src,
        "insecure",
        "server.tls.insecure",
        "unknown field `insecure`",
    );
    let src = server(&format!(
        "cert = {gw:?}\nkey = {key:?}\nmin_version = \"1.0\""
    ));
    one_err(
        &src,
        "min_version",
        "server.tls.min_version",
        "unknown field",
    );
}

#[test]
fn peer_identity_errors() {
    let f = Files::new();
    let tls = |body: &str| format!("{}\n{}", f.server(), peer_echo(body));
    one_err(
        &tls("tls = \"yes\""),
        "tls =",
        "peer[0].tls",
        "unknown value \"yes\"",
    );
    one_err(
        &tls(&format!("tls = \"optional\"\ncert_sha256 = [\"{FP_A}\"]")),
        "tls =",
        "peer[0].tls",
        "`cert_sha256` needs a client certificate",
    );
    one_err(
        &tls("cert_sha256 = [\"abcd\"]"),
        "cert_sha256",
        "peer[0].cert_sha256[0]",
        "invalid SHA-256 fingerprint",
    );
    one_err(
        &tls(&format!("cert_sha256 = [\"{}\"]", "g".repeat(64))),
        "cert_sha256",
        "peer[0].cert_sha256[0]",
        "64 hex digits",
    );
    one_err(
        &tls(&format!(
            "cert_sha256 = [\"{FP_A}\", \"{}\"]",
            FP_A.to_ascii_uppercase()
        )),
        "cert_sha256",
        "peer[0].cert_sha256[1]",
        "duplicate fingerprint",
    );
    one_err(
        &tls("cert_sha256 = []"),
        "cert_sha256",
        "peer[0].cert_sha256",
        "at least one",
    );
    one_err(
        &tls("cert_subject_cn = [\"CT01\", \" CT02\"]"),
        "cert_subject_cn",
        "peer[0].cert_subject_cn[1]",
        "invalid subject CN",
    );
    one_err(
        &tls("cert_subject_cn = [\"\"]"),
        "cert_subject_cn",
        "peer[0].cert_subject_cn[0]",
        "non-empty",
    );
    one_err(
        &tls("cert_san = [\"ct01.example.org\", \"CT01.EXAMPLE.ORG.\"]"),
        "cert_san",
        "peer[0].cert_san[1]",
        "duplicate subject alternative name",
    );
    one_err(
        &tls("cert_san = [\"fd00::5\", \"fd00:0:0::5\"]"),
        "cert_san",
        "peer[0].cert_san[1]",
        "duplicate subject alternative name",
    );
    one_err(
        &tls("cert_san = 5"),
        "cert_san",
        "peer[0].cert_san",
        "invalid type",
    );

    // A certificate condition without a client CA to verify against.
    let plain = |body: &str| peer_echo(body);
    one_err(
        &plain(&format!(
            "cert_subject_cn = [\"CT01\"]\ncert_sha256 = [\"{FP_A}\"]"
        )),
        "cert_sha256",
        "peer[0].cert_sha256",
        "no [server.tls] `client_ca`",
    );
    one_err(
        &plain("tls = \"required\""),
        "tls =",
        "peer[0].tls",
        "no [server.tls] `client_ca`",
    );

    // User identity.
    one_err(
        &plain("user_identity = \"always\""),
        "user_identity",
        "peer[0].user_identity",
        "unknown value \"always\"",
    );
    one_err(
        &plain("user_identity = \"required\""),
        "user_identity",
        "peer[0].user_identity",
        "needs a [[user]]",
    );
    one_err(
        &plain("users = [\"alice\", \"alice\"]"),
        "users",
        "peer[0].users[1]",
        "duplicate user name",
    );
    one_err(
        &plain("users = [\"alice\", \" bob\"]"),
        "users",
        "peer[0].users[1]",
        "invalid user name",
    );
    one_err(
        &plain("users = []"),
        "users",
        "peer[0].users",
        "at least one",
    );
    one_err(
        &plain("user_identity = \"ignore\"\nusers = [\"alice\"]"),
        "users",
        "peer[0].users",
        "not allowed with user_identity = \"ignore\"",
    );
    one_err(
        &plain("user = [\"alice\"]"),
        "user =",
        "peer[0].user",
        "unknown field",
    );
}

#[test]
fn user_errors() {
    let good = cheap_hash("pw");
    let user = |body: &str| format!("{}\n[[user]]\n{body}\n", peer_echo(""));
    one_err(
        &user(&format!("passcode_argon2 = \"{good}\"")),
        "[[user]]",
        "user[0].name",
        "missing required key `name`",
    );
    one_err(
        &user("name = \"alice\""),
        "[[user]]",
        "user[0].passcode_argon2",
        "radguard passwd",
    );
    one_err(
        &user(&format!("name = \"\"\npasscode_argon2 = \"{good}\"")),
        "name = \"\"",
        "user[0].name",
        "invalid user name",
    );
    let src = format!(
        "{}\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{good}\"\n\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{good}\"\n",
        peer_echo("")
    );
    let errs = parse_config(&src, "t").expect_err("dup").errors;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "user[1].name");
    assert_eq!(
        errs[0].line,
        Some(line_of(&src, "[[user]]\nname = \"alice\"\npasscode_argon2") + 5)
    );
    assert!(errs[0]
        .problem
        .contains("duplicate user name \"alice\" (also user[0])"));

    one_err(
        &user("name = \"alice\"\npasscode_argon2 = \"hunter2\""),
        "passcode_argon2",
        "user[0].passcode_argon2",
        "not a PHC hash string",
    );
    one_err(
        &user(&format!(
            "name = \"alice\"\npasscode_argon2 = \"{}\"",
            good.replace("$argon2id$", "$argon2i$")
        )),
        "passcode_argon2",
        "user[0].passcode_argon2",
        "Argon2id only",
    );
    one_err(
        &user("name = \"alice\"\npasscode_argon2 = \"$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaA\""),
        "passcode_argon2",
        "user[0].passcode_argon2",
        "invalid Argon2 parameters",
    );
    one_err(
        &user("name = \"alice\"\npasscode_argon2 = \"$argon2id$v=19$m=64,t=1,p=1\""),
        "passcode_argon2",
        "user[0].passcode_argon2",
        "lacks its salt or hash",
    );
    one_err(
        &user(&format!(
            "name = \"a\"\npasscode_argon2 = \"{good}\"\nrole = \"x\""
        )),
        "role",
        "user[0].role",
        "unknown field",
    );
}

#[test]
fn jwt_errors() {
    let ec = jwt_key("es256-public.pem");
    let key = |kid: &str, alg: &str, path: &str| {
        format!("{{ kid = {kid:?}, alg = {alg:?}, public_key = {path:?} }}")
    };
    let good = key("k1", "ES256", &ec);
    let jwt = |body: &str| format!("{}\n[jwt]\n{body}\n", peer_echo(""));
    one_err(
        &jwt(&format!("audience = \"r\"\nkeys = [{good}]")),
        "[jwt]",
        "jwt.issuer",
        "missing required key `issuer`",
    );
    one_err(
        &jwt(&format!("issuer = \"i\"\naudience = \"\"\nkeys = [{good}]")),
        "audience =",
        "jwt.audience",
        "invalid audience",
    );
    one_err(
        &jwt(&format!(
            "issuer = \"i\"\naudience = \"r\"\nleeway_secs = 301\nkeys = [{good}]"
        )),
        "leeway_secs",
        "jwt.leeway_secs",
        "0..=300",
    );
    one_err(
        &jwt("issuer = \"i\"\naudience = \"r\""),
        "[jwt]",
        "jwt.keys",
        "missing required key `keys`",
    );
    one_err(
        &jwt("issuer = \"i\"\naudience = \"r\"\nkeys = []"),
        "keys",
        "jwt.keys",
        "at least one",
    );
    let base = "issuer = \"i\"\naudience = \"r\"\nkeys = [\n";
    let one = |k: &str| jwt(&format!("{base}{k}\n]"));
    one_err(
        &one(&key("k1", "HS256", &ec)),
        "HS256",
        "jwt.keys[0].alg",
        "unsupported algorithm \"HS256\"",
    );
    one_err(
        &one(&key("k1", "none", &ec)),
        "none",
        "jwt.keys[0].alg",
        "unsupported algorithm",
    );
    one_err(
        &one(&key("", "ES256", &ec)),
        "kid =",
        "jwt.keys[0].kid",
        "invalid key id",
    );
    one_err(
        &one(&format!(
            "{good},\n{}",
            key("k1", "EdDSA", &jwt_key("ed25519-public.pem"))
        )),
        "\"EdDSA\"",
        "jwt.keys[1].kid",
        "duplicate kid \"k1\"",
    );
    one_err(
        &one(&key("k1", "ES256", &jwt_key("missing.pem"))),
        "kid =",
        "jwt.keys[0].public_key",
        "cannot read",
    );
    one_err(
        &one(&key("k1", "ES256", &jwt_key("rs256-public.pem"))),
        "kid =",
        "jwt.keys[0].public_key",
        "is not a PEM ES256 public key",
    );
    one_err(
        &one(&key("k1", "EdDSA", &jwt_key("es256-public.pem"))),
        "kid =",
        "jwt.keys[0].public_key",
        "is not a PEM EdDSA public key",
    );
    one_err(
        &one(&key("k1", "RS256", &jwt_key("README.md"))),
        "kid =",
        "jwt.keys[0].public_key",
        "is not a PEM RS256 public key",
    );
    one_err(
        &one("{ kid = \"k1\", alg = \"ES256\" }"),
        "kid =",
        "jwt.keys[0].public_key",
        "missing required key `public_key`",
    );
    one_err(
        &one(&format!(
            "{{ kid = \"k1\", alg = \"ES256\", public_key = {ec:?}, x5c = [] }}"
        )),
        "kid =",
        "jwt.keys[0].x5c",
        "unknown field",
    );
}

#[test]
fn route_tls_errors() {
    let f = Files::new();
    let ca = f.path("up-ca.pem");
    let route = |head: &str, tls: &str| {
        format!(
            "{}\n[[route]]\ncalled_ae = \"PACS\"\n{head}\ntls = {{ {tls} }}\n",
            peer_echo("")
        )
    };
    let up = "upstream = \"pacs:2762\"\nupstream_ae = \"ORTHANC\"";
    one_err(
        &route("vault = true", &format!("ca = {ca:?}")),
        "tls =",
        "route[1].tls",
        "only for upstream routes",
    );
    one_err(
        &route(up, "server_name = \"pacs\""),
        "tls =",
        "route[1].tls.ca",
        "missing required key `ca`",
    );
    one_err(
        &route(up, &format!("ca = {:?}", f.path("none.pem"))),
        "tls =",
        "route[1].tls.ca",
        "cannot read",
    );
    one_err(
        &route(up, &format!("ca = {ca:?}, server_name = \"bad name\"")),
        "tls =",
        "route[1].tls.server_name",
        "invalid server name \"bad name\"",
    );
    one_err(
        &route(
            up,
            &format!("ca = {ca:?}, client_cert = {:?}", f.path("client.pem")),
        ),
        "tls =",
        "route[1].tls.client_cert",
        "needs `client_key`",
    );
    one_err(
        &route(
            up,
            &format!("ca = {ca:?}, client_key = {:?}", f.path("client-key.pem")),
        ),
        "tls =",
        "route[1].tls.client_key",
        "needs `client_cert`",
    );
    one_err(
        &route(up, &format!("ca = {ca:?}, verify = false")),
        "tls =",
        "route[1].tls.verify",
        "unknown field `verify`",
    );
    // An invalid route still reports its tls table's own problems.
    let src = route(
        "upstream = \"pacs\"\nupstream_ae = \"ORTHANC\"",
        "server_name = \"x\"",
    );
    let fields: Vec<String> = parse_config(&src, "t")
        .expect_err("errors")
        .errors
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["route[1].upstream", "route[1].tls.ca"]);
}

/// `on_upstream_down = "hold"` with upstream TLS: accepted (the forwarder connects with the
/// route's `tls`); two hold routes to one upstream must verify it the same way (their held
/// instances share one forwarder), while equal tables are fine.
#[test]
fn hold_with_route_tls() {
    let f = Files::new();
    let ca = format!("ca = {:?}", f.path("up-ca.pem"));
    let route = |called: &str, tls: &str| {
        format!(
            "\n[[route]]\ncalled_ae = {called:?}\nupstream = \"pacs:2762\"\nupstream_ae = \"ORTHANC\"\non_upstream_down = \"hold\"\ntls = {{ {tls} }}\n"
        )
    };
    let c = parse_ok(&format!("{}{}", peer_echo(""), route("PACS", &ca)));
    let entry = c.policy.route_entry(&ae("PACS")).expect("route");
    assert!(entry.hold.is_some(), "hold kept");
    assert_eq!(
        entry.tls.as_ref().map(|t| t.server_name.as_str()),
        Some("pacs")
    );
    // Same upstream, same tls: both hold.
    let c = parse_ok(&format!(
        "{}{}{}",
        peer_echo(""),
        route("PACS", &ca),
        route("PACS2", &ca)
    ));
    assert!(c
        .policy
        .route_entry(&ae("PACS2"))
        .is_some_and(|r| r.hold.is_some()));
    // Same upstream, another server name: refused at the second route's tls.
    let src = format!(
        "{}{}{}",
        peer_echo(""),
        route("PACS", &ca),
        route(
            "PACS2",
            &format!("{ca}, server_name = \"archive.example.org\"")
        )
    );
    let errs = parse_config(&src, "test.toml").expect_err("refused").errors;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "route[2].tls", "{errs:#?}");
    assert_eq!(
        errs[0].line,
        Some(line_of(&src, "server_name")),
        "{errs:#?}"
    );
    assert!(
        errs[0]
            .problem
            .contains("differs from the `tls` of route[1]"),
        "{errs:#?}"
    );
    // A route that does not hold may verify the same upstream differently.
    let refuse = route(
        "PACS2",
        &format!("{ca}, server_name = \"archive.example.org\""),
    )
    .replace("on_upstream_down = \"hold\"\n", "");
    parse_ok(&format!("{}{}{refuse}", peer_echo(""), route("PACS", &ca)));
}

// ------------------------------------------------------------------------------------------
// Decisions: certificates.

fn cert_policy(f: &Files, peer_keys: &str) -> Policy {
    parse_ok(&format!("{}\n{}", f.server(), peer_echo(peer_keys))).policy
}

#[test]
fn certificate_conditions() {
    use PeerMismatch as M;
    let f = Files::new();
    let a = facts("10.0.0.1", "A", "RADGUARD");

    // tls = "required": any verified certificate.
    let p = cert_policy(&f, "tls = \"required\"");
    assert_eq!(p.admit(&a), refused(M::CertificateRequired));
    assert_eq!(
        p.admit_with(&a, &IdentityFacts::default()),
        refused(M::CertificateRequired)
    );
    let adm = p
        .admit_with(&a, &with_cert(cert(FP_B, None, &[])))
        .expect("any cert");
    assert_eq!(adm.client_cert().map(|c| c.sha256_hex.as_str()), Some(FP_B));

    // Fingerprint: given as uppercase with colons in the facts, still matched.
    let p = cert_policy(&f, &format!("cert_sha256 = [\"{FP_A}\"]"));
    assert_eq!(p.admit(&a), refused(M::CertificateRequired));
    assert_eq!(
        p.admit_with(&a, &with_cert(cert(FP_B, Some("CT01"), &[]))),
        refused(M::CertificateFingerprintMismatch)
    );
    let upper_colons = FP_A
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    assert!(p
        .admit_with(&a, &with_cert(cert(&upper_colons, None, &[])))
        .is_ok());

    // Subject CN: exact.
    let p = cert_policy(&f, "cert_subject_cn = [\"CT01\", \"CT01B\"]");
    assert!(p
        .admit_with(&a, &with_cert(cert(FP_A, Some("CT01B"), &[])))
        .is_ok());
    for cn in [Some("ct01"), Some("CT01 "), Some("CT0"), None] {
        assert_eq!(
            p.admit_with(&a, &with_cert(cert(FP_A, cn, &["CT01"]))),
            refused(M::CertificateSubjectMismatch),
            "{cn:?}"
        );
    }

    // SAN: DNS names case-insensitively, IP addresses by value, URIs exactly.
    let p = cert_policy(
        &f,
        "cert_san = [\"ct01.example.org\", \"fd00::5\", \"urn:oid:1.2.3\"]",
    );
    for sans in [
        &["other", "CT01.Example.Org"][..],
        &["fd00:0:0::5"],
        &["urn:oid:1.2.3"],
    ] {
        assert!(
            p.admit_with(&a, &with_cert(cert(FP_A, None, sans))).is_ok(),
            "{sans:?}"
        );
    }
    for sans in [
        &[][..],
        &["ct02.example.org"],
        &["fd00::6"],
        &["URN:OID:1.2.3"],
        &["ct01.example.org.evil"],
    ] {
        assert_eq!(
            p.admit_with(&a, &with_cert(cert(FP_A, None, sans))),
            refused(M::CertificateSanMismatch),
            "{sans:?}"
        );
    }

    // All conditions must hold; each failure names its own condition, checked in order.
    let p = cert_policy(
        &f,
        &format!("cert_sha256 = [\"{FP_A}\"]\ncert_subject_cn = [\"CT01\"]\ncert_san = [\"ct01\"]"),
    );
    let good = cert(FP_A, Some("CT01"), &["ct01"]);
    assert!(p.admit_with(&a, &with_cert(good.clone())).is_ok());
    let cases = [
        (
            cert(FP_B, Some("CT01"), &["ct01"]),
            M::CertificateFingerprintMismatch,
        ),
        (
            cert(FP_A, Some("X"), &["ct01"]),
            M::CertificateSubjectMismatch,
        ),
        (cert(FP_A, Some("CT01"), &["x"]), M::CertificateSanMismatch),
        (
            cert(FP_B, Some("X"), &["x"]),
            M::CertificateFingerprintMismatch,
        ),
    ];
    for (c, want) in cases {
        let r = p.admit_with(&a, &with_cert(c)).expect_err("refused");
        assert_eq!(r, AssociationRefusal::CallingAeNotRecognized { why: want });
        assert_eq!(r.rj_triple(), (1, 1, 3));
        // The message names the condition, never the expected (or presented) value.
        let text = r.to_string();
        for secret in [FP_A, FP_B, "CT01", "ct01", "10.0.0.1"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    // The AE title and address are still checked first; the called AE last.
    assert_eq!(
        p.admit_with(
            &facts("10.0.0.2", "A", "RADGUARD"),
            &with_cert(good.clone())
        ),
        refused(M::AddressNotAllowed)
    );
    assert_eq!(
        p.admit_with(
            &facts("10.0.0.1", "B", "RADGUARD"),
            &with_cert(good.clone())
        ),
        refused(M::UnknownAeTitle)
    );
    assert_eq!(
        p.admit_with(&facts("10.0.0.1", "A", "NOPE"), &with_cert(good)),
        Err(AssociationRefusal::CalledAeNotRecognized)
    );
    assert_eq!(
        p.admit_with(&facts("10.0.0.1", "A", "NOPE"), &IdentityFacts::default()),
        refused(M::CertificateRequired),
        "calling side before called side"
    );

    // A peer without conditions ignores certificates, present or not.
    let p = cert_policy(&f, "");
    assert!(p.admit(&a).is_ok());
    let adm = p
        .admit_with(&a, &with_cert(cert(FP_B, None, &[])))
        .expect("ok");
    assert!(adm.client_cert().is_some(), "recorded for the audit trail");
}

#[test]
fn certificate_of_another_peer() {
    use PeerMismatch as M;
    let f = Files::new();
    let src = format!(
        "{}\n[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"10.0.0.0/24\"]\nallow = [\"echo\"]\ncert_sha256 = [\"{FP_A}\"]\n\n[[peer]]\nname = \"mr\"\nae_titles = [\"MR01\"]\naddresses = [\"10.0.0.0/24\"]\nallow = [\"echo\"]\ncert_sha256 = [\"{FP_B}\"]\n{VAULT_ROUTE}",
        f.server()
    );
    let p = parse_ok(&src).policy;
    let ct_cert = with_cert(cert(FP_A, None, &[]));
    let mr_cert = with_cert(cert(FP_B, None, &[]));
    let adm = p
        .admit_with(&facts("10.0.0.7", "CT01", "RADGUARD"), &ct_cert)
        .expect("ct");
    assert_eq!(adm.peer_name(), "ct");
    // The MR scanner's certificate with the CT's AE title: refused.
    assert_eq!(
        p.admit_with(&facts("10.0.0.7", "CT01", "RADGUARD"), &mr_cert),
        refused(M::CertificateFingerprintMismatch)
    );
    // The right certificate and AE title from the wrong address: refused.
    assert_eq!(
        p.admit_with(&facts("10.0.1.7", "CT01", "RADGUARD"), &ct_cert),
        refused(M::AddressNotAllowed)
    );
}

// ------------------------------------------------------------------------------------------
// Decisions: user identity.

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// Peer `p` (AE "A" from 10.0.0.1) with `peer_keys`, users alice (passcode "alice-pw") and bob
/// ("bob-pw"), and `[jwt]` with three keys.
fn user_policy(peer_keys: &str) -> Policy {
    let keys = format!(
        "{{ kid = \"ec\", alg = \"ES256\", public_key = {:?} }}, {{ kid = \"ed\", alg = \"EdDSA\", public_key = {:?} }}, {{ kid = \"rsa\", alg = \"RS256\", public_key = {:?} }}",
        jwt_key("es256-public.pem"),
        jwt_key("ed25519-public.pem"),
        jwt_key("rs256-public.pem")
    );
    parse_ok(&format!(
        "{}{}\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{}\"\n\n[[user]]\nname = \"bob\"\npasscode_argon2 = \"{}\"\n",
        peer_echo(peer_keys),
        jwt_table(&keys),
        cheap_hash("alice-pw"),
        cheap_hash("bob-pw")
    ))
    .policy
}

fn admit_user(p: &Policy, c: UserIdentityClaim) -> Result<Admission, AssociationRefusal> {
    p.admit_at(&facts("10.0.0.1", "A", "RADGUARD"), &with_user(c), now())
}

fn passcode(user: &str, pw: &str, positive: bool) -> UserIdentityClaim {
    claim(2, user.as_bytes(), pw.as_bytes(), positive)
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

fn good_claims() -> Claims<'static> {
    Claims {
        sub: Some("carol"),
        iss: "https://idp.hospital.example",
        aud: "radguard",
        exp: NOW + 300,
        nbf: Some(NOW - 10),
    }
}

/// A token signed with the fixture private key `key` ("es256", "ed25519", "rs256") under
/// header `alg` and `kid`.
fn token(
    key: &str,
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    claims: &Claims<'_>,
) -> UserIdentityClaim {
    let pem = std::fs::read(jwt_key(&format!("{key}-private.pem"))).expect("key");
    let enc = match key {
        "es256" => EncodingKey::from_ec_pem(&pem),
        "ed25519" => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("encoding key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let t = jsonwebtoken::encode(&header, claims, &enc).expect("sign");
    claim(5, t.as_bytes(), b"", true)
}

#[test]
fn passcodes() {
    use PeerMismatch as M;
    let p = user_policy("");
    // Verified, with and without a positive response requested.
    let adm = admit_user(&p, passcode("alice", "alice-pw", true)).expect("alice");
    assert_eq!(adm.authenticated_user(), Some("alice"));
    assert_eq!(
        adm.user(),
        &UserStatus::Authenticated {
            username: "alice".into(),
            method: AuthMethod::Passcode
        }
    );
    assert_eq!(adm.user_identity_response(), Some(&[][..]));
    let adm = admit_user(&p, passcode("bob", "bob-pw", false)).expect("bob");
    assert_eq!(adm.authenticated_user(), Some("bob"));
    assert_eq!(adm.user_identity_response(), None);

    // Rejected even though the peer does not require an identity: a wrong passcode is never
    // waved through.
    let rejected = |r| refused(M::UserIdentityRejected(r));
    assert_eq!(
        admit_user(&p, passcode("alice", "bob-pw", true)),
        rejected(Rejection::WrongPasscode)
    );
    assert_eq!(
        admit_user(&p, passcode("alice", "", true)),
        rejected(Rejection::WrongPasscode)
    );
    assert_eq!(
        admit_user(&p, passcode("alice", "alice-pw ", true)),
        rejected(Rejection::WrongPasscode)
    );
    assert_eq!(
        admit_user(&p, passcode("Alice", "alice-pw", true)),
        rejected(Rejection::UnknownUser)
    );
    assert_eq!(
        admit_user(&p, passcode("mallory", "alice-pw", true)),
        rejected(Rejection::UnknownUser)
    );
    assert_eq!(
        admit_user(&p, passcode("", "x", true)),
        rejected(Rejection::Malformed)
    );
    assert_eq!(
        admit_user(&p, passcode(" alice", "alice-pw", true)),
        rejected(Rejection::Malformed)
    );
    assert_eq!(
        admit_user(&p, claim(2, b"\xff\xfe", b"alice-pw", true)),
        rejected(Rejection::Malformed)
    );
    // The refusal is RJ 1/1/3 and its text holds neither the user nor the passcode.
    let r = admit_user(&p, passcode("alice", "s3cr3t", true)).expect_err("refused");
    assert_eq!(r.rj_triple(), (1, 1, 3));
    assert_eq!(
        r.to_string(),
        "calling AE title not recognized: user identity rejected: wrong passcode"
    );

    // No [[user]] at all: a type 2 identity cannot be verified.
    let nobody = parse_ok(&peer_echo("")).policy;
    assert_eq!(
        nobody.admit_at(
            &facts("10.0.0.1", "A", "RADGUARD"),
            &with_user(passcode("alice", "x", false)),
            now()
        ),
        rejected(Rejection::NoVerifier)
    );
}

#[test]
fn user_identity_requirements() {
    use PeerMismatch as M;
    // Required: only a verified type 2 or 5 will do.
    let p = user_policy("user_identity = \"required\"");
    assert_eq!(
        p.admit_at(
            &facts("10.0.0.1", "A", "RADGUARD"),
            &IdentityFacts::default(),
            now()
        ),
        refused(M::UserIdentityRequired)
    );
    assert_eq!(
        p.admit(&facts("10.0.0.1", "A", "RADGUARD")),
        refused(M::UserIdentityRequired)
    );
    assert_eq!(
        admit_user(&p, claim(1, b"alice", b"", true)),
        refused(M::UserIdentityRequired)
    );
    for kind in [3, 4, 0, 6, 255] {
        assert_eq!(
            admit_user(&p, claim(kind, b"opaque", b"", true)),
            refused(M::UserIdentityRequired),
            "type {kind}"
        );
    }
    assert!(admit_user(&p, passcode("alice", "alice-pw", false)).is_ok());
    assert!(admit_user(
        &p,
        token(
            "es256",
            jsonwebtoken::Algorithm::ES256,
            Some("ec"),
            &good_claims()
        )
    )
    .is_ok());

    // Optional: type 1 is a claim; 3 and 4 are recorded, not verified.
    let p = user_policy("");
    let adm = admit_user(&p, claim(1, b"dave", b"", true)).expect("type 1");
    assert_eq!(
        adm.user(),
        &UserStatus::Claimed {
            username: "dave".into()
        }
    );
    assert_eq!(adm.user().username(), Some("dave"));
    assert_eq!(
        adm.authenticated_user(),
        None,
        "type 1 is never authentication"
    );
    assert_eq!(
        adm.user_identity_response(),
        None,
        "no positive response for type 1"
    );
    let adm = admit_user(&p, claim(3, b"ticket", b"", true)).expect("kerberos");
    assert_eq!(
        adm.user(),
        &UserStatus::Unverified {
            kind: UserIdentityKind::Kerberos
        }
    );
    assert_eq!(adm.user_identity_response(), None);
    let adm = p.admit(&facts("10.0.0.1", "A", "RADGUARD")).expect("none");
    assert_eq!(adm.user(), &UserStatus::None);

    // users: the (claimed or authenticated) name must be listed.
    let p = user_policy("users = [\"alice\", \"dave\"]");
    assert!(admit_user(&p, claim(1, b"dave", b"", false)).is_ok());
    assert_eq!(
        admit_user(&p, claim(1, b"eve", b"", false)),
        refused(M::UserNotAllowed)
    );
    assert!(admit_user(&p, passcode("alice", "alice-pw", false)).is_ok());
    assert_eq!(
        admit_user(&p, passcode("bob", "bob-pw", false)),
        refused(M::UserNotAllowed)
    );
    assert_eq!(
        admit_user(
            &p,
            token(
                "es256",
                jsonwebtoken::Algorithm::ES256,
                Some("ec"),
                &good_claims()
            )
        ),
        refused(M::UserNotAllowed),
        "carol is not listed"
    );
    // ... and with "optional" an absent identity is still fine.
    assert!(p.admit(&facts("10.0.0.1", "A", "RADGUARD")).is_ok());
    // Required + users: authenticated *and* listed.
    let p = user_policy("user_identity = \"required\"\nusers = [\"alice\"]");
    assert!(admit_user(&p, passcode("alice", "alice-pw", false)).is_ok());
    assert_eq!(
        admit_user(&p, passcode("bob", "bob-pw", false)),
        refused(M::UserNotAllowed)
    );
    assert_eq!(
        admit_user(&p, claim(1, b"alice", b"", false)),
        refused(M::UserIdentityRequired)
    );

    // Ignore: whatever is sent is not looked at.
    let p = user_policy("user_identity = \"ignore\"");
    let adm = admit_user(&p, passcode("alice", "wrong", true)).expect("ignored");
    assert_eq!(adm.user(), &UserStatus::None);
    assert_eq!(adm.user_identity_response(), None);

    // Certificates are checked before the (slow) user identity.
    let f = Files::new();
    let p = parse_ok(&format!(
        "{}\n{}\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{}\"\n",
        f.server(),
        peer_echo("tls = \"required\"\nuser_identity = \"required\""),
        cheap_hash("alice-pw")
    ))
    .policy;
    assert_eq!(
        admit_user(&p, passcode("alice", "wrong", false)),
        refused(M::CertificateRequired)
    );
    let both = IdentityFacts {
        client_cert: Some(cert(FP_A, None, &[])),
        user: Some(passcode("alice", "alice-pw", true)),
    };
    let adm = p
        .admit_at(&facts("10.0.0.1", "A", "RADGUARD"), &both, now())
        .expect("both");
    assert_eq!(adm.authenticated_user(), Some("alice"));
}

#[test]
fn json_web_tokens() {
    use jsonwebtoken::Algorithm as A;
    use PeerMismatch as M;
    let p = user_policy("user_identity = \"required\"");
    let rejected = |r| refused(M::UserIdentityRejected(r));

    for (key, alg, kid) in [
        ("es256", A::ES256, Some("ec")),
        ("ed25519", A::EdDSA, Some("ed")),
        ("rs256", A::RS256, Some("rsa")),
        // Without a kid the key is found by algorithm.
        ("es256", A::ES256, None),
        ("rs256", A::RS256, None),
    ] {
        let adm = admit_user(&p, token(key, alg, kid, &good_claims())).expect("valid token");
        assert_eq!(
            adm.user(),
            &UserStatus::Authenticated {
                username: "carol".into(),
                method: AuthMethod::Jwt
            },
            "{key} {kid:?}"
        );
        // No positive response: PS3.7 wants a token back for type 5, and the gateway mints none.
        assert_eq!(adm.user_identity_response(), None);
    }

    // Time: exp and nbf with the default 60 s leeway.
    let at = |exp: u64, nbf: Option<u64>| Claims {
        exp,
        nbf,
        ..good_claims()
    };
    assert!(admit_user(
        &p,
        token("es256", A::ES256, Some("ec"), &at(NOW - 59, None))
    )
    .is_ok());
    assert_eq!(
        admit_user(
            &p,
            token("es256", A::ES256, Some("ec"), &at(NOW - 61, None))
        ),
        rejected(Rejection::TokenExpired)
    );
    assert!(admit_user(
        &p,
        token(
            "es256",
            A::ES256,
            Some("ec"),
            &at(NOW + 600, Some(NOW + 59))
        )
    )
    .is_ok());
    assert_eq!(
        admit_user(
            &p,
            token(
                "es256",
                A::ES256,
                Some("ec"),
                &at(NOW + 600, Some(NOW + 61))
            )
        ),
        rejected(Rejection::TokenNotYetValid)
    );

    // Issuer, audience, subject.
    let c = Claims {
        iss: "https://evil.example",
        ..good_claims()
    };
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("ec"), &c)),
        rejected(Rejection::TokenWrongIssuer)
    );
    let c = Claims {
        aud: "orthanc",
        ..good_claims()
    };
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("ec"), &c)),
        rejected(Rejection::TokenWrongAudience)
    );
    let c = Claims {
        sub: None,
        ..good_claims()
    };
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("ec"), &c)),
        rejected(Rejection::TokenMissingClaim)
    );
    let c = Claims {
        sub: Some(" carol"),
        ..good_claims()
    };
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("ec"), &c)),
        rejected(Rejection::TokenMissingClaim)
    );

    // Keys: signed by a key other than the one its kid names; unknown kid; alg differing from
    // the key's.
    assert_eq!(
        admit_user(&p, token("rs256", A::RS256, Some("ec"), &good_claims())),
        rejected(Rejection::TokenBadSignature)
    );
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("k9"), &good_claims())),
        rejected(Rejection::TokenUnknownKey)
    );
    // Headers swapped in front of a valid ES256 token: ES384 (no key of that alg), EdDSA
    // under the ES256 key's kid, HS256 (never accepted).
    let t =
        String::from_utf8(token("es256", A::ES256, None, &good_claims()).primary).expect("utf8");
    let rest = t.split_once('.').map(|(_, r)| r).unwrap_or("");
    for (header, want) in [
        (
            "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9",
            Rejection::TokenUnknownKey,
        ),
        (
            "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImVjIn0",
            Rejection::TokenBadSignature,
        ),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImVjIn0",
            Rejection::TokenBadSignature,
        ),
    ] {
        let swapped = format!("{header}.{rest}");
        assert_eq!(
            admit_user(&p, claim(5, swapped.as_bytes(), b"", false)),
            rejected(want),
            "{header}"
        );
    }

    // Tampered payload: signature no longer verifies.
    let good = token("ed25519", A::EdDSA, Some("ed"), &good_claims());
    let text = String::from_utf8(good.primary.clone()).expect("utf8");
    let parts: Vec<&str> = text.split('.').collect();
    let evil_claims = Claims {
        sub: Some("admin"),
        ..good_claims()
    };
    let evil_payload = token("ed25519", A::EdDSA, Some("ed"), &evil_claims);
    let evil_text = String::from_utf8(evil_payload.primary).expect("utf8");
    let evil_parts: Vec<&str> = evil_text.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], evil_parts[1], parts[2]);
    assert_eq!(
        admit_user(&p, claim(5, forged.as_bytes(), b"", false)),
        rejected(Rejection::TokenBadSignature)
    );
    // Garbage, and an unsigned token.
    for junk in [&b"not a token"[..], b"", b"\xff\xfe", b"e30.e30."] {
        assert_eq!(
            admit_user(&p, claim(5, junk, b"", false)),
            rejected(Rejection::Malformed),
            "{junk:?}"
        );
    }
    // Surrounding whitespace or NUL padding is tolerated.
    let mut padded = good.primary.clone();
    padded.push(0);
    assert!(admit_user(&p, claim(5, &padded, b"", false)).is_ok());

    // No [jwt]: type 5 cannot be verified.
    let p = parse_ok(&peer_echo("")).policy;
    assert_eq!(
        admit_user(&p, token("es256", A::ES256, Some("ec"), &good_claims())),
        rejected(Rejection::NoVerifier)
    );
}

#[test]
fn claims_never_show_secrets_in_debug() {
    let c = passcode("alice", "hunter2", true);
    let text = format!("{c:?}");
    assert!(
        text.contains("alice") && !text.contains("hunter2"),
        "{text}"
    );
    let t = token(
        "es256",
        jsonwebtoken::Algorithm::ES256,
        Some("ec"),
        &good_claims(),
    );
    let text = format!(
        "{:?}",
        IdentityFacts {
            client_cert: None,
            user: Some(t.clone())
        }
    );
    let raw = String::from_utf8(t.primary).expect("utf8");
    assert!(!text.contains(&raw[..20]), "{text}");
    for code in 0..=255u8 {
        assert_eq!(UserIdentityKind::from_code(code).code(), code);
    }
    assert_eq!(
        UserIdentityKind::from_code(5).to_string(),
        "JSON Web Token (type 5)"
    );
}

#[test]
fn mismatch_conditions_are_named() {
    use PeerMismatch as M;
    let all = [
        (M::UnknownAeTitle, "calling_ae", false),
        (M::AddressNotAllowed, "address", false),
        (M::CertificateRequired, "certificate_required", true),
        (M::CertificateFingerprintMismatch, "cert_sha256", true),
        (M::CertificateSubjectMismatch, "cert_subject_cn", true),
        (M::CertificateSanMismatch, "cert_san", true),
        (M::UserIdentityRequired, "user_identity_required", true),
        (
            M::UserIdentityRejected(Rejection::TokenExpired),
            "user_identity_rejected",
            true,
        ),
        (M::UserNotAllowed, "users", true),
    ];
    for (m, name, identity) in all {
        assert_eq!(m.condition(), name);
        assert_eq!(m.is_identity(), identity);
        let r = AssociationRefusal::CallingAeNotRecognized { why: m };
        assert_eq!(r.rj_triple(), (1, 1, 3));
        assert!(!r.to_string().is_empty());
    }
}

// ------------------------------------------------------------------------------------------
// Live swaps with identities.

#[test]
fn live_swap_rechecks_identity_without_reauthenticating() {
    let f = Files::new();
    let src = |peer_keys: &str, users: &str| {
        format!(
            "{}\n{}\n{users}\n[[route]]\ncalled_ae = \"PACS\"\nupstream = \"pacs:2762\"\nupstream_ae = \"ORTHANC\"\ntls = {{ ca = {:?} }}\n",
            f.server(),
            peer_echo(peer_keys),
            f.path("up-ca.pem")
        )
    };
    let alice = format!(
        "[[user]]\nname = \"alice\"\npasscode_argon2 = \"{}\"\n",
        cheap_hash("alice-pw")
    );
    let keys = format!("cert_sha256 = [\"{FP_A}\"]\nuser_identity = \"required\"");
    let old = parse_ok(&src(&keys, &alice)).policy;
    let id = IdentityFacts {
        client_cert: Some(cert(FP_A, None, &[])),
        user: Some(passcode("alice", "alice-pw", false)),
    };
    let adm = old
        .admit_with(&facts("10.0.0.1", "A", "PACS"), &id)
        .expect("admitted");
    let verify = "1.2.840.10008.1.1";

    // The same config again: still admitted (no passcode needed to re-check).
    let same = parse_ok(&src(&keys, &alice)).policy;
    assert_eq!(same.context(&adm, verify), ContextDecision::Accept);

    let withdrawn = |p: &Policy| {
        assert_eq!(
            p.context(&adm, verify),
            ContextDecision::Reject(RejectWhy::AdmissionWithdrawn)
        );
    };
    // Another fingerprint, alice removed, alice not in users, upstream TLS changed.
    withdrawn(&parse_ok(&src(&keys.replace(FP_A, FP_B), &alice)).policy);
    let jwt_only = jwt_table(&format!(
        "{{ kid = \"ec\", alg = \"ES256\", public_key = {:?} }}",
        jwt_key("es256-public.pem")
    ));
    withdrawn(&parse_ok(&src(&keys, &jwt_only)).policy);
    withdrawn(&parse_ok(&src(&format!("{keys}\nusers = [\"bob\"]"), &alice)).policy);
    withdrawn(
        &parse_ok(&src(&keys, &alice).replace(
            &format!("tls = {{ ca = {:?} }}", f.path("up-ca.pem")),
            &format!(
                "tls = {{ ca = {:?}, server_name = \"other\" }}",
                f.path("up-ca.pem")
            ),
        ))
        .policy,
    );
    // Loosened conditions keep it (alice still has her [[user]]: a new association with the
    // same identity would be admitted too).
    let open = parse_ok(&src("", &alice)).policy;
    assert_eq!(open.context(&adm, verify), ContextDecision::Accept);
}

// ------------------------------------------------------------------------------------------
// docs/config.md

/// The "Complete example" of docs/config.md's TLS section parses as documented once the files
/// it names exist (and its hash placeholder is a real hash).
#[test]
fn docs_tls_example_is_valid() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(&docs).expect("docs/config.md");
    let block = text
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("tls_listen"))
        .expect("a toml block with tls_listen");
    let placeholder = "$argon2id$v=19$m=19456,t=2,p=1$...$...";
    assert!(block.contains(placeholder));
    let src = block.replace(placeholder, &cheap_hash("pw"));

    let dir = tempfile::tempdir().expect("tmp");
    for f in [
        "tls/gateway.pem",
        "tls/gateway-key.pem",
        "tls/ca.pem",
        "tls/pacs-ca.pem",
        "tls/radguard-client.pem",
        "tls/radguard-client-key.pem",
    ] {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "x").expect("write");
    }
    std::fs::create_dir_all(dir.path().join("jwt")).expect("mkdir");
    std::fs::copy(
        jwt_key("es256-public.pem"),
        dir.path().join("jwt/idp-es256.pem"),
    )
    .expect("copy");

    let c = match parse_config_in(&src, "docs/config.md", dir.path()) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n---\n{src}"),
    };
    assert_eq!(
        c.server.tls_listen,
        vec!["0.0.0.0:2762".parse().expect("addr")]
    );
    let tls = c.server.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, dir.path().join("tls/gateway.pem"));
    assert_eq!(tls.client_auth, ClientCertMode::Optional);
    let p = c.policy.peers().next().expect("peer");
    assert_eq!(p.identity().tls(), TlsRequirement::Required);
    assert_eq!(
        p.identity().user_identity(),
        UserIdentityRequirement::Required
    );
    assert!(c.policy.has_jwt());
    let r = c.policy.route_entry(&ae("PACS")).expect("route");
    let t = r.tls.as_ref().expect("route tls");
    assert_eq!(t.server_name, "pacs.radiology.example");
    assert!(t.client_cert_and_key().is_some());
}
