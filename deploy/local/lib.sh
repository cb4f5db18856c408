# shellcheck shell=bash
# deploy/local/lib.sh - small helpers shared by ./forge, the stack scripts and .ci/run.
# Sourced, never run. Callers use `set -euo pipefail`.

# Colour only on a terminal: CI logs should not be full of escape codes.
if [[ -t 1 ]]; then
    FORGE_C_BOLD=$'\033[1m' FORGE_C_BLUE=$'\033[1;34m' FORGE_C_YELLOW=$'\033[1;33m'
    FORGE_C_RED=$'\033[1;31m' FORGE_C_MAGENTA=$'\033[1;35m' FORGE_C_OFF=$'\033[0m'
else
    FORGE_C_BOLD='' FORGE_C_BLUE='' FORGE_C_YELLOW='' FORGE_C_RED='' FORGE_C_MAGENTA='' FORGE_C_OFF=''
fi

forge_say()  { printf '%s==>%s %s\n' "$FORGE_C_BLUE" "$FORGE_C_OFF" "$*"; }
forge_warn() { printf '%swarning:%s %s\n' "$FORGE_C_YELLOW" "$FORGE_C_OFF" "$*" >&2; }
forge_die()  { printf '%serror:%s %s\n' "$FORGE_C_RED" "$FORGE_C_OFF" "$*" >&2; exit 1; }


# forge_wait_until TIMEOUT_S DESCRIPTION CMD...: polls CMD every 0.25 s until it succeeds.
# Returns 1 on timeout so the caller decides what to print.
forge_wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            forge_warn "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.25
    done
}

# forge_port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
# bash's /dev/tcp avoids depending on nc, which a fresh Debian lacks.
forge_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# forge_pid_alive PID PATTERN: the process exists and its command line contains PATTERN.
# The pattern check stops a stale pid file from matching an unrelated process that
# reused the pid after a reboot or crash.
forge_pid_alive() {
    local pid=$1 pattern=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$pattern"* ]]
}

# forge_wait_exec PID PATTERN: after `cmd &`, waits (up to 5 s) until the child has exec'd
# the program - until then its command line is still this shell's and would not match.
# Returns 1 when the child is gone instead.
forge_wait_exec() {
    local pid=$1 pattern=$2 i
    for ((i = 0; i < 100; i++)); do
        forge_pid_alive "$pid" "$pattern" && return 0
        forge_pid_exists "$pid" || return 1
        sleep 0.05
    done
    return 1
}

# forge_pidfile_alive FILE PATTERN: prints the pid when FILE names a live matching process.
forge_pidfile_alive() {
    local file=$1 pattern=$2 pid
    [[ -s $file ]] || return 1
    pid=$(head -n1 "$file")
    forge_pid_alive "$pid" "$pattern" || return 1
    printf '%s\n' "$pid"
}

# forge_pid_exists PID: the process exists and is not a zombie (an exited child that its
# new parent has not reaped yet still answers kill -0).
forge_pid_exists() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# forge_stop_pid PID NAME TIMEOUT_S: SIGTERM, wait, then SIGKILL as a last resort.
# The services and Kafka shut down gracefully on SIGTERM (flush producers, commit
# offsets), so SIGKILL only happens when something hangs, and we say so.
forge_stop_pid() {
    local pid=$1 name=$2 timeout=$3
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + timeout))
    while forge_pid_exists "$pid"; do
        if ((SECONDS >= deadline)); then
            forge_warn "$name (pid $pid) ignored SIGTERM for ${timeout}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
}

# forge_tail_log FILE [LINES]: prints the end of a log with a header, for failure reports.
forge_tail_log() {
    local file=$1 lines=${2:-30}
    [[ -e $file ]] || return 0
    printf '\n----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
}

# forge_random_secret: 32 random bytes as 64 hex characters (safe in env files and
# HTTP headers alike; needs only coreutils).
forge_random_secret() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}
