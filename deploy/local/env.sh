# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables set here are read by the other sourced scripts
# deploy/local/env.sh - the one place that knows what differs between stack profiles.
#
#   dev   the developer's stack: the ports of DESIGN §10, state in .forge/dev, binaries
#         from build/ (RelWithDebInfo).
#   test  the stack `./forge test` starts: every port +10000 so it never touches a running
#         dev stack, state in .forge/test (wiped at the start of each test run), binaries
#         from build-test/ (Debug = ASan + UBSan).
#
# Sourced after lib.sh with FORGE_ROOT set; call forge_profile_load PROFILE once.

# The services, in start order. The worker is an agent, not a server: no port.
#   name            binary              dev port   address variable (internals.md)
FORGE_SERVICE_TABLE='
auth              nf-auth             8101       NF_AUTH_ADDR
scheduler         nf-scheduler        8102       NF_SCHEDULER_ADDR
billing           nf-billing          8103       NF_BILLING_ADDR
worker-manager    nf-worker-manager   8104       NF_WM_ADDR
gateway           nf-gateway          8000       NF_GATEWAY_ADDR
worker            nf-worker           -          -
'

# The test profile's shift of every port. Overridable so a second checkout on the same
# machine can run its tests while another `./forge test` holds the default block.
FORGE_TEST_PORT_OFFSET=${FORGE_TEST_PORT_OFFSET:-10000}

forge_profile_load() {
    local profile=$1 offset
    case $profile in
    dev) offset=0 ;;
    test) offset=$FORGE_TEST_PORT_OFFSET ;;
    *) forge_die "unknown profile '$profile' (use dev or test)" ;;
    esac

    FORGE_PROFILE=$profile
    FORGE_PORT_OFFSET=$offset # providers.sh: the stand-in provider's port
    FORGE_STATE=$FORGE_ROOT/.forge/$profile
    FORGE_LOGS=$FORGE_STATE/logs
    FORGE_RUN=$FORGE_STATE/run
    FORGE_SECRETS=$FORGE_STATE/secrets.env
    FORGE_API_KEY_FILE=$FORGE_STATE/api_key
    FORGE_ARTIFACTS=$FORGE_STATE/artifacts

    if [[ $profile == test ]]; then
        FORGE_BUILD=$FORGE_ROOT/build-test
        FORGE_BUILD_TYPE=Debug
    else
        FORGE_BUILD=$FORGE_ROOT/build
        FORGE_BUILD_TYPE=RelWithDebInfo
    fi
    FORGE_BIN=$FORGE_BUILD/bin

    PORT_PG=$((5432 + offset))
    PORT_REDIS=$((6379 + offset))
    PORT_KAFKA=$((9092 + offset))
    PORT_KAFKA_CONTROLLER=$((9093 + offset))
    PORT_DASHBOARD=$((3000 + offset)) # dashboard.sh (next start), not in the service table
    PORT_S3=$((9000 + offset))        # objstore.sh (versitygw)

    FORGE_KAFKA_BROKERS=127.0.0.1:$PORT_KAFKA
    FORGE_REDIS_ADDR=127.0.0.1:$PORT_REDIS
    FORGE_PG_DSN="host=127.0.0.1 port=$PORT_PG dbname=forge user=forge"
    FORGE_S3_ENDPOINT=http://127.0.0.1:$PORT_S3
    FORGE_S3_REGION=us-east-1
    FORGE_S3_BUCKET=${NF_S3_BUCKET:-nexa-forge} # the one bucket of the platform

    # Parse the service table into lookups keyed by service name.
    FORGE_SERVICES=()
    FORGE_SERVERS=() # the services that answer HTTP (all but the worker)
    declare -gA SVC_BIN=() SVC_PORT=() SVC_ADDR_VAR=()
    local name bin port var
    while read -r name bin port var; do
        [[ -n $name ]] || continue
        FORGE_SERVICES+=("$name")
        SVC_BIN[$name]=$bin
        SVC_ADDR_VAR[$name]=$var
        if [[ $port == - ]]; then
            SVC_PORT[$name]=-
        else
            SVC_PORT[$name]=$((port + offset))
            FORGE_SERVERS+=("$name")
        fi
    done <<<"$FORGE_SERVICE_TABLE"
    PORT_GATEWAY=${SVC_PORT[gateway]}
    PORT_AUTH=${SVC_PORT[auth]}
    FORGE_API_URL=http://127.0.0.1:$PORT_GATEWAY
}

