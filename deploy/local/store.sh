# shellcheck shell=bash
# deploy/local/store.sh - the platform's own objects in the profile's object store (beside
# the accounts' data under tenants/): the stand-in base models, the benchmark data, and the
# catalogue file the stack's scheduler reads. docs/internals.md "The model catalogue" and
# "Benchmark data" say why and how. Sourced after objstore.sh (profile loaded).
#
#   forge_store_seed (up / test, before the services start):
#     handlers/_hf.py builds each stand-in (deterministic; cached in .forge/models)
#       --> its Hugging Face directory PUT to models/base/<name>/ (skipped when the
#           digest stamped in .forge/<profile>/store/ matches and the object is there)
#     handlers/benchmarks/<name>.jsonl --> benchmarks/<name>/<name>.jsonl where the store
#       has no data for <name> yet (a site's imported full set is never overwritten)
#     deploy/models.json --> .forge/<profile>/models.json with those stand-ins' source
#       s3://<bucket>/models/base/<name>/ (NF_SCHEDULER_MODELS_FILE)
#   ./forge benchmarks import DIR | list

FORGE_STORE_PY=$FORGE_ROOT/deploy/local/store.py
FORGE_BENCH_PY=$FORGE_ROOT/handlers/_benchmarks.py
FORGE_MODELS_SRC=${FORGE_MODELS_FILE:-$FORGE_ROOT/deploy/models.json} # the operator's file

forge_store_catalogue() { echo "$FORGE_STATE/models.json"; }

# forge_s3_put FILE KEY: uploads one file (keys here are plain: [A-Za-z0-9/._-]).
forge_s3_put() {
    local code
    code=$(forge_s3_curl --max-time 600 -o /dev/null -w '%{http_code}' -T "$1" \
        "$FORGE_S3_ENDPOINT/$FORGE_S3_BUCKET/$2") || true
    [[ $code == 200 ]] && return 0
    forge_warn "s3: PUT $2 answered ${code:-000}"
    return 1
}

forge_s3_delete() {
    local code
    code=$(forge_s3_code DELETE "/$FORGE_S3_BUCKET/$1")
    [[ $code == 204 || $code == 200 ]] && return 0
    forge_warn "s3: DELETE $1 answered $code"
    return 1
}

# forge_s3_keys PREFIX: "key<TAB>size<TAB>etag" of every object under PREFIX (pages
# followed). The query is signed as curl sends it: parameters sorted, values encoded.
forge_s3_keys() {
    local prefix=$1 token="" epre query xml lines line
    epre=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$prefix")
    while :; do
        query="list-type=2&prefix=$epre"
        if [[ -n $token ]]; then
            query="continuation-token=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$token")&$query"
        fi
        xml=$(forge_s3_curl --max-time 30 -f "$FORGE_S3_ENDPOINT/$FORGE_S3_BUCKET?$query") ||
            { forge_warn "s3: listing $prefix failed"; return 1; }
        lines=$(python3 "$FORGE_STORE_PY" keys <<<"$xml") || return 1
        token=""
        while IFS= read -r line; do
            [[ -n $line ]] || continue
            if [[ $line == next$'\t'* ]]; then token=${line#next$'\t'}; else printf '%s\n' "$line"; fi
        done <<<"$lines"
        [[ -n $token ]] || return 0
    done
}

