"""Inbox agent: each sequenced record into every recipient's Redis inbox stream (write fan-out).

Run: `faust -L uvloop -A agents.inbox worker --without-web`. Idempotent (see app/stores/inbox.py),
so redelivery after a crash or a replay never doubles an entry. It also keeps the Redis
projection of group membership (app/stores/groups.py) that the web reads, and the feeds
of large groups (read fan-out, app/stores/feeds.py). See app/usecases/delivery.py.
"""

from __future__ import annotations

from agents.base import create_sink_app
from app.settings import get_settings
from app.usecases.sinks import SINKS

app = create_sink_app(SINKS["inbox"], get_settings())
