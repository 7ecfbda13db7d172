"""m3leo_hf.stream against shards from the real builder: joined values, transforms, missing chips,
corrupt shards, retries, HTTP roots, in-process resume."""

from __future__ import annotations

import email.message
import email.utils
import functools
import http.server
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import HfApi

import m3leo_hf
from m3leo_hf import http_get, prefetch
from m3leo_hf.ranged import read_range
from local_hub import TEST_TOKEN, LocalHub
from m3leo_hf import reader
from m3leo_hf.transforms import IGNORE_INDEX
from shard_tools.build import build
from tests.conftest import canonical

MODALITIES = ("s1grd", "s2rgbm", "esaworldcover")  # aliases: stream keys; folders are canonical(name)
S1GRD, ESAWC = canonical("s1grd"), canonical("esaworldcover")
REGIONS = ("conus", "europe", "pakin")


@pytest.fixture(scope="session")
def stream_shards(sample_chips, tmp_path_factory) -> Path:
    """Three regions, two samples per shard (so sub-shard reads seek), s2rgbm missing for some chips."""
    out = tmp_path_factory.mktemp("stream_shards")
    build(sample_chips, out, modalities=MODALITIES, chips_per_shard=2)
    return out


def roots(out: Path, regions=REGIONS) -> list[str]:
    return [str(out / r) for r in regions]


def chips(out: Path, split: str, regions=REGIONS, require=()) -> set[str]:
    """Chip ids of ``split`` (having every modality in ``require``), from the published Parquet."""
    found = set()
    for region in regions:
        rows = pq.read_table(out / region / "metadata" / f"{S1GRD}.parquet", columns=["chip_id", "split"]).to_pylist()
        ids = {r["chip_id"] for r in rows if r["split"] == split}
        for modality in require:
            table = pq.read_table(out / region / "metadata" / f"{canonical(modality)}.parquet",
                                  columns=["chip_id", "available"])
            ids &= {r["chip_id"] for r in table.to_pylist() if r["available"]}
        found |= ids
    return found


@functools.cache
def source(region_dir: Path, modality: str) -> dict[str, dict]:
    """Every sample of a region's modality (name or alias) read straight from its tars:
    {chip: {field: array, "json": dict}}."""
    out: dict[str, dict] = {}
    for path in sorted((region_dir / canonical(modality)).glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member).read()
                value = json.loads(data) if ext == "json" else np.load(io.BytesIO(data), allow_pickle=False)
                out.setdefault(key, {})[ext.removesuffix(".npy")] = value
    return out


def test_joined_samples_equal_source_arrays(stream_shards):
    data = m3leo_hf.stream(roots(stream_shards), modalities=MODALITIES, labels=False, shuffle=False)
    seen = []
    for sample in data:
        seen.append(sample["chip_id"])
        region = stream_shards / sample["region"]
        for modality in MODALITIES:
            raw = source(region, modality)[sample["chip_id"]]
            assert sample[f"{modality}_available"] == raw["json"]["available"]
            assert sample["meta"][modality] == raw["json"]
            if raw["json"]["available"]:
                expected = raw[modality].view(raw["json"]["fields"][modality].get("view_as") or raw[modality].dtype)
                assert sample[modality].numpy().dtype == expected.dtype
                np.testing.assert_array_equal(sample[modality].numpy(), expected)
    assert sorted(seen) == sorted(chips(stream_shards, "train"))
    assert data.state_dict()["epoch"] == 1


