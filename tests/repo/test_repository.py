"""``otaguard repo``: a repository we publish, read by our TufClient and by python-tuf's ngclient.

Every test goes through the real CLI and a real HTTP server; the clients see
only what ``metadata/`` and ``targets/`` hold, exactly as a mirror would serve.
"""

from __future__ import annotations

import datetime
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, SuccinctRoles

from otaguard.repo.client import TufClientError
from otaguard.repo.fetcher import FetchError
from otaguard.repo.repository import ImageRepository
from repo.helpers_repository import Keys, OurClient, Served, cli, image_file

NAME = "eu/acme-ecu-v2/1.5.0.img"


@dataclass
class World:
    dir: Path
    keys: Keys
    served: Served
    client: OurClient
    tmp: Path

    def image(self, name: str = "fw.img", key: str = "release", **extra: object) -> Path:
        return image_file(self.tmp / name, self.keys.make(key), **extra)  # type: ignore[arg-type]

    def add(self, image: Path, name: str = NAME, *more: str) -> int:
        return cli(
            "repo", "add-target", self.dir, image, "--name", name,
            "--trusted-key", self.keys.pub("release"), *more,
        )  # fmt: skip

    def sign(self, *args: str) -> int:
        return cli("repo", "sign", self.dir, *args)

    def publish(self, *args: str) -> int:
        return cli("repo", "publish", self.dir, *args)

    def delegate(self, region: str) -> int:
        pattern = f"{region}/*/*"  # TUF patterns: '*' never crosses a '/'
        args = ["--name", region, "--path", pattern, "--key", self.keys.pub(region)]
        return cli("repo", "delegate", self.dir, *args)

    def published(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "metadata").iterdir())


