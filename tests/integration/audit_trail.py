"""Checking an evidence pack's audit trail as an examiner would: by the pack's hash rule alone, no Calabi code."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def compact(value: Any) -> str:
    """JSON with sorted keys and no spaces (the encoding the hash rule names)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def verify_audit_trail(audit: dict[str, Any]) -> None:
    """Each event's hash recomputes from its fields, sits in the links, and the links lead to the head."""
    links = {link["seq"]: link for link in audit["links"]}
    seqs = sorted(links)
    assert seqs == list(range(audit["events"][0]["seq"], audit["head_seq"] + 1)), "the links are not gap-free"
    for earlier, later in zip(seqs, seqs[1:], strict=False):
        assert links[later]["prev_hash"] == links[earlier]["hash"], f"link {later} does not follow {earlier}"
    assert links[audit["head_seq"]]["hash"] == audit["head_hash"], "the last link is not the head"
    for event in audit["events"]:
        fields = [event["seq"], event["timestamp"], event["actor"], event["action"], event["model_name"],
                  event["version"], event["subject"], compact(event["before"]), compact(event["after"]),
                  event["request_id"], event["prev_hash"]]
        assert hashlib.sha256(compact(fields).encode()).hexdigest() == event["hash"], f"event {event['seq']}"
        assert (event["prev_hash"], event["hash"]) == (links[event["seq"]]["prev_hash"], links[event["seq"]]["hash"])