def test_normalize_bands_labels_and_spatial_size(stream_shards):
    region = stream_shards / "conus"
    bands = ["winter_vvdes", "fall_vhasc"]
    data = m3leo_hf.stream(str(region), modalities=["s1grd", "esaworldcover"], split="val", normalize=True,
                           bands={"s1grd": bands}, spatial_size=30)
    stats = json.loads((region / "metadata" / f"{S1GRD}.stats.json").read_text())["splits"]["train"]["s1grd"]
    for sample in data:
        raw = source(region, "s1grd")[sample["chip_id"]]["s1grd"]
        pick = [stats["band_names"].index(b) for b in bands]
        values = raw.view(np.int16)[pick].astype(np.float32)
        mean = np.array(stats["mean"], dtype=np.float32)[pick, None, None]
        std = np.array(stats["std"], dtype=np.float32)[pick, None, None]
        expected = np.where(raw[pick] == 0, 0.0, (values - mean) / std)
        h, w = raw.shape[1:]
        top, left = (h - 30) // 2, (w - 30) // 2
        window = (slice(None), slice(max(top, 0), max(top, 0) + min(h, 30)), slice(max(left, 0), max(left, 0) + min(w, 30)))
        got = sample["s1grd"].numpy()
        assert got.shape == (2, 30, 30) and got.dtype == np.float32
        inner = got[:, max(-top, 0):max(-top, 0) + min(h, 30), max(-left, 0):max(-left, 0) + min(w, 30)]
        np.testing.assert_allclose(inner, expected[window], rtol=1e-5, atol=1e-5)

        codes = source(region, "esaworldcover")[sample["chip_id"]]["esaworldcover"][0]
        label = sample["esaworldcover"]["label"].numpy()
        assert label.shape == (30, 30) and label.dtype == np.int64
        h, w = codes.shape
        top, left = max((h - 30) // 2, 0), max((w - 30) // 2, 0)
        inner = label[max((30 - h) // 2, 0):, max((30 - w) // 2, 0):][:min(h, 30), :min(w, 30)]
        crop = codes[top:top + 30, left:left + 30]
        codebook = {c: i for i, c in enumerate((10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100))}
        np.testing.assert_array_equal(inner, np.vectorize(lambda c: codebook.get(int(c), IGNORE_INDEX))(crop))
        present = sorted(set(np.unique(label).tolist()) - {IGNORE_INDEX})
        assert np.flatnonzero(sample["esaworldcover"]["presence"].numpy()).tolist() == present


def test_missing_modality_mask_and_skip(stream_shards):
    every = chips(stream_shards, "train")
    complete = chips(stream_shards, "train", require=MODALITIES)
    lacking = every - complete
    assert lacking, "the sample tree should have a train chip without s2rgbm"
    masked = {s["chip_id"]: s for s in m3leo_hf.stream(roots(stream_shards), modalities=MODALITIES, normalize=True,
                                                         spatial_size=32, shuffle=False)}
    assert set(masked) == every
    for chip in lacking:
        assert not masked[chip]["s2rgbm_available"] and masked[chip]["s1grd_available"]
        assert masked[chip]["s2rgbm"].shape == (36, 32, 32) and not masked[chip]["s2rgbm"].any()
    skipped = [s["chip_id"] for s in m3leo_hf.stream(roots(stream_shards), modalities=MODALITIES, missing="skip")]
    assert sorted(skipped) == sorted(complete)


def test_ragged_batches_need_spatial_size(stream_shards):
    with pytest.raises(ValueError, match=r"cannot batch 's1grd': shapes differ .*spatial_size"):
        list(m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], batch_size=18, drop_last=False))
    batches = list(m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], batch_size=18, drop_last=False,
                                   spatial_size=(31, 33)))
    assert batches[0]["s1grd"].shape == (18, 16, 31, 33) and batches[0]["s1grd_available"].all()


def corrupted(tmp_path: Path, shards: Path, damage) -> str:
    region = tmp_path / "conus"
    shutil.copytree(shards / "conus", region)
    damage(region)
    return str(region)


def flip(path: Path, offset: int, count: int = 8) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(255 - b for b in data[offset:offset + count])
    path.write_bytes(bytes(data))


def row(region: Path, shard: str, sample: int) -> dict:
    rows = pq.read_table(region / "metadata" / f"{S1GRD}.parquet").to_pylist()
    return next(r for r in rows if r["shard"] == f"{S1GRD}/{shard}" and r["sample_index"] == sample)


def npy_member(region: Path) -> int:
    return next(m["offset"] for m in row(region, "train-000001.tar", 1)["members"] if m["name"] == "s1grd.npy")


