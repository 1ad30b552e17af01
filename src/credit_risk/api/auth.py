"""Optional API key on the prediction and reload routes (X-API-Key, compared in constant time)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader

from credit_risk.api.deps import SettingsDep
from credit_risk.api.errors import InvalidApiKey

# auto_error=False: a missing key must get our own 401 body, not FastAPI's 403.
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Required when API_KEY is set."
)


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """Reject the request unless API_KEY is unset or X-API-Key matches it."""
    if not settings.api_key:
        return
    expected = settings.api_key.encode()
    if key is None:
        raise InvalidApiKey("this route needs an X-API-Key header")
    if not hmac.compare_digest(key.encode(), expected):
        raise InvalidApiKey("the X-API-Key header is wrong")  # the key itself is never echoed or logged
