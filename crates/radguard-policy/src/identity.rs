//! Who is calling, beyond the AE title and the source address: the verified client certificate
//! and the User Identity of the A-ASSOCIATE-RQ (PS3.7 D.3.3.7), and the pure checks the policy
//! runs on them.
//!
//! The gateway fills [`IdentityFacts`] from what it saw (the leaf certificate rustls verified,
//! the User Identity sub-item as received) and passes it to [`crate::Policy::admit_with`]. The
//! policy then holds the peer's conditions against it:
//!
//! - **Certificate** ([`PeerIdentity`]: `tls`, `cert_sha256`, `cert_subject_cn`, `cert_san`):
//!   with `tls = "required"` (implied by any `cert_*` key) a verified client certificate must be
//!   present, and every listed `cert_*` key must match it (any value of a key matches).
//! - **User** (`user_identity`, `users`): type 2 (username + passcode) is checked against the
//!   Argon2id hashes of `[[user]]`, type 5 (JWT) against `[jwt]` (signature, `exp`, `nbf`,
//!   `iss`, `aud`; the user name is `sub`). Type 1 (username only) is a claim, never
//!   authentication. Types 3 and 4 (Kerberos, SAML) are not verified.
//!
//! Verification of a passcode is slow on purpose (Argon2id): the gateway calls `admit_with`
//! from a blocking task.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The client certificate the gateway's TLS listener verified (chain to the client CA set,
/// validity period). Built by the gateway from `radguard_tls::PeerCertFacts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertFacts {
    /// SHA-256 of the certificate's DER, hex (any case; colons allowed).
    pub sha256_hex: String,
    /// The subject's Common Name, if any.
    pub subject_cn: Option<String>,
    /// Subject alternative names: DNS names, IP addresses, URIs, e-mail addresses, as text.
    pub sans: Vec<String>,
}

/// User-Identity-Type of the User Identity sub-item (PS3.7 Table D.3-14). Unknown codes are
/// kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserIdentityKind {
    /// 1: username only.
    Username,
    /// 2: username and passcode.
    UsernamePasscode,
    /// 3: Kerberos service ticket.
    Kerberos,
    /// 4: SAML assertion.
    Saml,
    /// 5: JSON Web Token.
    Jwt,
    /// Any other code.
    Other(u8),
}

impl UserIdentityKind {
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => UserIdentityKind::Username,
            2 => UserIdentityKind::UsernamePasscode,
            3 => UserIdentityKind::Kerberos,
            4 => UserIdentityKind::Saml,
            5 => UserIdentityKind::Jwt,
            other => UserIdentityKind::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            UserIdentityKind::Username => 1,
            UserIdentityKind::UsernamePasscode => 2,
            UserIdentityKind::Kerberos => 3,
            UserIdentityKind::Saml => 4,
            UserIdentityKind::Jwt => 5,
            UserIdentityKind::Other(c) => c,
        }
    }
}

impl fmt::Display for UserIdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            UserIdentityKind::Username => "username",
            UserIdentityKind::UsernamePasscode => "username and passcode",
            UserIdentityKind::Kerberos => "Kerberos ticket",
            UserIdentityKind::Saml => "SAML assertion",
            UserIdentityKind::Jwt => "JSON Web Token",
            UserIdentityKind::Other(_) => "unknown type",
        };
        write!(f, "{name} (type {})", self.code())
    }
}

/// The User Identity sub-item of an A-ASSOCIATE-RQ, as received. `Debug` never shows the
/// secondary field (passcode) nor a token.
#[derive(Clone, PartialEq, Eq)]
pub struct UserIdentityClaim {
    pub kind: UserIdentityKind,
    /// Primary field: the username (types 1, 2), the ticket, assertion or token (3, 4, 5).
    pub primary: Vec<u8>,
    /// Secondary field: the passcode (type 2); empty otherwise.
    pub secondary: Vec<u8>,
    /// Positive-response-requested was 1.
    pub positive_response_requested: bool,
}