DAMAGES = [
    (lambda r: (r / S1GRD / "train-000001.tar").write_bytes((r / S1GRD / "train-000001.tar").read_bytes()[:30000]),
     r"train-000001\.tar: .*(unexpected end|truncated)", False),
    (lambda r: flip(r / S1GRD / "train-000001.tar", row(r, "train-000001.tar", 1)["offset"] + 100),
     r"train-000001\.tar: .*(sample 1|invalid header)", False),
    (lambda r: flip(r / S1GRD / "train-000001.tar", npy_member(r)),
     r"train-000001\.tar: member [0-9a-f]{13}\.s1grd\.npy is not a valid \.npy", False),
    (lambda r: flip(r / S1GRD / "train-000001.tar", npy_member(r) + 500, 1),
     r"train-000001\.tar: sha256 .* does not match the index", True),
    (lambda r: shutil.copy(r / ESAWC / "train-000002.tar", r / ESAWC / "train-000001.tar"),
     rf"{ESAWC}/train-000001\.tar: sample 0 is '[0-9a-f]+', the index says", False),
]


@pytest.mark.parametrize("damage,message,verify", DAMAGES)
def test_corrupt_shard_is_a_clear_error(tmp_path, stream_shards, damage, message, verify):
    region = corrupted(tmp_path, stream_shards, damage)
    data = m3leo_hf.stream(region, modalities=["s1grd", "esaworldcover"], shuffle=False, verify_checksums=verify)
    with pytest.raises(m3leo_hf.ShardError, match=message):
        list(data)


def test_transient_errors_are_retried(stream_shards, monkeypatch):
    monkeypatch.setattr(reader, "BACKOFF_S", 0.0)
    expected = [s["chip_id"] for s in m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], shuffle=False)]
    opened = reader.open_source
    failures: dict[str, int] = {}

    class Flaky:
        def __init__(self, stream, url):
            self.stream, self.url = stream, url

        def read(self, n=-1):
            if failures.setdefault(self.url, 0) < limit:
                failures[self.url] += 1
                raise ConnectionResetError("connection reset by peer")
            return self.stream.read(n)

        def close(self):
            self.stream.close()

    monkeypatch.setattr(reader, "open_source", lambda url, offset=0, options=None: Flaky(opened(url, offset), url))
    limit = 2
    got = [s["chip_id"] for s in m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], shuffle=False,
                                                   retries=2)]
    assert got == expected and set(failures.values()) == {2}
    limit, failures = 3, {}
    with pytest.raises(OSError, match=r"read failed at byte 0 after 3 attempt\(s\): connection reset"):
        m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], retries=2)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; with ``ranges``, answers ``Range: bytes=N-`` with 206 (the stdlib server ignores it)."""

    ranges = False
    ranged: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not (self.ranges and match and path.is_file()):
            return super().do_GET()
        end = int(match.group(2)) + 1 if match.group(2) else None  # open-ended, or bounded as HTTP allows
        data = path.read_bytes()[int(match.group(1)):end]
        self.ranged.append(self.path)
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(folder: Path, ranges: bool = True) -> tuple[http.server.ThreadingHTTPServer, type]:
    handler = type("H", (Handler,), {"ranges": ranges, "ranged": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.mark.parametrize("damage,message,verify", DAMAGES)
def test_corrupt_shard_over_http_is_the_same_clear_error(tmp_path, stream_shards, damage, message, verify):
    """Remote roots read by prefetched chunks (or whole streamed shards when verifying) check what local reads do."""
    region = corrupted(tmp_path, stream_shards, damage)
    server, _ = serve(tmp_path)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/conus"
        data = m3leo_hf.stream(url, modalities=["s1grd", "esaworldcover"], shuffle=False, verify_checksums=verify)
        with pytest.raises(m3leo_hf.ShardError, match=message.replace("unexpected end", "unexpected end|source ends")):
            list(data)
    finally:
        server.shutdown()


@pytest.mark.parametrize("ranges, chunk", [(False, None), (True, None), (True, 1)])
def test_http_root_streams_like_local(stream_shards, ranges, chunk, monkeypatch):
    if chunk is not None:  # one sample a request, one request ahead: the prefetch order and its bounds
        monkeypatch.setattr(prefetch, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(prefetch, "AHEAD_BYTES", chunk)
    server, handler = serve(stream_shards, ranges)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        options = dict(modalities=["s1grd", "s2rgbm"], seed=3, batch_size=2, shuffle_buffer=3, spatial_size=32)
        remote = m3leo_hf.stream([f"{base}/{r}" for r in REGIONS], **options)
        local = m3leo_hf.stream(roots(stream_shards), **options)
        remote.load_state_dict({"epoch": 0, "batches": 3})  # starts mid-shard: ranged GET, or stream-and-skip
        local.load_state_dict({"epoch": 0, "batches": 3})
        for a, b in zip(remote, local, strict=True):
            assert a["chip_id"] == b["chip_id"]
            assert torch.equal(a["s1grd"], b["s1grd"]) and torch.equal(a["s2rgbm"], b["s2rgbm"])
        assert bool(handler.ranged) == ranges
    finally:
        server.shutdown()


def same(a, b) -> bool:
    """Equal nested samples: tensors by value, the rest by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_samples_kept_from_a_remote_stream_keep_their_values(stream_shards):
    """Unbatched remote samples are views of recycled receive buffers: kept over two epochs (the second
    reading into buffers the first let go of), they still equal the local ones."""
    from m3leo_hf import receive_buffers

    server, _ = serve(stream_shards)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        options = dict(modalities=["s1grd", "esaworldcover"], seed=2)
        remote = m3leo_hf.stream([f"{base}/{r}" for r in REGIONS], **options)
        local = m3leo_hf.stream(roots(stream_shards), **options)
        kept = []
        for epoch in range(2):
            remote.set_epoch(epoch)
            local.set_epoch(epoch)
            kept += list(zip(remote, local, strict=True))
            if epoch == 0:
                assert sum(1 for _ in remote)  # a pass let go of at once: its buffers are free for epoch 1
                assert receive_buffers._POOL.free() > 0
        assert kept and all(same(a, b) for a, b in kept)
    finally:
        server.shutdown()


