"""One typed settings object for every process, read from `IMFLOW_*` environment variables.

Web, agents, CLI and tests all build their clients from this object, so a broker URL or a
retention period is configured in exactly one place.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 86_400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMFLOW_", env_file=".env", extra="ignore")

    # --- secrets and auth ---
    secret: SecretStr | None = Field(
        None,
        description="HS256 key for client JWTs (`make run` writes a random one to .env).",
        min_length=32,
    )
    token_ttl_s: int = 86_400

    app_prefix: str = Field("imflow", description="Prefix of Faust app ids (consumer groups).")
    topology: Literal["single", "cluster"] = Field(
        "single", description="Which local services the defaults point at: `single` (one "
        "Kafka broker, one Redis) or `cluster` (scripts' 3-node Kafka at replication 3 / "
        "min ISR 2, 6-node Redis Cluster, history table pre-split in 16 regions). A "
        "setting given explicitly always wins.")

    # --- Kafka ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_inbound: str = "imflow.inbound"
    topic_messages: str = "imflow.messages"
    topic_dead_letter: str = "imflow.dead-letter"
    partitions: int = Field(8, description="Partitions of inbound/messages (and changelogs).")
    replication_factor: int = 1
    min_insync_replicas: int = Field(
        1, description="Replicas that must have a write before Kafka acks it (acks=all); "
        "set on imflow's topics. With replication 3, 2 keeps writes durable through the "
        "loss of one broker.")
    produce_timeout_s: float = Field(
        1.0, description="Ingress answers 503 after this. The API promises an answer "
        "within 2 s: the rest is for a process that two busy cores run late.")
    ingress_outage_probe_s: float = Field(
        0.5, description="After a send to a partition (or to Kafka) failed, the ingress "
        "refuses sends there at once, letting one through this often to find it back.")
    messages_retention_s: int = 8 * DAY_S

    # --- Redis ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(
        False, description="`redis_url` names a node of a Redis Cluster (the client "
        "discovers the others; keys of one user or conversation share a slot).")
    redis_replica_acks: int = Field(
        0, description="Replicas a sink waits for (WAIT) before its Kafka offset is "
        "committed: Redis replicates asynchronously, so a failover can drop writes a "
        "master acknowledged; 1 on a Redis Cluster with replicas.")
    redis_max_connections: int = Field(64, description="Connection pool size per process.")
    redis_pool_timeout_s: float = 2.0
    inbox_retention_s: int = 7 * DAY_S
    presence_ttl_s: int = 60

    # --- HBase (Thrift1, happybase) ---
    hbase_host: str = "127.0.0.1"
    hbase_port: int = 9090
    hbase_namespace: str = "imflow"
    hbase_table: str = "history"
    hbase_pool_size: int = Field(4, description="Threads (and Thrift connections) per process.")
    hbase_timeout_ms: int = 10_000
    hbase_regions: int = Field(
        1, description="Regions `imflow init` pre-splits the history table into, on the "
        "row key's 2-hex-digit hash prefix (a divisor of 256).")
    history_retention_s: int = 180 * DAY_S

    # --- web ---
    host: str = "127.0.0.1"
    port: int = 8080
    node_id: str = Field("", description="Web process id for presence; default host:port.")
    max_body_bytes: int = 64 * 1024
    send_rate_per_s: int = Field(50, description="Messages one user may send per second.")
    sync_default_limit: int = 200
    sync_max_limit: int = 500
    history_default_limit: int = 20
    history_max_limit: int = 100
    ws_heartbeat_s: float = 20.0
    demo: bool = Field(
        False, description="Serve the demo chat page at / and its development login "
        "(POST /demo/login mints a token for any user name). `make run` sets IMFLOW_DEMO=1; "
        "never in production: anyone could log in as anyone.")
    # the ingress: admission and batch records
    admission_max_backlog_s: float = Field(
        2.0, description="The ingress refuses new messages (503 overloaded) while the "
        "oldest record the sequencer, inbox or push agent has not committed is older than "
        "this (sinks commit every 0.5 s, so keep it above 1).")
    admission_max_loop_lag_s: float = Field(
        0.5, description="The ingress refuses new messages (503 overloaded) while its "
        "own event loop runs this late: the process is too busy to answer in time.")
    admission_probe_interval_s: float = Field(
        0.5, description="How often each web process samples the agents' backlog.")
    listen_backlog: int = Field(
        2048, description="Connections the kernel holds for the web process before it "
        "accepts them (aiohttp's default is 128; past it, new connections' SYNs are dropped "
        "and retried after 1, 3, 7 s..., an overload the ingress never sees to refuse). "
        "Capped by net.core.somaxconn.")
    ingress_max_in_flight: int = Field(
        512, ge=1, description="Most messages one web process has admitted and not yet "
        "answered; past it new messages get 503 overloaded at once. Each one's answer time "
        "is then about this over the rate the process answers at (1,300-1,400/s for one "
        "web on a saturated 2-core box); with several web processes on the same cores, "
        "divide it among them.")
    record_batch_max_bytes: int = Field(
        512 * 1024, description="Largest batch record the ingress and the sequencer write "
        "(under Kafka's 1 MB default; a single message may be larger up to its own limit).")
    ingress_batch_max_records: int = Field(
        500, description="Most messages the ingress packs into one batch record.")
    ingress_batch_linger_ms: float = Field(
        5.0, description="The ingress sends a round of batch records (one per partition) "
        "at most this often; a message that arrives when the last round began longer ago "
        "than this is sent at once, so an idle system adds no wait.")
    ingress_round_full_records: int = Field(
        32, ge=1, description="A round of the ingress that holds this many messages (all "
        "partitions together) goes out as soon as the round before it is acked, without "
        "waiting out the linger: 32 messages already share one produce request, and "
        "waiting longer only slows clients that wait for their answers. At one message "
        "per ms a 5 ms round holds 5, so below about 6,400 msg/s the linger decides.")

    # --- agents ---
    agent_session_timeout_s: float = Field(
        10.0, description="A worker that stops heartbeating (kill -9) loses its partitions "
        "after this long.")
    agent_batch_max: int = 500
    agent_metrics_port: int | None = Field(
        None, description="Port of this agent process's Prometheus metrics (default: 9101 "
        "sequencer, 9102 inbox, 9103 history, 9104 push; 0: none). A second process of the "
        "same agent needs a port of its own.")
    agent_lag_interval_s: float = Field(
        5.0, description="How often an agent refreshes its consumer-lag gauges.")

    agent_fetch_max_wait_ms: int = Field(
        100, description="Longest a Kafka fetch of an agent waits for data (Faust fixes "
        "1,500 ms, which let agents lag 1.5 s behind; see agents/transport.py).")
    agent_round_ms: int = Field(
        5, ge=0, description="A busy sink agent (inbox, history, push) fetches in rounds: "
        "after a fetch that returned records its next fetch waits up to this long for more "
        "(0: it returns at the first record, always); after an empty fetch the next returns "
        "at the first record. The sequencer's commits come in rounds already "
        "(IMFLOW_SEQUENCER_ROUND_MS), so this only matters when they come faster (several "
        "sequencer processes, several brokers).")
    sequencer_round_ms: int = Field(
        15, ge=0, description="A busy sequencer works in rounds, each one Kafka transaction "
        "for all of its partitions: after a fetch that returned records its next fetch waits "
        "up to this long for more (per broker); after an empty fetch the next returns at the "
        "first record. A round costs the client and the broker a few CPU-ms, and every sink "
        "a fetch, whatever it holds: a longer round saves CPU under load and adds up to this "
        "to a message's latency.")
    dedup_window_s: int = Field(
        DAY_S, description="How long the sequencer remembers an accepted message id, so a "
        "client retry within it is stored once (G2). Kept on disk (RocksDB), not in RAM.")
    sequencer_transaction_timeout_s: float = Field(
        20.0, description="Kafka aborts a sequencer transaction left open this long (a "
        "paused or dead process's), so readers of imflow.messages never wait longer.")
    sequencer_request_timeout_s: float = Field(
        10.0, description="Longest a sequencer transaction's Kafka step may take before "
        "the partition is fenced again and caught up from its changelog.")
    read_fanout_threshold: int = Field(
        1000, description="A group with more members than this switches to read fan-out: "
        "its messages are stored once in a group feed that members' syncs read, instead of "
        "once per member inbox. Sticky: a group stays switched once it has switched.")
    feed_unread_scan: int = Field(
        1000, description="Unread counts of read fan-out groups count at most this many of "
        "the newest entries (the conversation list shows at most this number).")
    feed_wait_s: float = Field(
        2.0, description="How long the push agent waits for the inbox agent to apply a read "
        "fan-out record before it skips that record's push (sync still delivers it).")
    faust_data_dir: str = Field(
        ".var/faust", description="Local data of this process's agents (the sequencer's "
        "RocksDB state); one folder per process.")

    @model_validator(mode="after")
    def _topology_defaults(self) -> Self:
        """The cluster topology's endpoints and replication, for what was not set."""
        if self.topology == "cluster":
            for name, value in CLUSTER_DEFAULTS.items():
                if name not in self.model_fields_set:
                    setattr(self, name, value)
        return self

    def jwt_secret(self) -> str:
        """The JWT key; only the web and token minting need it, so only they ask."""
        if self.secret is None:
            raise ValueError("IMFLOW_SECRET is not set (at least 32 characters); "
                             "`make .env` writes a random one for development")
        return self.secret.get_secret_value()

    @property
    def agent_heartbeat_interval_s(self) -> float:
        """How often an agent heartbeats its consumer group (a quarter of the session)."""
        return min(3.0, self.agent_session_timeout_s / 4)

    @property
    def sequencer_state_topic(self) -> str:
        """The sequencer's compacted state changelog (conversations, groups, position)."""
        return f"{self.app_prefix}-sequencer-state"

    @property
    def sequencer_dedup_topic(self) -> str:
        """The sequencer's dedup-window changelog (time-retained, one record a batch)."""
        return f"{self.app_prefix}-sequencer-dedup"

    @property
    def hbase_table_name(self) -> str:
        return f"{self.hbase_namespace}:{self.hbase_table}"


# What IMFLOW_TOPOLOGY=cluster means: the services scripts/services.sh starts then.
CLUSTER_DEFAULTS: dict[str, object] = {
    "kafka_bootstrap": "127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193",
    "replication_factor": 3,
    "min_insync_replicas": 2,
    "redis_url": "redis://127.0.0.1:7000/0",
    "redis_cluster": True,
    "redis_replica_acks": 1,
    "hbase_regions": 16,
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
