# shellcheck shell=bash
# deploy/local/objstore.sh - the profile's S3-compatible object store: versitygw (POSIX
# backend) as a plain local process, like the servers of backing.sh. Start (idempotent),
# ready (a signed S3 request answers), the platform bucket, stop (only what we started:
# found through our pid file) and a status line. docs/object-store.md says why versitygw
# and how the objects are laid out. Sourced after lib.sh, env.sh, install.sh and
# backing.sh (profile loaded).

FORGE_BACKING+=(s3)

forge_s3_paths() {
    S3_DATA=$FORGE_STATE/s3 # the POSIX root: one directory per bucket, one file per object
    S3_LOG=$FORGE_LOGS/s3.log
    S3_PIDFILE=$FORGE_RUN/s3.pid
}

# The pid file names a live versitygw serving this profile's data dir.
forge_s3_pid() {
    forge_s3_paths
    forge_pidfile_alive "$S3_PIDFILE" "posix $S3_DATA"
}

# forge_s3_curl CURL_ARGS...: curl with the request signed as the root user (SigV4,
# service s3). The credentials reach curl on stdin as a config file, never on its
# command line, where any local user could read them in ps. x-amz-content-sha256 is one
# of the headers S3 requires; curl 7.88 does not add it, and signs it when given.
forge_s3_curl() {
    local key secret
    key=$(forge_secret NF_S3_ACCESS_KEY)
    secret=$(forge_secret NF_S3_SECRET_KEY)
    printf 'user = "%s:%s"\n' "$key" "$secret" |
        curl -K - -s --max-time 5 --aws-sigv4 "aws:amz:$FORGE_S3_REGION:s3" \
            -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

# forge_s3_code METHOD PATH: the HTTP status of a signed request without a body.
forge_s3_code() {
    local code
    code=$(forge_s3_curl -o /dev/null -w '%{http_code}' -X "$1" "$FORGE_S3_ENDPOINT$2") || true
    printf '%s\n' "${code:-000}"
}

# Ready = the server answers a signed ListBuckets with 200, i.e. it runs AND it accepts
# this profile's keys (versitygw answers 404 for an access key it does not know, 403
# for a wrong secret: both mean it was started with other keys).
forge_s3_answers() { [[ $(forge_s3_code GET /) == 200 ]]; }

# The status check: the store answers and the platform bucket exists. Prints why not.
forge_s3_ready() {
    local code
    code=$(forge_s3_code GET /)
    case $code in
    200) ;;
    000) echo "no answer"; return 1 ;;
    403 | 404) echo "keys refused ($code)"; return 1 ;;
    *) echo "ListBuckets: $code"; return 1 ;;
    esac
    code=$(forge_s3_code HEAD "/$FORGE_S3_BUCKET")
    [[ $code == 200 ]] && return 0
    echo "bucket $FORGE_S3_BUCKET: $code"
    return 1
}

# The one bucket of the platform (docs/object-store.md: every object lives in it).
forge_s3_ensure_bucket() {
    local code
    code=$(forge_s3_code HEAD "/$FORGE_S3_BUCKET")
    [[ $code == 200 ]] && return 0
    if [[ $code != 404 ]]; then
        forge_warn "s3: HEAD /$FORGE_S3_BUCKET answered $code"
        return 1
    fi
    forge_say "s3: creating bucket $FORGE_S3_BUCKET"
    code=$(forge_s3_code PUT "/$FORGE_S3_BUCKET")
    [[ $code == 200 ]] && return 0
    forge_warn "s3: creating bucket $FORGE_S3_BUCKET answered $code"
    forge_tail_log "$S3_LOG"
    return 1
}

# Starts the server without waiting for it (like Kafka: `up` starts the others
# meanwhile); forge_s3_wait_ready then waits and makes the bucket.
forge_s3_launch() {
    forge_s3_paths
    local pid key secret
    if pid=$(forge_s3_pid); then
        if [[ $FORGE_VERSITYGW -nt $S3_PIDFILE ]]; then
            forge_say "s3: versitygw reinstalled, restarting"
            forge_stop_pid "$pid" s3 20
        else
            forge_say "s3: already running (port $PORT_S3)"
            return 0
        fi
    fi
    [[ -x $FORGE_VERSITYGW ]] || forge_die "s3: $FORGE_VERSITYGW is missing (./forge install)"
    forge_check_port_free s3 "$PORT_S3"
    mkdir -p "$S3_DATA" "$FORGE_LOGS" "$FORGE_RUN"
    key=$(forge_secret NF_S3_ACCESS_KEY)
    secret=$(forge_secret NF_S3_SECRET_KEY)
    forge_say "s3: starting on port $PORT_S3 (versitygw, data in ${S3_DATA#"$FORGE_ROOT"/})"
    [[ -f $S3_LOG ]] && mv -f "$S3_LOG" "$S3_LOG.1"
    # The root credentials go in through the environment (versitygw reads them there),
    # not argv. No --quiet: the log keeps one line per request (status, time, path),
    # which is how a refused signature shows up. setsid: the server outlives this script
    # and a Ctrl-C in its terminal; $! is the server itself (see forge_svc_start).
    (cd "$FORGE_STATE" && exec env ROOT_ACCESS_KEY_ID="$key" ROOT_SECRET_ACCESS_KEY="$secret" \
        setsid "$FORGE_VERSITYGW" --port "127.0.0.1:$PORT_S3" --region "$FORGE_S3_REGION" \
        posix "$S3_DATA" >"$S3_LOG" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$S3_PIDFILE"
    forge_wait_exec "$pid" "posix $S3_DATA" || true # reported by the wait
}

forge_s3_wait_ready() {
    forge_s3_paths
    local deadline=$((SECONDS + 30))
    until forge_s3_answers; do
        if ! forge_s3_pid >/dev/null; then
            forge_warn "s3 exited during start"
            forge_tail_log "$S3_LOG" 40
            return 1
        fi
        if ((SECONDS >= deadline)); then
            forge_warn "s3 not ready after 30s (signed ListBuckets: $(forge_s3_code GET /))"
            forge_tail_log "$S3_LOG" 40
            return 1
        fi
        sleep 0.1
    done
    forge_s3_ensure_bucket
}

forge_s3_start() {
    forge_s3_launch
    forge_s3_wait_ready
}

forge_s3_stop() {
    forge_s3_paths
    local pid
    pid=$(forge_s3_pid) || { rm -f "$S3_PIDFILE"; return 0; }
    forge_say "s3: stopping"
    forge_stop_pid "$pid" s3 20 # versitygw finishes the requests in flight and exits
    rm -f "$S3_PIDFILE"
}

forge_s3_status() {
    forge_status_line s3 "$(forge_s3_pid || true)" "$PORT_S3" forge_s3_ready
}
