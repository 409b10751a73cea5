"""History agent: each sequenced record once into its conversation's HBase history (read fan-out).

Run: `faust -L uvloop -A agents.history worker --without-web`. Puts are batched and run in the
history store's bounded thread pool; while HBase is down the agent retries the same
batch and does not advance, so no offset past unstored records is committed.
"""

from __future__ import annotations

from agents.base import create_sink_app
from app.settings import get_settings
from app.usecases.sinks import SINKS

app = create_sink_app(SINKS["history"], get_settings())
