# shellcheck shell=bash
# deploy/local/fuzz.sh - `./forge fuzz [TARGET] [SECONDS]` and the `fuzz` stage of
# `./forge test`: the libFuzzer targets of tests/fuzz (clang, ASan + UBSan), built in
# build-fuzz/, each run from its seed corpus (tests/fuzz/corpus/<target>) plus what earlier
# runs found (.forge/fuzz/corpus/<target>, kept between runs). A crash, leak or sanitizer
# report fails the run and leaves its input in .forge/fuzz/crashes/. Sourced after lib.sh.

FORGE_FUZZ_BUILD=$FORGE_ROOT/build-fuzz
FORGE_FUZZ_STATE=$FORGE_ROOT/.forge/fuzz

forge_fuzz_build() {
    command -v clang-14 >/dev/null || forge_die "clang-14 is missing: ./forge install"
    if [[ ! -f $FORGE_FUZZ_BUILD/CMakeCache.txt || ! -f $FORGE_FUZZ_BUILD/Makefile ]]; then
        CC=clang-14 cmake -S "$FORGE_ROOT" -B "$FORGE_FUZZ_BUILD" -DNF_FUZZ=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    cmake --build "$FORGE_FUZZ_BUILD" --target fuzz_all -j "$(nproc)" >/dev/null
}

forge_fuzz_targets() {
    local src
    for src in "$FORGE_ROOT"/tests/fuzz/fuzz_*.c; do
        src=$(basename "$src" .c)
        echo "${src#fuzz_}"
    done
}

# forge_fuzz_run TARGET SECONDS: one target for SECONDS (wall clock); prints one line.
forge_fuzz_run() {
    local t=$1 secs=$2 bin=$FORGE_FUZZ_BUILD/fuzz/fuzz_$1
    local corpus=$FORGE_FUZZ_STATE/corpus/$t crashes=$FORGE_FUZZ_STATE/crashes
    local log=$FORGE_FUZZ_STATE/$t.log rc=0
    [[ -x $bin ]] || forge_die "no fuzz target '$t' (targets: $(forge_fuzz_targets | tr '\n' ' '))"
    mkdir -p "$corpus" "$crashes"
    "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$crashes/$t-" \
        "$corpus" "$FORGE_ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    local execs size found
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    size=$(find "$corpus" -type f | wc -l)
    if ((rc == 0)); then
        printf '  %-14s %12s executions in %ss (%s/s), corpus %s inputs: ok\n' "$t" \
            "${execs:-?}" "$secs" "$(( ${execs:-0} / (secs > 0 ? secs : 1) ))" "$size"
        return 0
    fi
    found=$(grep -o "Test unit written to .*" "$log" | tail -n1)
    printf '  %-14s FAILED (exit %s): %s\n' "$t" "$rc" "${found:-see $log}"
    grep -m1 -E "ERROR: |runtime error:" "$log" | sed 's/^/    /' || true
    return 1
}

# ./forge fuzz [TARGET] [SECONDS]: every target (or one) for SECONDS each (default 60).
cmd_fuzz() {
    local want=${1:-} secs=${2:-60} t failed=0
    if [[ $want =~ ^[0-9]+$ ]]; then secs=$want; want=; fi
    forge_say "fuzz: building the targets (build-fuzz/, clang + ASan/UBSan)"
    forge_fuzz_build
    for t in $(forge_fuzz_targets); do
        [[ -z $want || $t == "$want" ]] || continue
        forge_fuzz_run "$t" "$secs" || failed=1
    done
    return "$failed"
}

# The `fuzz` stage of ./forge test: each target a short fixed budget (NF_FUZZ_TEST_SECONDS).
forge_test_fuzz() {
    cmd_fuzz "" "${NF_FUZZ_TEST_SECONDS:-10}"
}
