"""slack-sdk's WebClient, as jit-ssh builds it, and what its errors mean for a delivery.

The client is built per use from :class:`~server.slack.settings.SlackSettings` (the token is
read then, so a rotated one takes effect), pointed at ``api_url`` (Slack's, or a test's fake
on 127.0.0.1), with no retry handler of its own: the outbox's backoff decides when to try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from server.outbox import DeliveryFailed

from .settings import SlackSettings

__all__ = ["web_client", "delivery_call", "PERMANENT_ERRORS"]

log = logging.getLogger("jit_ssh.slack")

#: Slack's error codes that no retry can cure: the token, the scopes, the channel are wrong.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_arguments",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_found",
        "users_not_found",
        "user_disabled",
        "cannot_dm_bot",
    }
)

T = TypeVar("T")


def web_client(settings: SlackSettings) -> WebClient:
    return WebClient(
        token=settings.bot_token(),
        base_url=settings.api_url,
        timeout=max(1, int(settings.http_timeout)),
        retry_handlers=[],
    )


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            value = v[0] if isinstance(v, list) and v else v
            try:
                return max(0.0, min(float(str(value)), 3600.0))
            except ValueError:
                return None
    return None


def delivery_call(what: str, call: Callable[[], T]) -> T:
    """``call()`` (one Web API method), with slack-sdk's errors turned into
    :class:`DeliveryFailed`: rate limited -> retry after Slack's ``Retry-After``; a token,
    scope or channel error -> permanent; anything else (the network, Slack's 5xx) -> retry."""
    try:
        return call()
    except SlackApiError as e:
        response = e.response
        status = getattr(response, "status_code", None)
        try:
            error = str(response.get("error") or "")
        except Exception:
            error = ""
        if status == 429 or error == "ratelimited":
            raise DeliveryFailed(
                f"{what}: Slack says ratelimited", retry_after=_retry_after(response) or 30.0
            ) from None
        if error in PERMANENT_ERRORS:
            raise DeliveryFailed(f"{what}: Slack says {error}", permanent=True) from None
        raise DeliveryFailed(f"{what}: Slack says {error or f'HTTP {status}'}") from None
    except (SlackClientError, OSError, ValueError) as e:
        # URLError, timeouts and refused connections are OSErrors; a body that is not JSON
        # is a ValueError. The message names the kind, never the token or the request.
        raise DeliveryFailed(f"{what}: Slack could not be reached ({type(e).__name__})") from None