impl fmt::Debug for UserIdentityClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let primary = match self.kind {
            UserIdentityKind::Username | UserIdentityKind::UsernamePasscode => {
                format!("{:?}", String::from_utf8_lossy(&self.primary))
            }
            _ => format!("<{} bytes>", self.primary.len()),
        };
        f.debug_struct("UserIdentityClaim")
            .field("kind", &self.kind)
            .field("primary", &primary)
            .field("secondary", &format!("<{} bytes>", self.secondary.len()))
            .field(
                "positive_response_requested",
                &self.positive_response_requested,
            )
            .finish()
    }
}

/// What the gateway knows about the caller's identity beyond address and AE titles.
/// `IdentityFacts::default()` = plain TCP (or TLS without a client certificate), no User
/// Identity sub-item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityFacts {
    /// The verified client certificate, if the connection is TLS and one was presented.
    pub client_cert: Option<CertFacts>,
    /// The User Identity sub-item, if the A-ASSOCIATE-RQ had one.
    pub user: Option<UserIdentityClaim>,
}

/// `tls` of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequirement {
    /// Plain or TLS, with or without a client certificate (the default without `cert_*` keys).
    #[default]
    Optional,
    /// TLS with a verified client certificate (the default, and the only choice, with `cert_*`).
    Required,
}

/// `user_identity` of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserIdentityRequirement {
    /// A User Identity sub-item is not looked at (for devices that send credentials nobody can
    /// check). `users` is not allowed with it.
    Ignore,
    /// None needed; one that is sent is verified (type 2 and 5) and must succeed, and its user
    /// name (types 1, 2, 5) must be in `users` when that is listed.
    #[default]
    Optional,
    /// A type 2 or type 5 identity that verifies is needed (and its user in `users`, if listed).
    Required,
}

/// How a user was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Type 2: passcode checked against the user's Argon2id hash.
    Passcode,
    /// Type 5: JWT signature and claims checked against `[jwt]`.
    Jwt,
}

/// The outcome of the User Identity for an admitted association.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UserStatus {
    /// No User Identity sub-item (or the peer ignores it).
    #[default]
    None,
    /// Kerberos, SAML or an unknown type: sent, not verified, not used.
    Unverified { kind: UserIdentityKind },
    /// Type 1: a user name the client claims. Not authentication.
    Claimed { username: String },
    /// Type 2 or 5, verified.
    Authenticated {
        username: String,
        method: AuthMethod,
    },
}

impl UserStatus {
    /// The user name, claimed or authenticated.
    pub fn username(&self) -> Option<&str> {
        match self {
            UserStatus::Claimed { username } | UserStatus::Authenticated { username, .. } => {
                Some(username)
            }
            UserStatus::None | UserStatus::Unverified { .. } => None,
        }
    }

    /// The user name, only when it was authenticated (type 2 or 5).
    pub fn authenticated_user(&self) -> Option<&str> {
        match self {
            UserStatus::Authenticated { username, .. } => Some(username),
            _ => None,
        }
    }
}

/// Why a User Identity was rejected (for the audit trail; the client only ever sees RJ 1/1/3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The username is empty, not UTF-8, or has control characters; or the token is not a JWT.
    #[error("malformed")]
    Malformed,
    /// Nothing is configured to check this type (no `[[user]]` for type 2, no `[jwt]` for 5).
    #[error("no verifier configured for this type")]
    NoVerifier,
    /// Type 2 for a user that has no `[[user]]`.
    #[error("unknown user")]
    UnknownUser,
    /// Type 2 with the wrong passcode.
    #[error("wrong passcode")]
    WrongPasscode,
    /// Type 5 whose `kid` (or, without one, whose `alg`) matches no configured key.
    #[error("token signed with an unknown key")]
    TokenUnknownKey,
    /// Type 5 whose signature does not verify (or whose `alg` differs from the key's).
    #[error("token signature invalid")]
    TokenBadSignature,
    /// Type 5 lacking `exp`, `iss`, `aud` or `sub`, or with a `sub` that is no valid user name.
    #[error("token lacks a required claim")]
    TokenMissingClaim,
    #[error("token issuer not accepted")]
    TokenWrongIssuer,
    #[error("token audience not accepted")]
    TokenWrongAudience,
    #[error("token expired")]
    TokenExpired,
    #[error("token not yet valid")]
    TokenNotYetValid,
}

