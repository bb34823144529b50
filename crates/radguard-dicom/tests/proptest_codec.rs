//! Property tests for the encoders and decoders of untrusted bytes (issue 7): PDU headers,
//! P-DATA-TF PDVs, DIMSE command sets, the message assembler, UID and AE title validation, and
//! association PDUs through dicom-ul. Round trips (encode → decode gives back what went in),
//! canonical re-encoding (decode → encode gives back the bytes), and "never panics, never
//! accepts what it must not" on arbitrary input.

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use proptest::collection::vec;
use proptest::prelude::*;
use radguard_dicom::assembler::{Assembler, Step};
use radguard_dicom::dimse::{encode_request, encode_response, Command, MAX_COMMAND_SET};
use radguard_dicom::pdu::{
    decode_control, encode, encode_pdata, pdvs, FrameError, PduHeader, PduType, Pdv, HEADER_LEN,
    MAX_ASSOCIATION_PDU,
};
use radguard_dicom::{AeTitle, CommandField, Uid};

// ------------------------------------------------------------------------------ strategies

/// A valid UID (PS3.5 §9): components without leading zeros, at most 64 characters.
fn uid() -> impl Strategy<Value = String> {
    let component = prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,8}"];
    vec(component, 2..12)
        .prop_map(|c| c.join("."))
        .prop_filter("at most 64 characters", |u| u.len() <= 64)
}

/// An AE title as the wire carries it: 1..=16 printable ASCII, no backslash, no edge spaces.
fn ae() -> impl Strategy<Value = String> {
    "[A-Z0-9_][A-Z0-9_ -]{0,14}[A-Z0-9_]|[A-Z0-9_]"
}

#[derive(Debug, Clone)]
struct OwnedPdv {
    context_id: u8,
    is_command: bool,
    is_last: bool,
    data: Vec<u8>,
}

impl OwnedPdv {
    fn as_pdv(&self) -> Pdv<'_> {
        Pdv {
            context_id: self.context_id,
            is_command: self.is_command,
            is_last: self.is_last,
            data: &self.data,
        }
    }
}

fn owned_pdv() -> impl Strategy<Value = OwnedPdv> {
    (
        0u8..128,
        any::<bool>(),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(k, is_command, is_last, data)| OwnedPdv {
            context_id: 2 * k + 1,
            is_command,
            is_last,
            data,
        })
}

/// A P-DATA-TF body that is valid, then possibly damaged at one byte.
fn pdata_body_maybe_damaged() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(owned_pdv(), 1..6),
        any::<Option<(prop::sample::Index, u8)>>(),
    )
        .prop_map(|(items, dmg)| {
            let borrowed: Vec<Pdv<'_>> = items.iter().map(OwnedPdv::as_pdv).collect();
            let mut out = Vec::new();
            encode_pdata(&mut out, &borrowed);
            let mut body = out.split_off(HEADER_LEN);
            if let Some((at, v)) = dmg {
                let i = at.index(body.len());
                body[i] = v;
            }
            body
        })
}

const REQUESTS: [CommandField; 5] = [
    CommandField::CStoreRq,
    CommandField::CEchoRq,
    CommandField::CFindRq,
    CommandField::CMoveRq,
    CommandField::CGetRq,
];

// ----------------------------------------------------------------------------- PDU framing

