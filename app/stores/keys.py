"""Every Redis key and pub/sub channel imflow uses, in one place.

Each name carries a hash tag (`inbox:{alice}`), so all keys of one user (or of one
conversation) live in one Redis Cluster slot and one Lua call may touch them together.
Exactly one store writes each key; its owner is named beside it. Lua scripts
(app/stores/scripts.py) get every key as KEYS, built here, never by string concatenation
inside the script (Redis Cluster routes a call by its KEYS).
"""

from __future__ import annotations


def _tag(value: str) -> str:
    return f"{{{value}}}"


# ---------------------------------------------------------------- InboxStore (inbox.py)

def inbox(user: str) -> str:
    """The user's offline inbox stream."""
    return f"inbox:{_tag(user)}"


def applied(user: str) -> str:
    """Hash conversation -> highest seq written to the user's inbox (idempotency)."""
    return f"applied:{_tag(user)}"


def conversations(user: str) -> str:
    """Hash conversation -> its last message (the conversation list)."""
    return f"convs:{_tag(user)}"


def read_markers(user: str) -> str:
    """Hash conversation -> the seq the user read up to."""
    return f"read:{_tag(user)}"


def unread(user: str, cid: str) -> str:
    """Sorted set of the unread seqs of one conversation (the unread bubble)."""
    return f"unread:{_tag(user)}:{cid}"


def device_cursors(user: str) -> str:
    """Hash device -> the inbox stream id its last sync reached."""
    return f"cursor:{_tag(user)}"


# ---------------------------------------------------------------- FeedStore (feeds.py)

def feed(cid: str) -> str:
    """A read fan-out group's feed stream."""
    return f"feed:{_tag(cid)}"


def feed_seq(cid: str) -> str:
    """The last seq appended to the group's feed (idempotency)."""
    return f"feedseq:{_tag(cid)}"


def feed_pending(cid: str) -> str:
    """Hash seq -> entry id of a membership entry appended but not yet counted in feedseq."""
    return f"feedpending:{_tag(cid)}"


def feed_users(cid: str) -> str:
    """Everyone who ever had a span in the group's feed."""
    return f"feedusers:{_tag(cid)}"


def spans(user: str) -> str:
    """Hash conversation -> the user's spans of that group's feed (JSON)."""
    return f"spans:{_tag(user)}"


# ---------------------------------------------------------------- GroupStore (groups.py)

def group(cid: str) -> str:
    """Hash with the group's owner and the seq of the last membership event applied."""
    return f"group:{_tag(cid)}"


def members(cid: str) -> str:
    """Set of the group's current members."""
    return f"members:{_tag(cid)}"


def applied_ack(event_id: str) -> str:
    """List holding a membership event's seq once applied (the web waits on it)."""
    return f"ack:{_tag(event_id)}"


# ---------------------------------------------------------------- RateLimiter (ratelimit.py)

def send_rate(user: str, window: int) -> str:
    """Counter of the user's sends in one 1 s window."""
    return f"rate:{_tag(user)}:{window}"


# ---------------------------------------------------------------- PresenceStore (push.py)

def presence(user: str) -> str:
    """Hash device -> the web connection it is on (TTL-refreshed)."""
    return f"presence:{_tag(user)}"


# ---------------------------------------------------------------- pub/sub channels

PUSH_PREFIX = "push:"


def push_channel(user: str) -> str:
    """Where a user's live messages are published; web processes subscribe per user."""
    return f"{PUSH_PREFIX}{_tag(user)}"


def user_of_push_channel(channel: str) -> str:
    """The user a `push_channel` name is for."""
    if not (channel.startswith(PUSH_PREFIX + "{") and channel.endswith("}")):
        raise ValueError(f"not a push channel: {channel!r}")
    return channel[len(PUSH_PREFIX) + 1:-1]


def node_channel(node_id: str) -> str:
    """A web process's own channel: keeps its pub/sub connection subscribed when idle."""
    return f"push-node:{_tag(node_id)}"