/// The identity conditions of one `[[peer]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    pub(crate) tls: TlsRequirement,
    pub(crate) cert_sha256: Vec<String>,
    pub(crate) cert_subject_cn: Vec<String>,
    pub(crate) cert_san: Vec<String>,
    pub(crate) user_identity: UserIdentityRequirement,
    pub(crate) users: Option<Vec<String>>,
}

impl PeerIdentity {
    pub fn tls(&self) -> TlsRequirement {
        self.tls
    }

    /// Accepted fingerprints, 64 lowercase hex digits each (empty: no such condition).
    pub fn cert_sha256(&self) -> &[String] {
        &self.cert_sha256
    }

    pub fn cert_subject_cn(&self) -> &[String] {
        &self.cert_subject_cn
    }

    /// Accepted SANs, normalized (see [`normalize_san`]).
    pub fn cert_san(&self) -> &[String] {
        &self.cert_san
    }

    pub fn user_identity(&self) -> UserIdentityRequirement {
        self.user_identity
    }

    /// The users allowed for this peer; `None` = any user.
    pub fn users(&self) -> Option<&[String]> {
        self.users.as_deref()
    }

    /// Whether the peer has any identity condition beyond AE title and address.
    pub fn is_constrained(&self) -> bool {
        self.tls == TlsRequirement::Required
            || self.user_identity == UserIdentityRequirement::Required
            || self.users.is_some()
    }

    /// The certificate conditions, in order: presence, fingerprint, subject CN, SAN.
    pub(crate) fn check_cert(
        &self,
        cert: Option<&CertFacts>,
    ) -> Result<(), crate::policy::PeerMismatch> {
        use crate::policy::PeerMismatch as M;
        if self.tls == TlsRequirement::Optional {
            return Ok(());
        }
        let Some(cert) = cert else {
            return Err(M::CertificateRequired);
        };
        if !self.cert_sha256.is_empty() {
            let got = normalize_fingerprint(&cert.sha256_hex);
            if !self.cert_sha256.contains(&got) {
                return Err(M::CertificateFingerprintMismatch);
            }
        }
        if !self.cert_subject_cn.is_empty() {
            let ok = cert
                .subject_cn
                .as_ref()
                .is_some_and(|cn| self.cert_subject_cn.contains(cn));
            if !ok {
                return Err(M::CertificateSubjectMismatch);
            }
        }
        if !self.cert_san.is_empty() {
            let ok = cert
                .sans
                .iter()
                .any(|s| self.cert_san.contains(&normalize_san(s)));
            if !ok {
                return Err(M::CertificateSanMismatch);
            }
        }
        Ok(())
    }

    /// The user conditions on an outcome of [`UserDirectory::authenticate`].
    pub(crate) fn check_user(
        &self,
        status: &UserStatus,
    ) -> Result<(), crate::policy::PeerMismatch> {
        use crate::policy::PeerMismatch as M;
        match self.user_identity {
            UserIdentityRequirement::Ignore => return Ok(()),
            UserIdentityRequirement::Required if status.authenticated_user().is_none() => {
                return Err(M::UserIdentityRequired)
            }
            _ => {}
        }
        if let (Some(users), Some(name)) = (&self.users, status.username()) {
            if !users.iter().any(|u| u == name) {
                return Err(M::UserNotAllowed);
            }
        }
        Ok(())
    }
}