def _world(tmp_path: Path, *init_args: str) -> Iterator[World]:
    keys = Keys(tmp_path / "keys")
    repo_dir = tmp_path / "repo"
    assert cli("repo", "init", repo_dir, *init_args) == 0
    served = Served(repo_dir)
    try:
        client = (
            OurClient(served, tmp_path / "client")
            if (repo_dir / "metadata" / "1.root.json").exists()
            else None
        )
        yield World(repo_dir, keys, served, client, tmp_path)  # type: ignore[arg-type]
    finally:
        served.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A published repository: generated offline root/targets keys, online keys."""
    yield from _world(tmp_path)


def targets_key(world: World) -> str:
    return str(world.dir / "offline-keys" / "targets.pem")


def root_key(world: World) -> str:
    return str(world.dir / "offline-keys" / "root.pem")


# -- end to end ---------------------------------------------------------------------------


def test_init_layout_and_expiries(world: World) -> None:
    assert world.published() == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "timestamp.json",
    ]
    root = Metadata.from_bytes((world.dir / "metadata" / "1.root.json").read_bytes()).signed
    assert root.consistent_snapshot
    days = {}
    for role in ("root", "snapshot", "targets"):
        md = Metadata.from_bytes((world.dir / "metadata" / f"1.{role}.json").read_bytes())
        days[role] = round((md.signed.expires - datetime.datetime.now(datetime.UTC)).days, -1)
    ts = Metadata.from_bytes((world.dir / "metadata" / "timestamp.json").read_bytes())
    assert days == {"root": 360, "snapshot": 10, "targets": 90}
    assert ts.signed.expires - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=1)
    # online keys apart from offline keys; four distinct keys
    assert len({k for r in root.roles.values() for k in r.keyids}) == 4
    assert sorted(p.name for p in (world.dir / "online-keys").iterdir()) == [
        "snapshot.pem",
        "timestamp.pem",
    ]
    assert cli("repo", "init", world.dir) == 2  # never over an existing repository


def test_threshold_2_of_3_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = Keys(tmp_path / "keys")
    managers = ["rm1", "rm2", "rm3"]
    repo_dir = tmp_path / "repo"
    args = [a for m in managers for a in ("--targets-key", keys.pub(m))]
    assert cli("repo", "init", repo_dir, *args, "--targets-threshold", "2") == 0
    assert not (repo_dir / "metadata" / "timestamp.json").exists()  # targets v1 unsigned
    assert cli("repo", "sign", repo_dir, "targets", "--key", keys.priv("rm1")) == 0
    capsys.readouterr()
    assert cli("repo", "publish", repo_dir) == 1
    err = capsys.readouterr().err
    assert "targets v1" in err and "1 more of targets's keys" in err
    assert not any((repo_dir / "metadata").iterdir())
    assert cli("repo", "sign", repo_dir, "targets", "--key", keys.priv("rm2")) == 0
    assert cli("repo", "publish", repo_dir) == 0
    served = Served(repo_dir)
    try:
        client = OurClient(served, tmp_path)
        image = image_file(tmp_path / "fw.img", keys.make("release"), security_counter=9)
        add = ["repo", "add-target", repo_dir, image, "--name", NAME]
        assert cli(*add, "--trusted-key", keys.pub("release")) == 0  # type: ignore[arg-type]
        # one signature of two: refused, and clients see nothing new
        assert cli("repo", "sign", repo_dir, "--key", keys.priv("rm3")) == 0
        assert cli("repo", "publish", repo_dir) == 1
        with pytest.raises(LookupError):
            client.download(NAME)
        assert client.version("targets") == 1
        # a key that is not a targets key cannot make up the difference
        assert cli("repo", "sign", repo_dir, "targets", "--key", keys.priv("release")) == 1
        assert cli("repo", "publish", repo_dir) == 1
        assert cli("repo", "sign", repo_dir, "targets", "--key", keys.priv("rm1")) == 0
        assert cli("repo", "publish", repo_dir) == 0
        data, info = client.download(NAME)
        assert data == image.read_bytes()
        assert info.custom == {
            "format": "otaguard",
            "version": "1.4.0",
            "security_counter": 9,
            "hardware_ids": ["acme-ecu-v2"],
            "payload_kind": "full",
            "delta_base": None,
        }
        assert client.version("targets") == 2
    finally:
        served.close()


def test_python_tuf_ngclient_reads_our_repository(world: World, tmp_path: Path) -> None:
    from tuf.ngclient import Updater  # type: ignore[attr-defined]

    image = world.image()
    assert world.add(image) == 0
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    meta = tmp_path / "ngclient"
    meta.mkdir()
    updater = Updater(
        str(meta),
        world.served.metadata_url,
        str(tmp_path),
        world.served.targets_url,
        bootstrap=(world.dir / "metadata" / "1.root.json").read_bytes(),
    )
    updater.refresh()
    info = updater.get_targetinfo(NAME)
    assert info is not None and info.custom["version"] == "1.4.0"
    path = updater.download_target(info, str(tmp_path / "ng.img"))
    assert Path(path).read_bytes() == image.read_bytes()


def test_idle_publish_renews_only_timestamp(world: World) -> None:
    before = world.published()
    assert world.publish() == 0
    assert world.published() == before  # only timestamp.json changed, in place
    world.client.refresh()
    assert world.client.version("timestamp") == 2
    assert world.client.version("snapshot") == 1


def test_mcuboot_image_recorded(world: World) -> None:
    from helpers_mcuboot import sign_bytes

    key = world.keys.make("release")
    mcu = world.tmp / "mcu.bin"
    mcu.write_bytes(sign_bytes(b"\x01" * 4096, [key], world.tmp, version="2.1.0+7"))
    assert world.add(mcu, "us/mcu/2.1.0.bin") == 0
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    data, info = world.client.download("us/mcu/2.1.0.bin")
    assert data == mcu.read_bytes()
    assert info.custom["format"] == "mcuboot"
    assert info.custom["version"] == "2.1.0+7"


# -- refusals at the repository -------------------------------------------------------------


def test_add_target_refuses_unverifiable_images(world: World) -> None:
    other = world.image("other.img", key="intruder")
    assert world.add(other) == 1
    good = world.image().read_bytes()
    tampered = world.tmp / "tampered.img"
    tampered.write_bytes(good[:-200] + bytes([good[-200] ^ 1]) + good[-199:])
    assert world.add(tampered) == 1
    flipped = world.tmp / "flipped.img"
    flipped.write_bytes(good[:300] + bytes([good[300] ^ 1]) + good[301:])
    assert world.add(flipped) == 1
    garbage = world.tmp / "garbage.img"
    garbage.write_bytes(b"\0" * 100)
    assert world.add(garbage) == 1
    assert world.add(world.tmp / "fw.img", NAME, "--max-size", "100") == 2
    assert not (world.dir / "staged" / "targets.json").exists()
    assert [p for p in (world.dir / "targets").rglob("*") if p.is_file()] == []
    no_key = ["repo", "add-target", world.dir, world.tmp / "fw.img"]
    assert cli(*no_key) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "/abs.img", "a//b.img", "a/./b", "a/../b", ".hidden", "x" * 300, "a b"],
)
def test_add_target_refuses_hostile_names(world: World, name: str) -> None:
    assert world.add(world.image(), name) == 2
    assert not (world.dir / "staged" / "targets.json").exists()


def test_released_name_never_changes_bytes(world: World) -> None:
    assert world.add(world.image()) == 0
    assert world.add(world.image("v2.img", payload=b"other firmware")) == 1


def test_unsigned_or_forged_staged_role_never_goes_live(world: World) -> None:
    assert world.add(world.image()) == 0
    before = world.published()
    assert world.publish() == 1
    # a forged signature inserted into the staged file (right key id, wrong key)
    staged = world.dir / "staged" / "targets.json"
    assert world.sign("targets", "--key", targets_key(world)) == 0
    doc = json.loads(staged.read_bytes())
    sig = doc["signatures"][0]
    sig["sig"] = ("00" if sig["sig"][:2] != "00" else "11") + sig["sig"][2:]
    staged.write_text(json.dumps(doc))
    assert world.publish() == 1
    assert world.published() == before
    with pytest.raises(LookupError):
        world.client.download(NAME)
    staged.write_bytes(b"{not json")
    assert world.publish() == 1
    staged.write_bytes(b"x" * 10)
    assert cli("repo", "status", world.dir) == 1


def test_stale_staged_role_refused(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Two copies staged from the same base: the second one cannot roll the first back."""
    assert world.add(world.image()) == 0
    staged = world.dir / "staged" / "targets.json"
    base = staged.read_bytes()  # the other release manager's copy, before the first's edit
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    other = json.loads(base)
    other["signed"]["targets"] = {}  # the other manager's edit: same version, other content
    base = json.dumps(other).encode()
    staged.write_bytes(base)
    assert world.sign("--key", targets_key(world)) == 0  # signed, yet stale
    before = world.published()
    capsys.readouterr()
    assert world.publish() == 1
    assert "is stale" in capsys.readouterr().err
    assert json.loads(staged.read_bytes())["signed"] == other["signed"]  # kept, not lost
    assert world.published() == before


