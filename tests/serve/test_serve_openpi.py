"""openpi protocol: wire codec, error replies, per-connection state, API key, /healthz, SIGTERM.

These talk to a real `dtp serve` subprocess with a plain `websockets` client and dtp's codec
(byte-compatible with openpi_client.msgpack_numpy, pinned below); the test with openpi's own
client library is test_serve_openpi_client.py.
"""

from __future__ import annotations

import threading
import urllib.request
from contextlib import contextmanager

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dtp import DTPConfig, DTPPolicy
from dtp.cli import main
from dtp.errors import ConfigError, InputError
from dtp.models import load
from dtp.serve import PROTOCOLS, ServedPolicy, is_loopback, serve
from dtp.serve.openpi import decode_request, packb, unpackb

websockets_sync = pytest.importorskip("websockets.sync.client")

PROMPT = "push the puck to the goal"


# -- codec ---------------------------------------------------------------------------------
def test_codec_writes_openpis_ndarray_map():
    """Known answer: the bytes openpi_client.msgpack_numpy.packb writes for an int16 array."""
    a = np.arange(3, dtype=np.int16)
    expected = msgpack.packb({"x": {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<i2", b"shape": (3,)}})
    assert packb({"x": a}) == expected
    scalar = msgpack.packb({b"__npgeneric__": True, b"data": 1.5, b"dtype": "<f4"})
    assert packb(np.float32(1.5)) == scalar


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.float64, np.bool_]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
def test_codec_round_trip(a):
    back = unpackb(packb({"a": a}))["a"]
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_codec_refuses_object_arrays_and_short_buffers():
    with pytest.raises(InputError, match="dtype"):
        unpackb(msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": (1,)}))
    with pytest.raises(InputError, match="bytes"):
        unpackb(msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": (2,)}))
    with pytest.raises(InputError, match="not valid msgpack"):
        decode_request(b"\xc1\xc1")
    with pytest.raises(InputError, match="map"):
        decode_request(packb([1, 2]))
    with pytest.raises(InputError, match="text frame"):
        decode_request("hello")


# -- bind rules ------------------------------------------------------------------------------
def test_only_loopback_without_allow_remote(monkeypatch, capsys, tiny_adapter):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    calls = []
    monkeypatch.setitem(PROTOCOLS, "recorder", lambda served, host, port, on_listening, **kw: calls.append((host, port)))
    served = ServedPolicy(tiny_adapter, DTPConfig())
    with pytest.raises(ConfigError, match="--allow-remote"):
        serve(served, protocol="recorder", host="0.0.0.0", port=0)
    assert calls == []
    serve(served, protocol="recorder", host="0.0.0.0", port=0, allow_remote=True)
    assert calls == [("0.0.0.0", 0)]
    assert "WARNING: dtp serve binds 0.0.0.0" in capsys.readouterr().err
    serve(served, protocol="recorder", host="127.0.0.1", port=0)
    assert "WARNING" not in capsys.readouterr().err


def test_cli_refuses_remote_host_in_one_line(capsys):
    assert main(["serve", "--protocol", "openpi", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-remote" in err[0]


# -- a running server ------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["1", "4"], ids=["unbatched", "max-batch-4"])
def openpi_server(request, tmp_path_factory, start_server):
    """The same tests against each request stepped alone and against batches of up to 4 (a 50 ms window)."""
    with start_server(tmp_path_factory.mktemp("openpi"), "--protocol", "openpi", "--max-batch", request.param,
                      "--batch-window-ms", "50") as server:
        yield server


@pytest.fixture(scope="module")
def frames():
    """Four (image, state) pairs from a Meta-World scene (the shipped model's 96 px camera)."""
    from dtp.envs.benchmark import benchmark_env

    env = benchmark_env("push", distractors=3, palette="train", variant="plain", image_size=96)
    try:
        obs, _ = env.reset(seed=1_000_000)
        out = [obs]
        for a in ([0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, -0.5, 1]):
            obs, *_ = env.step(np.array(a, np.float32))
            out.append(obs)
    finally:
        env.close()
    return out


def request(obs: dict, **extra) -> dict:
    return {"observation/image": obs["image"], "observation/state": obs["proprio"], "prompt": obs["instruction"],
            "dtp/diagnostics": True, **extra}


def call(ws, message) -> dict | str:
    ws.send(message if isinstance(message, (bytes, str)) else packb(message))
    reply = ws.recv(timeout=120)
    return reply if isinstance(reply, str) else unpackb(reply)


@contextmanager
def connect(server, **kw):
    with websockets_sync.connect(server.url, max_size=None, **kw) as ws:
        metadata = unpackb(ws.recv(timeout=60))
        assert metadata["server"] == "dtp" and metadata["protocol"] == "openpi"
        yield ws


def in_process(obs_list: list[dict], seed: int = 0) -> list[tuple[np.ndarray, list[int]]]:
    torch.set_num_threads(1)
    policy = DTPPolicy(load("tinyvla"), DTPConfig())
    policy.reset(seed)
    out = []
    for obs in obs_list:
        r = policy.step(obs)
        out.append((np.asarray(r.action, np.float32), r.record.tokens))
    return out


def test_metadata_and_healthz(openpi_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{openpi_server.port}/healthz", timeout=30) as r:
        assert r.status == 200 and r.read() == b"OK\n"
    with websockets_sync.connect(openpi_server.url) as ws:
        meta = unpackb(ws.recv(timeout=60))
    assert meta["model"] == "tinyvla" and meta["keys"]["observation/image"] == "image"
    assert meta["dtp_config"]["tau"] == 1.0
    assert meta["max_batch"] in (1, 4) and meta["live_sessions"] >= 1  # this connection's own session


def test_bad_messages_get_error_replies_and_the_server_keeps_serving(openpi_server, frames):
    with connect(openpi_server) as other, connect(openpi_server) as ws:  # a second client, open the whole time
        check_bad_messages(ws, other, frames)


def check_bad_messages(ws, other, frames) -> None:
    good = request(frames[0])
    bad = {
        "garbage bytes": b"\xc1\x00\xff",
        "text frame": "observation please",
        "not a map": packb([1, 2, 3]),
        "object array": msgpack.packb({"observation/image": {b"__ndarray__": True, b"data": b"\0" * 8,
                                                             b"dtype": "|O", b"shape": (1,)}}),
        "wrong image shape": request({**frames[0], "image": np.zeros((32, 32, 3), np.uint8)}),
        "grey image": request({**frames[0], "image": np.zeros((96, 96), np.uint8)}),
        "float image": request({**frames[0], "image": np.zeros((96, 96, 3), np.float32)}),
        "empty prompt": request({**frames[0], "instruction": "  "}),
        "prompt not a string": request({**frames[0], "instruction": 7}),
        "no image": {"prompt": PROMPT},
        "wrong state length": request({**frames[0], "proprio": np.zeros(9, np.float32)}),
    }
    for name, message in bad.items():
        reply = call(ws, message)
        assert isinstance(reply, str) and reply.startswith("dtp serve: error:"), (name, reply)
    assert "96x96" in call(ws, bad["wrong image shape"])
    assert "instruction is empty" in call(ws, bad["empty prompt"])
    # the same connection and the other one still get actions; failed requests did not advance the episode
    first = call(ws, good)
    assert first["dtp"]["step"] == 0 and first["actions"].shape == (1, 4)
    assert call(other, good)["dtp"]["step"] == 0
    (want_action, want_tokens), = in_process([frames[0]])
    np.testing.assert_array_equal(first["actions"][0], want_action)
    assert first["dtp"]["tokens"] == want_tokens


def test_each_connection_has_its_own_episode(openpi_server, frames):
    with connect(openpi_server) as a, connect(openpi_server) as b:
        check_own_episodes(a, b, frames)


def check_own_episodes(a, b, frames) -> None:
    steps_a = [call(a, request(f)) for f in frames[:2]]
    steps_b = [call(b, request(frames[0]))]  # opened earlier, used later: still at step 0
    steps_a += [call(a, request(f)) for f in frames[2:]]
    assert [r["dtp"]["step"] for r in steps_a] == [0, 1, 2, 3]
    assert [r["dtp"]["step"] for r in steps_b] == [0]
    reset = call(a, {"dtp/reset": True, "dtp/seed": 5})
    assert reset == {"reset": True}
    assert call(a, request(frames[0]))["dtp"]["step"] == 0
    ref = in_process(frames)
    for r, (action, tokens) in zip(steps_a, ref):
        np.testing.assert_array_equal(r["actions"][0], action)
        assert r["dtp"]["tokens"] == tokens
    np.testing.assert_array_equal(steps_b[0]["actions"][0], ref[0][0])
    maps = steps_a[0]["dtp"]["maps"]
    assert maps["region"].shape == (8, 8) and maps["region"].dtype == np.uint8
    assert int(maps["region"].sum()) == steps_a[0]["dtp"]["n_region"] == 16
    assert int(maps["pruned"].sum()) == steps_a[0]["dtp"]["n_pruned"]


def test_two_clients_at_once_keep_separate_state(openpi_server, frames):
    """Two threads send interleaved requests; each sees its own step counter and in-process actions."""
    ref = in_process(frames)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with connect(openpi_server) as ws:
                results[k] = [call(ws, request(f)) for f in (frames if k == 0 else frames[:2])]
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for k, n in ((0, 4), (1, 2)):
        assert [r["dtp"]["step"] for r in results[k]] == list(range(n))
        for r, (action, tokens) in zip(results[k], ref):
            np.testing.assert_array_equal(r["actions"][0], action)
            assert r["dtp"]["tokens"] == tokens


def test_api_key_and_sigterm(tmp_path, frames, start_server):
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    with start_server(tmp_path, "--protocol", "openpi", env={"DTP_SERVE_API_KEY": "s3cret"}) as server:
        for headers in (None, {"Authorization": "Api-Key wrong"}):
            with pytest.raises(InvalidStatus) as e:
                websockets_sync.connect(server.url, additional_headers=headers)
            assert e.value.response.status_code == 401
        with connect(server, additional_headers={"Authorization": "Api-Key s3cret"}) as ws:
            assert call(ws, request(frames[0]))["actions"].shape == (1, 4)
            assert server.stop() == 0  # SIGTERM with a client connected
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
    assert server.stdout_lines[-1] == "dtp serve: stopped"
    assert "Traceback" not in server.stderr()


def test_serve_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--protocol {openpi,vla-eval}" in out and "--allow-remote" in out and "--tau" in out
