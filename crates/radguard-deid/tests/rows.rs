//! Every row of Table E.1-1, at top level and inside a sequence: a data set carrying the
//! attribute (written by dicom-object) goes through the de-identifier, and the output (read
//! by dicom-object) shows the row's action. The expected operation is derived here from the
//! table's codes independently of the library's resolver. Then: each option changes exactly
//! the rows it should; and pydicom reads an all-rows sample and checks it against the TSV.

mod common;

use std::collections::BTreeSet;

use common::*;
use dicom_core::value::Value as DValue;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use radguard_deid::table::{Row, TagPattern};
use radguard_deid::{Action, Column, DeidOption, Table};

include!(concat!(env!("OUT_DIR"), "/row_tests.rs"));

/// A sequence that the table does not list, to carry attributes one level down.
const CARRIER: Tag = Tag(0x0018, 0x9346);
const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
const PRIVATE_CREATOR: Tag = Tag(0x0009, 0x0010);
const CODE_VALUE: Tag = Tag(0x0008, 0x0100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Nested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Removed,
    Emptied,
    Dummy,
    Kept,
    Cleaned,
    UidReplaced,
}

/// The expected operation, from the codes (written apart from the library's resolver):
/// options override Basic, K over C; X/Z, Z/D, X/Z/D → empty; X/D → removed; X/Z/U* → UIDs.
fn expected(row: &Row, options: &[DeidOption]) -> Expect {
    let mut code = row.basic;
    let mut from_option = None;
    for o in options {
        if let Some(c) = o.column().and_then(|col| row.option(col)) {
            if from_option.is_none() || (from_option != Some(Action::K) && c == Action::K) {
                from_option = Some(c);
            }
        }
    }
    if let Some(c) = from_option {
        code = c;
    }
    if row.pattern == TagPattern::Private {
        // Private attributes stay only when on the safe list (none in these tests).
        return Expect::Removed;
    }
    match code.code() {
        "X" | "X/D" => Expect::Removed,
        "Z" | "X/Z" | "Z/D" | "X/Z/D" => Expect::Emptied,
        "D" => Expect::Dummy,
        "K" => Expect::Kept,
        "C" => Expect::Cleaned,
        "U" | "X/Z/U*" => Expect::UidReplaced,
        other => panic!("unknown code {other}"),
    }
}

/// A concrete tag for a row (patterns instantiated in their first group).
fn concrete(row: &Row) -> Tag {
    match row.pattern {
        TagPattern::Tag(t) => t,
        TagPattern::Masked { value, .. } => {
            let t = Tag((value >> 16) as u16, value as u16);
            if t.element() == 0 {
                Tag(t.group(), 0x3000)
            } else {
                t
            }
        }
        TagPattern::Private => Tag(0x0009, 0x1010),
    }
}

fn input_for(tag: Tag, vr: VR, idx: usize, place: Place) -> InMemDicomObject {
    let value_el = if vr == VR::SQ {
        let item = InMemDicomObject::from_element_iter([el(CODE_VALUE, VR::SH, "ROWTEST")]);
        sq(tag, vec![item])
    } else {
        el(tag, vr, sample_value(vr, idx))
    };
    let mut inner = vec![value_el];
    if tag.group() % 2 == 1 {
        inner.push(el(PRIVATE_CREATOR, VR::LO, "ROWTEST CREATOR"));
    }
    let mut top = vec![
        el(Tag(0x0008, 0x0016), VR::UI, CT_IMAGE),
        el(
            Tag(0x0008, 0x0018),
            VR::UI,
            "1.2.826.0.1.3680043.2.1125.1.1",
        ),
        el(Tag(0x0008, 0x0060), VR::CS, "CT"),
        el(PATIENT_NAME, VR::PN, "ROWTEST^PATIENT"),
    ];
    match place {
        Place::Top => top.extend(inner),
        Place::Nested => top.push(sq(
            CARRIER,
            vec![InMemDicomObject::from_element_iter(inner)],
        )),
    }
    // Later elements replace earlier ones with the same tag (the row under test wins).
    let mut obj = InMemDicomObject::new_empty();
    for e in top {
        obj.put(e);
    }
    obj
}

