//! A hash made by `hash_passcode` (what `radguard passwd` prints) is accepted by the policy's
//! `[[user]] passcode_argon2` and verifies the passcode, and only it, in `admit_with`.

use radguard_policy::{
    parse_config, AssociationFacts, IdentityFacts, PeerMismatch, Rejection, UserIdentityClaim,
    UserIdentityKind,
};
use radguard_tls::hash_passcode;

#[test]
fn passwd_hash_verifies_in_the_policy() {
    let hash = hash_passcode("correct horse battery staple").expect("hash");
    let src = format!(
        "[[peer]]\nname = \"ws\"\nae_titles = [\"WS01\"]\naddresses = [\"127.0.0.1\"]\nallow = [\"echo\"]\nuser_identity = \"required\"\n\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n\n[[user]]\nname = \"alice\"\npasscode_argon2 = \"{hash}\"\n"
    );
    let policy = match parse_config(&src, "t.toml") {
        Ok(c) => c.policy,
        Err(e) => panic!("{e}"),
    };
    let facts = AssociationFacts {
        source: "127.0.0.1".parse().expect("ip"),
        calling_ae: radguard_dicom::AeTitle::new("WS01").expect("ae"),
        called_ae: radguard_dicom::AeTitle::new("RADGUARD").expect("ae"),
    };
    let with = |pw: &str| IdentityFacts {
        client_cert: None,
        user: Some(UserIdentityClaim {
            kind: UserIdentityKind::UsernamePasscode,
            primary: b"alice".to_vec(),
            secondary: pw.as_bytes().to_vec(),
            positive_response_requested: true,
        }),
    };
    let adm = policy
        .admit_with(&facts, &with("correct horse battery staple"))
        .expect("admitted");
    assert_eq!(adm.authenticated_user(), Some("alice"));
    assert_eq!(adm.user_identity_response(), Some(&[][..]));
    let e = policy
        .admit_with(&facts, &with("correct horse battery stapl"))
        .expect_err("wrong passcode");
    assert_eq!(
        e,
        radguard_policy::AssociationRefusal::CallingAeNotRecognized {
            why: PeerMismatch::UserIdentityRejected(Rejection::WrongPasscode)
        }
    );
}
