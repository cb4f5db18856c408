# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables set here are read by the other sourced scripts
# deploy/local/backing.sh - the backing servers of a profile as plain local processes:
# PostgreSQL 15, Redis, the Kafka broker (KRaft) and - in objstore.sh - the S3 object
# store. Each has start (idempotent: a running one is detected and left alone), ready,
# stop (only what we started: found through our pid files) and a status line. Sourced
# after lib.sh and env.sh (profile loaded).

FORGE_BACKING=(postgres redis kafka)

# ---------------------------------------------------------------- PostgreSQL

# Where the cluster lives, and as whom it runs.
#
# initdb and postgres refuse to run as root, so as root the cluster runs as the Debian
# `postgres` user - who must be able to reach its data dir. The checkout may sit under a
# root-only directory (/root/..., a CI clone anywhere), and loosening the permissions of
# the user's parent directories behind their back is not ours to do. So as root the
# cluster lives in /var/lib/nexa-forge/<profile>-<hash of the checkout path> (persistent,
# unlike /tmp, and one per checkout and profile), owned by postgres, and
# .forge/<profile>/pg is a symlink to it so everything is still found under .forge.
# As a normal user the cluster runs as that user, directly in .forge/<profile>/pg.
forge_pg_paths() {
    PG_BIN=${NF_PG_BINDIR:-/usr/lib/postgresql/15/bin}
    if ((EUID == 0)); then
        local hash
        hash=$(printf '%s' "$FORGE_ROOT" | sha256sum | cut -c1-12)
        PG_USER=postgres
        PG_HOME=/var/lib/nexa-forge/$FORGE_PROFILE-$hash
    else
        PG_USER=$(id -un)
        PG_HOME=$FORGE_STATE/pg
    fi
    PG_DATA=$PG_HOME/data
    PG_LOG=$PG_HOME/postgres.log
}

# pg_as CMD...: runs CMD as the cluster's owner, from a directory it can enter
# (initdb fails when it cannot resolve its working directory).
pg_as() {
    if ((EUID == 0)); then
        (cd "$PG_HOME" && runuser -u "$PG_USER" -- "$@")
    else
        (cd "$PG_HOME" && "$@")
    fi
}

forge_pg_pid() {
    [[ -r $PG_DATA/postmaster.pid ]] || return 1
    local pid
    pid=$(head -n1 "$PG_DATA/postmaster.pid")
    forge_pid_alive "$pid" "$PG_DATA" && echo "$pid"
}

forge_pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT_PG"; }

forge_pg_psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT_PG" -U postgres -d postgres -tA "$@"
}

forge_pg_prepare_home() {
    # A cluster whose .forge link is gone was orphaned by `rm -rf .forge` (a full reset of
    # the profile): Redis and Kafka state went with it, so the database goes too.
    if ((EUID == 0)) && [[ -d $PG_HOME && ! -L $FORGE_STATE/pg ]] && ! forge_pg_pid >/dev/null; then
        forge_say "postgres: removing the cluster orphaned by a wiped .forge/$FORGE_PROFILE"
        rm -rf "$PG_HOME"
    fi
    mkdir -p "$PG_HOME"
    if ((EUID == 0)); then
        chmod 755 "$(dirname "$PG_HOME")"
        chown "$PG_USER:" "$PG_HOME"
        chmod 700 "$PG_HOME"
        # The convenience link; a stale real directory from a non-root run is left alone.
        [[ -e $FORGE_STATE/pg && ! -L $FORGE_STATE/pg ]] || ln -sfn "$PG_HOME" "$FORGE_STATE/pg"
    fi
    ln -sfn "$PG_LOG" "$FORGE_LOGS/postgres.log"
}

