"""A what-if, measured beside `trigger run`: the ack without grpc or protobuf.

usage: python -I whatif_ack.py ENDPOINT HOST_PREFIX RUN_KEY COMMAND...

Not product code: the smallest program doing what `trigger run` must do
before its command starts (read the host's inbox, write the started record
and delete the entries in one transaction), through etcd's JSON gateway
(/v3/kv/range, /v3/kv/txn) with the standard library only, then exec the
command. Its cold start against `trigger run`'s says what importing grpc,
etcd3 and protobuf's pure-Python stubs costs each run (docs/benchmarks.md).
"""

import base64
import http.client
import json
import os
import sys
from urllib.parse import urlsplit


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def main() -> None:
    endpoint, prefix, run_key, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)

    def call(path: str, body: dict) -> dict:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"whatif_ack: {path}: HTTP {response.status}: {data}")
        return data

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    inbox = call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True})
    entries = [kv["key"] for kv in inbox.get("kvs", []) if b"/runs/" not in base64.b64decode(kv["key"])]
    record = json.dumps({"state": "started", "served": len(entries)})
    ops = [{"request_put": {"key": _b64(run_key), "value": _b64(record)}}]
    ops += [{"request_delete_range": {"key": key}} for key in entries[:127]]
    call("/v3/kv/txn", {"success": ops})
    conn.close()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
