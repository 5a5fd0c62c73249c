"""The audit log's Merkle tree against the published RFC 6962 / Certificate Transparency test vectors.

Leaves, roots and proofs from github.com/transparency-dev/merkle, where Certificate
Transparency's Go Merkle code and its tests moved from github.com/google/certificate-transparency-go
(merkle/log_verifier_test.go, moved in transparency-dev/merkle 9086ba43 as log_verifier_test.go):

- testonly/constants.go (LeafInputs, RootHashes), at 417fb0c314750d94e53942e9f92e79b6d35915db;
- proof/verify_test.go (inclusionProofs, consistencyProofs; leaf numbers there are 1-based),
  at 9ca563d3ac2bab915317cf153ed4f952f6e74c07, the last commit with them inline (later ones
  moved them into testdata/*.json). The corrupted-proof probes follow that file's
  corruptInclusionProof and corruptConsistencyProof.
"""

from __future__ import annotations

import hashlib

import pytest

from referral_hub.audit.checkpoints import (
    consistency_proof,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
"""The root of the tree of the first 1, 2, ..., 8 leaves."""
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (1, 1, []),
]
"""(leaf number, 1-based; tree size; proof)."""
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
"""(old size, new size, proof)."""
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def leaves() -> list[bytes]:
    return [leaf_hash(data) for data in LEAVES]


def hashes(proof: list[str]) -> list[bytes]:
    return [bytes.fromhex(node) for node in proof]


def test_the_roots_of_every_prefix_are_the_published_ones() -> None:
    hashed = leaves()

    assert merkle_root([]).hex() == EMPTY_ROOT
    assert [merkle_root(hashed[:size]).hex() for size in range(1, 9)] == ROOTS
    assert merkle_root(hashed).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_the_frontier_folds_to_the_published_roots() -> None:
    frontier: list[tuple[int, bytes]] = []
    roots = []
    for leaf in leaves():
        frontier = frontier_push(frontier, leaf)
        roots.append(frontier_root(frontier).hex())

    assert roots == ROOTS


@pytest.mark.parametrize(("number", "size", "proof"), INCLUSION)
def test_inclusion_proofs_are_the_published_ones_and_verify(number: int, size: int, proof: list[str]) -> None:
    hashed = leaves()
    index, root = number - 1, bytes.fromhex(ROOTS[size - 1])

    assert [node.hex() for node in inclusion_proof(index, hashed[:size])] == proof
    assert verify_inclusion(index, size, hashed[index], hashes(proof), root)


@pytest.mark.parametrize(("number", "size", "proof"), [vector for vector in INCLUSION if vector[2]])
def test_corrupted_inclusion_proofs_do_not_verify(number: int, size: int, proof: list[str]) -> None:
    hashed = leaves()
    index, root, leaf, nodes = number - 1, bytes.fromhex(ROOTS[size - 1]), hashed[number - 1], hashes(proof)
    probes = {
        "index - 1": (index - 1, size, leaf, nodes, root),
        "index + 1": (index + 1, size, leaf, nodes, root),
        "index ^ 2": (index ^ 2, size, leaf, nodes, root),
        "size * 2": (index, size * 2, leaf, nodes, root),
        "size / 2": (index, size // 2, leaf, nodes, root),
        "wrong leaf": (index, size, b"WrongLeaf", nodes, root),
        "empty root": (index, size, leaf, nodes, bytes.fromhex(EMPTY_ROOT)),
        "random root": (index, size, leaf, nodes, SOME_HASH),
        "trailing garbage": (index, size, leaf, [*nodes, b""], root),
        "trailing root": (index, size, leaf, [*nodes, root], root),
        "preceding garbage": (index, size, leaf, [b"", *nodes], root),
        "preceding root": (index, size, leaf, [root, *nodes], root),
        "removed component": (index, size, leaf, nodes[:-1], root),
    }
    for position in range(len(nodes)):
        flipped = list(nodes)
        flipped[position] = bytes([flipped[position][0] ^ 8]) + flipped[position][1:]
        probes[f"proof[{position}] bit 3"] = (index, size, leaf, flipped, root)
    if len(nodes) > 1:
        probes["inserted component"] = (index, size, leaf, [nodes[0], SOME_HASH, *nodes[1:]], root)

    accepted = [name for name, probe in probes.items() if probe[0] >= 0 and verify_inclusion(*probe)]

    assert accepted == []


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_are_the_published_ones_and_verify(old: int, new: int, proof: list[str]) -> None:
    hashed = leaves()
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])

    assert [node.hex() for node in consistency_proof(old, hashed[:new])] == proof
    assert verify_consistency(old, new, old_root, new_root, hashes(proof))


@pytest.mark.parametrize(("old", "new", "proof"), [vector for vector in CONSISTENCY if vector[2]])
def test_corrupted_consistency_proofs_do_not_verify(old: int, new: int, proof: list[str]) -> None:
    old_root, new_root, nodes = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1]), hashes(proof)
    probes = {
        "old - 1": (old - 1, new, old_root, new_root, nodes),
        "old + 1": (old + 1, new, old_root, new_root, nodes),
        "old ^ 2": (old ^ 2, new, old_root, new_root, nodes),
        "new * 2": (old, new * 2, old_root, new_root, nodes),
        "new / 2": (old, new // 2, old_root, new_root, nodes),
        "wrong old root": (old, new, b"WrongRoot", new_root, nodes),
        "wrong new root": (old, new, old_root, b"WrongRoot", nodes),
        "swapped roots": (old, new, new_root, old_root, nodes),
        "empty proof": (old, new, old_root, new_root, []),
        "trailing garbage": (old, new, old_root, new_root, [*nodes, b""]),
        "trailing old root": (old, new, old_root, new_root, [*nodes, old_root]),
        "trailing new root": (old, new, old_root, new_root, [*nodes, new_root]),
        "preceding garbage": (old, new, old_root, new_root, [b"", *nodes]),
        "preceding old root": (old, new, old_root, new_root, [old_root, *nodes]),
        "preceding new root": (old, new, old_root, new_root, [new_root, *nodes]),
        "preceding proof[0]": (old, new, old_root, new_root, [nodes[0], *nodes]),
        "truncated proof": (old, new, old_root, new_root, nodes[:-1]),
    }
    for position in range(len(nodes)):
        flipped = list(nodes)
        flipped[position] = bytes([flipped[position][0] ^ 16]) + flipped[position][1:]
        probes[f"proof[{position}] bit 4"] = (old, new, old_root, new_root, flipped)

    accepted = [name for name, probe in probes.items() if verify_consistency(*probe)]

    assert accepted == []


def test_a_leaf_is_hashed_with_the_rfc_6962_prefix() -> None:
    assert leaf_hash("") == hashlib.sha256(b"\x00").digest()
    assert leaf_hash("2021") == hashlib.sha256(b"\x00\x20\x21").digest()
