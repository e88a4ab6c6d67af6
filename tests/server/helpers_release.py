"""An offline release managers' repository (`otaguard repo`, through the real CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata

from helpers import make_image
from otaguard.crypto.signer import KeySigner
from otaguard.repo.layout import Layout, to_bytes
from otaguard.repo.signing import RepoSigner
from otaguard.server.client import FleetClient
from otaguard.server.release_upload import collect, mark_published
from repo.helpers_repository import Keys, cli

HW = "acme-ecu-v2"


@dataclass
class OfflineRepo:
    dir: Path
    keys: Keys
    tmp: Path

    @classmethod
    def init(
        cls, tmp: Path, online_keys: Path | None, *extra: str, targets_keys: int = 1
    ) -> OfflineRepo:
        keys = Keys(tmp / "offline-keys")
        repo = cls(tmp / "rel", keys, tmp)
        args = ["repo", "init", repo.dir, "--root-key", keys.priv("root")]
        for i in range(targets_keys):
            args += ["--targets-key", keys.pub(f"targets{i}")]
        if online_keys is not None:
            args += [
                "--snapshot-key", str(online_keys / "snapshot.pub"),
                "--timestamp-key", str(online_keys / "timestamp.pub"),
            ]  # fmt: skip
        assert cli(*args, *extra) == 0  # type: ignore[arg-type]
        return repo

    def image(self, name: str, payload: bytes, *, version: str = "1.0.0", counter: int = 1) -> Path:
        path = self.tmp / name.replace("/", "_")
        path.write_bytes(
            make_image(
                payload, [self.keys.make("release")], version=version, security_counter=counter
            )
        )
        return path

    def add(self, name: str, payload: bytes, *, replaces: Sequence[str] = (), **kw: Any) -> Path:
        """Add a target; ``replaces``: the versions it declares it may replace."""
        image = self.image(name, payload, **kw)
        declared = [a for v in replaces for a in ("--compatible-with", v)]
        code = cli(
            "repo", "add-target", self.dir, image, "--name", name,
            "--trusted-key", self.keys.pub("release"), *declared,
        )  # fmt: skip
        assert code == 0
        return image

    def sign(self, *names: str) -> None:
        args = []
        for name in names or ("root", "targets0"):
            args += ["--key", self.keys.priv(name)]
        assert cli("repo", "sign", self.dir, *args) in (0, 1)

    def staged(self, role: str) -> Metadata[Any]:
        layout = Layout(self.dir)
        return layout.load(layout.staged_path(role), role)

    def restage(self, role: str, md: Metadata[Any], *signers: str) -> None:
        """Replace a staged role (after a test edited it), signed by ``signers``."""
        md.signatures.clear()
        for name in signers:
            md.sign(RepoSigner(KeySigner(self.keys.make(name))), append=True)
        layout = Layout(self.dir)
        layout.write(layout.staged_path(role), md)

    def upload(self, client: FleetClient, *, images: bool = True) -> dict[str, Any]:
        release = collect(self.dir)
        if images:
            for sha256, (path, _) in release.images.items():
                client.upload_artifact(sha256, path)
        answer = client.upload_release(
            [release.roots[v] for v in sorted(release.roots)], release.roles
        )
        mark_published(self.dir, release, client.repo_file)
        return answer


def metadata_bytes(md: Metadata[Any]) -> bytes:
    return to_bytes(md)
