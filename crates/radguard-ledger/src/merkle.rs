//! RFC 9162 (RFC 6962) Merkle tree maths: leaf and node hashing, tree heads, inclusion and
//! consistency proofs, and their verification. Pure: no storage, no I/O.
//!
//! Proof *generation* reads hashes through [`NodeSource`], which only has to serve the hashes of
//! complete, aligned subtrees (`level`, `index`) — the nodes a log stores once and never changes.
//! Every other hash a proof needs (the ragged right edge of a tree) is computed here from them.
//! Proof *verification* follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree head.
pub type Hash = [u8; 32];

/// `SHA-256()` — the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `H(0x00 ‖ data)` — the hash of a log entry.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)` — the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Why a proof was refused, or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree sizes {first} and {second} are not ordered (first must not exceed second)")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("a node the proof needs is missing from storage: level {level}, index {index}")]
    MissingNode { level: u32, index: u64 },
}

/// Hashes of complete subtrees: node (`level`, `index`) covers leaves
/// `[index·2^level, (index+1)·2^level)`. Level 0 are the leaf hashes.
pub trait NodeSource {
    /// The error of the underlying storage.
    type Error: From<ProofError>;
    /// The hash of a complete subtree, which the caller guarantees exists in a tree of the
    /// source's size.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]): the hash of leaves `[start, end)`, where `start` is a multiple of the
/// largest power of two not above `end - start` (true of every range the RFC recursion visits).
pub fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end.saturating_sub(start);
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start & (n - 1) == 0 {
        return src.node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    let k = split_point(n);
    let left = range_hash(src, start, start + k)?;
    let right = range_hash(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The tree head of the first `size` leaves.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(src, 0, size)
}

/// PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf side first.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// PROOF(first, D[0:second]) of RFC 6962 §2.1.2. Empty when `first` is 0 or equals `second`.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, S::Error> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second }.into());
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(src, first, 0, second, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): `leaf` is entry `index` of the tree of
/// `size` leaves whose head is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): the tree of `first` leaves with head
/// `first_root` is a prefix of the tree of `second` leaves with head `second_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if first == 0 {
        // Every tree extends the empty tree; there is nothing to prove.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let mut fn_ = first - 1;
    let mut sn = second - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (head, rest) = path.split_first().ok_or(ProofError::WrongLength)?;
    let mut fr = *head;
    let mut sr = *head;
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The complete subtrees an append of leaf number `size` (0-based, i.e. the tree had `size`
/// leaves before) completes, bottom-up, given the right-edge `frontier` of the old tree (the
/// roots of its perfect subtrees, largest first). Returns the new nodes as (level, index, hash),
/// starting with the leaf itself at level 0, and updates `frontier`.
pub fn append_to_frontier(
    frontier: &mut Vec<Hash>,
    size: u64,
    leaf: Hash,
) -> Vec<(u32, u64, Hash)> {
    let mut created = vec![(0u32, size, leaf)];
    let mut hash = leaf;
    let mut level = 0u32;
    let mut index = size;
    // Each trailing one bit of `size` is a perfect subtree on the frontier that the new leaf
    // completes into a subtree twice as large.
    while index & 1 == 1 {
        let Some(left) = frontier.pop() else { break };
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        created.push((level, index, hash));
    }
    frontier.push(hash);
    created
}

/// The right-edge frontier of a tree of `size` leaves: the roots of its perfect subtrees,
/// largest first, read from `src`.
pub fn frontier<S: NodeSource>(src: &S, size: u64) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            out.push(src.node(level, start >> level)?);
            start += 1u64 << level;
        }
    }
    Ok(out)
}