fn bytes_of(v: &DValue<InMemDicomObject, dicom_core::value::InMemFragment>) -> Vec<u8> {
    let mut b = v.to_bytes().map(|b| b.into_owned()).unwrap_or_default();
    // Text padding (a trailing NUL or space) is not part of the value.
    if matches!(
        v.primitive(),
        Some(dicom_core::PrimitiveValue::Str(_) | dicom_core::PrimitiveValue::Strs(_))
    ) {
        while matches!(b.last(), Some(0 | b' ')) {
            b.pop();
        }
    }
    b
}

fn text_of(v: &DValue<InMemDicomObject, dicom_core::value::InMemFragment>) -> String {
    v.to_str()
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn check_row(idx: usize, place: Place) {
    check_row_with(idx, place, &[]);
}

fn check_row_with(idx: usize, place: Place, options: &[DeidOption]) {
    assert_eq!(Table::standard().rows().len(), GENERATED_ROWS);
    let row = &Table::standard().rows()[idx];
    let tag = concrete(row);
    let vr = if tag.group() % 2 == 1 {
        VR::LO
    } else {
        dict_vr(tag)
    };
    let ctx = format!(
        "row {idx} {} {} {vr:?} {place:?} {options:?}",
        row.pattern, row.name
    );
    if tag.group() == 0x0002 && place == Place::Top {
        // File meta: the output's Media Storage SOP Instance UID follows the new SOP
        // Instance UID and is never the original.
        let input = to_part10(
            input_for(Tag(0x0008, 0x0060), VR::CS, idx, place),
            EXPLICIT_LE,
        );
        let (out, _) = run(&deid(options), &input);
        let obj = read(&out);
        let new_sop = text_of(obj.element(Tag(0x0008, 0x0018)).unwrap().value());
        assert_eq!(
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            new_sop,
            "{ctx}"
        );
        let retained = new_sop == "1.2.826.0.1.3680043.2.1125.1.1";
        assert_eq!(retained, expected(row, options) == Expect::Kept, "{ctx}");
        return;
    }
    let input_obj = input_for(tag, vr, idx, place);
    let orig_value = match place {
        Place::Top => input_obj.element(tag).unwrap().value().clone(),
        Place::Nested => input_obj.element(CARRIER).unwrap().items().unwrap()[0]
            .element(tag)
            .unwrap()
            .value()
            .clone(),
    };
    let input = to_part10(input_obj, EXPLICIT_LE);
    let (out, _) = run(&deid(options), &input);
    let obj = read(&out);
    let scope: InMemDicomObject = match place {
        Place::Top => obj.clone().into_inner(),
        Place::Nested => {
            let items = obj
                .element(CARRIER)
                .unwrap_or_else(|_| panic!("{ctx}: carrier sequence missing"))
                .items()
                .unwrap()
                .to_vec();
            assert_eq!(items.len(), 1, "{ctx}");
            items.into_iter().next().unwrap()
        }
    };
    let got = scope.element(tag).ok();
    let exp = expected(row, options);
    let orig_bytes = bytes_of(&orig_value);
    let orig_text = text_of(&orig_value);
    match exp {
        Expect::Removed => {
            assert!(got.is_none(), "{ctx}: expected removed, got {got:?}");
            if tag.group() % 2 == 1 {
                assert!(
                    scope.element(PRIVATE_CREATOR).is_err(),
                    "{ctx}: creator left"
                );
            }
        }
        Expect::Emptied => {
            let g = got.unwrap_or_else(|| panic!("{ctx}: expected present and empty"));
            if tag == Tag(0x0010, 0x0020) {
                let v = text_of(g.value());
                assert_eq!(
                    v,
                    key().patient_id(orig_text.as_bytes()),
                    "{ctx}: pseudonym"
                );
            } else if vr == VR::SQ {
                assert_eq!(g.items().map(|i| i.len()), Some(0), "{ctx}");
            } else {
                assert!(bytes_of(g.value()).is_empty(), "{ctx}: not empty: {g:?}");
            }
        }
        Expect::Dummy => {
            let g = got.unwrap_or_else(|| panic!("{ctx}: expected a dummy"));
            match vr {
                VR::SQ => {
                    let items = g.items().unwrap();
                    assert_eq!(items.len(), 1, "{ctx}");
                    assert_eq!(items[0].iter().count(), 0, "{ctx}: dummy item not empty");
                }
                VR::UI => assert_eq!(text_of(g.value()), key().uid(&orig_text), "{ctx}"),
                _ => {
                    let b = bytes_of(g.value());
                    assert!(!b.is_empty(), "{ctx}: dummy is empty");
                    assert_ne!(b, orig_bytes, "{ctx}: dummy equals the original");
                }
            }
        }
        Expect::Kept => {
            let g = got.unwrap_or_else(|| panic!("{ctx}: expected kept"));
            if vr == VR::SQ {
                let items = g.items().unwrap();
                assert_eq!(
                    text_of(items[0].element(CODE_VALUE).unwrap().value()),
                    "ROWTEST",
                    "{ctx}"
                );
            } else {
                assert_eq!(bytes_of(g.value()), orig_bytes, "{ctx}");
            }
        }
        Expect::UidReplaced => {
            let g = got.unwrap_or_else(|| panic!("{ctx}: expected present"));
            if vr == VR::SQ {
                assert_eq!(g.items().unwrap().len(), 1, "{ctx}");
            } else {
                assert_eq!(text_of(g.value()), key().uid(&orig_text), "{ctx}");
            }
        }
        Expect::Cleaned => match vr {
            VR::SQ => {
                let g = got.unwrap_or_else(|| panic!("{ctx}: expected present"));
                let items = g.items().unwrap();
                assert_eq!(
                    text_of(items[0].element(CODE_VALUE).unwrap().value()),
                    "XXXXXXX",
                    "{ctx}"
                );
            }
            VR::DA | VR::DT => {
                let g = text_of(
                    got.unwrap_or_else(|| panic!("{ctx}: expected shifted"))
                        .value(),
                );
                assert_eq!(g.len(), orig_text.len(), "{ctx}");
                assert_ne!(g, orig_text, "{ctx}: date not shifted");
                assert!(
                    g.as_str() < orig_text.as_str(),
                    "{ctx}: shifted into the past"
                );
            }
            VR::AE => {
                let g = text_of(
                    got.unwrap_or_else(|| panic!("{ctx}: expected present"))
                        .value(),
                );
                assert_eq!(g, key().ae_title(orig_text.as_bytes()), "{ctx}");
            }
            VR::OB | VR::OW | VR::UN | VR::OF | VR::OD | VR::OL | VR::OV => {
                assert!(
                    got.is_none(),
                    "{ctx}: binary values cannot be cleaned: removed"
                );
            }
            VR::TM => assert_eq!(bytes_of(got.unwrap().value()), orig_bytes, "{ctx}"),
            VR::LO | VR::LT | VR::SH | VR::ST | VR::UT | VR::UC | VR::PN | VR::CS => {
                let g = text_of(
                    got.unwrap_or_else(|| panic!("{ctx}: expected present"))
                        .value(),
                );
                assert!(g.starts_with("XXXXXXX"), "{ctx}: not scrubbed: {g}");
            }
            _ => assert!(got.is_some(), "{ctx}"),
        },
    }
    // Markers on every output.
    assert_eq!(
        text_of(obj.element(Tag(0x0012, 0x0062)).unwrap().value()),
        "YES",
        "{ctx}"
    );
}

/// Every option, applied alone: each row the option's column names is checked under it.
#[test]
fn each_option_row_by_row() {
    for o in DeidOption::ALL {
        let Some(col) = o.column() else { continue };
        for (i, row) in Table::standard().rows().iter().enumerate() {
            if row.option(col).is_some() {
                check_row_with(i, Place::Top, &[o]);
                check_row_with(i, Place::Nested, &[o]);
            }
        }
    }
}

/// All single-tag rows in one data set (top level and in the carrier): the set of
/// attributes whose output differs between Basic and Basic+option is exactly the set the
/// option's column changes.
#[test]
fn each_option_changes_exactly_its_rows() {
    let rows = Table::standard().rows();
    let mut top = vec![
        el(Tag(0x0008, 0x0016), VR::UI, CT_IMAGE),
        el(PATIENT_NAME, VR::PN, "ROWTEST^PATIENT"),
    ];
    let mut nested = Vec::new();
    let mut tags = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let TagPattern::Tag(tag) = row.pattern else {
            continue;
        };
        if tag.group() <= 0x0002 || tag == PATIENT_NAME || tag == Tag(0x0008, 0x0016) {
            continue;
        }
        let vr = dict_vr(tag);
        let e = if vr == VR::SQ {
            sq(
                tag,
                vec![InMemDicomObject::from_element_iter([el(
                    CODE_VALUE,
                    VR::SH,
                    "ROWTEST",
                )])],
            )
        } else {
            el(tag, vr, sample_value(vr, i))
        };
        top.push(e.clone());
        nested.push(e);
        tags.push((i, tag));
    }
    top.push(sq(
        CARRIER,
        vec![InMemDicomObject::from_element_iter(nested)],
    ));
    let input = to_part10(InMemDicomObject::from_element_iter(top), EXPLICIT_LE);
    let (base_out, _) = run(&deid(&[]), &input);
    let base = read(&base_out);
    let markers = [
        Tag(0x0012, 0x0063),
        Tag(0x0012, 0x0064),
        Tag(0x0028, 0x0303),
    ];
    let snapshot = |o: &InMemDicomObject| -> Vec<(Tag, Option<String>)> {
        tags.iter()
            .map(|(_, t)| (*t, o.element(*t).ok().map(|e| format!("{:?}", e.value()))))
            .collect()
    };
    let base_top = snapshot(&base);
    let base_nested = snapshot(&base.element(CARRIER).unwrap().items().unwrap()[0]);
    for o in DeidOption::ALL {
        let Some(col) = o.column() else { continue };
        let (out, _) = run(&deid(&[o]), &input);
        let obj = read(&out);
        let expect: BTreeSet<Tag> = tags
            .iter()
            .filter(|(i, _)| {
                let row = &rows[*i];
                // On a sequence, "replace the UIDs inside" and "keep" look the same here.
                let seen = |e: Expect| match (e, dict_vr(concrete(row))) {
                    (Expect::UidReplaced, VR::SQ) => Expect::Kept,
                    (
                        Expect::Cleaned,
                        VR::OB | VR::OW | VR::UN | VR::OF | VR::OD | VR::OL | VR::OV,
                    ) => Expect::Removed,
                    (e, _) => e,
                };
                row.option(col).is_some() && seen(expected(row, &[o])) != seen(expected(row, &[]))
            })
            .map(|(_, t)| *t)
            .collect();
        for (label, now, before) in [
            ("top", snapshot(&obj), &base_top),
            (
                "nested",
                snapshot(&obj.element(CARRIER).unwrap().items().unwrap()[0]),
                &base_nested,
            ),
        ] {
            let changed: BTreeSet<Tag> = now
                .iter()
                .zip(before.iter())
                .filter(|(a, b)| a != b && !markers.contains(&a.0))
                .map(|(a, _)| a.0)
                .collect();
            // Clean on a value without identifiers may leave it as Basic left it; every
            // other expected change must show, and nothing outside the column may move.
            let unexpected: Vec<_> = changed.difference(&expect).collect();
            assert!(
                unexpected.is_empty(),
                "{o} {label}: rows changed that the option does not name: {unexpected:?}"
            );
            let missing: Vec<_> = expect.difference(&changed).collect();
            assert!(
                missing.is_empty(),
                "{o} {label}: rows the option names did not change: {missing:?}"
            );
        }
        // The markers name the option.
        let codes: Vec<String> = obj
            .element(Tag(0x0012, 0x0064))
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .map(|i| text_of(i.element(CODE_VALUE).unwrap().value()))
            .collect();
        assert_eq!(
            codes,
            vec!["113100".to_string(), o.code().0.to_string()],
            "{o}"
        );
    }
}

