# shellcheck shell=bash
# deploy/local/services.sh - the Nexa Forge processes of a profile (the table in env.sh):
# start, readiness, stop, status, and the local user's API key. Sourced after lib.sh,
# env.sh (profile loaded) and backing.sh.

FORGE_READY_TIMEOUT=${FORGE_READY_TIMEOUT:-90}

forge_svc_bin() { echo "$FORGE_BIN/${SVC_BIN[$1]}"; }
forge_svc_pidfile() { echo "$FORGE_RUN/$1.pid"; }
forge_svc_log() { echo "$FORGE_LOGS/$1.log"; }

# Prints the pid when the service runs: our pid file names a live process started from
# this profile's binary (the full path tells build/ from build-test/).
forge_svc_pid() {
    forge_pidfile_alive "$(forge_svc_pidfile "$1")" "$(forge_svc_bin "$1")"
}

forge_svc_url() { echo "http://127.0.0.1:${SVC_PORT[$1]}"; }

forge_svc_ready() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(forge_svc_url "$1")/readyz") || true
    [[ $code == 200 ]]
}

# forge_svc_unready_why NAME: succeeds when GET /readyz answers 200; otherwise prints why
# not on one line - the checks that are not "ok", e.g. "kafka: no partitions (rebalancing)"
# - and fails (the READY_CMD of forge_status_line).
forge_svc_unready_why() {
    local body code
    body=$(curl -s --max-time 2 -w '\n%{http_code}' "$(forge_svc_url "$1")/readyz") || true
    code=${body##*$'\n'}
    [[ $code == 200 ]] && return 0
    if [[ $code == 503 ]]; then
        python3 -c 'import json, sys
checks = json.loads(sys.stdin.read()).get("checks", {})
print("; ".join(f"{k}: {v}" for k, v in checks.items() if not str(v).startswith("ok")))' \
            <<<"${body%$'\n'*}" 2>/dev/null || echo "GET /readyz: 503"
    else
        echo "GET /readyz: no answer"
    fi
    return 1
}

# forge_svc_start NAME: starts one service unless it already runs. A service whose binary
# was rebuilt since it started is restarted, so `./forge up` after a code change picks up
# the change; otherwise a running one is left alone (`up` twice is harmless).
forge_svc_start() {
    local name=$1 bin pidfile log pid
    bin=$(forge_svc_bin "$name")
    pidfile=$(forge_svc_pidfile "$name")
    log=$(forge_svc_log "$name")
    [[ -x $bin ]] || forge_die "$name: $bin is missing (build failed?)"
    if pid=$(forge_svc_pid "$name"); then
        if [[ $bin -nt $pidfile ]]; then
            forge_say "$name: binary rebuilt, restarting"
            forge_stop_pid "$pid" "$name" 20
        else
            forge_say "$name: already running (pid $pid)"
            FORGE_SVC_STARTED=0
            return 0
        fi
    fi
    if [[ ${SVC_PORT[$name]} != - ]]; then
        forge_check_port_free "$name" "${SVC_PORT[$name]}"
    fi
    local env_lines
    mapfile -t env_lines < <(forge_service_env "$name")
    [[ -f $log ]] && mv -f "$log" "$log.1" # keep the previous run's log for post-mortems
    if [[ ${SVC_PORT[$name]} == - ]]; then
        forge_say "$name: starting"
    else
        forge_say "$name: starting on port ${SVC_PORT[$name]}"
    fi
    # setsid: the service outlives this script and a Ctrl-C in its terminal. Started from
    # a background subshell (not a process-group leader), setsid execs in place, so $! is
    # the service's own pid. The cwd is the state dir so stray relative files land there.
    (cd "$FORGE_STATE" && exec env "${env_lines[@]}" setsid "$bin" >"$log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    forge_wait_exec $! "$bin" || true # an instant exit is reported by the readiness wait
    FORGE_SVC_STARTED=1
}

# Waits until every server answers GET /readyz with 200. A service that exits, or is not
# ready within FORGE_READY_TIMEOUT, fails the wait with its last log lines.
forge_svcs_wait_ready() {
    local deadline=$((SECONDS + FORGE_READY_TIMEOUT)) pending=("${FORGE_SERVERS[@]}") name still
    while ((${#pending[@]})); do
        still=()
        for name in "${pending[@]}"; do
            if ! forge_svc_pid "$name" >/dev/null; then
                forge_warn "$name exited during start"
                forge_tail_log "$(forge_svc_log "$name")" 40
                return 1
            fi
            forge_svc_ready "$name" || still+=("$name")
        done
        pending=("${still[@]}")
        ((${#pending[@]})) || break
        if ((SECONDS >= deadline)); then
            for name in "${pending[@]}"; do
                forge_warn "$name: GET /readyz not 200 after ${FORGE_READY_TIMEOUT}s ($(forge_svc_unready_why "$name"))"
                forge_tail_log "$(forge_svc_log "$name")" 40
            done
            return 1
        fi
        sleep 0.5
    done
    forge_say "all services ready"
}

# The worker is an agent with no port: it is up once it has registered with the
# worker-manager, which keeps one `wm:worker:<id>` hash per live worker in Redis
# (internals.md). A bad token, an unreachable gateway or a crash makes it exit instead.
forge_worker_registered() {
    [[ -n $(redis-cli -h 127.0.0.1 -p "$PORT_REDIS" --scan --pattern 'wm:worker:*' 2>/dev/null | head -n1) ]]
}

forge_worker_check() {
    local deadline=$((SECONDS + 30))
    until forge_worker_registered; do
        if ! forge_svc_pid worker >/dev/null; then
            forge_warn "worker exited during start"
            forge_tail_log "$(forge_svc_log worker)" 40
            return 1
        fi
        if ((SECONDS >= deadline)); then
            forge_warn "worker not registered with the worker-manager after 30s"
            forge_tail_log "$(forge_svc_log worker)" 40
            return 1
        fi
        sleep 0.25
    done
    # Registered; a worker that crashes on the answer must not pass for a running one.
    # A sanitizer prints its header at once but takes seconds to symbolize the stack
    # before the process exits, hence the log check beside the liveness check.
    ((FORGE_SVC_STARTED)) && sleep 1
    if forge_svc_pid worker >/dev/null &&
        ! grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$(forge_svc_log worker)"; then
        return 0
    fi
    forge_warn "worker crashed right after registering"
    forge_tail_log "$(forge_svc_log worker)" 40
    return 1
}

forge_svcs_start() {
    mkdir -p "$FORGE_LOGS" "$FORGE_RUN" "$FORGE_ARTIFACTS"
    forge_secret NF_WORKER_REGISTRATION_TOKEN >/dev/null # create it before any reader
    forge_standin_launch # providers.sh: the local gpt-4 stand-in; ready before the worker
    forge_store_seed     # store.sh: stand-ins, benchmarks, the catalogue the scheduler reads
    local name
    for name in "${FORGE_SERVERS[@]}"; do forge_svc_start "$name"; done
    forge_svcs_wait_ready
    forge_standin_wait
    forge_svc_start worker
    forge_worker_check
}

# Stops the worker first (it finishes reporting through the gateway and Kafka), then all
# servers at once: SIGTERM to each, then one wait, so `down` takes as long as the
# slowest service rather than the sum.
forge_svcs_stop() {
    local name pid pids=() names=()
    if pid=$(forge_svc_pid worker); then
        forge_say "worker: stopping"
        forge_stop_pid "$pid" worker 20
    fi
    rm -f "$(forge_svc_pidfile worker)"
    for name in "${FORGE_SERVERS[@]}"; do
        if pid=$(forge_svc_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
        rm -f "$(forge_svc_pidfile "$name")"
    done
    forge_standin_stop
    ((${#pids[@]})) || return 0
    forge_say "stopping: ${names[*]}"
    local i
    for i in "${!pids[@]}"; do forge_stop_pid "${pids[$i]}" "${names[$i]}" 20; done
}

forge_svcs_status() {
    local name
    for name in "${FORGE_SERVICES[@]}"; do
        if [[ ${SVC_PORT[$name]} == - ]]; then
            forge_status_line "$name" "$(forge_svc_pid "$name" || true)" -
        else
            forge_status_line "$name" "$(forge_svc_pid "$name" || true)" "${SVC_PORT[$name]}" \
                forge_svc_unready_why "$name"
        fi
    done
    forge_standin_status
}

# ---------------------------------------------------------------- the local API key

# A key works when the gateway answers 404 (not 403) for a job nobody has.
forge_api_key_works() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-Nexa-Api-Key: $1" \
        "$FORGE_API_URL/api/jobs/job_00000000000000000000000000") || true
    [[ $code == 404 ]]
}

# Reuses .forge/<profile>/api_key while it works, else asks auth for a new one for
# local@nexa.dev (created on first use). The file is mode 600.
forge_api_key_ensure() {
    if [[ -s $FORGE_API_KEY_FILE ]] && forge_api_key_works "$(cat "$FORGE_API_KEY_FILE")"; then
        return 0
    fi
    local answer key
    answer=$(curl -s --max-time 10 -X POST -H 'Content-Type: application/json' \
        -d '{"email":"local@nexa.dev"}' "http://127.0.0.1:$PORT_AUTH/internal/bootstrap") ||
        { forge_warn "auth: /internal/bootstrap did not answer"; return 1; }
    key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])' <<<"$answer" 2>/dev/null) ||
        { forge_warn "auth: unexpected /internal/bootstrap answer: $answer"; return 1; }
    (umask 077 && printf '%s\n' "$key" >"$FORGE_API_KEY_FILE")
    chmod 600 "$FORGE_API_KEY_FILE"
    forge_api_key_works "$key" || forge_warn "the new API key is refused by the gateway (not 404 on a probe)"
}