# forge_service_env NAME: prints the service's environment, one VAR=value per line.
# Every service gets the shared backing-server settings and every service address (the
# gateway and the others call each other through them); the few per-service extras sit
# in the case below. A caller's own NF_LOG_LEVEL wins so `NF_LOG_LEVEL=debug ./forge up`
# works.
forge_service_env() {
    local name=$1 svc
    echo "NF_LOG_LEVEL=${NF_LOG_LEVEL:-info}"
    echo "NF_KAFKA_BROKERS=$FORGE_KAFKA_BROKERS"
    echo "NF_KAFKA_PARTITIONS=3"
    echo "NF_KAFKA_REPLICATION=1"
    echo "NF_REDIS_ADDR=$FORGE_REDIS_ADDR"
    echo "NF_PG_DSN=$FORGE_PG_DSN"
    for svc in "${FORGE_SERVERS[@]}"; do
        echo "${SVC_ADDR_VAR[$svc]}=127.0.0.1:${SVC_PORT[$svc]}"
    done
    case $name in
    gateway | scheduler | worker) forge_s3_env ;; # the services that talk to the store
    esac
    case $name in
    worker-manager)
        echo "NF_WORKER_REGISTRATION_TOKEN=$(forge_secret NF_WORKER_REGISTRATION_TOKEN)"
        # Both profiles run the liveness defaults (2 s heartbeats, 6 s leases, lost after
        # 3 missed beats): the fleet tests measure the recovery a site gets out of the box.
        ;;
    scheduler)
        # the catalogue with the stand-ins this stack put in its object store (store.sh)
        if [[ -f $FORGE_STATE/models.json ]]; then
            echo "NF_SCHEDULER_MODELS_FILE=$FORGE_STATE/models.json"
        fi
        # a billing outage test waits this long for its first job (default 30 s)
        if [[ $FORGE_PROFILE == test ]]; then
            echo "NF_SCHEDULER_BUDGET_WAIT_MS=4000"
        fi
        ;;
    gateway)
        if [[ $FORGE_PROFILE == test ]]; then
            # The suite shares one key across hundreds of submissions: a default limit
            # would make a late test fail by how fast the earlier ones ran. The rate-limit
            # tests give their own keys lower limits (a key never exceeds this default).
            echo "NF_GATEWAY_RATE_LIMIT=1000000"
            echo "NF_GATEWAY_RATE_BURST=100000"
        fi
        ;;
    worker)
        echo "NF_API_URL=$FORGE_API_URL"
        echo "NF_WORKER_REGISTRATION_TOKEN=$(forge_secret NF_WORKER_REGISTRATION_TOKEN)"
        echo "NF_WORKER_HANDLERS=$FORGE_ROOT/handlers"
        echo "NF_WORKER_ARTIFACT_ROOT=$FORGE_ARTIFACTS"
        # deploy jobs go to workers of their region (params.region, default us-east-1)
        echo "NF_WORKER_LABELS=region=us-east-1"
        # the handlers' stand-in models, built once (deterministic) and shared by profiles
        echo "NEXA_MODEL_CACHE=$FORGE_ROOT/.forge/models"
        # base models and benchmark data fetched from the object store (store.sh)
        echo "NF_WORKER_STORE_CACHE=$FORGE_STATE/worker-cache"
        # the model providers (providers.sh): the file and its keys reach the handlers
        # only, by name (every other NF_* variable stays the agent's)
        echo "NF_PROVIDERS_FILE=$FORGE_STATE/providers.json"
        echo "NF_PROVIDER_KEY_OPENAI=$(forge_secret NF_PROVIDER_KEY_OPENAI)"
        echo "NF_WORKER_HANDLER_ENV=NF_PROVIDERS_FILE,NF_PROVIDER_KEY_OPENAI"
        ;;
    esac
    # Debug (sanitizer) builds: report every error with a stack and stop at the first.
    # Leak detection stays on: the services free everything on SIGTERM, and ./forge test
    # scans the logs for LeakSanitizer reports after the stack stops.
    if [[ $FORGE_BUILD_TYPE == Debug ]]; then
        # The gateway streams GiB-sized bodies in small buffers: ASan's default 256 MB
        # quarantine of freed memory would be all its RSS (the data-plane test measures
        # the gateway's memory under a 100 MiB upload and download).
        if [[ $name == gateway ]]; then
            echo "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:handle_abort=1:quarantine_size_mb=1:thread_local_quarantine_size_kb=64"
        else
            echo "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:handle_abort=1"
        fi
        echo "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
    fi
}

