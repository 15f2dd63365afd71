"""The partner API: generator records behind keyset-cursor pagination, with switchable faults.

    GET  /transactions?updated_since=ISO&cursor=C&limit=N   -> {"data": [...], "next_cursor": C | null}
    GET  /_health                                           (no auth)
    GET  /_faults, POST /_faults {name: value, ...}         fault switches (FAULT_DEFAULTS)
    POST /_records {"records": [...], "raw": [...]}         add or update records (upsert by transaction_id);
                                                            raw: JSON value texts served as malformed records
    GET  /_records/versions                                 every version the server has ever held
    GET  /_stats                                            requests and faults served

Records are ordered by (updated_at, transaction_id, arrival); `updated_since` is inclusive
and the cursor is the key of the last record served, so a record whose updated_at changes
mid-scan moves behind the cursor and is served again later in the same scan (its new version).
Every endpoint but `/_health` needs `Authorization: Bearer <token>` or `X-API-Key: <api key>`.

Records the generator planted as malformed (JSON strings inside `data`) are served as they
are; they sort right after the record that precedes them in the generator's pages.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import random
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

FAULT_DEFAULTS: dict[str, float] = {
    "error_rate": 0.0,      # fraction of page requests answered 500
    "throttle_rate": 0.0,   # fraction answered 429 with Retry-After
    "retry_after": 1.0,     # seconds announced in Retry-After (whole seconds on the wire)
    "slow_rate": 0.0,       # fraction answered after a delay
    "slow_seconds": 2.0,    # mean delay; each slow answer waits 0.5x..1.5x of it
    "truncate_rate": 0.0,   # fraction whose 200 body is cut mid-JSON
    "invalid_rate": 0.0,    # fraction whose 200 body is not JSON at all
    "change_rate": 0.0,     # fraction of cursor pages before which an already-served record is updated
    "seed": 0.0,            # reseeds the fault dice when set
}
# What `--faults all` switches on: every fault at once, each frequent enough to show up in a short run.
ALL_FAULTS = {"error_rate": 0.1, "throttle_rate": 0.05, "slow_rate": 0.05, "truncate_rate": 0.07,
              "invalid_rate": 0.05, "change_rate": 0.15}
MAX_LIMIT = 5_000
_TS_IN_TEXT = re.compile(r'"updated_at":\s*"([^"]+)"')
_ID_IN_TEXT = re.compile(r'"transaction_id":\s*"([^"]+)"')


def parse_ts(text: str) -> int:
    """ISO-8601 -> epoch microseconds (a zone-less time is UTC)."""
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_ts(us: int) -> str:
    ts = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if ts.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(key: tuple[int, str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    try:
        us, tid, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(us), str(tid), int(seq)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, "invalid cursor") from exc


@dataclass
class Version:
    seq: int
    transaction_id: str
    updated_us: int
    text: bytes           # the record exactly as served
    malformed: bool = False
    current: bool = True

    @property
    def key(self) -> tuple[int, str, int]:
        return self.updated_us, self.transaction_id, self.seq


class RecordStore:
    """Current versions in key order (a sorted list) plus every version ever held."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, str, int]] = []
        self.versions: dict[int, Version] = {}
        self.current_by_id: dict[str, int] = {}

    def _new(self, tid: str, updated_us: int, text: bytes, malformed: bool = False) -> Version:
        v = Version(len(self.versions), tid, updated_us, text, malformed)
        self.versions[v.seq] = v
        if not malformed:
            self.current_by_id[tid] = v.seq
        return v

    def load(self, data_dir: Path) -> int:
        """Read the generator's pages `api/dt=*/page-*.json`; returns the record count."""
        decoder = json.JSONDecoder()
        previous = (0, "")
        for page in sorted(Path(data_dir).glob("api/dt=*/page-*.json")):
            text = page.read_text(encoding="utf-8")
            pos = text.index("[", text.index('"data"')) + 1
            while True:
                while text[pos] in " \n\r\t,":
                    pos += 1
                if text[pos] == "]":
                    break
                obj, end = decoder.raw_decode(text, pos)
                raw = text[pos:end]
                if isinstance(obj, dict) and isinstance(obj.get("updated_at"), str):
                    previous = (parse_ts(obj["updated_at"]), str(obj.get("transaction_id")))
                    v = self._new(previous[1], previous[0], raw.encode())
                else:
                    v = self._new(previous[1], previous[0], raw.encode(), malformed=True)
                self.keys.append(v.key)
                pos = end
        self.keys.sort()
        return len(self.keys)

    @property
    def max_updated_us(self) -> int:
        return self.keys[-1][0] if self.keys else parse_ts(datetime.now(timezone.utc).isoformat())

    def upsert(self, record: dict) -> Version:
        """Add a record, or replace the current version of its transaction_id.
        A record without updated_at is stamped one second after the newest one."""
        tid = record.get("transaction_id")
        if not isinstance(tid, str) or not tid:
            raise HTTPException(422, "record needs a transaction_id")
        record = dict(record)
        if record.get("updated_at"):
            updated_us = parse_ts(record["updated_at"])
        else:
            updated_us = self.max_updated_us + 1_000_000
            record["updated_at"] = format_ts(updated_us)
        old = self.current_by_id.get(tid)
        if old is not None:
            self._retire(self.versions[old])
        v = self._new(tid, updated_us, json.dumps(record).encode())
        bisect.insort(self.keys, v.key)
        return v

    def append_raw(self, text: str) -> Version:
        """A record that is not a well-formed object (any JSON value text), served after the newest record."""
        json.loads(text)  # must stay a valid array element, or every page holding it breaks
        last = self.keys[-1] if self.keys else (self.max_updated_us, "", -1)
        v = self._new(last[1], last[0], text.encode(), malformed=True)
        bisect.insort(self.keys, v.key)
        return v

    def _retire(self, v: Version) -> None:
        i = bisect.bisect_left(self.keys, v.key)
        if i < len(self.keys) and self.keys[i] == v.key:
            del self.keys[i]
        v.current = False

    def touch(self, v: Version) -> Version:
        """A newer version of a served record: updated_at one second after the newest record."""
        record = json.loads(v.text)
        record["updated_at"] = format_ts(self.max_updated_us + 1_000_000)
        return self.upsert(record)

    def page(self, since_us: int | None, after: tuple[int, str, int] | None, limit: int) -> tuple[bytes, int]:
        if after is not None:
            start = bisect.bisect_right(self.keys, after)
        elif since_us is not None:
            start = bisect.bisect_left(self.keys, (since_us, "", -1))
        else:
            start = 0
        keys = self.keys[start:start + limit]
        more = start + limit < len(self.keys)
        nxt = json.dumps(encode_cursor(keys[-1])) if keys and more else "null"
        body = b"".join((b'{"data": [', b", ".join(self.versions[k[2]].text for k in keys),
                         b'], "next_cursor": ', nxt.encode(), b"}"))
        return body, start


