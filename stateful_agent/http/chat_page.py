"""The chat page (``GET /api/ui``): one self-contained page assembled from ``ui/`` once per process.

The page's CSS and JavaScript are inlined, so it makes no request but to this app's API: no CDN, no web
fonts, and it works offline. Its Content-Security-Policy allows exactly that script and that style (by
their SHA-256 hashes), requests to this origin only, and nothing else: no other script, no plugins, no
framing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "ui"


@functools.cache
def page() -> tuple[bytes, dict[str, str]]:
    """The page's HTML and its response headers (the Content-Security-Policy among them)."""
    css = (ASSETS / "chat.css").read_text("utf-8")
    script = (ASSETS / "chat.js").read_text("utf-8")
    html = (ASSETS / "chat.html").read_text("utf-8").replace("/*CSS*/", css, 1).replace("/*JS*/", script, 1)
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src '{_sha256(script)}'",
            f"style-src '{_sha256(css)}'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html.encode("utf-8"), headers


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