forge_pg_init() {
    [[ -s $PG_DATA/PG_VERSION ]] && return 0
    forge_say "postgres: creating the cluster in $PG_DATA"
    # trust: a loopback-only dev/test cluster; the services connect as role `forge`.
    pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-locale >"$PG_HOME/initdb.log" 2>&1 ||
        { forge_tail_log "$PG_HOME/initdb.log"; return 1; }
    # Our settings live in forge.conf, rewritten at every start (ports follow the profile).
    echo "include_if_exists = 'forge.conf'" | pg_as tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

forge_pg_write_conf() {
    {
        echo "# written by deploy/local/backing.sh at every start - edits are lost"
        echo "port = $PORT_PG"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = ''" # TCP only: no clash over /var/run/postgresql
        echo "max_connections = 200"        # five services' pools plus the tests
        if [[ $FORGE_PROFILE == test ]]; then
            # The test cluster is wiped every run: durability only costs time there.
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } | pg_as tee "$PG_DATA/forge.conf" >/dev/null
}

forge_pg_start() {
    forge_pg_paths
    forge_pg_prepare_home
    if forge_pg_pid >/dev/null; then
        forge_say "postgres: already running (port $PORT_PG)"
    else
        forge_check_port_free postgres "$PORT_PG"
        forge_pg_init
        forge_pg_write_conf
        forge_say "postgres: starting on port $PORT_PG"
        pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -s -w -t 60 start ||
            { forge_tail_log "$PG_LOG"; return 1; }
    fi
    forge_wait_until 30 "postgres on port $PORT_PG" forge_pg_ready || { forge_tail_log "$PG_LOG"; return 1; }
    forge_pg_ensure_db
}

# Role and database `forge` (owner of the database, so each service can create its schema).
forge_pg_ensure_db() {
    if [[ -z $(forge_pg_psql -c "SELECT 1 FROM pg_roles WHERE rolname = 'forge'") ]]; then
        forge_pg_psql -c "CREATE ROLE forge LOGIN CREATEDB"
    fi
    if [[ -z $(forge_pg_psql -c "SELECT 1 FROM pg_database WHERE datname = 'forge'") ]]; then
        forge_pg_psql -c "CREATE DATABASE forge OWNER forge"
    fi
}

forge_pg_stop() {
    forge_pg_paths
    forge_pg_pid >/dev/null || return 0
    forge_say "postgres: stopping"
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -s -w -t 60 -m fast stop
}

forge_pg_status() {
    forge_pg_paths
    forge_status_line postgres "$(forge_pg_pid || true)" "$PORT_PG" forge_pg_ready
}

# Removes the cluster of this profile (wiping .forge/<profile> alone would leave it).
forge_pg_wipe() {
    forge_pg_paths
    if [[ $PG_HOME != "$FORGE_STATE"/* ]]; then rm -rf "$PG_HOME"; fi
}

# ---------------------------------------------------------------- Redis

forge_redis_pid() {
    forge_pidfile_alive "$FORGE_RUN/redis.pid" "redis-server 127.0.0.1:$PORT_REDIS"
}

forge_redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p "$PORT_REDIS" ping 2>/dev/null) == PONG ]]; }

forge_redis_start() {
    local log=$FORGE_LOGS/redis.log
    if forge_redis_pid >/dev/null; then
        forge_say "redis: already running (port $PORT_REDIS)"
    else
        forge_check_port_free redis "$PORT_REDIS"
        mkdir -p "$FORGE_STATE/redis"
        forge_say "redis: starting on port $PORT_REDIS"
        # appendonly: the ready queues and leases survive a Redis restart (DESIGN §9 says
        # they can be rebuilt, but a dev restart should not need that). No RDB snapshots.
        redis-server --bind 127.0.0.1 --port "$PORT_REDIS" --protected-mode yes \
            --dir "$FORGE_STATE/redis" --appendonly yes --save '' \
            --daemonize yes --pidfile "$FORGE_RUN/redis.pid" --logfile "$log"
    fi
    forge_wait_until 30 "redis on port $PORT_REDIS" forge_redis_ready || { forge_tail_log "$log"; return 1; }
}

forge_redis_stop() {
    local pid
    pid=$(forge_redis_pid) || { rm -f "$FORGE_RUN/redis.pid"; return 0; }
    forge_say "redis: stopping"
    forge_stop_pid "$pid" redis 30 # SIGTERM: Redis fsyncs the AOF and exits
    rm -f "$FORGE_RUN/redis.pid"
}

forge_redis_status() {
    forge_status_line redis "$(forge_redis_pid || true)" "$PORT_REDIS" forge_redis_ready
}

# ---------------------------------------------------------------- Kafka

forge_kafka_paths() {
    KAFKA_DIR=$FORGE_STATE/kafka
    KAFKA_DATA=$KAFKA_DIR/data
    KAFKA_PROPS=$KAFKA_DIR/server.properties
    KAFKA_LOG=$FORGE_LOGS/kafka.log
    KAFKA_PIDFILE=$FORGE_RUN/kafka.pid
}

forge_kafka_pid() {
    forge_kafka_paths
    forge_pidfile_alive "$KAFKA_PIDFILE" "$KAFKA_PROPS"
}

forge_kafka_ready() {
    forge_port_open "$PORT_KAFKA" &&
        python3 "$FORGE_ROOT/deploy/local/kafka_ready.py" "$FORGE_KAFKA_BROKERS" 2
}

# The JVM command line of every Kafka tool we run (the options of Kafka's own scripts,
# with a heap sized for a laptop: one broker with a few small topics).
forge_kafka_java_cmd() {
    KAFKA_JAVA=(java -Xmx512m -Xms256m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$FORGE_ROOT/deploy/kafka/log4j2.yaml"
        -cp "$FORGE_KAFKA_LIB/*")
}

forge_kafka_render_props() {
    mkdir -p "$KAFKA_DATA"
    sed -e "s|@PORT@|$PORT_KAFKA|g" \
        -e "s|@CONTROLLER_PORT@|$PORT_KAFKA_CONTROLLER|g" \
        -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
        "$FORGE_ROOT/deploy/kafka/server.properties.in" >"$KAFKA_PROPS"
}

# KRaft storage is formatted once per data dir with a fresh cluster id.
forge_kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local cluster_id
    # 16 random bytes, base64url (Kafka's format); never with a leading '-', which the
    # storage tool would read as an option (Kafka's own random-uuid avoids it too).
    cluster_id=$(python3 -c '
import base64, uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not cid.startswith("-"):
        print(cid)
        break
')
    forge_say "kafka: formatting storage (cluster $cluster_id)"
    forge_kafka_java_cmd
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" \
        >"$KAFKA_DIR/format.log" 2>&1 || { forge_tail_log "$KAFKA_DIR/format.log"; return 1; }
}

# Starts the broker without waiting for it (the JVM takes seconds to come up: `up` starts
# Postgres and Redis meanwhile); forge_kafka_wait_ready then waits.
forge_kafka_launch() {
    forge_kafka_paths
    local pid
    if pid=$(forge_kafka_pid); then
        forge_say "kafka: already running (port $PORT_KAFKA)"
        return 0
    fi
    forge_check_port_free kafka "$PORT_KAFKA"
    forge_check_port_free kafka-controller "$PORT_KAFKA_CONTROLLER"
    forge_kafka_render_props
    forge_kafka_format
    forge_say "kafka: starting on port $PORT_KAFKA"
    [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.1"
    # setsid: the broker outlives this script and a Ctrl-C in its terminal.
    forge_kafka_java_cmd
    setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_PROPS" >"$KAFKA_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$KAFKA_PIDFILE"
    forge_wait_exec "$pid" "$KAFKA_PROPS" || true # an instant exit is reported by the wait
}

# Ready = the port answers AND a metadata request works (see kafka_ready.py).
forge_kafka_wait_ready() {
    forge_kafka_paths
    local deadline=$((SECONDS + 90)) rc
    while true; do
        rc=0
        forge_kafka_ready || rc=$?
        ((rc == 0)) && return 0
        ((rc == 2)) && forge_die "cannot check Kafka: python3 lacks confluent_kafka (./forge install)"
        if ! forge_kafka_pid >/dev/null; then
            forge_warn "kafka exited during start"
            forge_tail_log "$KAFKA_LOG" 40
            return 1
        fi
        if ((SECONDS >= deadline)); then
            forge_warn "kafka not ready after 90s"
            forge_tail_log "$KAFKA_LOG" 40
            return 1
        fi
        sleep 0.5
    done
}

forge_kafka_stop() {
    forge_kafka_paths
    local pid
    pid=$(forge_kafka_pid) || { rm -f "$KAFKA_PIDFILE"; return 0; }
    forge_say "kafka: stopping"
    forge_stop_pid "$pid" kafka 60 # controlled shutdown: a few seconds on one node
    rm -f "$KAFKA_PIDFILE"
}

forge_kafka_status() {
    forge_kafka_paths
    forge_status_line kafka "$(forge_kafka_pid || true)" "$PORT_KAFKA" forge_kafka_ready
}

# ---------------------------------------------------------------- all four

forge_backing_start() {
    mkdir -p "$FORGE_LOGS" "$FORGE_RUN"
    forge_kafka_launch
    forge_s3_launch
    forge_pg_start
    forge_redis_start
    forge_kafka_wait_ready
    forge_s3_wait_ready
}

# Reverse order of start: the object store, Kafka and Redis first, Postgres last.
forge_backing_stop() {
    forge_s3_stop
    forge_kafka_stop
    forge_redis_stop
    forge_pg_stop
}

# forge_check_port_free NAME PORT: refuses to start when something that is not ours
# (a system-wide redis, another checkout's stack) already holds the port.
forge_check_port_free() {
    # A process just killed is a zombie (forge_pid_exists: gone) while its other threads
    # still exit and hold its listening socket for a moment: give that up to 5 s.
    local i
    for ((i = 0; i < 50; i++)); do
        forge_port_open "$2" || return 0
        sleep 0.1
    done
    forge_die "$1: port $2 is already in use by a process this stack did not start (profile $FORGE_PROFILE)"
}

# forge_status_line NAME PID PORT [READY_CMD...]: one row of `./forge status`. A failing
# READY_CMD may print why on stdout (one line); the row then says "not-ready (why)".
forge_status_line() {
    local name=$1 pid=$2 port=$3 state=stopped ready=- why
    shift 3
    if [[ -n $pid ]]; then
        state=running
        if (($#)); then
            if why=$("$@" 2>/dev/null); then
                ready=ready
            else
                ready=not-ready
                why=${why%%$'\n'*}
                [[ -n $why ]] && ready="not-ready ($why)"
            fi
        fi
    else
        pid=-
    fi
    printf '  %-16s %-8s %-8s %-6s %s\n' "$name" "$state" "$pid" "$port" "$ready"
}
