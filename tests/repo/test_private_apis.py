"""The private APIs of python-tuf and httpx that otaguard relies on are still what it expects.

If an upgrade of tuf or httpx changes them, these tests fail by name, before any client
in the field silently changes behaviour (see ``otaguard.repo.tuf_adapter`` and
``otaguard.repo.fetcher._DeadlineTransport``).
"""

from __future__ import annotations

import datetime
import inspect

import httpcore
import httpx
import pytest
from tuf.api import exceptions

from otaguard.repo import fetcher, tuf_adapter


@pytest.mark.parametrize("name", sorted(tuf_adapter.USED_API))
def test_trusted_metadata_set_methods_we_call(name: str) -> None:
    method = getattr(tuf_adapter.TrustedMetadataSet, name, None)
    assert callable(method), f"python-tuf's TrustedMetadataSet has no {name} any more"
    params = tuple(inspect.signature(method).parameters)
    assert params == tuf_adapter.USED_API[name], f"TrustedMetadataSet.{name}{params} changed"


def test_trusted_metadata_set_properties_we_read() -> None:
    for name in tuf_adapter.USED_PROPERTIES:
        member = inspect.getattr_static(tuf_adapter.TrustedMetadataSet, name, None)
        assert isinstance(member, property), f"TrustedMetadataSet.{name} is no longer a property"


def test_reference_time_still_decides_expiry(repo) -> None:
    """Setting ``reference_time`` is how the engine gets its explicit time: it must still work."""
    timestamp = (repo.meta_dir / "timestamp.json").read_bytes()
    now = datetime.datetime.now(datetime.UTC)
    assert tuf_adapter.trusted_set(repo.initial_root, now).update_timestamp(timestamp)
    later = tuf_adapter.trusted_set(repo.initial_root, now + datetime.timedelta(days=2))
    assert later.reference_time == now + datetime.timedelta(days=2)
    with pytest.raises(exceptions.ExpiredMetadataError):
        later.update_timestamp(timestamp)


def test_only_the_adapter_imports_tuf_internals() -> None:
    from pathlib import Path

    import otaguard

    src = Path(otaguard.__file__).parent
    users = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if "tuf.ngclient._internal" in p.read_text()
    ]
    assert users == ["repo/tuf_adapter.py"]


def test_httpx_transport_still_keeps_its_pool_where_we_replace_it() -> None:
    """httpx 0.28 has no parameter for httpcore's network backend; we swap its ``_pool``."""
    plain = httpx.HTTPTransport()
    assert isinstance(plain._pool, httpcore.ConnectionPool), "httpx.HTTPTransport._pool moved"
    ours = fetcher._DeadlineTransport()
    assert isinstance(ours._pool, httpcore.ConnectionPool)
    assert isinstance(ours._pool._network_backend, fetcher._DeadlineBackend)
    assert "self._pool.handle_request" in inspect.getsource(httpx.HTTPTransport.handle_request)