/// pydicom reads an all-rows output and checks each row against the TSV, with its own
/// reading of the codes (tests/py/check_rows.py).
#[test]
fn pydicom_checks_all_rows_sample() {
    let dir = tmpdir();
    for (opts, name) in [
        (vec![], "basic"),
        (
            vec![
                DeidOption::RetainLongModifiedDates,
                DeidOption::RetainDeviceIdentity,
                DeidOption::CleanDescriptors,
            ],
            "mixed",
        ),
    ] {
        let rows = Table::standard().rows();
        let mut top = vec![
            el(Tag(0x0008, 0x0016), VR::UI, CT_IMAGE),
            el(PATIENT_NAME, VR::PN, "ROWTEST^PATIENT"),
        ];
        let mut nested = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let TagPattern::Tag(tag) = row.pattern else {
                continue;
            };
            if tag.group() <= 0x0002 || tag == PATIENT_NAME || tag == Tag(0x0008, 0x0016) {
                continue;
            }
            let vr = dict_vr(tag);
            let e = if vr == VR::SQ {
                sq(
                    tag,
                    vec![InMemDicomObject::from_element_iter([el(
                        CODE_VALUE,
                        VR::SH,
                        "ROWTEST",
                    )])],
                )
            } else {
                el(tag, vr, sample_value(vr, i))
            };
            top.push(e.clone());
            nested.push(e);
        }
        top.push(sq(
            CARRIER,
            vec![InMemDicomObject::from_element_iter(nested)],
        ));
        let input = to_part10(InMemDicomObject::from_element_iter(top), EXPLICIT_LE);
        let (out, _) = run(&deid(&opts), &input);
        let inp = dir.path().join(format!("{name}-in.dcm"));
        let outp = dir.path().join(format!("{name}-out.dcm"));
        std::fs::write(&inp, &input).unwrap();
        std::fs::write(&outp, &out).unwrap();
        let table = root().join("crates/radguard-deid/data/table_e1_1.tsv");
        let script = root().join("crates/radguard-deid/tests/py/check_rows.py");
        let opt_names: Vec<String> = opts.iter().map(|o| o.name().to_string()).collect();
        let mut args = vec![
            script.to_str().unwrap().to_string(),
            table.to_str().unwrap().to_string(),
            inp.to_str().unwrap().to_string(),
            outp.to_str().unwrap().to_string(),
            format!("{:04X}{:04X}", CARRIER.group(), CARRIER.element()),
        ];
        args.extend(opt_names);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = run_python(&a);
        assert!(report.contains("rows checked: "), "{report}");
        let n: usize = report
            .lines()
            .find_map(|l| l.strip_prefix("rows checked: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 2 * 600, "pydicom checked only {n} rows");
    }
}

#[test]
fn column_names_are_the_files() {
    assert_eq!(Column::ALL.len(), 10);
}

/// The DCM codes and meanings written in (0012,0064) are those of CID 7050 as pydicom carries it.
#[test]
fn method_codes_match_pydicoms_cid_7050() {
    let mut expected: Vec<(String, String)> = DeidOption::ALL
        .iter()
        .map(|o| (o.code().0.to_string(), o.code().1.to_string()))
        .collect();
    expected.push((
        radguard_deid::profile::BASIC_PROFILE_CODE.0.to_string(),
        radguard_deid::profile::BASIC_PROFILE_CODE.1.to_string(),
    ));
    let codes: Vec<String> = expected.iter().map(|(c, _)| format!("'{c}'")).collect();
    let script = format!(
        "from pydicom.sr._concepts_dict import concepts\n\
         want = [{}]\n\
         for kw, d in concepts['DCM'].items():\n\
         \x20   for code, (meaning, cids) in d.items():\n\
         \x20       if code in want: print(code + '\\t' + meaning + '\\t' + str(7050 in cids))\n",
        codes.join(", ")
    );
    let out = run_python(&["-c", &script]);
    let got: BTreeSet<(String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f[2], "True", "{l}: not in CID 7050");
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    assert_eq!(got, expected.into_iter().collect::<BTreeSet<_>>());
}
