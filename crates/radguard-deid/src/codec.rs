//! De-identification's data-set codec: the tree and writer of [`radguard_dicom::tree`] (built
//! from the one data-set grammar's tokens, encoded again with every sequence and item length
//! recomputed), read the way de-identification must read it ([`DEID_TREE`]).
//!
//! The tree types and functions are re-exported here so that `radguard_deid::codec::...` keeps
//! naming them.

use radguard_dicom::limits::Limits;
use radguard_dicom::tree::{self, TreeOptions, UnSequences};

pub use radguard_dicom::tree::{
    encode_elements, is_text_vr, pad, tag_str, trim_padding, DataSet, Element, EncodeError,
    ParseError, TreeBuilder, Value,
};
pub use radguard_dicom::ts::{Encoding, TransferSyntax};

/// How de-identification reads a data set:
/// - an element that repeats a tag or comes out of order is refused: a reader that looks a
///   tag up finds one of two copies, and a second Patient ID that the transform does not see
///   would leave with the output (PS3.5 §7.1);
/// - a UN that holds a sequence (undefined length, or a standard sequence re-encoded as UN by
///   a node that did not know it) is read as that sequence: its items are de-identified like
///   any other, not passed on as opaque bytes; it is written back as SQ.
pub const DEID_TREE: TreeOptions = TreeOptions {
    strict_order: true,
    un_sequences: UnSequences::AsSequence,
};

/// A tree builder with [`DEID_TREE`] under `limits`.
pub fn tree_builder(limits: Limits) -> TreeBuilder {
    TreeBuilder::with_options(limits, DEID_TREE)
}

/// Parses a complete data set (no more bytes will come), under `limits`.
pub fn parse_dataset_with(
    buf: &[u8],
    encoding: Encoding,
    limits: Limits,
) -> Result<DataSet, ParseError> {
    tree::parse_encoded(buf, encoding, limits, DEID_TREE)
}

/// Parses a complete data set under the offline limits ([`Limits::OFFLINE`]).
pub fn parse_dataset(buf: &[u8], encoding: Encoding) -> Result<DataSet, ParseError> {
    parse_dataset_with(buf, encoding, Limits::OFFLINE)
}

#[cfg(test)]
mod tests {
    use dicom_core::{Tag, VR};

    use super::*;

    fn hdr(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], len: u32) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"UN") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            out.extend_from_slice(&(len as u16).to_le_bytes());
        }
    }

    #[test]
    fn deid_reads_strictly_and_inside_un_sequences() {
        // (0008,1140) as UN of defined length, one item with a patient name (implicit VR LE).
        let mut inner = Vec::new();
        inner.extend_from_slice(&0x0010u16.to_le_bytes());
        inner.extend_from_slice(&0x0010u16.to_le_bytes());
        inner.extend_from_slice(&8u32.to_le_bytes());
        inner.extend_from_slice(b"DOE^JOHN");
        let mut b = Vec::new();
        hdr(&mut b, 0x0008, 0x1140, b"UN", inner.len() as u32 + 8);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        b.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        b.extend_from_slice(&inner);
        let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
        let e = ds.get(Tag(0x0008, 0x1140)).unwrap();
        assert_eq!(e.vr, VR::SQ);
        let Value::Items(items) = &e.value else {
            panic!("{e:?}")
        };
        assert_eq!(items[0].text(Tag(0x0010, 0x0010)), Some(&b"DOE^JOHN"[..]));
        // A repeated Patient ID is refused.
        let mut dup = Vec::new();
        for v in [b"PID1", b"PID2"] {
            hdr(&mut dup, 0x0010, 0x0020, b"LO", 4);
            dup.extend_from_slice(v);
        }
        assert!(matches!(
            parse_dataset(&dup, Encoding::ExplicitLittle),
            Err(ParseError::Ambiguous { offset: 12, .. })
        ));
        let mut tb = tree_builder(Limits::GATEWAY);
        let mut tz =
            radguard_dicom::tokens::Tokenizer::new(Encoding::ExplicitLittle, Limits::GATEWAY);
        let mut r = Ok(());
        for t in tz.tokens(&dup) {
            r = r.and_then(|()| tb.token(t));
        }
        assert!(matches!(r, Err(ParseError::Ambiguous { .. })));
    }
}