def test_http_root_with_persistent_workers_over_epochs_and_a_resume(stream_shards):
    """Workers start the next epoch's requests at the end of one: used when the next iteration starts there,
    dropped when it does not (a resumed position), and the batches are the local ones either way."""
    server, _ = serve(stream_shards)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        options = dict(modalities=["s1grd", "esaworldcover"], batch_size=2, spatial_size=32, seed=5)

        def epochs(roots_: list[str], count: int, resume: dict | None = None) -> list[list[str]]:
            loader = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots_, **options), num_workers=2,
                                             persistent_workers=True)
            if resume:
                loader.load_state_dict(resume)
            return [[c for batch in loader for c in batch["chip_id"]] for _ in range(count)]

        local = epochs(roots(stream_shards), 4)
        assert epochs([f"{base}/{r}" for r in REGIONS], 3) == local[:3]
        state = {"epoch": 1, "batches": 1, "seed": 5, "world_size": 1, "batch_size": 2, "num_workers": 2}
        resumed = epochs([f"{base}/{r}" for r in REGIONS], 3, resume=state)
        assert resumed == [local[1][2:], local[2], local[3]]
        loader = m3leo_hf.StatefulLoader(m3leo_hf.stream([f"{base}/{r}" for r in REGIONS], **options), num_workers=2,
                                         persistent_workers=True)
        assert [c for batch in loader for c in batch["chip_id"]] == local[0]  # workers now read epoch 1 ahead
        loader.load_state_dict({**state, "epoch": 2})  # not epoch 1's start: those reads are dropped
        assert [c for batch in loader for c in batch["chip_id"]] == local[2][2:]
    finally:
        server.shutdown()


