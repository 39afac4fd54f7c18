"""Client certificates that chain to a client CA through intermediates (sans-IO, fixed now)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from smbridge import pki
from smbridge.transports.cert_chain import (
    MAX_INTERMEDIATES,
    ChainMemory,
    peer_chain,
    verify_chain,
)
from smbridge.transports.client_certs import ClientCertificates

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(hours=1)
Pair = tuple[Any, x509.Certificate]


def make_crl(issuer: Pair, revoked: list[x509.Certificate]) -> x509.CertificateRevocationList:
    return pki.build_crl(issuer[0], issuer[1], revoked, now=NOW)


def leaf(issuer: Pair, name: str, **kw: Any) -> x509.Certificate:
    return pki.issue(issuer[0], issuer[1], name, client=True, server=False, **kw)[1]


@dataclass
class Chains:
    """root <- int (good), int-revoked (in root's CRL), int-expired; other-root <- other-int."""

    root: Pair
    certs: dict[str, x509.Certificate]
    ca: Path  # the root only
    crl: Path  # the root's CRL (revokes int-revoked) and int's CRL (revokes leaf-revoked)

    def checker(self, *anchors: str) -> ClientCertificates:
        if not anchors:
            return ClientCertificates(self.ca, self.crl)
        path = self.ca.with_name("-".join(anchors) + ".pem")
        path.write_bytes(b"".join(pki.cert_pem(self.certs[a]) for a in anchors))
        return ClientCertificates(path, self.crl)

    def verdict(self, name: str, *chain: str, anchors: tuple[str, ...] = ()) -> Any:
        cert = self.certs[name]
        return self.checker(*anchors).check(cert, NOW, chain=[self.certs[c] for c in chain])


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Chains:
    out = tmp_path_factory.mktemp("chain")
    root = pki.make_ca("client root", path_length=1)
    good = pki.issue_intermediate(*root, "issuing CA")
    revoked = pki.issue_intermediate(*root, "revoked CA")
    old = NOW - datetime.timedelta(days=40)
    expired = pki.issue_intermediate(*root, "expired CA", days=10, not_before=old)
    other = pki.make_ca("other root", path_length=1)
    other_int = pki.issue_intermediate(*other, "issuing CA")  # same name as the good one
    flat = pki.make_ca("flat root")  # path length 0: no intermediates under it
    flat_int = pki.issue_intermediate(*flat, "flat issuing CA")
    l1_key, l1 = pki.issue(good[0], good[1], "agent1", client=True, server=False)
    certs = {
        "root": root[1],
        "int": good[1],
        "int-revoked": revoked[1],
        "int-expired": expired[1],
        "other-root": other[1],
        "other-int": other_int[1],
        "flat-int": flat_int[1],
        "leaf": l1,
        "leaf-revoked": leaf(good, "agent3"),
        "leaf-expired": leaf(good, "agent1", days=1, not_before=old),
        "leaf-server": pki.issue(*good, "agent1", client=False, server=True)[1],
        "leaf-under-revoked": leaf(revoked, "agent1"),
        "leaf-under-expired": leaf(expired, "agent1", not_before=old, days=365),
        "direct": leaf(root, "agent2"),
        "foreign": leaf(other_int, "agent1"),
        "under-flat": leaf(flat_int, "agent1"),
        "under-leaf": leaf((l1_key, l1), "agent1"),  # a leaf (CA:FALSE) cannot issue
    }
    ca = out / "root.pem"
    ca.write_bytes(pki.cert_pem(root[1]))
    crl = out / "crl.pem"
    crls = [make_crl(root, [revoked[1]]), make_crl(good, [certs["leaf-revoked"]])]
    crl.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls))
    return Chains(root, certs, ca, crl)


@pytest.mark.parametrize(
    ("name", "chain", "reason"),
    [
        ("leaf", ("int",), None),
        ("leaf", ("int", "root"), None),  # the client may send the root too
        ("leaf", ("root", "int"), None),  # in any order
        ("leaf", (), "certificate-untrusted"),  # the intermediate missing
        ("leaf", ("other-int",), "certificate-untrusted"),  # right name, wrong key
        ("leaf-under-revoked", ("int-revoked",), "certificate-revoked"),  # by the root's CRL
        ("leaf-revoked", ("int",), "certificate-revoked"),  # by the intermediate's CRL
        ("leaf-under-expired", ("int-expired",), "certificate-expired"),
        ("leaf-expired", ("int",), "certificate-expired"),
        ("direct", (), None),  # issued directly by the root, as before
        ("foreign", ("other-int",), "certificate-untrusted"),
        ("foreign", ("other-int", "other-root"), "certificate-untrusted"),
        ("under-flat", ("flat-int",), "certificate-untrusted"),
        ("under-leaf", ("leaf", "int"), "certificate-untrusted"),
        ("leaf-server", ("int",), "certificate-untrusted"),
    ],
)
def test_chain_verdicts(
    chains: Chains, name: str, chain: tuple[str, ...], reason: str | None
) -> None:
    """Each chain gets its reason (None: good); the identity is always the leaf's."""
    check = chains.verdict(name, *chain)
    assert check.reason == reason, check.detail
    fingerprint = "sha256:" + chains.certs[name].fingerprint(hashes.SHA256()).hex()
    assert check.identity.fingerprint == fingerprint


