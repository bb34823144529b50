//! `radguard passwd`: Argon2id hashes (PHC strings, `$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of
//! User Identity passcodes, for `[[user]] passcode_argon2` in the config.
//!
//! Parameters are the argon2 crate's defaults, which follow the OWASP recommendation for
//! Argon2id (m = 19 MiB, t = 2, p = 1); the salt is 16 random bytes from the OS.

use std::io::BufRead;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;

use crate::error::TlsError;

/// The longest passcode accepted: the User Identity secondary field has a 16-bit length.
pub const MAX_PASSCODE_BYTES: usize = 65_535;

/// Hashes `passcode` with Argon2id and a fresh random salt.
pub fn hash_passcode(passcode: &str) -> Result<String, TlsError> {
    check_passcode(passcode)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(passcode.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| TlsError::Hash(e.to_string()))
}

/// Refuses empty passcodes and ones too long for the wire.
pub fn check_passcode(passcode: &str) -> Result<(), TlsError> {
    if passcode.is_empty() {
        return Err(TlsError::Hash("the passcode is empty".into()));
    }
    if passcode.len() > MAX_PASSCODE_BYTES {
        return Err(TlsError::Hash(format!(
            "the passcode is longer than {MAX_PASSCODE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Reads one passcode line from a non-interactive input (a pipe or file): everything up to the
/// first newline, without the `\n` or `\r\n`. Nothing else on the line is trimmed.
pub fn read_passcode_line(input: &mut impl BufRead) -> Result<String, TlsError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| TlsError::io("<stdin>", e))?;
    if let Some(stripped) = line.strip_suffix('\n') {
        line = stripped.strip_suffix('\r').unwrap_or(stripped).to_string();
    }
    check_passcode(&line)?;
    Ok(line)
}

/// A complete `[[user]]` table for the config: `name` quoted as a TOML basic string, `hash`
/// (a PHC string from [`hash_passcode`]) as `passcode_argon2`.
pub fn user_table(name: &str, hash: &str) -> String {
    format!(
        "[[user]]\nname = {}\npasscode_argon2 = \"{hash}\"\n",
        crate::quickstart::toml_quote(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_passcode("s3cret pass").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let parsed = PasswordHash::new(&h).expect("phc");
        assert!(Argon2::default()
            .verify_password(b"s3cret pass", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"s3cret pass ", &parsed)
            .is_err());
        // Fresh salt each time.
        assert_ne!(h, hash_passcode("s3cret pass").expect("hash"));
    }

    #[test]
    fn passcode_lines() {
        let read = |s: &str| read_passcode_line(&mut std::io::Cursor::new(s.as_bytes().to_vec()));
        assert_eq!(read("abc\n").expect("line"), "abc");
        assert_eq!(read("abc\r\nmore\n").expect("line"), "abc");
        assert_eq!(read(" spaced \n").expect("line"), " spaced ");
        assert_eq!(read("no newline").expect("line"), "no newline");
        assert!(read("").is_err());
        assert!(read("\n").is_err());
        assert!(hash_passcode("").is_err());
        assert!(hash_passcode(&"x".repeat(MAX_PASSCODE_BYTES + 1)).is_err());
    }

    #[test]
    fn user_tables_quote_the_name() {
        assert_eq!(
            user_table("al\"ice", "$argon2id$x"),
            "[[user]]\nname = \"al\\\"ice\"\npasscode_argon2 = \"$argon2id$x\"\n"
        );
    }
}