def test_hub_roots_https_resolve_and_hf(stream_shards, local_hub: LocalHub):
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset")
    api.upload_folder(folder_path=str(stream_shards / "conus"), repo_id="m3leo/conus", repo_type="dataset")
    options = dict(modalities=["s1grd", "s2rgbm"], seed=3, batch_size=2, spatial_size=32)
    local = [b["chip_id"] for b in m3leo_hf.stream(str(stream_shards / "conus"), **options)]
    https = m3leo_hf.stream(f"{local_hub.url}/datasets/m3leo/conus/resolve/main", verify_checksums=True, **options)
    assert [b["chip_id"] for b in https] == local and https.regions[0].region == "conus"
    hf = m3leo_hf.stream("hf://datasets/m3leo/conus", storage_options={"endpoint": local_hub.url}, **options)
    hf.load_state_dict({"epoch": 0, "batches": 1})
    assert [b["chip_id"] for b in hf] == local[1:]



def test_private_hub_repo_reads_by_https_and_hf_with_the_token(stream_shards, local_hub: LocalHub):
    """A private repo answers anonymous reads 401, an error that says what to do. An https root at the Hub's
    endpoint carries the token, as ``datasets`` sends it (``storage_options`` ``token``, or explicit
    ``headers``), and so does ``hf://``; the CDN refuses any request that carries it, so equal batches also
    show it stayed on the Hub."""
    http_get.forget_locations()
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset", private=True)
    api.upload_folder(folder_path=str(stream_shards / "conus"), repo_id="m3leo/conus", repo_type="dataset")
    assert api.repo_info("m3leo/conus", repo_type="dataset").private
    options = dict(modalities=["s1grd", "esaworldcover"], seed=3, batch_size=2, spatial_size=32)
    local = [b["chip_id"] for b in m3leo_hf.stream(str(stream_shards / "conus"), **options)]
    https = f"{local_hub.url}/datasets/m3leo/conus/resolve/main"
    for root in (https, "hf://datasets/m3leo/conus"):  # a refusal: one attempt, and what to do about it
        with pytest.raises(OSError, match=r"(?s)metadata/.* after 1 attempt.*401.*needs a token"):
            m3leo_hf.stream(root, storage_options={"endpoint": local_hub.url, "token": False}, **options)
    for storage_options in ({"endpoint": local_hub.url, "token": TEST_TOKEN},
                            {"headers": {"Authorization": f"Bearer {TEST_TOKEN}"}}):
        stream = m3leo_hf.stream(https, storage_options=storage_options, **options)
        assert [b["chip_id"] for b in stream] == local
    hf = m3leo_hf.stream("hf://datasets/m3leo/conus", storage_options={"endpoint": local_hub.url, "token": TEST_TOKEN},
                         **options)
    assert [b["chip_id"] for b in hf] == local
    assert http_get.http_target(f"http://elsewhere.example/{https}", {"token": TEST_TOKEN}) == (
        f"http://elsewhere.example/{https}", {})  # another origin never gets the Hub's token

@pytest.mark.parametrize("workers", [0, 2])
def test_hub_redirects_are_resolved_once_per_file_and_again_when_expired(stream_shards, local_hub: LocalHub,
                                                                          workers, monkeypatch):
    """The Hub answers /resolve/ of a shard with a redirect to an expiring CDN URL and rate-limits resolver
    requests: chunk requests go to the remembered CDN URL, one resolve per file and process, and a refused
    (expired) URL is resolved again without losing or repeating a sample."""
    monkeypatch.setattr(prefetch, "CHUNK_BYTES", 1)  # one sample a request: two requests a shard
    http_get.forget_locations()
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset")
    api.upload_folder(folder_path=str(stream_shards / "conus"), repo_id="m3leo/conus", repo_type="dataset")
    options = dict(modalities=["s1grd", "esaworldcover"], seed=3, batch_size=2, spatial_size=32)
    local = m3leo_hf.StatefulLoader(m3leo_hf.stream(str(stream_shards / "conus"), **options), num_workers=workers)
    https = m3leo_hf.StatefulLoader(m3leo_hf.stream(f"{local_hub.url}/datasets/m3leo/conus/resolve/main",
                                                    **options), num_workers=workers,
                                    persistent_workers=workers > 0)  # processes that remember what they resolved

    def digest(value):
        if isinstance(value, torch.Tensor):
            return zlib.crc32(value.numpy().tobytes())
        return {k: digest(v) for k, v in value.items()} if isinstance(value, dict) else value

    def epoch(loader) -> list[dict]:  # digests: a worker's batch buffers are reused once consumed
        return [digest({k: batch[k] for k in ("chip_id", "s1grd", "esaworldcover")}) for batch in loader]

    def shard_resolves() -> dict[str, int]:
        return {p: n for p, n in local_hub.resolve_requests().items() if p.endswith(".tar")}

    expected, sent = [epoch(local) for _ in range(3)], local_hub.bytes_sent()  # three epochs, three orders
    assert epoch(https) == expected[0]
    files = {f"m3leo/conus/{p.relative_to(stream_shards / 'conus')}" for p in (stream_shards / "conus").rglob("*.tar")
             if p.parent.name in (S1GRD, ESAWC)}
    read, processes = {p for p in files if local_hub.bytes_sent()[p] > sent[p]}, max(workers, 1)
    first = shard_resolves()
    assert read and set(first) == read
    assert max(first.values()) <= processes  # once per reading process, not per request (2 per shard)
    assert epoch(https) == expected[1]
    assert shard_resolves() == first
    local_hub.expire_cdn_urls()
    assert epoch(https) == expected[2]
    assert all(1 <= shard_resolves()[p] - first[p] <= processes for p in read)  # refused: resolved again


