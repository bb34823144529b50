//! The bounds every reader of data sets works under, with one preset per use.
//!
//! One set of numbers for the whole product: a data set that one inspector refuses for its
//! nesting must not be read whole by another (a parser differential). The presets differ only
//! where the use differs, and each field says why.

/// Bounds on a data set read by the [`crate::tokens::Tokenizer`] (and the inflater in front of
/// it for deflated transfer syntaxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of sequences (a sequence inside an item of a sequence is depth 2).
    /// Real IODs nest at most 5–6 deep (e.g. SR content trees go deeper, about 10–20);
    /// nesting bombs (thousands of open sequences) are refused past this.
    pub max_depth: usize,
    /// Longest defined value length of one element or fragment. `u32::MAX - 1` is the largest
    /// the encoding allows (0xFFFFFFFF means "undefined").
    pub max_value_length: u32,
    /// Most bytes of one data set (after inflating, when deflated); `u64::MAX` for no cap.
    pub max_total: u64,
    /// Most bytes a deflated data set may inflate to, and the most inflated bytes per
    /// compressed byte (decompression bombs: PS3.5 §A.5 deflate, zlib's own ratio ~1032:1).
    pub max_inflated: u64,
    pub max_inflate_ratio: u64,
    /// Inflated size below which the ratio is not checked (small sets of zeros compress well).
    pub inflate_ratio_floor: u64,
    /// Most elements (at every nesting level, items' elements included) in one data set. A
    /// parser behind the gateway builds a node per element: millions of tiny elements exhaust
    /// its memory long before the byte count looks unusual.
    pub max_elements: u64,
}

impl Limits {
    /// The gateway relays data sets of any size (a 4 GiB multi-frame is legitimate) and
    /// parses them on the wire: nesting is capped at 32, which no IOD in PS3.3 needs.
    pub const GATEWAY: Limits = Limits {
        max_depth: 32,
        max_value_length: u32::MAX - 1,
        max_total: u64::MAX,
        max_inflated: 1 << 30,
        max_inflate_ratio: 200,
        inflate_ratio_floor: 16 << 20,
        // The largest real objects (RT Structure Sets, per-frame functional groups of
        // enhanced multi-frame and parametric maps) have some 10^5 elements.
        max_elements: 1 << 21,
    };

    /// The media scanner reads files an attacker may have crafted to exhaust it, and reports
    /// rather than relays: it follows nesting as deep as the gateway would, so that what it
    /// passes the gateway also passes.
    pub const SCANNER: Limits = Limits::GATEWAY;

    /// Offline tools (`verify`, `deid` on files): as the gateway, since they must read exactly
    /// what the gateway relayed.
    pub const OFFLINE: Limits = Limits::GATEWAY;

    /// Identifiers of C-FIND/C-MOVE/C-GET and other data sets that carry no bulk data: a
    /// 16 MiB data set is already far beyond any query.
    pub const QUERY: Limits = Limits {
        max_total: 16 * 1024 * 1024,
        max_elements: 1 << 16,
        ..Limits::GATEWAY
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::GATEWAY
    }
}
