# shellcheck shell=bash
# deploy/local/test.sh - `./forge test`: every test, in stages, on the throw-away `test`
# profile (ports +10000, state in .forge/test, Debug = ASan/UBSan binaries):
#
#   install      what is missing (same function as `up`)
#   build        build-test/ (Debug)
#   unit         ctest -L unit
#   sdk          pytest sdk/python/tests (a scripted local HTTP server)
#   handlers     pytest tests/handlers (the reference handlers run by hand, on local files)
#   check        clang-format, clang-tidy, the structure check
#   fuzz         every libFuzzer target of tests/fuzz for 10 s (build-fuzz/, clang)
#   reset        stop a test stack left over by an interrupted run, wipe .forge/test
#   backing      Postgres, Redis, Kafka and the S3 object store of the test profile
#   integration  ctest -L integration, NF_TEST_* pointed at the test stack
#   services     the services and a worker from build-test/bin, an API key
#   e2e          pytest tests/e2e against the test stack
#   browser      the dashboard (dashboard.sh) on the test stack, driven by Chromium
#   stop         stop the test stack (also done by the EXIT trap on any abort)
#   sanitizers   the service logs hold no ASan/LSan/UBSan report
#
# Each stage prints a summary line; a failed stage makes the run fail, and the stages that
# depend on it are skipped. Sourced by ./forge after the other deploy/local scripts.

FORGE_STAGES=()
declare -A FORGE_STAGE_RESULT=() FORGE_STAGE_TIME=()

# forge_stage NAME CMD...: runs CMD in a subshell with errexit in force (an `if` or `||`
# around a function would silently switch errexit off inside it) and records the outcome.
forge_stage() {
    local name=$1 t0=$SECONDS rc
    shift
    FORGE_STAGES+=("$name")
    printf '\n%s=== stage %s ===%s\n' "$FORGE_C_MAGENTA" "$name" "$FORGE_C_OFF"
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    FORGE_STAGE_TIME[$name]=$((SECONDS - t0))
    if ((rc == 0)); then FORGE_STAGE_RESULT[$name]=ok; else FORGE_STAGE_RESULT[$name]="FAILED (exit $rc)"; fi
    return "$rc"
}

forge_stage_skip() {
    FORGE_STAGES+=("$1")
    FORGE_STAGE_RESULT[$1]="skipped ($2)"
    FORGE_STAGE_TIME[$1]=0
}

forge_test_reset() {
    forge_dash_stop # one left by `./forge --profile test up` would hold the browser stage's port
    forge_svcs_stop
    forge_backing_stop
    forge_pg_wipe
    rm -rf "$FORGE_STATE"
    mkdir -p "$FORGE_LOGS" "$FORGE_RUN"
}

forge_test_unit() {
    ctest --test-dir "$FORGE_BUILD" -L unit --output-on-failure --timeout 300
}

# clang-format (must be clean) and clang-tidy (findings are printed, not fatal).
forge_test_check() {
    ctest --test-dir "$FORGE_BUILD" -L check --output-on-failure --timeout 600
}

# The SDK's own unit tests: a scripted local HTTP server, no stack needed.
forge_test_sdk() {
    (cd "$FORGE_ROOT" && python3 -m pytest sdk/python/tests -q -p no:cacheprovider)
}

# The reference handlers, run as the worker agent runs them on Parquet/JSONL/CSV files
# named in the job's "inputs"; no stack needed.
forge_test_handlers() {
    (cd "$FORGE_ROOT" && python3 -m pytest tests/handlers -q -p no:cacheprovider)
}

forge_test_integration() {
    local env_lines
    mapfile -t env_lines < <(forge_test_env)
    env "${env_lines[@]}" ctest --test-dir "$FORGE_BUILD" -L integration --output-on-failure --timeout 300
}

forge_test_services() {
    forge_svcs_start
    forge_api_key_ensure
    [[ -s $FORGE_API_KEY_FILE ]]
}

# pytest's exit 5 ("no tests collected") is a failure too: the e2e suite must exist.
forge_test_e2e() {
    local env_lines
    mapfile -t env_lines < <(forge_test_env)
    (cd "$FORGE_ROOT" && env "${env_lines[@]}" python3 -m pytest tests/e2e -q)
}

forge_test_stop_stack() {
    forge_dash_stop
    forge_svcs_stop
    forge_backing_stop
}

# Sanitizer reports in the service logs. Leak reports appear only at exit, which is why
# this runs after the stack stopped.
forge_test_sanitizers() {
    local hits
    hits=$(grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' \
        "$FORGE_LOGS"/*.log 2>/dev/null || true)
    [[ -z $hits ]] && return 0
    local f
    for f in $hits; do
        forge_warn "sanitizer report in $f"
        grep -n -A25 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$f" | head -n 60 >&2
    done
    return 1
}

forge_test_print_service_logs() {
    local name
    for name in "${FORGE_SERVICES[@]}"; do
        forge_tail_log "$(forge_svc_log "$name")" 30
    done
}

# EXIT trap: whatever happened, the test stack does not outlive the run.
forge_test_on_exit() {
    set +e
    forge_test_stop_stack >/dev/null 2>&1
}

forge_test_summary() {
    local name failed=0 passed=0
    printf '\n%s=== forge test summary ===%s\n' "$FORGE_C_BOLD" "$FORGE_C_OFF"
    for name in "${FORGE_STAGES[@]}"; do
        printf '  %-12s %-34s %4ss\n' "$name" "${FORGE_STAGE_RESULT[$name]}" "${FORGE_STAGE_TIME[$name]}"
        case ${FORGE_STAGE_RESULT[$name]} in
        ok) passed=$((passed + 1)) ;;
        FAILED*) failed=$((failed + 1)) ;;
        esac
    done
    echo "stages: $passed passed, $failed failed"
    ((failed == 0))
}

forge_cmd_test() {
    local t0=$SECONDS
    trap forge_test_on_exit EXIT
    trap 'exit 130' INT TERM

    local built=0 backing=0 services=0 stack_failed=0
    forge_stage install forge_install_deps || true
    if forge_stage build forge_build; then built=1; fi
    if ((built)); then
        forge_stage unit forge_test_unit || true
        forge_stage sdk forge_test_sdk || true
        forge_stage handlers forge_test_handlers || true
        forge_stage check forge_test_check || true
        forge_stage fuzz forge_test_fuzz || true
        if forge_stage reset forge_test_reset && forge_stage backing forge_backing_start; then
            backing=1
        else
            stack_failed=1
        fi
    else
        forge_stage_skip unit "no build"
        forge_stage_skip backing "no build"
    fi
    if ((backing)); then
        forge_stage integration forge_test_integration || true
        if forge_stage services forge_test_services; then services=1; else stack_failed=1; fi
    else
        forge_stage_skip integration "no backing servers"
        forge_stage_skip services "no backing servers"
    fi
    if ((services)); then
        forge_stage e2e forge_test_e2e || stack_failed=1
        forge_stage browser forge_test_browser || stack_failed=1
    else
        forge_stage_skip e2e "services not up"
        forge_stage_skip browser "services not up"
    fi
    ((stack_failed)) && forge_test_print_service_logs
    if ((built)); then
        forge_stage stop forge_test_stop_stack || true
        forge_stage sanitizers forge_test_sanitizers || true
    fi
    trap - EXIT
    echo "forge test: $((SECONDS - t0))s in all"
    forge_test_summary
}