def test_publish_cut_short_leaves_no_wedge(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A publish that crashed after its timestamp, before clearing staged/, blocks nothing.

    The timestamp is publish's commit point; the staged files it leaves are exactly what
    was published. Status says so, the next edit starts from the published version + 1,
    and the next publish drops them (before, both were refused as stale until somebody
    deleted staged/ by hand).
    """
    assert world.add(world.image()) == 0
    assert world.sign("--key", targets_key(world)) == 0
    staged = world.dir / "staged" / "targets.json"
    left = staged.read_bytes()
    assert world.publish() == 0
    published = (world.dir / "metadata" / "2.targets.json").read_bytes()
    staged.write_bytes(left)  # what the crash between timestamp and unlink leaves
    capsys.readouterr()
    assert cli("repo", "status", world.dir) == 0
    assert "already published" in capsys.readouterr().out
    assert world.publish() == 0
    out = capsys.readouterr().out
    assert "dropped staged targets" in out and "no role changed" in out
    assert not staged.exists()
    assert (world.dir / "metadata" / "2.targets.json").read_bytes() == published
    # the next release starts from the published version, not from the leftover
    staged.write_bytes(left)
    assert world.add(world.image("other.img"), "eu/acme-ecu-v2/1.6.0.img") == 0
    assert json.loads(staged.read_bytes())["signed"]["version"] == 3
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    assert world.client.download("eu/acme-ecu-v2/1.6.0.img")
    assert world.client.download(NAME)


def test_remove_target_pulls_a_release(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    other = "eu/acme-ecu-v2/1.4.0.img"
    assert world.add(world.image()) == 0
    assert world.add(world.image("old.img"), other) == 0
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    assert world.client.download(NAME)
    capsys.readouterr()
    assert cli("repo", "remove-target", world.dir, NAME) == 0
    assert f"staged removal of {NAME} from targets" in capsys.readouterr().out
    assert world.publish() == 1  # unsigned: nothing goes live
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    fresh = OurClient(world.served, world.tmp / "fresh-client")
    with pytest.raises(LookupError):
        fresh.download(NAME)
    assert fresh.download(other)  # the other release stays
    # unknown or hostile names: a usage error, nothing staged
    assert cli("repo", "remove-target", world.dir, NAME) == 2
    assert cli("repo", "remove-target", world.dir, "../etc/passwd") == 2
    assert not (world.dir / "staged" / "targets.json").exists()


def test_usage_errors(world: World) -> None:
    d = world.dir
    pub = world.keys.pub("x")
    assert cli("repo", "delegate", d, "--hashed-bins", "1000", "--key", pub) == 2
    assert cli("repo", "delegate", d, "--name", "root", "--path", "x/*", "--key", pub) == 2
    assert cli("repo", "delegate", d, "--name", "eu", "--path", " ", "--key", pub) == 2
    assert cli("repo", "delegate", d, "--name", "eu", "--key", pub) == 2
    assert (
        cli(
            "repo",
            "delegate",
            d,
            "--name",
            "eu",
            "--path",
            "eu/*",
            "--key",
            pub,
            "--threshold",
            "2",
        )
        == 2
    )
    assert cli("repo", "sign", d, "targets", "--key", pub) == 2  # a public key cannot sign
    assert cli("repo", "sign", d, "nothing", "--key", world.keys.priv("x")) == 2
    assert cli("repo", "rotate", d, "root") == 2
    assert cli("repo", "rotate", d, "root", "--remove-key", "ab") == 2
    assert cli("repo", "rotate", d, "targets", "--threshold", "2") == 2
    assert cli("repo", "init", world.tmp / "new", "--expires", "root=0") == 2
    assert cli("repo", "init", world.tmp / "new", "--expires", "root") == 2
    assert cli("repo", "publish", world.tmp) == 2  # not a repository


# -- delegations --------------------------------------------------------------------------


def test_delegation_per_region(world: World) -> None:
    d = world.dir
    assert world.delegate("eu") == 0
    assert world.delegate("us") == 0
    assert world.publish() == 1  # targets, eu and us all unsigned
    assert world.sign("--key", targets_key(world), "--key", world.keys.priv("eu")) == 0
    assert world.publish() == 1  # us still unsigned: nothing goes live
    assert world.sign("--key", world.keys.priv("us")) == 0
    assert world.publish() == 0
    eu, us, other = (
        world.image("eu.img"),
        world.image("us.img", payload=b"us"),
        world.image("o.img", payload=b"o"),
    )
    assert world.add(eu, "eu/acme-ecu-v2/1.5.0.img") == 0
    assert world.add(us, "us/acme-ecu-v2/1.5.0.img") == 0
    assert world.add(other, "global/1.0.img") == 0
    assert world.add(eu, "eu/acme-ecu-v2/1.5.1.img", "--role", "us") == 2
    staged = sorted(p.name for p in (d / "staged").iterdir())
    assert staged == ["eu.json", "targets.json", "us.json"]
    # the eu key can only sign eu
    assert world.sign("us", "--key", world.keys.priv("eu")) == 1
    assert (
        world.sign(
            "--key",
            world.keys.priv("eu"),
            "--key",
            world.keys.priv("us"),
            "--key",
            targets_key(world),
        )
        == 0
    )
    assert world.publish() == 0
    for name, image in (
        ("eu/acme-ecu-v2/1.5.0.img", eu),
        ("us/acme-ecu-v2/1.5.0.img", us),
        ("global/1.0.img", other),
    ):
        assert world.client.download(name)[0] == image.read_bytes()
    repo = ImageRepository(d)
    assert "eu/acme-ecu-v2/1.5.0.img" in repo.published("eu").signed.targets  # type: ignore[union-attr]
    assert "us/acme-ecu-v2/1.5.0.img" in repo.published("us").signed.targets  # type: ignore[union-attr]
    assert world.client.version("eu") == 2


def test_compromised_region_key_cannot_serve_other_region(world: World) -> None:
    d = world.dir
    assert world.delegate("eu") == 0
    assert world.sign("--key", targets_key(world), "--key", world.keys.priv("eu")) == 0
    assert world.publish() == 0
    # the repository refuses to record a us/ image in eu
    assert world.add(world.image(), "us/x/1.img", "--role", "eu") == 2
    # and a client ignores eu metadata listing a us/ target (forged in the served file)
    from otaguard.repo.signing import load_repo_signer

    repo = ImageRepository(d)
    md = repo.editable("eu")
    from tuf.api.metadata import TargetFile

    md.signed.targets["us/x/1.img"] = TargetFile.from_data("us/x/1.img", b"evil", ["sha256"])
    md.sign(load_repo_signer(world.keys.priv("eu")))
    repo.stage("eu", md)
    assert world.publish() == 0
    with pytest.raises(LookupError):
        world.client.download("us/x/1.img")


def test_hashed_bins_route_and_fetch_only_their_bin(world: World) -> None:
    d = world.dir
    assert cli("repo", "delegate", d, "--hashed-bins", "16", "--key", world.keys.pub("bins")) == 0
    assert len(list((d / "staged").iterdir())) == 17
    assert world.sign("--key", targets_key(world), "--key", world.keys.priv("bins")) == 0
    assert world.publish() == 0
    succinct = SuccinctRoles([], 1, 4, "bins")
    names = [f"eu/ecu-{i}/1.0.img" for i in range(6)]
    for i, name in enumerate(names):
        assert world.add(world.image(f"{i}.img", payload=bytes([i]) * 100), name) == 0
    expected = {succinct.get_role_for_target(n) for n in names}
    staged = {p.name[:-5] for p in (d / "staged").iterdir()}
    assert staged == expected
    assert world.sign("--key", world.keys.priv("bins")) == 0
    assert world.publish() == 0
    world.served.requests.clear()
    data, _ = world.client.download(names[0])
    assert data == (world.tmp / "0.img").read_bytes()
    bins_fetched = [r for r in world.served.requests if "bins-" in r]
    assert bins_fetched == [f"/metadata/2.{succinct.get_role_for_target(names[0])}.json"]


# -- rotation -------------------------------------------------------------------------------


def test_root_rotation_with_threshold_change(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    d, k = world.dir, world.keys
    world.client.refresh()
    old_id = (
        Metadata.from_bytes((d / "metadata" / "1.root.json").read_bytes())
        .signed.roles["root"]
        .keyids[0]
    )
    rotate = [
        "repo",
        "rotate",
        d,
        "root",
        "--add-key",
        k.pub("r1"),
        "--add-key",
        k.pub("r2"),
        "--add-key",
        k.pub("r3"),
    ]
    rotate += ["--remove-key", old_id[:12], "--threshold", "2"]
    # the old root alone is not enough: the new root's threshold (2) must sign too
    assert cli(*rotate, "--key", root_key(world), "--key", k.priv("r1")) == 0  # type: ignore[arg-type]
    capsys.readouterr()
    assert world.publish() == 1
    assert "1 more of the new root's keys" in capsys.readouterr().err
    assert world.sign("root", "--key", k.priv("r2")) == 0
    assert world.publish() == 0
    world.client.refresh()
    assert world.client.version("root") == 2
    # root v3 needs 2 of the new keys; the retired key counts for nothing
    assert cli("repo", "rotate", d, "targets", "--add-key", k.pub("t2"), "--key", k.priv("r1")) == 0
    assert world.sign("root", "--key", root_key(world)) == 1
    assert world.publish() == 1
    assert world.sign("root", "--key", k.priv("r3")) == 0
    assert world.publish() == 0
    world.client.refresh()
    assert world.client.version("root") == 3


def test_fast_forward_recovery_after_timestamp_key_rotation(world: World) -> None:
    """A client that saw timestamp v5 signed by a leaked key follows the rotation."""
    d, k = world.dir, world.keys
    for _ in range(4):
        assert world.publish() == 0
    world.client.refresh()
    assert world.client.version("timestamp") == 5
    old_ts = Metadata.from_bytes((d / "metadata" / "timestamp.json").read_bytes())
    old_id = next(iter(old_ts.signatures))
    assert (
        cli(
            "repo",
            "rotate",
            d,
            "timestamp",
            "--add-key",
            k.pub("ts2"),
            "--remove-key",
            old_id,
            "--key",
            root_key(world),
        )
        == 0
    )
    assert world.publish() == 2  # the configured timestamp key is no longer root's
    assert world.publish("--timestamp-key", k.priv("ts2")) == 0
    world.client.refresh()
    assert world.client.version("root") == 2
    # the leaked key can no longer sign a timestamp the client accepts
    from otaguard.repo.signing import load_repo_signer

    leaked = load_repo_signer(str(d / "online-keys" / "timestamp.pem"))
    forged = Metadata.from_bytes((d / "metadata" / "timestamp.json").read_bytes())
    forged.signed.version += 10
    forged.signatures.clear()
    forged.sign(leaked)
    world.served.overrides["/metadata/timestamp.json"] = forged.to_bytes()
    with pytest.raises(exceptions.UnsignedMetadataError):
        world.client.refresh()


def test_hsm_root_key(tmp_path: Path, softhsm: dict[str, str]) -> None:
    from conftest import hsm_uri

    uri = hsm_uri(softhsm, "repo-root")
    assert cli("key", "generate", "--algorithm", "ecdsa-p256", "--out", uri) == 0
    repo_dir = tmp_path / "repo"
    assert cli("repo", "init", repo_dir, "--root-key", uri) == 0
    root = Metadata.from_bytes((repo_dir / "metadata" / "1.root.json").read_bytes())
    key = root.signed.get_key(root.signed.roles["root"].keyids[0])
    assert key.scheme == "ecdsa-sha2-nistp256"
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    served = Served(repo_dir)
    try:
        OurClient(served, tmp_path).refresh()
    finally:
        served.close()


@pytest.mark.parametrize("key_type", ["ECDSA_P384", "RSA_3072"])
def test_other_key_types_sign_metadata(tmp_path: Path, key_type: str) -> None:
    from otaguard.crypto.keys import KeyType

    keys = Keys(tmp_path / "keys")
    keys.make("root", KeyType[key_type])
    repo_dir = tmp_path / "repo"
    assert cli("repo", "init", repo_dir, "--root-key", keys.priv("root")) == 0
    served = Served(repo_dir)
    try:
        OurClient(served, tmp_path).refresh()
    finally:
        served.close()


# -- attacks through our client against our published repository ---------------------------


@pytest.fixture
def released(world: World) -> World:
    """Targets v2 with NAME, then targets v3 with a second release."""
    assert world.add(world.image()) == 0
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    assert world.add(world.image("v2.img", payload=b"v2" * 300), "eu/acme-ecu-v2/1.6.0.img") == 0
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 0
    world.client.refresh()
    return world


def test_rollback_to_older_timestamp_refused(released: World) -> None:
    old = released.dir / "old-timestamp.json"
    shutil.copy(released.dir / "metadata" / "timestamp.json", old)
    assert released.publish() == 0
    released.client.refresh()
    released.served.overrides["/metadata/timestamp.json"] = old.read_bytes()
    with pytest.raises(exceptions.BadVersionNumberError):
        released.client.refresh()
    assert released.client.version("timestamp") == 4


def test_freeze_refused(released: World) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    with pytest.raises(exceptions.ExpiredMetadataError):
        released.client.refresh(now=later)


def test_mix_and_match_refused(released: World) -> None:
    """A mirror serves targets v2 under v3's name (an older, validly signed set)."""
    meta = released.dir / "metadata"
    released.served.overrides["/metadata/3.targets.json"] = (meta / "2.targets.json").read_bytes()
    shutil.rmtree(released.client.metadata_dir)
    released.client.metadata_dir.mkdir()
    shutil.copy(meta / "1.root.json", released.client.metadata_dir / "root.json")
    with pytest.raises(exceptions.RepositoryError):
        released.client.download("eu/acme-ecu-v2/1.6.0.img")


def test_mirror_serving_other_bytes_refused(released: World) -> None:
    info = ImageRepository(released.dir).published("targets").signed.targets[NAME]  # type: ignore[union-attr]
    path = f"/targets/eu/acme-ecu-v2/{info.hashes['sha256']}.1.5.0.img"
    evil = released.image("evil.img", key="release", payload=b"evil" * 75)
    released.served.overrides[path] = evil.read_bytes()  # validly signed image, other bytes
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        released.client.download(NAME)
    assert not any(released.client.target_dir.iterdir())


def test_arbitrary_installation_refused(released: World) -> None:
    """An attacker drops a file into targets/ (and even a signed image): not in metadata."""
    evil = released.image("evil.img", key="release", payload=b"evil")
    dest = released.dir / "targets" / "eu" / "acme-ecu-v2" / "0000.9.9.9.img"
    shutil.copy(evil, dest)
    with pytest.raises(LookupError):
        released.client.download("eu/acme-ecu-v2/9.9.9.img")
    with pytest.raises(LookupError):
        released.client.download("../../metadata/1.root.json")


def test_endless_target_capped(released: World) -> None:
    info = ImageRepository(released.dir).published("targets").signed.targets[NAME]  # type: ignore[union-attr]
    path = f"/targets/eu/acme-ecu-v2/{info.hashes['sha256']}.1.5.0.img"
    released.served.overrides[path] = released.image().read_bytes() + b"\0" * 100_000
    with pytest.raises(FetchError):
        released.client.download(NAME)


def test_snapshot_too_big_for_clients_refused(world: World) -> None:
    from tuf.api.metadata import TargetFile

    repo = ImageRepository(world.dir)
    infos = [
        TargetFile(1, {"sha256": f"{i:064x}"}, f"bulk/{i:06d}.img", {"custom": {"pad": "x" * 200}})
        for i in range(20_000)
    ]
    repo.add_targets(infos)
    assert world.sign("--key", targets_key(world)) == 0
    assert world.publish() == 1


def test_client_error_is_reported(world: World) -> None:
    shutil.rmtree(world.client.metadata_dir)
    world.client.metadata_dir.mkdir()
    with pytest.raises(TufClientError):
        world.client.refresh()


def test_region_delegating_to_hashed_bins(world: World) -> None:
    d = world.dir
    assert world.delegate("eu") == 0
    assert world.sign("--key", targets_key(world), "--key", world.keys.priv("eu")) == 0
    assert world.publish() == 0
    bins = ["repo", "delegate", d, "--delegator", "eu", "--hashed-bins", "4"]
    assert cli(*bins, "--key", world.keys.pub("bins")) == 0  # type: ignore[arg-type]
    assert world.sign("--key", world.keys.priv("eu"), "--key", world.keys.priv("bins")) == 0
    assert world.publish() == 0
    assert world.add(world.image()) == 0
    expected = SuccinctRoles([], 1, 2, "bins").get_role_for_target(NAME)
    assert [p.name for p in (d / "staged").iterdir()] == [f"{expected}.json"]
    assert world.sign("--key", world.keys.priv("bins")) == 0
    assert world.publish() == 0
    assert world.client.download(NAME)[0] == (world.tmp / "fw.img").read_bytes()
    assert world.client.version(expected) == 2