# The object store's address and root keys (objstore.sh), for the services that talk S3.
forge_s3_env() {
    echo "NF_S3_ENDPOINT=$FORGE_S3_ENDPOINT"
    echo "NF_S3_REGION=$FORGE_S3_REGION"
    echo "NF_S3_ACCESS_KEY=$(forge_secret NF_S3_ACCESS_KEY)"
    echo "NF_S3_SECRET_KEY=$(forge_secret NF_S3_SECRET_KEY)"
    echo "NF_S3_BUCKET=$FORGE_S3_BUCKET"
}

# forge_secret NAME: the profile's generated secret NAME, created on first use.
# secrets.env is mode 600 inside the git-ignored .forge/ and never committed.
forge_secret() {
    local name=$1 value
    mkdir -p "$FORGE_STATE"
    if [[ -f $FORGE_SECRETS ]]; then
        value=$(sed -n "s/^$name=//p" "$FORGE_SECRETS" | head -n1)
        [[ -n $value ]] && { printf '%s\n' "$value"; return 0; }
    fi
    value=$(forge_random_secret)
    (umask 077 && echo "$name=$value" >>"$FORGE_SECRETS")
    chmod 600 "$FORGE_SECRETS"
    printf '%s\n' "$value"
}

# The environment tests get (integration ctest and e2e pytest), pointed at this profile.
forge_test_env() {
    # the tests' own stack scripts (conftest.stack) load the profile again: same ports
    echo "FORGE_TEST_PORT_OFFSET=$FORGE_TEST_PORT_OFFSET"
    echo "NF_TEST_REDIS_ADDR=$FORGE_REDIS_ADDR"
    echo "NF_TEST_KAFKA_BROKERS=$FORGE_KAFKA_BROKERS"
    echo "NF_TEST_PG_DSN=$FORGE_PG_DSN"
    echo "NF_TEST_API_URL=$FORGE_API_URL"
    echo "NF_TEST_AUTH_URL=http://127.0.0.1:$PORT_AUTH"
    echo "NF_TEST_WM_URL=http://127.0.0.1:${SVC_PORT[worker-manager]}"
    echo "NF_TEST_WORKER_BIN=$FORGE_BIN/nf-worker"
    echo "NF_TEST_STATE_DIR=$FORGE_STATE"
    echo "NF_TEST_LOG_DIR=$FORGE_LOGS"
    echo "NF_TEST_S3_ENDPOINT=$FORGE_S3_ENDPOINT"
    echo "NF_TEST_S3_BUCKET=$FORGE_S3_BUCKET"
    if [[ -s $FORGE_API_KEY_FILE ]]; then
        echo "NF_TEST_API_KEY=$(cat "$FORGE_API_KEY_FILE")"
    fi
    # The generated secrets, once the stack has made them: the token for tests that
    # register their own (fake) workers, the object store's root keys.
    if [[ -s $FORGE_SECRETS ]]; then
        echo "NF_TEST_WORKER_REGISTRATION_TOKEN=$(forge_secret NF_WORKER_REGISTRATION_TOKEN)"
        echo "NF_TEST_S3_ACCESS_KEY=$(forge_secret NF_S3_ACCESS_KEY)"
        echo "NF_TEST_S3_SECRET_KEY=$(forge_secret NF_S3_SECRET_KEY)"
    fi
}
