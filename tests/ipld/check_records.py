"""Independent check of icn's records with other implementations: Python `dag-cbor`, `multiformats`
and `cryptography` (none share code with the Rust crates). For the records of a real local run it checks
that the bytes decode as DAG-CBOR and re-encode to the same bytes (canonical), that the CID computed by
`multiformats` is the one icn printed, that links are IPLD links (tag 42), and that the ed25519 signature
over the body's DAG-CBOR bytes verifies against the key in the signer's did:key.

Usage: python3 check_records.py ICN_BINARY REPO_ROOT
"""
import json
import subprocess
import sys
import tempfile

import dag_cbor  # noqa: I001
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from multiformats import CID, multibase, multihash

icn, root = sys.argv[1], sys.argv[2]


def run(*args):
    out = subprocess.run([icn, *args], capture_output=True, check=False)
    return out.returncode, out.stdout


def check_record(cid_text, data, expect_kind):
    code, block = run("dag", "export", cid_text, "--data", data)
    assert code == 0, f"export {cid_text} failed"
    value = dag_cbor.decode(block)
    assert dag_cbor.encode(value) == block, "not canonical DAG-CBOR"
    cid = CID("base32", 1, "dag-cbor", multihash.digest(block, "sha2-256"))
    assert str(cid) == cid_text, f"CID mismatch: {cid} != {cid_text}"
    body = value["body"]
    assert body["kind"] == expect_kind and body["protocol"] == 1, body
    signer = value["signer"]
    assert signer.startswith("did:key:z")
    key = multibase.decode(signer[len("did:key:"):])
    assert key[:2] == b"\xed\x01" and len(key) == 34, "not an ed25519 did:key"
    Ed25519PublicKey.from_public_bytes(key[2:]).verify(value["signature"], dag_cbor.encode(body))
    return body["payload"]


with tempfile.TemporaryDirectory() as tmp:
    data = f"{tmp}/data"
    for spec, module, status in [
        ("examples/specs/sieve.json", "examples/jobs/sieve.wasm", "completed"),
        ("examples/specs/echo-ccl.json", "examples/jobs/echo.wasm", "completed"),
    ]:
        code, out = run("job", "run-local", f"{root}/{spec}", "--module", f"{root}/{module}", "--data", data, "--json")
        report = json.loads(out)
        assert code == 0 and report["status"] == status, report
        result = check_record(report["result_cid"], data, "result")
        assert isinstance(result["job"], CID) and result["job"].encode("base32") == report["job_cid"], "result -> job is a link"
        assert result["output"].encode("base32") == report["output_cid"]
        job = check_record(report["job_cid"], data, "job")
        assert job["module"].encode("base32") == report["module_cid"]
        code, module_bytes = run("dag", "export", report["module_cid"], "--data", data)
        blob = CID("base32", 1, "raw", multihash.digest(module_bytes, "sha2-256"))
        assert str(blob) == report["module_cid"], "blob CID"
        assert module_bytes == open(f"{root}/{module}", "rb").read()
        print(f"ok {spec}: {report['result_cid']}")
