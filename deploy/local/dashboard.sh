# shellcheck shell=bash
# deploy/local/dashboard.sh - the Next.js dashboard (dashboard/) as one more component of
# a profile: npm packages, a production build when the sources changed, `next start` on
# PORT_DASHBOARD (3000 dev, 13000 test) pointed at the profile's gateway, and the browser
# test that `./forge test` runs after the e2e tests. Sourced after lib.sh and env.sh.
#
# Nothing here downloads a browser: the test drives Debian's chromium (install.sh).

FORGE_DASH_DIR=$FORGE_ROOT/dashboard
# Never let an npm package fetch a browser or phone home.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 NEXT_TELEMETRY_DISABLED=1

forge_dash_present() { [[ -f $FORGE_DASH_DIR/package.json ]]; }

forge_dash_node_ok() {
    command -v node >/dev/null && command -v npm >/dev/null &&
        [[ $(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) -ge 20 ]]
}

# npm ci when node_modules is missing or was installed from another package-lock.json.
forge_install_dashboard() {
    forge_dash_present || return 0
    if ! forge_dash_node_ok; then
        forge_warn "dashboard: Node.js >= 20 with npm not found; the dashboard is skipped"
        return 0
    fi
    local stamp=$FORGE_DASH_DIR/node_modules/.forge-lock.sha256 want
    want=$(sha256sum "$FORGE_DASH_DIR/package-lock.json" | cut -d' ' -f1)
    [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
    forge_say "dashboard: npm ci"
    (cd "$FORGE_DASH_DIR" && npm ci --no-audit --no-fund --loglevel=error) ||
        forge_die "dashboard: npm ci failed"
    echo "$want" >"$stamp"
}

# One hash over everything the build reads; the build is redone only when it changes.
forge_dash_sources_hash() {
    (cd "$FORGE_DASH_DIR" &&
        find app components lib package-lock.json next.config.mjs tsconfig.json -type f -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

# Sets FORGE_DASH_BUILT=1 when it built.
forge_dash_build() {
    FORGE_DASH_BUILT=0
    local stamp=$FORGE_DASH_DIR/.next/.forge-sources.sha256 want
    want=$(forge_dash_sources_hash)
    if [[ -f $FORGE_DASH_DIR/.next/BUILD_ID && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        return 0
    fi
    forge_say "dashboard: npm run build"
    (cd "$FORGE_DASH_DIR" && npm run build --silent) || forge_die "dashboard: npm run build failed"
    echo "$want" >"$stamp"
    FORGE_DASH_BUILT=1
}

forge_dash_pidfile() { echo "$FORGE_RUN/dashboard.pid"; }
forge_dash_log() { echo "$FORGE_LOGS/dashboard.log"; }
forge_dash_url() { echo "http://127.0.0.1:$PORT_DASHBOARD"; }

# Prints the pid when our dashboard runs. Next.js renames its process ("next-server
# (v15...)"), so the command line cannot tell profiles apart: the FORGE_DASHBOARD_STATE
# variable it was started with does.
forge_dash_pid() {
    local file pid
    file=$(forge_dash_pidfile)
    [[ -s $file ]] || return 1
    pid=$(head -n1 "$file")
    [[ $pid =~ ^[0-9]+$ ]] && forge_pid_exists "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "FORGE_DASHBOARD_STATE=$FORGE_STATE" || return 1
    printf '%s\n' "$pid"
}

forge_dash_ready() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(forge_dash_url)/healthz") || true
    [[ $code == 200 ]]
}

# Builds when needed and starts `next start` unless it already runs (a rebuilt one is
# restarted); waits until it answers /healthz.
forge_dash_start() {
    local pid log
    forge_dash_build
    mkdir -p "$FORGE_LOGS" "$FORGE_RUN"
    if pid=$(forge_dash_pid); then
        if ((FORGE_DASH_BUILT)); then
            forge_say "dashboard: rebuilt, restarting"
            forge_stop_pid "$pid" dashboard 20
        else
            forge_say "dashboard: already running (pid $pid)"
            return 0
        fi
    fi
    forge_check_port_free dashboard "$PORT_DASHBOARD"
    log=$(forge_dash_log)
    [[ -f $log ]] && mv -f "$log" "$log.1"
    forge_say "dashboard: starting on port $PORT_DASHBOARD"
    # setsid and a background subshell as for the services (services.sh): $! is the server.
    (cd "$FORGE_DASH_DIR" && exec env FORGE_DASHBOARD_STATE="$FORGE_STATE" \
        NF_GATEWAY_URL="$FORGE_API_URL" NODE_ENV=production \
        setsid node node_modules/next/dist/bin/next start -p "$PORT_DASHBOARD" -H 127.0.0.1 \
        >"$log" 2>&1 </dev/null) &
    echo $! >"$(forge_dash_pidfile)"
    local deadline=$((SECONDS + 60))
    until forge_dash_ready; do
        if ! forge_dash_pid >/dev/null; then
            forge_warn "dashboard exited during start"
            forge_tail_log "$log" 30
            return 1
        fi
        if ((SECONDS >= deadline)); then
            forge_warn "dashboard: GET /healthz not 200 after 60s"
            forge_tail_log "$log" 30
            return 1
        fi
        sleep 0.25
    done
}

forge_dash_stop() {
    local pid
    if pid=$(forge_dash_pid); then
        forge_say "dashboard: stopping"
        forge_stop_pid "$pid" dashboard 20
    fi
    rm -f "$(forge_dash_pidfile)"
}

forge_dash_status() {
    forge_dash_present || return 0
    forge_status_line dashboard "$(forge_dash_pid || true)" "$PORT_DASHBOARD" forge_dash_ready
}

# `./forge up`: the dashboard is a convenience - without Node.js the stack still comes up.
forge_dash_up() {
    forge_dash_present || return 0
    if ! forge_dash_node_ok; then
        forge_warn "dashboard: Node.js >= 20 with npm not found; not started"
        return 0
    fi
    forge_install_dashboard
    forge_dash_start
}

# `./forge test`, after the e2e stage: the browser test against the test stack. Its
# screenshots go to dashboard/tests/out (NF_SCREENSHOT_DIR=... to put them elsewhere,
# e.g. docs/screenshots for the README).
forge_test_browser() {
    forge_dash_present || { echo "no dashboard/"; return 0; }
    forge_dash_node_ok || forge_die "the browser test needs Node.js >= 20 with npm"
    [[ -x /usr/bin/chromium ]] || forge_die "the browser test needs Debian's chromium (./forge install)"
    forge_install_dashboard
    forge_dash_start
    (cd "$FORGE_DASH_DIR" && NF_DASHBOARD_URL="$(forge_dash_url)" NF_TEST_API_URL="$FORGE_API_URL" \
        node --test tests/)
}
