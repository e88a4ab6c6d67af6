"""``repo/client.py`` as a library: the trust anchor's installation and named downloads.

What ``tuf-client init`` and ``download`` call; the server and the agent call the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.exceptions import RepositoryError

from otaguard.repo.client import ClientRefusal, TufClient, install_trusted_root
from otaguard.repo.fetcher import HttpxFetcher
from otaguard.repo.trust import ROOT_MAX_LENGTH


def test_install_trusted_root_writes_the_root_byte_for_byte(repo, tmp_path: Path) -> None:
    source = tmp_path / "root.json"
    source.write_bytes(repo.initial_root)
    install_trusted_root(tmp_path / "md" / "nested", source)
    assert (tmp_path / "md" / "nested" / "root.json").read_bytes() == repo.initial_root


def test_install_trusted_root_refuses_an_oversized_file_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (ROOT_MAX_LENGTH + 1))
    with pytest.raises(ClientRefusal, match=f"larger than {ROOT_MAX_LENGTH} bytes"):
        install_trusted_root(tmp_path / "md", big)
    assert not (tmp_path / "md").exists()


def test_install_trusted_root_refuses_a_root_not_signed_by_itself(repo, tmp_path: Path) -> None:
    md = tmp_path / "md"
    good = tmp_path / "good.json"
    good.write_bytes(repo.initial_root)
    install_trusted_root(md, good)
    forged = tmp_path / "forged.json"
    forged.write_bytes(repo.sign("root", signers=[]))
    with pytest.raises(RepositoryError):
        install_trusted_root(md, forged)
    assert (md / "root.json").read_bytes() == repo.initial_root


def test_download_targets_in_order_and_refuses_an_unlisted_name(repo, tmp_path: Path) -> None:
    repo.add_target("a.bin", b"A" * 10)
    repo.add_target("b.bin", b"B" * 20)
    repo.publish()
    root = tmp_path / "root.json"
    root.write_bytes(repo.initial_root)
    md, targets = tmp_path / "md", tmp_path / "targets"
    install_trusted_root(md, root)
    targets.mkdir()
    with HttpxFetcher() as fetcher:
        client = TufClient(md, repo.metadata_url, fetcher)
        got = client.download_targets(["b.bin", "missing.bin", "a.bin"], repo.targets_url, targets)
        name, path = next(got)
        assert name == "b.bin" and path.read_bytes() == b"B" * 20
        with pytest.raises(ClientRefusal, match=r"target 'missing\.bin' is not in the repository"):
            next(got)
    assert not (targets / "a.bin").exists()  # stopped at the first failure
