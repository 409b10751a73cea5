"""imflow's application package, in layers (each imports only the layers above it):

- the core: `models` (ids, messages, the topic records), `settings`, `errors`, `auth`;
- `stores/`: one store per backing service and domain (Redis keys and scripts, HBase
  history, Kafka), each turning its client's failures into `errors.StoreUnavailable`;
- `usecases/`: what spans several stores (offline delivery, the sinks, sync, replay);
- the entry points: `web/` (the aiohttp app) and `cli` (the `imflow` command), plus the
  tools for a checkout: `devstack` (runs the processes for tests and bench) and
  `apiclient` (a client of the HTTP API).

The Faust agents (`agents/`) and the sequencer's state (`tables/`) sit beside this
package and use it; it never imports them.
"""
