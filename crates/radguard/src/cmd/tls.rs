//! `radguard tls init|issue|fingerprint` ([`TlsArgs`], [`run_tls`]) and `radguard passwd`
//! ([`PasswdArgs`], [`run_passwd`]): arguments, output and exit codes over `radguard_tls`.
//! Each `run_*` returns the exit code: 0 success, 1 failure (message on stderr), 2 usage error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use radguard_tls::passwd::{check_passcode, hash_passcode, read_passcode_line, user_table};
use radguard_tls::{cert_file_facts, init_quickstart, issue_client, PeerCertFacts, TlsError};

/// Certificates for DICOM TLS: a quick-start PKI, more client certificates, fingerprints.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    pub command: TlsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    Init(TlsInitArgs),
    Issue(TlsIssueArgs),
    Fingerprint(FingerprintArgs),
}

/// Create a local CA, a gateway certificate and client certificates in DIR (PEM files,
/// private keys mode 0600), then print each file with its SHA-256 fingerprint and ready-to-paste
/// config (also written to DIR/README.txt).
///
/// The gateway certificate is valid for localhost, 127.0.0.1 and ::1 plus every --gateway-name;
/// it can also serve as the gateway's client certificate towards a TLS upstream. Keys are ECDSA
/// P-256; the CA is valid for 10 years, the other certificates for 2. Existing files are never
/// overwritten.
#[derive(Debug, clap::Args)]
pub struct TlsInitArgs {
    /// Directory to write to (created, mode 0700, if missing).
    pub dir: PathBuf,
    /// Extra DNS name or IP address for the gateway certificate (repeatable).
    #[arg(long = "gateway-name", value_name = "NAME")]
    pub gateway_names: Vec<String>,
    /// Client certificate to create, named [A-Za-z0-9_.-]{1,64} (repeatable; default: one named
    /// "client").
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Issue one more client certificate from the quick-start CA in DIR (needs DIR/ca.pem and
/// DIR/ca-key.pem); writes DIR/client-NAME.pem and DIR/client-NAME-key.pem (0600).
#[derive(Debug, clap::Args)]
pub struct TlsIssueArgs {
    /// Directory made by `radguard tls init`.
    pub dir: PathBuf,
    /// Client name, [A-Za-z0-9_.-]{1,64}: the certificate's CN (and DNS SAN when it is a valid
    /// DNS name).
    pub name: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Print the SHA-256 fingerprint (for `cert_sha256` in a `[[peer]]`), subject CN, SANs and
/// validity of every certificate in each PEM file.
#[derive(Debug, clap::Args)]
pub struct FingerprintArgs {
    /// PEM files holding one or more certificates.
    #[arg(required = true, value_name = "CERT.pem")]
    pub certs: Vec<PathBuf>,
    /// Print JSON: an array with one object per certificate.
    #[arg(long)]
    pub json: bool,
}

/// Make an Argon2id hash of a User Identity passcode for `[[user]] passcode_argon2`.
///
/// On a terminal the passcode is asked twice without echo; otherwise the first line of
/// standard input is read (e.g. `printf '%s\n' "$PASS" | radguard passwd`). The hash alone is
/// printed, or with --user a complete `[[user]]` table.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Print a ready `[[user]]` table for this user name instead of the bare hash.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// `radguard tls …`.
pub fn run_tls(args: TlsArgs) -> i32 {
    match args.command {
        TlsCommand::Init(a) => run_tls_init(a),
        TlsCommand::Issue(a) => run_tls_issue(a),
        TlsCommand::Fingerprint(a) => run_fingerprint(a),
    }
}

fn fail(e: &TlsError) -> i32 {
    eprintln!("radguard: {e}");
    1
}

fn print_json(value: &impl serde::Serialize) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("radguard: JSON output: {e}");
            1
        }
    }
}

/// `radguard tls init DIR`.
fn run_tls_init(args: TlsInitArgs) -> i32 {
    let clients = if args.clients.is_empty() {
        vec!["client".to_string()]
    } else {
        args.clients
    };
    match init_quickstart(&args.dir, &args.gateway_names, &clients) {
        Ok(summary) if args.json => print_json(&summary),
        Ok(summary) => {
            print!("{}", summary.render());
            0
        }
        Err(e) => fail(&e),
    }
}

/// `radguard tls issue DIR NAME`.
fn run_tls_issue(args: TlsIssueArgs) -> i32 {
    match issue_client(&args.dir, &args.name) {
        Ok(issued) if args.json => print_json(&issued),
        Ok(issued) => {
            println!("certificate: {}", issued.cert_path.display());
            println!("private key: {}", issued.key_path.display());
            print!("{}", describe(&issued.facts));
            0
        }
        Err(e) => fail(&e),
    }
}

/// `radguard tls fingerprint CERT.pem…`.
fn run_fingerprint(args: FingerprintArgs) -> i32 {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        file: &'a std::path::Path,
        #[serde(flatten)]
        facts: PeerCertFacts,
    }
    let mut entries = Vec::new();
    let mut code = 0;
    for path in &args.certs {
        match cert_file_facts(path) {
            Ok(all) => entries.extend(all.into_iter().map(|facts| Entry { file: path, facts })),
            Err(e) => code = fail(&e),
        }
    }
    if args.json {
        let c = print_json(&entries);
        return code.max(c);
    }
    for e in &entries {
        println!("{}:", e.file.display());
        print!("{}", describe(&e.facts));
    }
    code
}

fn describe(f: &PeerCertFacts) -> String {
    let mut out = String::new();
    out.push_str(&format!("  SHA-256:     {}\n", f.sha256_hex));
    out.push_str(&format!("               {}\n", f.sha256_colons()));
    out.push_str(&format!("  subject:     {}\n", f.subject));
    if let Some(cn) = &f.subject_cn {
        out.push_str(&format!("  subject CN:  {cn}\n"));
    }
    if !f.sans.is_empty() {
        out.push_str(&format!("  SANs:        {}\n", f.sans.join(", ")));
    }
    out.push_str(&format!("  issuer:      {}\n", f.issuer));
    out.push_str(&format!(
        "  valid:       {} .. {}\n",
        f.not_before_rfc3339(),
        f.not_after_rfc3339()
    ));
    out
}

/// `radguard passwd`.
pub fn run_passwd(args: PasswdArgs) -> i32 {
    if let Some(user) = &args.user {
        if user.is_empty() || user.trim() != user || user.chars().any(char::is_control) {
            eprintln!("radguard: --user must be a non-empty name without surrounding spaces or control characters");
            return 2;
        }
    }
    let passcode = if std::io::stdin().is_terminal() {
        match prompt_twice() {
            Ok(p) => p,
            Err(e) => return fail(&e),
        }
    } else {
        match read_passcode_line(&mut std::io::stdin().lock()) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        }
    };
    let hash = match hash_passcode(&passcode) {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    let text = match &args.user {
        None => format!("{hash}\n"),
        Some(user) => user_table(user, &hash),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(source) => fail(&TlsError::Io {
            path: "<stdout>".into(),
            source,
        }),
    }
}

fn prompt_twice() -> Result<String, TlsError> {
    let first = rpassword::prompt_password("Passcode: ").map_err(tty)?;
    check_passcode(&first)?;
    let second = rpassword::prompt_password("Passcode again: ").map_err(tty)?;
    if first != second {
        return Err(TlsError::Hash("the two passcodes differ".into()));
    }
    Ok(first)
}

fn tty(source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: "/dev/tty".into(),
        source,
    }
}
