"""Push agent: each sequenced record to the online devices of its recipients.

Run: `faust -L uvloop -A agents.push worker --without-web`. Publishes on the per-user Redis
channels that web processes subscribe to for their connected devices. Push is
best effort on top of the inbox: a device that misses a push gets the message by sync.
"""

from __future__ import annotations

from agents.base import create_sink_app
from app.settings import get_settings
from app.usecases.sinks import SINKS

app = create_sink_app(SINKS["push"], get_settings())
