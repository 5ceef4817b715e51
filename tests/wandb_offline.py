"""W&B's offline run files read back: an offline run keeps every record (run, config, history,
summary) in <dir>/wandb/offline-run-*/run-<id>.wandb, a LevelDB-style log of W&B's protobuf
Records (32 KiB blocks; each chunk a 7-byte header: CRC32C, length, type FULL/FIRST/MIDDLE/
LAST), which `wandb sync` uploads; wandb ships no reader of it, so the tests read it here."""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = 7, b""  # after the file header: ":W&B", a 2-byte magic, a version byte
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's trailer too short for a header: skipped
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        pending += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(path: Path) -> dict:
    """{"id", "name", "group", "project", "tags", "config": {...}, "history": [{...}],
    "summary": {...}} of one offline run file."""
    run = {"config": {}, "history": [], "summary": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(id=r.run.run_id, name=r.run.display_name, group=r.run.run_group,
                       project=r.run.project, tags=list(r.run.tags))
            run["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in r.history.item})
        elif kind == "summary":
            run["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in r.summary.update})
    run["config"].pop("_wandb", None)
    return run


def offline_runs(folder: Path) -> list[dict]:
    return [read_run(p) for p in sorted(Path(folder).glob("wandb/offline-run-*/run-*.wandb"))]
