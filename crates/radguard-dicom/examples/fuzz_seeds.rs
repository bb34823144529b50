//! Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from well-formed
//! messages: an A-ASSOCIATE-RQ, P-DATA PDUs with C-ECHO and C-STORE commands, command sets.
//!
//! `cargo run -p radguard-dicom --example fuzz_seeds -- fuzz/corpus`

use std::path::Path;

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use radguard_dicom::dimse::{encode_request, encode_response};
use radguard_dicom::pdu::{encode, encode_pdata, Pdv};
use radguard_dicom::types::{status, uids};
use radguard_dicom::CommandField;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let rq = encode(&Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SCU".into(),
        called_ae_title: "RADGUARD".into(),
        application_context_name: uids::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: 1,
                abstract_syntax: uids::VERIFICATION.into(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: CT.into(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LE.into(), uids::IMPLICIT_VR_LE.into()],
            },
        ],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.into()),
            UserVariableItem::ImplementationVersionName(uids::IMPLEMENTATION_VERSION_NAME.into()),
        ],
    }))
    .map_err(std::io::Error::other)?;
    write(out, "association_rq", "rq.bin", &rq)?;
    write(out, "pdu_frame", "rq.bin", &rq)?;
    let echo = encode_request(CommandField::CEchoRq, 1, uids::VERIFICATION, None, false);
    let store = encode_request(CommandField::CStoreRq, 2, CT, Some("1.2.3.4.5"), true);
    let rsp = encode_response(
        CommandField::CStoreRq,
        2,
        Some(CT),
        Some("1.2.3.4.5"),
        status::SUCCESS,
        None,
    );
    for (name, c) in [("echo", &echo), ("store", &store), ("rsp", &rsp)] {
        write(out, "dimse_command", &format!("{name}.bin"), c)?;
    }
    let mut p = Vec::new();
    encode_pdata(
        &mut p,
        &[
            Pdv {
                context_id: 3,
                is_command: true,
                is_last: true,
                data: &store,
            },
            Pdv {
                context_id: 3,
                is_command: false,
                is_last: true,
                data: b"\x08\x00\x16\x00UI\x04\x001.2\0",
            },
        ],
    );
    write(out, "pdu_frame", "pdata.bin", &p)?;
    write(out, "pdata_roundtrip", "pdata.bin", &p[6..])?;
    write(out, "assembler", "pdata.bin", &p[6..])?;
    let cfg = include_str!("../../../docs/radguard.example.toml");
    write(out, "policy_config", "example.toml", cfg.as_bytes())?;
    Ok(())
}
