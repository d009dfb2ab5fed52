"""The masker: every form a resolved secret takes on the way out becomes [secret:NAME]."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import httpx

from infra.redaction import Masker

VALUE = 'abc"<>{}def-s3cret'
PEM = "-----BEGIN KEY-----\nMIIEvQIBADAN\nBgkqhkiG9w0B\n-----END KEY-----"
mask = Masker({"K": VALUE, "PIN": "12345678", "PEM": PEM, "TINY": "abc"})


def test_the_forms_a_value_takes_on_the_way_out() -> None:
    seen = {
        "raw": f"key={VALUE}",
        "url": quote(VALUE, safe=""),
        "httpx query": str(httpx.URL("http://x/?" + VALUE)),
        "json": json.dumps({"v": VALUE}),
        "base64": base64.b64encode(VALUE.encode()).decode(),
        "inside base64": base64.b64encode(f"ada:{VALUE}".encode()).decode(),
        "collapsed": " ".join(PEM.split()),
        "cut short": f"the server said: {VALUE[:10]}…",
        "as a key": {VALUE: 1},
    }
    masked = mask(seen)
    assert VALUE not in json.dumps(masked) and "MIIEvQIBADAN" not in json.dumps(masked)
    assert masked["raw"] == "key=[secret:K]"
    assert masked["cut short"] == "the server said: [secret:K]…"
    assert masked["as a key"] == {"[secret:K]": 1}


def test_numbers_that_spell_a_secret_and_nothing_else() -> None:
    assert mask({"pin": 12345678, "other": 1234, "ok": True, "f": 2.5}) == {
        "pin": "[secret:PIN]",
        "other": 1234,
        "ok": True,
        "f": 2.5,
    }


def test_short_values_are_not_hunted() -> None:
    assert mask("abcdef") == "abcdef"
