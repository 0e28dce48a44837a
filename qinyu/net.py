"""One retrying JSON POST for the HTTP backends (the synthesis LLM client, the evaluation
judge, instruct-TTS): the standard library's urllib, so no extra dependency.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; any other
HTTP status is final at once. Errors say which attempt failed and how, so the caller can
prefix the endpoint it was talking to.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import Callable


class PostError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status, self.attempts = status, attempts


def post_json(url: str, data: bytes, api_key: str | None = None, retries: int = 3, backoff_s: float = 1.0,
              timeout_s: float = 60.0, before_attempt: Callable[[int], None] | None = None,
              headers: dict | None = None) -> bytes:
    """The response body. ``before_attempt(i)`` runs before try ``i`` (0-based): rate limits, counters."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last, status = "", None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        if before_attempt is not None:
            before_attempt(attempt)
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            status, last = e.code, f"HTTP {e.code} {e.reason}: {detail}"
            if e.code == 429 or e.code >= 500:  # overloaded or broken for now: worth retrying
                continue
            raise PostError(f"refused the request: {last}", status=e.code, attempts=attempt + 1) from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, DNS
            status, last = None, f"unreachable ({type(e).__name__}: {getattr(e, 'reason', e)})"
    raise PostError(f"failed after {retries + 1} attempt(s): {last}", status=status, attempts=retries + 1)
