#!/usr/bin/env python3
"""Exit 0 when the Kafka broker at BOOTSTRAP answers a metadata request, 1 otherwise.

An open port is not enough: a KRaft broker accepts connections before its controller
has elected itself and before it can serve metadata, and the services' topic creation
would fail in that window. Used by deploy/local/backing.sh in a poll loop.

usage: kafka_ready.py BOOTSTRAP [TIMEOUT_S]
Exit 2 when confluent_kafka is missing, so the caller stops polling at once.
"""
import sys

try:
    from confluent_kafka.admin import AdminClient
except ImportError as err:
    print(f"kafka_ready.py: {err} (pip install confluent-kafka)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    bootstrap = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    # log_level 0: librdkafka's "connection refused" lines are expected while we poll.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        meta = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException on timeout / transport failure
        return 1
    # A broker with an active controller lists itself; an empty list means not yet.
    return 0 if meta.brokers and meta.controller_id >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
