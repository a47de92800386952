"""The generated Python bindings against the real shared library, with pytest.

A node runs an example job locally, is cancelled mid-run, answers device-state updates, and joins
a real coordinator process on loopback: it bids, wins, runs, is paused by an unplug mid-job and
resumed, and gets paid. scripts/test-bindings.sh sets ICN_LIB, ICN_BIN and ICN_ROOT.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ["ICN_ROOT"])
ICN = os.environ["ICN_BIN"]
ECHO = (ROOT / "examples/jobs/echo.wasm").read_bytes()
SIEVE = (ROOT / "examples/jobs/sieve.wasm").read_bytes()


@pytest.fixture(scope="session")
def icn_mesh():
    # The generated module loads libicn_mesh.so from its own directory.
    where = Path(tempfile.mkdtemp())
    shutil.copy(ROOT / "bindings/python/icn_mesh.py", where)
    shutil.copy(os.environ["ICN_LIB"], where / "libicn_mesh.so")
    sys.path.insert(0, str(where))
    import icn_mesh

    yield icn_mesh
    # The copy is the size of the library (175 MiB in a debug build): do not leave it in /tmp.
    shutil.rmtree(where, ignore_errors=True)


def good_state(m):
    return m.DeviceState(charging=True, battery_percent=95.0, battery_temp_c=30.0,
                         thermal=m.Thermal.NONE, screen_on=False, metered=False)


def test_local_run_of_an_example_job(icn_mesh, tmp_path):
    node = icn_mesh.MeshNode(str(tmp_path / "node"))
    assert node.did().startswith("did:key:z6Mk")
    spec = json.dumps({"runtime": {"type": "WASM"}, "budget": {"max_total": 1}})
    run = asyncio.run(node.run_local(spec, ECHO, b"hello from python"))
    assert run.status == "completed", run.message
    assert bytes(run.output) == b"hello from python"
    assert run.result_cid.startswith("bafyrei")
    assert json.loads(run.json)["status"] == "completed"


def test_refusals_carry_their_codes(icn_mesh, tmp_path):
    node = icn_mesh.MeshNode(str(tmp_path / "node"))
    run = asyncio.run(node.run_local(json.dumps({"runtime": {"type": "WASM"}}), ECHO, b""))
    assert (run.status, run.code) == ("refused", "J002")
    with pytest.raises(icn_mesh.MeshError.Refused) as e:
        node.set_device_state(icn_mesh.DeviceState(battery_percent=140.0))
    assert e.value.code == "J001" and "battery_percent" in e.value.detail
    with pytest.raises(icn_mesh.MeshError.Unavailable) as e:
        icn_mesh.MeshNode("/proc/icn-cannot-be-here")
    assert e.value.code == "J009"


def test_cancel_stops_a_local_run(icn_mesh, tmp_path):
    node = icn_mesh.MeshNode(str(tmp_path / "node"))
    spec = json.dumps({"runtime": {"type": "WASM", "memory_pages": 2048}, "budget": {"max_total": 1},
                       "compute": {"estimated_cpu_hours": 1.0}})

    async def run_and_cancel():
        task = asyncio.ensure_future(node.run_local(spec, SIEVE, b"100000000"))
        await asyncio.sleep(0.3)
        node.cancel()
        return await task

    with pytest.raises(icn_mesh.MeshError.Cancelled):
        asyncio.run(run_and_cancel())


def test_device_state_partial_updates(icn_mesh, tmp_path):
    m = icn_mesh
    node = m.MeshNode(str(tmp_path / "node"))
    assert node.decision().decision == m.Decision.PAUSE
    assert node.set_device_state(good_state(m)).decision == m.Decision.RUN
    d = node.set_device_state(m.DeviceState(screen_on=True))
    assert d.decision == m.Decision.PAUSE and "screen on" in d.reason
    assert node.set_device_state(m.DeviceState(screen_on=False)).decision == m.Decision.RUN
    assert node.set_device_state(m.DeviceState(thermal=m.Thermal.SEVERE)).decision == m.Decision.STOP


def json_documents(text):
    """Every JSON document in `text`, in order (`icn job submit --wait --json` prints two)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def test_joins_a_coordinator_bids_wins_pauses_resumes_and_is_paid(icn_mesh, tmp_path):
    m = icn_mesh
    node = m.MeshNode(str(tmp_path / "node"))
    node.set_device_state(good_state(m))
    client_key = tmp_path / "client.key"
    client = json.loads(subprocess.check_output([ICN, "keygen", "--out", str(client_key), "--json"]))["did"]
    coord_dir = tmp_path / "coordinator"
    coordinator = subprocess.Popen(
        [ICN, "coordinator", "--listen", "127.0.0.1:0", "--data", str(coord_dir),
         "--grant", f"{client}=100000", "--grant", f"{node.did()}=1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not (coord_dir / "address").exists():
            assert time.time() < deadline, "the coordinator never wrote its address"
            time.sleep(0.05)
        address = (coord_dir / "address").read_text().strip()

        events = []
        seen = threading.Condition()

        class Listener(m.NodeListener):
            def on_event(self, event):
                with seen:
                    events.append((time.monotonic(), event))
                    seen.notify_all()

        def wait_for(kind, timeout=60):
            end = time.monotonic() + timeout
            with seen:
                while True:
                    for _, e in events:
                        if isinstance(e, kind):
                            return e
                    left = end - time.monotonic()
                    assert left > 0, f"no {kind.__name__} event; got {[type(e).__name__ for _, e in events]}"
                    seen.wait(left)

        node.start(address, 40000, Listener())
        wait_for(m.NodeEvent.CONNECTED)
        # A sieve long enough to pause mid-way (the library is a debug build here).
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps({
            "runtime": {"type": "WASM", "memory_pages": 256}, "budget": {"max_total": 100},
            "compute": {"estimated_cpu_hours": 0.001}}))
        (tmp_path / "in.txt").write_text("4000000")
        submit = subprocess.Popen(
            [ICN, "job", "submit", str(spec_path), "--coordinator", address, "--key", str(client_key),
             "--module", str(ROOT / "examples/jobs/sieve.wasm"), "--input", str(tmp_path / "in.txt"),
             "--wait", "--json"], stdout=subprocess.PIPE, text=True)
        wait_for(m.NodeEvent.AWARDED)
        wait_for(m.NodeEvent.PROGRESS)
        # Unplugged mid-job: the job pauses between fuel slices.
        paused = node.set_device_state(m.DeviceState(charging=False))
        assert paused.decision == m.Decision.PAUSE and "not charging" in paused.reason
        time.sleep(0.3)
        with seen:
            mark = len(events)
        time.sleep(1.5)
        with seen:
            during = [e for _, e in events[mark:] if isinstance(e, (m.NodeEvent.PROGRESS, m.NodeEvent.FINISHED))]
        assert during == [], f"the job ran on while paused: {during}"
        # Plugged back in: it resumes where it was and completes.
        assert node.set_device_state(m.DeviceState(charging=True)).decision == m.Decision.RUN
        finished = wait_for(m.NodeEvent.FINISHED)
        assert finished.status == "completed"
        receipt = wait_for(m.NodeEvent.RECEIPT)
        assert receipt.paid > 0
        out, _ = submit.communicate(timeout=60)
        docs = json_documents(out)
        assert "job_id" in docs[0]
        final = docs[-1]
        assert final["status"] == "completed", final
        assert final["executors"] == [node.did()]
        assert final["paid"][node.did()] == receipt.paid
        policy_events = [e.decision for _, e in events if isinstance(e, m.NodeEvent.POLICY)]
        assert m.Decision.PAUSE in policy_events and m.Decision.RUN in policy_events
        balance = asyncio.run(node.balance(address))
        assert balance.balance == 1000 + receipt.paid, balance
        node.stop()
    finally:
        coordinator.kill()
        coordinator.wait()