proptest! {
    #[test]
    fn pdvs_round_trip(items in vec(owned_pdv(), 1..8)) {
        let borrowed: Vec<Pdv<'_>> = items.iter().map(OwnedPdv::as_pdv).collect();
        let mut out = Vec::new();
        encode_pdata(&mut out, &borrowed);
        let head = PduHeader::parse(out[..HEADER_LEN].try_into().unwrap());
        prop_assert_eq!(head.raw_type, 0x04);
        prop_assert_eq!(head.length as usize, out.len() - HEADER_LEN);
        prop_assert_eq!(head.check(head.length), Ok(PduType::PData));
        if head.length > 0 {
            let too_small = head.check(head.length - 1);
            let is_too_long = matches!(too_small, Err(FrameError::TooLong { .. }));
            prop_assert!(is_too_long);
        }
        prop_assert_eq!(pdvs(&out[HEADER_LEN..]).unwrap(), borrowed);
    }

    /// Whatever `pdvs` accepts re-encodes to exactly the same bytes (the relay forwards the
    /// received bytes; any other re-encoding would change what the upstream sees).
    #[test]
    fn pdvs_accepts_only_canonical_bodies(body in pdata_body_maybe_damaged()) {
        if let Ok(items) = pdvs(&body) {
            prop_assert!(!items.is_empty());
            for p in &items {
                prop_assert!(p.context_id % 2 == 1);
            }
            let mut out = Vec::new();
            encode_pdata(&mut out, &items);
            prop_assert_eq!(&out[HEADER_LEN..], &body[..]);
        }
    }

    #[test]
    fn pdvs_never_panics(body in vec(any::<u8>(), 0..600)) {
        if let Ok(items) = pdvs(&body) {
            let total: usize = items.iter().map(|p| p.data.len() + 6).sum();
            prop_assert_eq!(total, body.len());
        }
    }

    /// The header check: unknown types are refused as such; known types only up to their bound.
    #[test]
    fn header_check_bounds(head in any::<[u8; 6]>(), max in 0u32..=u32::MAX) {
        let h = PduHeader::parse(&head);
        prop_assert_eq!(h.raw_type, head[0]);
        prop_assert_eq!(h.length, u32::from_be_bytes([head[2], head[3], head[4], head[5]]));
        match h.check(max) {
            Ok(ty) => {
                prop_assert_eq!(PduType::from_u8(head[0]), Some(ty));
                let bound = match ty {
                    PduType::PData => max,
                    PduType::ReleaseRq | PduType::ReleaseRp | PduType::Abort => 4,
                    _ => MAX_ASSOCIATION_PDU,
                };
                prop_assert!(h.length <= bound);
            }
            Err(FrameError::UnknownType(t)) => {
                prop_assert_eq!(t, head[0]);
                prop_assert!(PduType::from_u8(t).is_none());
            }
            Err(FrameError::TooLong { length, max: m }) => {
                prop_assert_eq!(length, h.length);
                prop_assert!(length > m);
                prop_assert!(PduType::from_u8(head[0]).is_some());
            }
            Err(other) => prop_assert!(false, "header check gave {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------ association PDUs

fn association_rq() -> impl Strategy<Value = AssociationRQ> {
    (
        ae(),
        ae(),
        vec((uid(), vec(uid(), 1..4)), 1..20),
        prop::option::of(0u32..=1 << 20),
        uid(),
    )
        .prop_map(|(calling, called, pcs, max, impl_class)| {
            let mut vars = Vec::new();
            if let Some(m) = max {
                vars.push(UserVariableItem::MaxLength(m));
            }
            vars.push(UserVariableItem::ImplementationClassUID(impl_class));
            AssociationRQ {
                protocol_version: 1,
                calling_ae_title: calling,
                called_ae_title: called,
                application_context_name: "1.2.840.10008.3.1.1.1".into(),
                presentation_contexts: pcs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (abs, ts))| PresentationContextProposed {
                        id: (2 * i + 1) as u8,
                        abstract_syntax: abs,
                        transfer_syntaxes: ts,
                    })
                    .collect(),
                user_variables: vars,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn association_rq_round_trip(rq in association_rq()) {
        let pdu = Pdu::AssociationRQ(rq);
        let bytes = encode(&pdu).unwrap();
        prop_assert_eq!(bytes.first(), Some(&0x01));
        let head = PduHeader::parse(bytes[..HEADER_LEN].try_into().unwrap());
        prop_assert_eq!(head.check(0), Ok(PduType::AssociateRq));
        prop_assert_eq!(decode_control(&bytes).unwrap(), pdu);
    }

    #[test]
    fn decode_control_never_panics(bytes in vec(any::<u8>(), 0..400)) {
        if let Ok(p) = decode_control(&bytes) {
            let _ = encode(&p);
        }
    }

    /// A truncated A-ASSOCIATE-RQ is an error, never a smaller valid request.
    #[test]
    fn truncated_association_rq_is_refused(rq in association_rq(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&Pdu::AssociationRQ(rq)).unwrap();
        let n = cut.index(bytes.len());
        prop_assert!(decode_control(&bytes[..n]).is_err());
    }
}

// ----------------------------------------------------------------------------- DIMSE commands

proptest! {
    #[test]
    fn request_round_trip(
        field in prop::sample::select(&REQUESTS[..]),
        message_id in any::<u16>(),
        class in uid(),
        instance in prop::option::of(uid()),
        data in any::<bool>(),
    ) {
        let bytes = encode_request(field, message_id, &class, instance.as_deref(), data);
        prop_assert!(bytes.len().is_multiple_of(2));
        let c = Command::decode(&bytes).unwrap();
        prop_assert_eq!(c.field, Some(field.to_u16()));
        prop_assert_eq!(c.message_id, Some(message_id));
        prop_assert_eq!(c.affected_sop_class.as_deref(), Some(class.as_str()));
        prop_assert_eq!(c.affected_sop_instance.as_deref(), instance.as_deref());
        prop_assert_eq!(c.has_data_set(), data);
        match c.validate_request() {
            Ok(r) => {
                prop_assert_eq!(r.field, field);
                prop_assert_eq!(r.message_id, message_id);
                prop_assert_eq!(r.sop_class.as_ref().map(Uid::as_str), Some(class.as_str()));
                prop_assert_eq!(r.has_data_set, data);
            }
            Err(p) => {
                // Only the requests PS3.7 says are incomplete may be refused, with 0x0120.
                let incomplete = (field == CommandField::CStoreRq && (instance.is_none() || !data))
                    || (matches!(field, CommandField::CFindRq | CommandField::CGetRq) && !data)
                    || field == CommandField::CMoveRq; // no Move Destination in encode_request
                prop_assert!(incomplete, "refused {:?}", p);
                prop_assert_eq!(p.status, 0x0120);
                prop_assert_eq!(p.message_id, Some(message_id));
            }
        }
    }

    #[test]
    fn response_round_trip(
        field in prop::sample::select(&REQUESTS[..]),
        responded_to in any::<u16>(),
        class in prop::option::of(uid()),
        instance in prop::option::of(uid()),
        status in any::<u16>(),
        comment in prop::option::of(".{0,100}"),
    ) {
        let bytes = encode_response(
            field,
            responded_to,
            class.as_deref(),
            instance.as_deref(),
            status,
            comment.as_deref(),
        );
        prop_assert!(!bytes.is_empty());
        prop_assert!(bytes.len().is_multiple_of(2));
        let c = Command::decode(&bytes).unwrap();
        prop_assert_eq!(c.field, Some(field.to_u16() | 0x8000));
        prop_assert_eq!(c.responded_to, Some(responded_to));
        prop_assert_eq!(c.status, Some(status));
        prop_assert!(!c.has_data_set());
        prop_assert_eq!(c.affected_sop_class, class);
        prop_assert_eq!(c.affected_sop_instance, instance);
        // Error Comment is LO: printable ASCII, at most 64 characters.
        let expected = comment.map(|t| {
            let s: String = t
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .take(64)
                .collect();
            s.trim_end_matches([' ', '\0']).trim_start().to_string()
        });
        prop_assert_eq!(c.error_comment, expected);
    }

    #[test]
    fn command_decode_never_panics(bytes in vec(any::<u8>(), 0..1024)) {
        if let Ok(c) = Command::decode(&bytes) {
            let _ = c.validate_request();
        }
    }

    /// Unknown group-0 elements around the known ones are skipped; lengths are honoured.
    #[test]
    fn command_decode_skips_unknown_elements(
        noise in vec((0x1100u16..0x7FFF, vec(any::<u8>(), 0..40)), 0..8),
        at in any::<prop::sample::Index>(),
        message_id in any::<u16>(),
    ) {
        let elem = |e: u16, v: &[u8]| {
            let mut out = vec![0, 0];
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
            out
        };
        // PS3.5 §7.1: ascending, each once. Unknown elements (all above (0000,0110)) follow.
        let mut noise = noise;
        noise.sort_by_key(|(e, _)| *e);
        noise.dedup_by_key(|(e, _)| *e);
        let mut parts: Vec<Vec<u8>> = noise.iter().map(|(e, v)| elem(*e, v)).collect();
        parts.insert(0, elem(0x0110, &message_id.to_le_bytes()));
        let bytes: Vec<u8> = parts.concat();
        let c = Command::decode(&bytes).unwrap();
        prop_assert_eq!(c.message_id, Some(message_id));
        prop_assert_eq!(c.field, None);
        // One byte short: the last element no longer fits.
        prop_assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
        // The Message ID moved after an unknown element: out of order, refused.
        let i = at.index(parts.len());
        if i > 0 {
            let id = parts.remove(0);
            parts.insert(i, id);
            prop_assert!(Command::decode(&parts.concat()).is_err());
        }
    }

    #[test]
    fn oversized_command_sets_are_refused(extra in 1usize..1000) {
        let big = vec![0u8; MAX_COMMAND_SET + extra];
        prop_assert!(Command::decode(&big).is_err());
    }
}

// ------------------------------------------------------------------------------- assembler

/// Splits `data` at the sorted cut points into non-empty fragments.
fn split_at_points(data: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len().max(1))).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points.into_iter().filter(|p| *p > 0 && *p < data.len()) {
        out.push(data[from..p].to_vec());
        from = p;
    }
    out.push(data[from..].to_vec());
    out
}

proptest! {
    #[test]
    fn assembler_reassembles_any_fragmentation(
        id in any::<u16>(),
        instance in uid(),
        ctx in 0u8..128,
        data in vec(any::<u8>(), 1..2000),
        cmd_cuts in vec(any::<prop::sample::Index>(), 0..6),
        data_cuts in vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let ctx = 2 * ctx + 1;
        let cmd = encode_request(CommandField::CStoreRq, id, "1.2.840.10008.5.1.4.1.1.2", Some(&instance), true);
        let cmd_parts = split_at_points(&cmd, &cmd_cuts);
        let data_parts = split_at_points(&data, &data_cuts);
        let mut asm = Assembler::new();
        let mut commands = Vec::new();
        let mut received = Vec::new();
        let mut saw_last = false;
        for (i, part) in cmd_parts.iter().enumerate() {
            let pdv = Pdv { context_id: ctx, is_command: true, is_last: i + 1 == cmd_parts.len(), data: part };
            match asm.push(pdv).unwrap() {
                Step::CommandPartial => prop_assert!(i + 1 < cmd_parts.len()),
                Step::Command { context_id, raw, command } => {
                    prop_assert_eq!(context_id, ctx);
                    prop_assert_eq!(&raw, &cmd);
                    commands.push(command);
                }
                Step::Data { .. } => prop_assert!(false, "data step for a command fragment"),
            }
        }
        prop_assert_eq!(commands.len(), 1);
        prop_assert_eq!(commands[0].message_id, Some(id));
        prop_assert_eq!(commands[0].affected_sop_instance.as_deref(), Some(instance.as_str()));
        prop_assert!(!asm.is_idle());
        for (i, part) in data_parts.iter().enumerate() {
            let last = i + 1 == data_parts.len();
            let pdv = Pdv { context_id: ctx, is_command: false, is_last: last, data: part };
            match asm.push(pdv).unwrap() {
                Step::Data { context_id, data, is_last } => {
                    prop_assert_eq!(context_id, ctx);
                    prop_assert_eq!(is_last, last);
                    saw_last |= is_last;
                    received.extend_from_slice(data);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert!(saw_last);
        prop_assert_eq!(received, data);
        prop_assert!(asm.is_idle());
    }

    /// Any PDV sequence: never a panic; errors are sticky protocol errors, and a data step is
    /// only ever produced after a command that announced a data set.
    #[test]
    fn assembler_never_panics(items in vec(owned_pdv(), 1..20)) {
        let mut asm = Assembler::new();
        let mut in_data = false;
        for p in &items {
            match asm.push(p.as_pdv()) {
                Ok(Step::Command { command, .. }) => in_data = command.has_data_set(),
                Ok(Step::Data { is_last, .. }) => {
                    prop_assert!(in_data, "data without a command announcing it");
                    if is_last {
                        in_data = false;
                    }
                }
                Ok(Step::CommandPartial) => {}
                Err(_) => break,
            }
        }
    }
}

// ------------------------------------------------------------------------ typed wire fields

proptest! {
    #[test]
    fn valid_uids_are_accepted_and_padding_ignored(u in uid()) {
        prop_assert_eq!(Uid::new(&u).unwrap().to_string(), u.clone());
        prop_assert_eq!(Uid::new(&format!("{u}\0")).unwrap().to_string(), u);
    }

    /// Nothing that could be a path component other than digits and dots gets through.
    #[test]
    fn uids_with_path_characters_are_refused(
        u in uid(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(&["/", "\\", "..", "../", "a", " x", "\u{FF}", ":", "%2e"][..]),
    ) {
        let i = at.index(u.len() + 1);
        let s = format!("{}{}{}", &u[..i], bad, &u[i..]);
        prop_assert!(Uid::new(&s).is_err(), "accepted {:?}", s);
    }

    #[test]
    fn overlong_uids_are_refused(u in "[1-9][0-9]{64,100}") {
        prop_assert!(Uid::new(&u).is_err());
    }

    #[test]
    fn any_string_is_judged_without_panic(s in ".{0,80}") {
        if let Ok(u) = Uid::new(&s) {
            prop_assert!(u.as_str().len() <= 64);
            prop_assert!(u.as_str().bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        }
        if let Ok(a) = AeTitle::new(&s) {
            prop_assert!(!a.as_str().is_empty() && a.as_str().len() <= 16);
            prop_assert!(a.as_str().bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\'));
        }
    }

    #[test]
    fn ae_titles_round_trip_with_padding(a in ae(), pad in 0usize..4) {
        let padded = format!("{a}{}", " ".repeat(pad));
        prop_assert_eq!(AeTitle::new(&padded).unwrap().to_string(), a);
    }

    #[test]
    fn long_ae_titles_are_refused(a in "[A-Z]{17,40}") {
        prop_assert!(AeTitle::new(&a).is_err());
    }
}