# Builds the stand-ins (cached) and uploads each one the store does not hold yet; prints
# the names it holds, one a line.
forge_store_standins() {
    local lines name dir digest stamp file n=0
    lines=$(NEXA_MODEL_CACHE=$FORGE_ROOT/.forge/models python3 "$FORGE_STORE_PY" standins \
        2>"$FORGE_LOGS/store-standins.log") || {
        forge_warn "store: the stand-ins could not be built (the ML runtime?): catalogue keeps builtin: sources"
        forge_tail_log "$FORGE_LOGS/store-standins.log" 10 >&2
        return 0
    }
    while IFS=$'\t' read -r name dir digest; do
        [[ -n $name && -d $dir ]] || continue
        stamp=$FORGE_STATE/store/standin-$name
        if [[ -f $stamp && $(cat "$stamp") == "$digest" ]] &&
            [[ $(forge_s3_code HEAD "/$FORGE_S3_BUCKET/models/base/$name/config.json") == 200 ]]; then
            echo "$name"
            continue
        fi
        local ok=1
        for file in "$dir"/*; do
            [[ -f $file ]] || continue
            forge_s3_put "$file" "models/base/$name/$(basename "$file")" || { ok=0; break; }
        done
        if ((ok)); then
            echo "$digest" >"$stamp"
            n=$((n + 1))
            echo "$name"
        else
            forge_warn "store: $name not uploaded: the catalogue keeps builtin:stand-in/$name"
        fi
    done <<<"$lines"
    ((n)) && forge_say "store: uploaded $n stand-in(s) to s3://$FORGE_S3_BUCKET/models/base/" >&2
    return 0
}

# The bundled samples, for the benchmarks the store has no data of.
forge_store_benchmarks() {
    local file name keys
    for file in "$FORGE_ROOT"/handlers/benchmarks/*.jsonl; do
        [[ -f $file ]] || continue
        name=$(basename "$file" .jsonl)
        keys=$(forge_s3_keys "benchmarks/$name/") || return 0
        [[ -n $keys ]] && continue
        forge_s3_put "$file" "benchmarks/$name/$name.jsonl" &&
            forge_say "store: seeded benchmarks/$name/ with the bundled sample"
    done
}

# up / test: the store's platform objects and the catalogue, before the scheduler starts.
forge_store_seed() {
    local t0=$SECONDS seeded=() name rc=0 catalogue pid
    mkdir -p "$FORGE_STATE/store" "$FORGE_LOGS"
    catalogue=$(forge_store_catalogue)
    if forge_s3_answers; then
        mapfile -t seeded < <(forge_store_standins)
        forge_store_benchmarks
    else
        forge_warn "store: the object store does not answer: the catalogue keeps builtin: sources"
    fi
    python3 "$FORGE_STORE_PY" catalogue "$FORGE_MODELS_SRC" "$catalogue" "$FORGE_S3_BUCKET" \
        "${seeded[@]}" || rc=$?
    case $rc in
    0)
        # a running scheduler read the previous catalogue: it starts again below
        if pid=$(forge_svc_pid scheduler); then
            forge_say "scheduler: the catalogue changed, restarting"
            forge_stop_pid "$pid" scheduler 20
        fi
        ;;
    3) ;; # unchanged
    *) forge_die "store: cannot write $catalogue from $FORGE_MODELS_SRC" ;;
    esac
    forge_say "store: ${#seeded[@]} stand-in(s) in s3://$FORGE_S3_BUCKET/models/base/ (${seeded[*]}), catalogue ${catalogue#"$FORGE_ROOT"/} ($((SECONDS - t0))s)"
}

# ./forge benchmarks import DIR | list
cmd_benchmarks() {
    local sub=${1:-list}
    (($#)) && shift
    forge_s3_answers || forge_die "the $FORGE_PROFILE object store does not answer: run ./forge up first"
    case $sub in
    import) forge_benchmarks_import "$@" ;;
    list) forge_benchmarks_list ;;
    *) forge_die "usage: ./forge benchmarks import DIR | list" ;;
    esac
}

# Validates DIR (handlers/_benchmarks.py: every row of every file), then per benchmark
# uploads its files to benchmarks/<name>/ and removes the objects there that the import
# does not have: the store then holds exactly DIR's set.
forge_benchmarks_import() {
    local dir=${1:-}
    [[ -n $dir && -d $dir ]] || forge_die "usage: ./forge benchmarks import DIR (DIR/<name>.jsonl or DIR/<name>/*.jsonl; name: mmlu, hellaswag, arc_easy, gsm8k)"
    local plan name file rows names=() total n
    plan=$(python3 "$FORGE_BENCH_PY" check "$dir") ||
        forge_die "benchmarks import: $dir is not valid benchmark data (nothing was loaded)"
    while IFS=$'\t' read -r name file rows; do
        [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
    done <<<"$plan"
    for name in "${names[@]}"; do
        local want=() key old
        total=0
        while IFS=$'\t' read -r n file rows; do
            [[ $n == "$name" ]] || continue
            key="benchmarks/$name/$(basename "$file")"
            forge_s3_put "$file" "$key" || forge_die "benchmarks import: $name: upload failed"
            want+=("$key")
            total=$((total + rows))
        done <<<"$plan"
        while IFS=$'\t' read -r old _; do
            [[ -n $old && " ${want[*]} " != *" $old "* ]] || continue
            forge_s3_delete "$old" || true
        done < <(forge_s3_keys "benchmarks/$name/")
        forge_say "benchmarks: $name: $total rows in ${#want[@]} file(s) -> s3://$FORGE_S3_BUCKET/benchmarks/$name/"
    done
}

forge_benchmarks_list() {
    local name keys files bytes kind sample etag
    printf '%-10s %-6s %-10s %s\n' BENCHMARK FILES BYTES DATA
    for name in mmlu hellaswag arc_easy gsm8k; do
        keys=$(forge_s3_keys "benchmarks/$name/") || return 1
        if [[ -z $keys ]]; then
            printf '%-10s %-6s %-10s %s\n' "$name" 0 0 "none in the store (evaluate uses the bundled sample)"
            continue
        fi
        files=$(wc -l <<<"$keys")
        bytes=$(awk -F'\t' '{s += $2} END {print s}' <<<"$keys")
        kind="imported"
        sample=$FORGE_ROOT/handlers/benchmarks/$name.jsonl
        etag=$(cut -f3 <<<"$keys")
        if ((files == 1)) && [[ -f $sample && $etag == "$(python3 "$FORGE_STORE_PY" md5 "$sample")" ]]; then
            kind="the bundled sample"
        fi
        printf '%-10s %-6s %-10s %s\n' "$name" "$files" "$bytes" "s3://$FORGE_S3_BUCKET/benchmarks/$name/ ($kind)"
    done
}