def test_details_name_the_problem(chains: Chains) -> None:
    """The log line's detail says which certificate of the chain was wrong."""
    assert chains.verdict("leaf-under-revoked", "int-revoked").detail == (
        "an issuing CA (CN=revoked CA,O=smbridge) revoked by the CRL"
    )
    assert chains.verdict("leaf-revoked", "int").detail == (
        "the certificate (CN=agent3,O=smbridge) revoked by the CRL"
    )
    assert chains.verdict("leaf-under-expired", "int-expired").detail == (
        "an issuing CA (CN=expired CA,O=smbridge) is outside its validity period"
    )
    assert chains.verdict("leaf-expired", "int").detail == "outside its validity period"
    assert chains.verdict("leaf").detail == (
        "unable to get local issuer certificate (depth 0: CN=agent1,O=smbridge)"
    )
    assert chains.verdict("leaf-server", "int").detail == "not for client authentication"


def test_an_intermediate_listed_as_client_ca_anchors_the_leaf_alone(chains: Chains) -> None:
    """Behind nginx only the leaf arrives: an intermediate in --client-ca anchors it."""
    assert chains.verdict("leaf", anchors=("int",)).reason is None
    assert chains.verdict("leaf", anchors=("root", "int")).reason is None
    assert chains.verdict("leaf-revoked", anchors=("root", "int")).reason == "certificate-revoked"
    assert chains.verdict("direct", anchors=("int",)).reason == "certificate-untrusted"


def test_the_time_is_the_injected_now(chains: Chains) -> None:
    """Validity is judged at ``now``, not at the wall clock, for every level."""
    cert, chain = chains.certs["leaf"], [chains.certs["int"]]
    anchors = [chains.certs["root"]]
    assert verify_chain(anchors, cert, chain, NOW).reason is None
    later = NOW + datetime.timedelta(days=400)  # after the leaf (365 days)
    assert verify_chain(anchors, cert, chain, later).reason == "certificate-expired"
    before = NOW - datetime.timedelta(days=2)  # before all of them were issued
    assert verify_chain(anchors, cert, chain, before).reason == "certificate-expired"
    good = verify_chain(anchors, cert, chain, NOW)
    assert good.chain == (cert, chains.certs["int"], chains.certs["root"])


def test_a_long_chain_is_cut(chains: Chains) -> None:
    """Only MAX_INTERMEDIATES certificates are taken from a client, the rest ignored."""
    junk = [chains.certs["other-int"]] * MAX_INTERMEDIATES
    assert chains.verdict("leaf", *(["other-int"] * 3), "int").reason is None
    check = chains.checker().check(chains.certs["leaf"], NOW, chain=[*junk, chains.certs["int"]])
    assert check.reason == "certificate-untrusted"


def test_peer_chain_reads_the_tls_connection(chains: Chains) -> None:
    """The intermediates come from the TLS connection under the transport, if any."""
    sent = [chains.certs["int"]]

    class Handle:
        def get_peer_cert_chain(self, as_cryptography: bool = False) -> Any:
            assert as_cryptography
            return sent

    class Transport:
        def getHandle(self) -> Any:
            return Handle()

    class Conn:
        transport = Transport()

    assert peer_chain(Conn()) == (chains.certs["int"],)
    sent = None  # type: ignore[assignment]  # a resumed session may keep no chain
    assert peer_chain(Conn()) == ()
    assert peer_chain(object()) == ()


POOL = ("root", "int", "int-revoked", "int-expired", "other-root", "other-int", "flat-int")
LEAVES = ("leaf", "leaf-revoked", "leaf-under-revoked", "leaf-under-expired", "direct")
LEAVES += ("foreign", "under-flat", "under-leaf", "leaf-server", "leaf-expired")
# the naive model: which leaves are good, and which intermediates each one needs
NEEDS: dict[str, set[str]] = {"leaf": {"int"}, "direct": set()}


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(LEAVES),
    chain=st.lists(st.sampled_from(POOL + ("leaf",)), max_size=6),
)
def test_no_subset_or_order_makes_a_wrong_chain_pass(
    chains: Chains, name: str, chain: list[str]
) -> None:
    """Any subset of the certificates, in any order and repeated, passes exactly when the
    naive model says so: a good leaf with every intermediate it needs."""
    check = chains.verdict(name, *chain)
    expected = name in NEEDS and NEEDS[name] <= set(chain[:MAX_INTERMEDIATES])
    assert (check.reason is None) == expected, (name, chain, check.detail)


def test_a_verified_chain_is_remembered_for_resumed_sessions(chains: Chains) -> None:
    """Only a chain that verified is remembered, by its leaf; the memory is bounded."""
    checker = chains.checker()
    checker.check(chains.certs["leaf"], NOW, chain=[chains.certs["other-int"]])  # untrusted
    checker.check(chains.certs["leaf-revoked"], NOW, chain=[chains.certs["int"]])  # revoked
    assert len(checker.chains) == 0
    checker.check(chains.certs["leaf"], NOW, chain=[chains.certs["int"]])
    assert checker.chains.recall(chains.certs["leaf"]) == (chains.certs["int"],)
    assert checker.chains.recall(chains.certs["direct"]) == ()
    memory = ChainMemory(size=2)
    for name in ("leaf", "direct", "foreign"):
        memory.remember(chains.certs[name], [chains.certs["int"]])
    assert len(memory) == 2 and memory.recall(chains.certs["leaf"]) == ()
    assert memory.recall(chains.certs["foreign"]) == (chains.certs["int"],)
