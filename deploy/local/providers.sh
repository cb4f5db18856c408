# shellcheck shell=bash
# deploy/local/providers.sh - the model providers of a local stack (DESIGN §15, issue 21):
# no outside provider is reachable here, so `openai` (the catalogue's gpt-4 is
# provider:openai/gpt-4) is a local stand-in: handlers/_serve.py serving the mistral-7b
# stand-in under the name gpt-4 (OpenAI chat completions, stand_in: true in /v1/models) on
# port 8105 + the profile's offset, behind a generated key (NF_PROVIDER_KEY_OPENAI in
# secrets.env) that it checks, so the key path is the real one. The providers file
# .forge/<profile>/providers.json points the worker's handlers at it (NF_PROVIDERS_FILE,
# passed with the key through NF_WORKER_HANDLER_ENV: env.sh). Sourced after services.sh.

forge_standin_paths() {
    PORT_STANDIN=$((8105 + ${FORGE_PORT_OFFSET:-0}))
    STANDIN_DIR=$FORGE_RUN/standin
    STANDIN_LOG=$FORGE_LOGS/standin.log
    STANDIN_PIDFILE=$FORGE_RUN/standin.pid
    FORGE_PROVIDERS_FILE=$FORGE_STATE/providers.json
}

forge_standin_pid() {
    forge_standin_paths
    forge_pidfile_alive "$STANDIN_PIDFILE" "--port $PORT_STANDIN"
}

forge_standin_ready() {
    forge_standin_paths
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT_STANDIN/healthz") || true
    [[ $code == 200 ]] && return 0
    echo "GET /healthz: ${code:-no answer}"
    return 1
}

# The providers file the worker's handlers read: base_url from this profile's port, the
# key by the name of its variable only (the key itself is in secrets.env).
forge_providers_write() {
    forge_standin_paths
    mkdir -p "$FORGE_STATE"
    cat >"$FORGE_PROVIDERS_FILE.tmp" <<EOF
{
  "comment": "written by ./forge up (deploy/local/providers.sh): the local stand-in for openai",
  "providers": {
    "openai": {
      "base_url": "http://127.0.0.1:$PORT_STANDIN/v1",
      "api_key_env": "NF_PROVIDER_KEY_OPENAI",
      "models": {"gpt-4": {"input_per_1m_usd": 30.0, "output_per_1m_usd": 60.0}},
      "concurrency": 4,
      "requests_per_minute": 1200,
      "retry_budget_s": 60,
      "stand_in": true
    }
  }
}
EOF
    mv -f "$FORGE_PROVIDERS_FILE.tmp" "$FORGE_PROVIDERS_FILE"
}

# Starts the stand-in without waiting (torch takes seconds to import); forge_standin_wait
# waits. The model is the deterministic mistral-7b stand-in (built once into .forge/models).
forge_standin_launch() {
    forge_standin_paths
    forge_providers_write
    if forge_standin_pid >/dev/null; then
        forge_say "standin: already running (port $PORT_STANDIN)"
        return 0
    fi
    forge_check_port_free standin "$PORT_STANDIN"
    mkdir -p "$STANDIN_DIR" "$FORGE_LOGS" "$FORGE_RUN"
    local key models=$FORGE_ROOT/.forge/models
    key=$(forge_secret NF_PROVIDER_KEY_OPENAI)
    forge_say "standin: gpt-4 stand-in (openai provider) on port $PORT_STANDIN"
    [[ -f $STANDIN_LOG ]] && mv -f "$STANDIN_LOG" "$STANDIN_LOG.1"
    # the key reaches the server through its environment, never argv
    # one torch thread per request: generation is latency bound (see _providers.LocalChat)
    (cd "$FORGE_ROOT/handlers" && exec env NEXA_MODEL_CACHE="$models" NF_PROVIDER_KEY_OPENAI="$key" OMP_NUM_THREADS=1 \
        setsid python3 -c '
import sys
sys.dont_write_bytecode = True
import _hf
d = _hf.stand_in_dir("mistral-7b")
sys.argv = ["_serve.py", "--hf-model", d] + sys.argv[1:]
import runpy
runpy.run_path("_serve.py", run_name="__main__")
' --model-id gpt-4 --dir "$STANDIN_DIR" --replicas 4 --port "$PORT_STANDIN" \
        --api-key-env NF_PROVIDER_KEY_OPENAI --stand-in >"$STANDIN_LOG" 2>&1 </dev/null) &
    echo $! >"$STANDIN_PIDFILE"
    forge_wait_exec $! "--port $PORT_STANDIN" || true
}

forge_standin_wait() {
    forge_standin_paths
    local deadline=$((SECONDS + 120))
    until forge_standin_ready >/dev/null; do
        if ! forge_standin_pid >/dev/null; then
            forge_warn "standin exited during start"
            forge_tail_log "$STANDIN_LOG" 30
            return 1
        fi
        if ((SECONDS >= deadline)); then
            forge_warn "standin not ready after 120s"
            forge_tail_log "$STANDIN_LOG" 30
            return 1
        fi
        sleep 0.25
    done
}

forge_standin_stop() {
    forge_standin_paths
    local pid
    pid=$(forge_standin_pid) || { rm -f "$STANDIN_PIDFILE"; return 0; }
    forge_say "standin: stopping"
    forge_stop_pid "$pid" standin 10
    rm -f "$STANDIN_PIDFILE"
}

forge_standin_status() {
    forge_standin_paths
    forge_status_line standin "$(forge_standin_pid || true)" "$PORT_STANDIN" forge_standin_ready
}