def test_metadata_rewritten_by_a_commit_is_read_anew_under_the_same_url(local_hub: LocalHub, tmp_path):
    """Shards never change once published, metadata does (a region grows): its redirect is not remembered."""
    http_get.forget_locations()
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset")
    url = f"{local_hub.url}/datasets/m3leo/conus/resolve/main/metadata/chips.parquet"
    for version in (b"PAR1\x00 first", b"PAR1\x00 second, after growth"):  # binary: LFS, served by the CDN
        api.upload_file(path_or_fileobj=version, path_in_repo="metadata/chips.parquet", repo_id="m3leo/conus",
                        repo_type="dataset")
        assert reader.read_bytes(url) == version


def test_hf_roots_read_like_their_resolve_urls_without_api_calls_per_chunk(stream_shards, local_hub: LocalHub,
                                                                          monkeypatch):
    """``hf://`` files are read by their /resolve/ URL with the token: one repo check per process, one
    resolve per file, none of the Hub API's tree listings per chunk; the token never reaches the CDN."""
    monkeypatch.setattr(prefetch, "CHUNK_BYTES", 1)
    http_get.forget_locations()
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset")
    api.upload_folder(folder_path=str(stream_shards / "conus"), repo_id="m3leo/conus", repo_type="dataset")
    options = dict(modalities=["s1grd", "esaworldcover"], seed=3, batch_size=2, spatial_size=32)
    local = m3leo_hf.stream(str(stream_shards / "conus"), **options)
    hf = m3leo_hf.stream("hf://datasets/m3leo/conus", storage_options={"endpoint": local_hub.url, "token": TEST_TOKEN},
                         **options)
    before = local_hub.route_requests()
    for epoch in range(2):
        local.set_epoch(epoch)
        hf.set_epoch(epoch)
        for a, b in zip(hf, local, strict=True):
            assert a["chip_id"] == b["chip_id"] and torch.equal(a["s1grd"], b["s1grd"])
    used = local_hub.route_requests() - before
    assert used["cdn"] > used["resolve"] and not used["tree"] and not used["paths_info"] and used["repo_info"] <= 1
    resolves = {p: n for p, n in local_hub.resolve_requests().items() if p.endswith(".tar")}
    assert resolves and set(resolves.values()) == {1}