/// The tree head from a frontier (largest subtree first).
pub fn root_from_frontier(frontier: &[Hash]) -> Hash {
    let mut it = frontier.iter().rev();
    let Some(first) = it.next() else {
        return empty_root();
    };
    let mut acc = *first;
    for left in it {
        acc = node_hash(left, &acc);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf inputs of the transparency-dev/merkle `testonly` package (also used by
    /// rozbb/ct-merkle's known-answer tests), which are the RFC 6962 reference vectors.
    const LEAVES: &[&str] = &[
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Tree heads for sizes 0..=8 (transparency-dev/merkle `testonly.RootHashes`).
    const ROOTS: &[&str] = &[
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (index, size, proof) — transparency-dev/merkle `TestRefInclusionProof`.
    const INCLUSION: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            2,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    /// (first, second, proof) — transparency-dev/merkle `TestRefConsistencyProof`.
    const CONSISTENCY: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn h(s: &str) -> Hash {
        let v = hex::decode(s).expect("hex");
        v.try_into().expect("32 bytes")
    }

    /// An in-memory tree: every complete subtree, computed naively.
    struct Mem {
        levels: Vec<Vec<Hash>>,
    }

    impl Mem {
        fn new(leaves: &[Vec<u8>]) -> Self {
            let mut levels = vec![leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()];
            while let Some(prev) = levels.last() {
                if prev.len() < 2 {
                    break;
                }
                let next: Vec<Hash> = prev
                    .chunks_exact(2)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect();
                levels.push(next);
            }
            Mem { levels }
        }
    }

    impl NodeSource for Mem {
        type Error = ProofError;
        fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
            self.levels
                .get(level as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
                .ok_or(ProofError::MissingNode { level, index })
        }
    }

    /// The RFC 6962 definition, recursively over the leaf data (the reference).
    fn reference_root(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn kat_leaves() -> Vec<Vec<u8>> {
        LEAVES
            .iter()
            .map(|l| hex::decode(l).expect("hex"))
            .collect()
    }

    fn numbered(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    #[test]
    fn known_roots() {
        let leaves = kat_leaves();
        let mem = Mem::new(&leaves);
        for (size, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                root(&mem, size as u64).expect("root"),
                h(want),
                "size {size}"
            );
            assert_eq!(
                reference_root(&leaves[..size]),
                h(want),
                "reference, size {size}"
            );
        }
    }

    #[test]
    fn known_inclusion_proofs() {
        let mem = Mem::new(&kat_leaves());
        for (index, size, want) in INCLUSION {
            let got = inclusion_proof(&mem, *index, *size).expect("proof");
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(got, want, "index {index} size {size}");
            let leaf = mem.node(0, *index).expect("leaf");
            verify_inclusion(&leaf, *index, *size, &got, &h(ROOTS[*size as usize]))
                .expect("verifies");
        }
    }

    #[test]
    fn known_consistency_proofs() {
        let mem = Mem::new(&kat_leaves());
        for (first, second, want) in CONSISTENCY {
            let got = consistency_proof(&mem, *first, *second).expect("proof");
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(got, want, "{first} -> {second}");
            verify_consistency(
                *first,
                *second,
                &got,
                &h(ROOTS[*first as usize]),
                &h(ROOTS[*second as usize]),
            )
            .expect("verifies");
        }
    }

    #[test]
    fn every_proof_in_small_trees_verifies_and_every_mutation_fails() {
        for n in 1..=33usize {
            let leaves = numbered(n);
            let mem = Mem::new(&leaves);
            let size = n as u64;
            let r = root(&mem, size).expect("root");
            assert_eq!(r, reference_root(&leaves), "root of {n}");
            for i in 0..size {
                let leaf = leaf_hash(&leaves[i as usize]);
                let p = inclusion_proof(&mem, i, size).expect("proof");
                verify_inclusion(&leaf, i, size, &p, &r).expect("valid");
                // A wrong leaf, index, size, root or any flipped bit is refused.
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, i, size, &p, &r).is_err());
                if size > 1 {
                    assert!(verify_inclusion(&leaf, (i + 1) % size, size, &p, &r).is_err());
                }
                assert!(verify_inclusion(&leaf, i, size, &p, &other).is_err());
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j][7] ^= 0x20;
                    assert!(verify_inclusion(&leaf, i, size, &bad, &r).is_err());
                    let mut short = p.clone();
                    short.remove(j);
                    assert!(verify_inclusion(&leaf, i, size, &short, &r).is_err());
                }
                let mut long = p.clone();
                long.push(other);
                assert!(verify_inclusion(&leaf, i, size, &long, &r).is_err());
            }
            for m in 0..=size {
                let rm = root(&mem, m).expect("root");
                let p = consistency_proof(&mem, m, size).expect("proof");
                verify_consistency(m, size, &p, &rm, &r).expect("consistent");
                if m > 0 && m < size {
                    let other = leaf_hash(b"other");
                    assert!(verify_consistency(m, size, &p, &other, &r).is_err());
                    assert!(verify_consistency(m, size, &p, &rm, &other).is_err());
                    for j in 0..p.len() {
                        let mut bad = p.clone();
                        bad[j][0] ^= 1;
                        assert!(
                            verify_consistency(m, size, &bad, &rm, &r).is_err(),
                            "{m}->{size} mutated {j}"
                        );
                    }
                    assert!(verify_consistency(m, size, &p[..p.len() - 1], &rm, &r).is_err());
                    // A proof between different sizes does not pass for these sizes.
                    if m + 1 < size {
                        assert!(verify_consistency(m + 1, size, &p, &rm, &r).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn frontier_appends_match_the_reference() {
        let leaves = numbered(70);
        let mem = Mem::new(&leaves);
        let mut f = Vec::new();
        for (i, l) in leaves.iter().enumerate() {
            let created = append_to_frontier(&mut f, i as u64, leaf_hash(l));
            for (level, index, hash) in created {
                assert_eq!(mem.node(level, index).expect("node"), hash);
            }
            let size = i as u64 + 1;
            assert_eq!(root_from_frontier(&f), reference_root(&leaves[..i + 1]));
            assert_eq!(frontier(&mem, size).expect("frontier"), f);
        }
        assert_eq!(root_from_frontier(&[]), empty_root());
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let mem = Mem::new(&numbered(4));
        assert_eq!(
            inclusion_proof(&mem, 4, 4),
            Err(ProofError::IndexOutOfRange { index: 4, size: 4 })
        );
        assert_eq!(
            consistency_proof(&mem, 5, 4),
            Err(ProofError::SizesOutOfOrder {
                first: 5,
                second: 4
            })
        );
        let r = root(&mem, 4).expect("root");
        assert!(verify_inclusion(&r, 0, 0, &[], &r).is_err());
        assert!(verify_consistency(0, 4, &[r], &empty_root(), &r).is_err());
        verify_consistency(0, 4, &[], &empty_root(), &r).expect("empty tree is a prefix");
    }
}
