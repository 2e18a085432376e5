"""Scripting the test backend from the SDK tests: queues replies on the
scripted backend whose origin the Rust harness passes in
EDGE_RESPONSES_BACKEND_ORIGIN (see tests/backend/src/control.rs for the
reply specs)."""

import json
import os
import urllib.request


def script(*replies):
    """Queues scripted backend replies, answered in order."""
    origin = os.environ.get("EDGE_RESPONSES_BACKEND_ORIGIN")
    assert origin, "EDGE_RESPONSES_BACKEND_ORIGIN is not set"
    request = urllib.request.Request(
        origin + "/_scripted/replies",
        data=json.dumps(list(replies)).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