def test_a_rate_limited_request_waits_as_long_as_the_server_asks(tmp_path):
    """A 429 naming its reset (``Retry-After`` or the Hub's ``RateLimit: "resolvers";r=0;t=N``) is retried
    after that many seconds rather than after the short default backoff."""
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 4)
    limited = iter([{"Retry-After": "1"}, {"RateLimit": '"resolvers";r=0;t=1'}])

    class RateLimited(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            headers = next(limited, None)
            if headers is None:
                return super().do_GET()
            self.send_response(429)
            for key, value in {**headers, "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        data = read_range(f"http://127.0.0.1:{server.server_address[1]}/data.bin", 10, 20, retries=2)
        assert bytes(data) == (bytes(range(256)) * 4)[10:30]
        assert time.monotonic() - started >= 2.0  # 1 s + 1 s as asked, not 0.5 s + 1 s of default backoff
    finally:
        server.shutdown()


@pytest.mark.parametrize("location, message", [("/data.bin", "infinite loop"),
                                               ("file:///etc/passwd", "not allowed")])
def test_a_hostile_redirect_is_a_clear_error_at_once(location, message):
    """A server redirecting in a loop, or to a local file, is refused by name, without retries."""
    class Redirecting(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    try:
        started = time.monotonic()
        with pytest.raises(OSError, match=rf"{re.escape(url)}: cannot read bytes 0-9 after 1 attempt\(s\).*{message}"):
            read_range(url, 0, 10, retries=3)
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()


def test_retry_after_is_read_from_either_header_and_bounded():
    def limited(code: int, **headers: str) -> urllib.error.HTTPError:
        message = email.message.Message()
        for key, value in headers.items():
            message[key.replace("_", "-")] = value
        return urllib.error.HTTPError("http://x", code, "limited", message, None)

    assert http_get.retry_after_s(limited(429, Retry_After="7")) == 7.0
    assert http_get.retry_after_s(limited(503, Retry_After="100000")) == http_get.RETRY_AFTER_MAX_S
    assert http_get.retry_after_s(limited(429, RateLimit='"resolvers";r=0;t=55')) == 55.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= http_get.retry_after_s(limited(429, Retry_After=later)) <= 30
    assert http_get.retry_after_s(limited(429, Retry_After="soon")) is None
    assert http_get.retry_after_s(limited(404, Retry_After="7")) is None


def test_in_process_state_dict_resumes_exactly(stream_shards):
    def make():
        return m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], batch_size=3, seed=5, shuffle_buffer=4,
                               spatial_size=32)

    first = make()
    first.set_epoch(2)
    full = [b["chip_id"] for b in first]
    assert len(full) == len(first) == 6
    partial = make()
    partial.set_epoch(2)
    iterator = iter(partial)
    head = [next(iterator)["chip_id"] for _ in range(2)]
    state = partial.state_dict()
    assert state["epoch"] == 2 and state["batches"] == 2
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # same epoch: keeps the loaded position
    assert head + [b["chip_id"] for b in resumed] == full
    with pytest.raises(ValueError, match="batch_size"):
        m3leo_hf.stream(roots(stream_shards), modalities=["s1grd"], batch_size=2, seed=5).load_state_dict(state)


def test_region_without_a_modality(tmp_path, stream_shards):
    europe = tmp_path / "europe"
    shutil.copytree(stream_shards / "europe", europe)
    for path in europe.glob(f"metadata/{canonical('s2rgbm')}.*"):
        path.unlink()
    data = [str(stream_shards / "conus"), str(europe)]
    masked = list(m3leo_hf.stream(data, modalities=["s1grd", "s2rgbm"], split="val", spatial_size=32))
    assert {s["region"]: s["s2rgbm_available"] for s in masked} == {"conus": True, "europe": False}
    assert all(s["meta"]["s2rgbm"]["missing_reason"] == "region europe has no s2rgbm"
               for s in masked if s["region"] == "europe")
    skipped = list(m3leo_hf.stream(data, modalities=["s1grd", "s2rgbm"], split="val", missing="skip"))
    assert {s["region"] for s in skipped} == {"conus"}


def test_streaming_imports_neither_pandas_nor_pyarrow_compute(built):
    """Their imports were a third of the time to a first batch: the index reads Parquet buffers with numpy."""
    code = (f"import sys, m3leo_hf; next(iter(m3leo_hf.stream({str(built / 'conus')!r}, modalities=['s1grd', "
            f"'esaworldcover'], batch_size=2, normalize=True, spatial_size=32)));"
            "print(sorted(m for m in ('pandas', 'pyarrow.compute', 'pyarrow.dataset', 'datasets', 'PIL') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