/// Fingerprint text → 64 lowercase hex digits (colons and surrounding spaces dropped). Not
/// validated here: config validation checks the listed ones.
pub fn normalize_fingerprint(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A SAN as compared: IP addresses in canonical text (`fd00::5`, `10.0.0.5`), DNS names
/// lowercased without a trailing dot, URIs and e-mail addresses unchanged.
pub fn normalize_san(s: &str) -> String {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return ip.to_string();
    }
    let looks_dns = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*'));
    if looks_dns {
        return t.trim_end_matches('.').to_ascii_lowercase();
    }
    t.to_string()
}

/// A user name as configured or received: 1..=256 bytes of UTF-8, no control characters, no
/// surrounding whitespace.
pub fn valid_username(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.trim() == s && !s.chars().any(char::is_control)
}

/// `alg` of a `[jwt]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Es256,
    EdDsa,
    Rs256,
}

impl JwtAlg {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(JwtAlg::Es256),
            "EdDSA" => Some(JwtAlg::EdDsa),
            "RS256" => Some(JwtAlg::Rs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Es256 => "ES256",
            JwtAlg::EdDsa => "EdDSA",
            JwtAlg::Rs256 => "RS256",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::Es256 => Algorithm::ES256,
            JwtAlg::EdDsa => Algorithm::EdDSA,
            JwtAlg::Rs256 => Algorithm::RS256,
        }
    }

    /// Parses a public key PEM (SubjectPublicKeyInfo; PKCS#1 also for RSA) for this algorithm.
    pub(crate) fn decoding_key(self, pem: &[u8]) -> Result<DecodingKey, String> {
        let r = match self {
            JwtAlg::Es256 => DecodingKey::from_ec_pem(pem),
            JwtAlg::EdDsa => DecodingKey::from_ed_pem(pem),
            JwtAlg::Rs256 => DecodingKey::from_rsa_pem(pem),
        };
        r.map_err(|e| e.to_string())
    }
}

/// One `[jwt] keys` entry.
#[derive(Clone)]
pub(crate) struct JwtKey {
    pub(crate) kid: String,
    pub(crate) alg: JwtAlg,
    pub(crate) path: PathBuf,
    pub(crate) pem: Vec<u8>,
    pub(crate) key: DecodingKey,
}

impl PartialEq for JwtKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.pem == other.pem
    }
}

