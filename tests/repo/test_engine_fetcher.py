"""The trust engine on its own (explicit time), and the client's limits.

The fetcher's caps are tested in ``test_fetcher.py``.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuf.api import exceptions
from tuf.api.metadata import Root, Targets, Timestamp

from otaguard.repo.client import TufClient, TufClientError
from otaguard.repo.fetcher import HttpxFetcher, LengthExceededError
from otaguard.repo.trust import Limits, TrustEngine

NOW = datetime.datetime.now(datetime.UTC)


def _timestamp_bytes(repo) -> bytes:
    return (repo.meta_dir / "timestamp.json").read_bytes()  # type: ignore[no-any-return]


def test_engine_uses_the_time_it_is_given(repo) -> None:
    ok = TrustEngine(repo.initial_root, NOW)
    assert ok.update_timestamp(_timestamp_bytes(repo)).version == 1
    later = TrustEngine(repo.initial_root, NOW + datetime.timedelta(days=2))
    with pytest.raises(exceptions.ExpiredMetadataError):
        later.update_timestamp(_timestamp_bytes(repo))
    far = TrustEngine(repo.initial_root, NOW + datetime.timedelta(days=400))
    with pytest.raises(exceptions.ExpiredMetadataError, match="root"):
        far.update_timestamp(_timestamp_bytes(repo))


def test_engine_needs_aware_time(repo) -> None:
    with pytest.raises(ValueError, match="timezone"):
        TrustEngine(repo.initial_root, datetime.datetime(2030, 1, 1))


def test_engine_refuses_unsigned_timestamp(repo) -> None:
    engine = TrustEngine(repo.initial_root, NOW)
    with pytest.raises(exceptions.UnsignedMetadataError):
        engine.update_timestamp(repo.sign(Timestamp.type, signers=[]))
    assert engine.timestamp is None


def test_engine_refuses_timestamp_signed_by_targets_key(repo) -> None:
    engine = TrustEngine(repo.initial_root, NOW)
    data = repo.sign(Timestamp.type, signers=repo.signers[Targets.type])
    with pytest.raises(exceptions.UnsignedMetadataError):
        engine.update_timestamp(data)


def test_root_rotation_cap(repo, client) -> None:
    for _ in range(3):
        repo.rotate_root(Root.type)
    with HttpxFetcher() as fetcher:
        capped = TufClient(
            client.metadata_dir, repo.metadata_url, fetcher, limits=Limits(max_root_rotations=2)
        )
        with pytest.raises(TufClientError, match="root rotations"):
            capped.refresh()
        # progress is kept: the next session continues from the last verified root
        assert client.version(Root.type) == 3
        TufClient(client.metadata_dir, repo.metadata_url, fetcher).refresh()
    assert client.version(Root.type) == 4


def test_delegation_walk_cap(repo, client) -> None:
    parent = Targets.type
    for i in range(5):
        repo.delegate(parent, f"d{i}", ["*"])
        parent = f"d{i}"
    repo.publish([f"d{i}" for i in range(5)] + [Targets.type])
    with HttpxFetcher() as fetcher:
        capped = TufClient(
            client.metadata_dir, repo.metadata_url, fetcher, limits=Limits(max_delegations=3)
        )
        with pytest.raises(exceptions.RepositoryError, match="more than 3"):
            capped.target_info("x")
        assert TufClient(client.metadata_dir, repo.metadata_url, fetcher).target_info("x") is None


def test_metadata_length_cap(repo, client) -> None:
    with HttpxFetcher() as fetcher:
        capped = TufClient(
            client.metadata_dir,
            repo.metadata_url,
            fetcher,
            limits=Limits(timestamp_max_length=100),
        )
        with pytest.raises(LengthExceededError):
            capped.refresh()


@pytest.fixture(scope="module")
def signed_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from repo.conftest import RepoSim

    sim = RepoSim(tmp_path_factory.mktemp("engine-fuzz"))
    try:
        return {"root": sim.initial_root, "timestamp": _timestamp_bytes(sim)}
    finally:
        sim.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_engine_refuses_any_bytes_with_a_repository_error(
    signed_files: dict[str, bytes], data: st.DataObject
) -> None:
    """Mutated or random root and timestamp bytes: a RepositoryError, never another exception.

    ``tuf-client`` reports anything else as a bug (exit 3), so this is what keeps hostile
    metadata at exit 1.
    """
    role = data.draw(st.sampled_from(["root", "timestamp"]))
    raw = bytearray(signed_files[role])
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    blob = data.draw(st.one_of(st.just(bytes(raw)), st.binary(max_size=300)))
    try:
        engine = TrustEngine(blob if role == "root" else signed_files["root"], NOW)
        if role == "timestamp":
            engine.update_timestamp(blob)
    except exceptions.RepositoryError:
        return
