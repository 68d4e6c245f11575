"""Remote stores on a real S3 API on loopback (moto in server mode): build, publish, verify, read back
through the trainer's reader, count the HTTP requests per subject, and fail clearly when unreachable."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

from kspace_sim.store import remote  # noqa: E402
from kspace_sim.sharing.manifest import PublishOptions, ReadOptions, publish  # noqa: E402
from kspace_sim.sharing.verify import verify  # noqa: E402
from kspace_sim.simulate import MaskSpec, SimulationParams  # noqa: E402
from synthetic_subjects import write_cohort  # noqa: E402

EIDS = ["5000001", "5000002"]
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class _RequestLog(logging.Handler):
    """Collects the werkzeug access-log lines of the moto server: one line per HTTP request."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def requests(self) -> list[str]:
        return [m.group(1) for line in self.lines if (m := re.search(r'"(?:\x1b\[[0-9;]*m)?([A-Z]+ \S+) HTTP', line))]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    log = _RequestLog()
    wlog = logging.getLogger("werkzeug")
    wlog.addHandler(log)
    wlog.setLevel(logging.INFO)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="kspace")
    try:
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}, log
    finally:
        server.stop()
        wlog.removeHandler(log)
        mp.undo()


def test_build_publish_verify_and_read_on_s3(s3, tmp_path):
    import kspace_sim.build as build

    so, log = s3
    # the build consolidates through layout.consolidate (which passes the storage options on to
    # remote.consolidate_any): the real path, no stand-in
    cohort = write_cohort(tmp_path / "cohort", EIDS)
    url = "s3://kspace/demo/s.zarr"
    rep = build.build_store(
        build.BuildConfig(input_dir=str(cohort), out=url, masks=[MaskSpec("gaussian", 4)],
                          params=SimulationParams(crop=32, frames=10), seed=4, workers=0, progress=False,
                          storage_options=so)
    )
    assert rep.done == 2 and not rep.failed
    mpath = tmp_path / "manifests" / "s3.json"
    doc, _ = publish(url, mpath, PublishOptions(name="s3", version="1.0.0"), ReadOptions(so))
    assert doc["distribution"][0]["contentUrl"] == url
    result = verify(str(mpath), ReadOptions(so, workers=2))
    assert result.ok, [str(p) for p in result.problems]
    assert result.checked_subjects == 2

    from kmtr import store as kmtr_store

    log.lines.clear()
    group = kmtr_store.open_store(url, storage_options=so)
    info = kmtr_store.read_store_info(group, url)
    opened = log.requests()
    assert info.n == 2 and info.masks == ("gaussian_r4",)
    per_subject = []
    for row in range(info.n):
        log.lines.clear()
        k = group["kspace"][row]
        seg = group["seg"][row]
        mask = group["masks/gaussian_r4"][row]
        per_subject.append(log.requests())
        assert k.shape == (9, 10, 32, 32) and seg.dtype == np.uint8 and mask.shape == (9, 10, 32)
    print(f"\nopen + store info: {len(opened)} HTTP requests: {opened}")
    for row, reqs in enumerate(per_subject):
        print(f"subject row {row} (kspace + seg + mask rows): {len(reqs)} HTTP requests: {reqs}")
    # consolidated metadata: no per-array metadata reads; one shard object per array and subject
    assert not any("zarr.json" in r for reqs in per_subject for r in reqs)
    assert all(len(reqs) <= 6 for reqs in per_subject), per_subject
    counting = remote.CountingStore(remote.zarr_store(url, so))
    g = zarr.open_group(counting, mode="r")
    counting.reset()
    g["kspace"][1]
    assert counting.total == 1, dict(counting.counts)  # one GET of the whole shard


def test_copy_local_store_to_s3(s3, tmp_path):
    from kspace_sim.build import BuildConfig, build_store

    so, _ = s3
    cohort = write_cohort(tmp_path / "cohort", EIDS[:1])
    local = tmp_path / "local.zarr"
    build_store(BuildConfig(input_dir=str(cohort), out=str(local), masks=[MaskSpec("gaussian", 4)],
                            params=SimulationParams(crop=32, frames=10), workers=0, progress=False))
    n = remote.copy_store(str(local), "s3://kspace/copied.zarr", so)
    assert n > 10
    assert verify("s3://kspace/copied.zarr", ReadOptions(so)).ok


def test_unreachable_and_credentialless_urls_fail_clearly(s3, monkeypatch, tmp_path):
    from cli.kspace_sim_app import app
    from cli.sharing_cmds import register

    so, _ = s3
    with pytest.raises(remote.RemoteError, match="cannot reach s3://kspace/x.zarr"):
        remote.check_remote("s3://kspace/x.zarr", {"endpoint_url": "http://127.0.0.1:9", "key": "a", "secret": "b"})
    with pytest.raises(remote.RemoteError, match="no store at s3://kspace/missing.zarr"):
        remote.check_remote("s3://kspace/missing.zarr", so)
    for k in CREDS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(remote.RemoteError, match="no credentials"):
        remote.check_remote("s3://kspace/demo/s.zarr", {"endpoint_url": so["endpoint_url"]})
    if "verify" not in {c.name for c in app.registered_commands}:
        register(app)
    r = CliRunner().invoke(
        app, ["verify", "s3://kspace/x.zarr", "--storage-options", '{"endpoint_url": "http://127.0.0.1:9", "key": "a", "secret": "b"}']
    )
    assert r.exit_code == 2 and "cannot reach" in r.output and "Traceback" not in r.output