impl Eq for JwtKey {}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `[jwt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwtSettings {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) leeway_secs: u64,
    pub(crate) keys: Vec<JwtKey>,
}

/// `[[user]]` and `[jwt]`: what user identities can be checked against.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct UserDirectory {
    /// User name → Argon2id PHC string (validated at load).
    pub(crate) users: BTreeMap<String, String>,
    pub(crate) jwt: Option<JwtSettings>,
}

impl fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserDirectory")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("jwt", &self.jwt)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
}

impl UserDirectory {
    /// Verifies a User Identity (slow for type 2: Argon2id). `Ignore` peers never get here.
    pub(crate) fn authenticate(
        &self,
        claim: Option<&UserIdentityClaim>,
        now: SystemTime,
    ) -> Result<(UserStatus, bool), Rejection> {
        let Some(claim) = claim else {
            return Ok((UserStatus::None, false));
        };
        let username = || -> Result<String, Rejection> {
            match std::str::from_utf8(&claim.primary) {
                Ok(s) if valid_username(s) => Ok(s.to_string()),
                _ => Err(Rejection::Malformed),
            }
        };
        match claim.kind {
            UserIdentityKind::Username => Ok((
                UserStatus::Claimed {
                    username: username()?,
                },
                false,
            )),
            UserIdentityKind::UsernamePasscode => {
                let name = username()?;
                self.verify_passcode(&name, &claim.secondary)?;
                Ok((
                    UserStatus::Authenticated {
                        username: name,
                        method: AuthMethod::Passcode,
                    },
                    // PS3.7 D.3.3.7.2: zero-length server response for type 2.
                    claim.positive_response_requested,
                ))
            }
            UserIdentityKind::Jwt => {
                let token = std::str::from_utf8(&claim.primary)
                    .map_err(|_| Rejection::Malformed)?
                    .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
                let name = self.verify_jwt(token, now)?;
                // No response: PS3.7 wants a JWT from the acceptor for type 5, and the gateway
                // issues none.
                Ok((
                    UserStatus::Authenticated {
                        username: name,
                        method: AuthMethod::Jwt,
                    },
                    false,
                ))
            }
            kind @ (UserIdentityKind::Kerberos
            | UserIdentityKind::Saml
            | UserIdentityKind::Other(_)) => Ok((UserStatus::Unverified { kind }, false)),
        }
    }

    /// An unknown user costs the same Argon2 work as a known one (the first user's hash is
    /// checked and the result discarded), so timing does not tell which users exist.
    fn verify_passcode(&self, name: &str, passcode: &[u8]) -> Result<(), Rejection> {
        let known = self.users.get(name);
        let Some(phc) = known.or_else(|| self.users.values().next()) else {
            return Err(Rejection::NoVerifier);
        };
        let ok = !passcode.is_empty()
            && PasswordHash::new(phc)
                .ok()
                .is_some_and(|h| Argon2::default().verify_password(passcode, &h).is_ok());
        match (known.is_some(), ok) {
            (true, true) => Ok(()),
            (true, false) => Err(Rejection::WrongPasscode),
            (false, _) => Err(Rejection::UnknownUser),
        }
    }

    fn verify_jwt(&self, token: &str, now: SystemTime) -> Result<String, Rejection> {
        let Some(jwt) = &self.jwt else {
            return Err(Rejection::NoVerifier);
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let candidates: Vec<&JwtKey> = match &header.kid {
            Some(kid) => jwt.keys.iter().filter(|k| &k.kid == kid).collect(),
            None => jwt
                .keys
                .iter()
                .filter(|k| k.alg.algorithm() == header.alg)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(Rejection::TokenUnknownKey);
        }
        let mut last = Rejection::TokenBadSignature;
        for key in candidates {
            if key.alg.algorithm() != header.alg {
                last = Rejection::TokenBadSignature;
                continue;
            }
            let mut v = Validation::new(header.alg);
            v.validate_exp = false;
            v.validate_nbf = false;
            v.leeway = 0;
            v.required_spec_claims = ["exp", "iss", "aud", "sub"]
                .into_iter()
                .map(String::from)
                .collect();
            v.set_issuer(&[jwt.issuer.as_str()]);
            v.set_audience(&[jwt.audience.as_str()]);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &v) {
                Ok(data) => return check_claims(&data.claims, jwt.leeway_secs, now),
                Err(e) => last = map_jwt_error(e.kind()),
            }
        }
        Err(last)
    }
}

fn check_claims(claims: &Claims, leeway: u64, now: SystemTime) -> Result<String, Rejection> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let leeway = leeway as f64;
    if !claims.exp.is_finite() || now > claims.exp + leeway {
        return Err(Rejection::TokenExpired);
    }
    if let Some(nbf) = claims.nbf {
        if !nbf.is_finite() || now + leeway < nbf {
            return Err(Rejection::TokenNotYetValid);
        }
    }
    match &claims.sub {
        Some(sub) if valid_username(sub) => Ok(sub.clone()),
        _ => Err(Rejection::TokenMissingClaim),
    }
}

fn map_jwt_error(kind: &jsonwebtoken::errors::ErrorKind) -> Rejection {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature | K::InvalidAlgorithm | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
            Rejection::TokenBadSignature
        }
        K::InvalidIssuer => Rejection::TokenWrongIssuer,
        K::InvalidAudience => Rejection::TokenWrongAudience,
        K::MissingRequiredClaim(_) => Rejection::TokenMissingClaim,
        K::ExpiredSignature => Rejection::TokenExpired,
        K::ImmatureSignature => Rejection::TokenNotYetValid,
        _ => Rejection::Malformed,
    }
}