def create_app(data_dir: str | Path | None = None, token: str = "", api_key: str = "",
               faults: dict | None = None) -> FastAPI:
    """The simulator app; without a token a random one is made (development only)."""
    token = token or secrets.token_urlsafe(24)
    api_key = api_key or token
    store = RecordStore()
    loaded = store.load(Path(data_dir)) if data_dir else 0
    state = {"faults": {**FAULT_DEFAULTS, **(faults or {})}}
    rng = random.Random(int(state["faults"]["seed"]))
    stats = {"requests": 0, "pages": 0, "errors": 0, "throttled": 0, "slow": 0, "truncated": 0, "invalid": 0,
             "changed": 0}
    app = FastAPI(title="fluxo partner API simulator")
    app.state.store, app.state.token = store, token

    def authorize(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        if auth == f"Bearer {token}" or request.headers.get("x-api-key") == api_key:
            return
        raise HTTPException(401, "missing or wrong bearer token / API key")

    @app.get("/_health")
    async def health() -> dict:
        return {"status": "ok", "records": len(store.keys), "loaded": loaded}

    @app.get("/_faults")
    async def get_faults(request: Request) -> dict:
        authorize(request)
        return state["faults"]

    @app.post("/_faults")
    async def set_faults(request: Request) -> dict:
        nonlocal rng
        authorize(request)
        changes = await request.json()
        unknown = set(changes) - set(FAULT_DEFAULTS)
        if unknown:
            raise HTTPException(422, f"unknown faults {sorted(unknown)}")
        state["faults"] = {**state["faults"], **{k: float(v) for k, v in changes.items()}}
        if "seed" in changes:
            rng = random.Random(int(changes["seed"]))
        return state["faults"]

    @app.get("/_stats")
    async def get_stats(request: Request) -> dict:
        authorize(request)
        return stats

    @app.post("/_records")
    async def upsert_records(request: Request) -> dict:
        authorize(request)
        body = await request.json()
        stored = [store.upsert(r) for r in body.get("records", [])]
        try:
            for text in body.get("raw", []):
                store.append_raw(text)
        except ValueError as exc:
            raise HTTPException(422, f"raw records must be JSON values: {exc}") from exc
        return {"stored": [{"transaction_id": v.transaction_id, "updated_at": format_ts(v.updated_us)}
                           for v in stored]}

    @app.get("/_records/versions")
    async def versions(request: Request) -> dict:
        authorize(request)
        return {"versions": [[v.transaction_id, format_ts(v.updated_us), v.current]
                             for v in store.versions.values() if not v.malformed],
                "malformed": [v.text.decode() for v in store.versions.values() if v.malformed]}

    @app.get("/transactions")
    async def transactions(request: Request, updated_since: str | None = None, cursor: str | None = None,
                           limit: int = 1000) -> Response:
        authorize(request)
        stats["requests"] += 1
        f = state["faults"]
        if not 1 <= limit <= MAX_LIMIT:
            raise HTTPException(422, f"limit must be within 1..{MAX_LIMIT}")
        try:
            since_us = parse_ts(updated_since) if updated_since else None
        except ValueError as exc:
            raise HTTPException(422, "updated_since must be ISO-8601") from exc
        after = decode_cursor(cursor) if cursor else None
        if rng.random() < f["error_rate"]:
            stats["errors"] += 1
            return JSONResponse({"error": "internal server error"}, status_code=500)
        if rng.random() < f["throttle_rate"]:
            stats["throttled"] += 1
            return JSONResponse({"error": "rate limited"}, status_code=429,
                                headers={"Retry-After": str(max(0, round(f["retry_after"])))})
        if after is not None and rng.random() < f["change_rate"]:
            # an already-served record of this scan gets a newer version and moves behind the cursor
            lo = bisect.bisect_left(store.keys, (since_us, "", -1)) if since_us is not None else 0
            hi = bisect.bisect_right(store.keys, after)
            served = [k for k in store.keys[lo:hi] if not store.versions[k[2]].malformed]
            if served:
                store.touch(store.versions[rng.choice(served)[2]])
                stats["changed"] += 1
        body, _ = store.page(since_us, after, limit)
        if rng.random() < f["slow_rate"]:
            stats["slow"] += 1
            await asyncio.sleep(f["slow_seconds"] * rng.uniform(0.5, 1.5))
        if rng.random() < f["truncate_rate"]:
            stats["truncated"] += 1
            body = body[: rng.randrange(1, max(2, len(body) - 1))]
        elif rng.random() < f["invalid_rate"]:
            stats["invalid"] += 1
            body = b"<html><body>502 Bad Gateway</body></html>" if rng.random() < 0.5 else body.replace(b'"', b"'", 7)
        stats["pages"] += 1
        return Response(body, media_type="application/json")

    return app
