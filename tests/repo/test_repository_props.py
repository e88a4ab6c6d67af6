"""Property and fuzz tests for what the repository parses: names, patterns, options, its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, SuccinctRoles, TargetFile

from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import MalformedError, OtaguardError, UsageError
from otaguard.repo.config import parse_expiry_days
from otaguard.repo.layout import Layout, check_path_pattern, check_role_name, check_target_path
from otaguard.repo.repository import ImageRepository
from otaguard.repo.signing import RepoSigner, tuf_key

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
PATHY = st.text(alphabet="ab./\\-_+ \x00é*", max_size=40)


@SETTINGS
@given(PATHY)
def test_target_paths_accepted_stay_inside_targets(path: str) -> None:
    try:
        check_target_path(path)
    except UsageError:
        return
    parts = path.split("/")
    assert all(p and p not in {".", ".."} and not p.startswith(".") for p in parts)
    base = Path("/srv/targets")
    directory, sep, name = path.rpartition("/")
    stored = (base / f"{directory}{sep}{'0' * 64}.{name}").resolve()
    assert stored.is_relative_to(base)
    assert path.isascii() and " " not in path and "\\" not in path


@SETTINGS
@given(st.text(max_size=80))
def test_role_names(name: str) -> None:
    try:
        check_role_name(name)
    except UsageError:
        return
    assert name not in {"root", "targets", "snapshot", "timestamp"}
    assert "/" not in name and ".." not in name[:2] and name.isascii()


@SETTINGS
@given(st.text(max_size=80))
def test_path_patterns(pattern: str) -> None:
    try:
        check_path_pattern(pattern)
    except UsageError:
        return
    assert pattern.isascii() and not pattern.startswith("/")


@SETTINGS
@given(st.lists(st.text(alphabet="roottargets=0123456789x-", max_size=20), max_size=4))
def test_expiry_options(items: list[str]) -> None:
    try:
        days = parse_expiry_days(items)
    except UsageError:
        return
    assert all(1 <= d <= 3660 for d in days.values())


VALID = Metadata.from_bytes(
    json.dumps(
        {
            "signatures": [],
            "signed": {
                "_type": "targets",
                "spec_version": "1.0.31",
                "version": 1,
                "expires": "2030-01-01T00:00:00Z",
                "targets": {},
            },
        }
    ).encode()
).to_bytes()


@SETTINGS
@given(st.data())
def test_metadata_files_fuzzed(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Whatever is in a staged or published file: a one-line MalformedError, nothing else."""
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(0, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    blob = data.draw(st.one_of(st.just(bytes(raw)), st.binary(max_size=200)))
    path = tmp_path_factory.mktemp("fuzz") / "x.json"
    path.write_bytes(blob)
    try:
        md = Layout(path.parent).load(path, "eu")
    except MalformedError:
        return
    assert md.signed.type == "targets"


def test_oversized_metadata_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(MalformedError, match="larger than"):
        Layout(tmp_path).load(path, "targets")


@pytest.fixture(scope="module")
def binned(tmp_path_factory: pytest.TempPathFactory) -> ImageRepository:
    base = tmp_path_factory.mktemp("binned")
    keys = [tuf_key(generate_private_key(KeyType.ED25519).public_key()) for _ in range(5)]
    repo = ImageRepository.create(
        base,
        root_keys=[keys[0]],
        root_threshold=1,
        targets_keys=[keys[1]],
        targets_threshold=1,
        snapshot_key=keys[2],
        timestamp_key=keys[3],
        online_key_specs={},
    )
    repo.delegate_bins(64, [keys[4]])
    return repo


@SETTINGS
@given(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9.]{1,8}){0,3}", fullmatch=True))
def test_hashed_bin_routing(binned: ImageRepository, path: str) -> None:
    succinct = SuccinctRoles([], 1, 6, "bins")
    assert binned.route(path) == ["targets", succinct.get_role_for_target(path)]


def test_rsa_metadata_signature_verifies() -> None:
    """Our RSA-PSS (salt = digest length) under securesystemslib's scheme name."""
    key = generate_private_key(KeyType.RSA_3072)
    signer = RepoSigner(KeySigner(key))
    assert signer.public_key.scheme == "rsassa-pss-sha256"
    md = Metadata.from_bytes(VALID)
    sig = md.sign(signer)
    signer.public_key.verify_signature(sig, md.signed_bytes)


def test_errors_are_otaguard_errors(tmp_path: Path) -> None:
    with pytest.raises(OtaguardError):
        ImageRepository(tmp_path)
    info = TargetFile(1, {"sha256": "0" * 64}, "a/../b")
    with pytest.raises(UsageError):
        check_target_path(info.path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
ROLE_KEYS = st.sampled_from(
    ["root", "targets", "snapshot", "timestamp", "eu", "../x", "", "director"]
)
CONFIG_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "expires": st.dictionaries(ROLE_KEYS, JSON | st.integers(0, 4000), max_size=5) | JSON,
        "online_keys": st.dictionaries(ROLE_KEYS, JSON | st.text(max_size=20), max_size=4) | JSON,
        "other": JSON,
    },
)


@SETTINGS
@given(st.one_of(JSON, CONFIG_LIKE))
def test_config_loader_on_any_json(doc: object) -> None:
    """Any JSON in config.json: a validated config or one RepositoryConfigError, nothing else."""
    from otaguard.repo.config import RepositoryConfigError, parse_config

    try:
        config = parse_config(json.dumps(doc).encode())
    except RepositoryConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(doc, dict) and set(doc) <= {"expires", "online_keys"}
    assert all(type(d) is int and 1 <= d <= 3660 for d in config.expires.values())
    assert set(config.online_keys) <= {"snapshot", "timestamp"}
    assert all(isinstance(k, str) and k for k in config.online_keys.values())
    assert parse_config(config.to_json()) == config  # what we write, we read back


@SETTINGS
@given(st.binary(max_size=200))
def test_config_loader_on_any_bytes(data: bytes) -> None:
    from otaguard.repo.config import RepositoryConfigError, parse_config

    try:
        parse_config(data)
    except RepositoryConfigError:
        pass
