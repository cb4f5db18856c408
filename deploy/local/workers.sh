# shellcheck shell=bash
# deploy/local/workers.sh - `./forge worker`: more worker agents for a running stack, each
# with its own GPU type, count, labels and slots (the one `up` starts is `worker`).
#
#   ./forge worker --gpu-type h100 --gpus 8 --labels zone=eu,tier=spot --slots 2
#   ./forge worker --list            the extra workers of this profile
#   ./forge worker --stop NAME       stop one (SIGTERM: it drains, then exits)
#
# Each extra worker is the service `worker-<name>` to the stack scripts: pid file
# run/worker-<name>.pid, log logs/worker-<name>.log, started by forge_svc_start with the
# worker's environment plus the options given here; `./forge down` stops them all first.
# Sourced by ./forge after services.sh.

# forge_worker_register NAME: makes NAME a service the stack functions know (no port).
forge_worker_register() {
    local name=$1
    SVC_BIN[$name]=nf-worker
    SVC_PORT[$name]=-
    SVC_ADDR_VAR[$name]=-
}

# The extra workers of this profile: names of live pid files run/worker-*.pid (not the
# stack's own services, such as worker-manager).
forge_workers_extra() {
    local f name
    for f in "$FORGE_RUN"/worker-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        [[ " ${FORGE_SERVICES[*]} " == *" $name "* ]] && continue
        forge_worker_register "$name"
        if forge_svc_pid "$name" >/dev/null; then
            echo "$name"
        else
            rm -f "$f"
        fi
    done
}

forge_workers_stop() {
    local name pid
    for name in $(forge_workers_extra); do
        forge_worker_register "$name" # the list came from a subshell
        pid=$(forge_svc_pid "$name") || continue
        forge_say "$name: stopping"
        forge_stop_pid "$pid" "$name" 20
        rm -f "$(forge_svc_pidfile "$name")"
    done
}

forge_workers_status() {
    local name
    for name in $(forge_workers_extra); do
        forge_worker_register "$name"
        forge_status_line "$name" "$(forge_svc_pid "$name" || true)" -
    done
}

forge_worker_usage() {
    cat <<EOF
usage: ./forge worker [--name NAME] [--gpu-type TYPE] [--gpus N] [--labels k=v,k2=v2]
                      [--slots N] [--types generate,train,...]
       ./forge worker --list | --stop NAME

Starts another worker agent for the running $FORGE_PROFILE stack. Jobs that ask for a
gpu_type, a gpu_count or labels go only to workers that have them.
  --name      the worker's name here (default: the next free worker-N)
  --gpu-type  NF_WORKER_GPU_TYPE   (default: none)
  --gpus      NF_WORKER_GPU_COUNT  (default: 1)
  --labels    NF_WORKER_LABELS     (default: region=us-east-1; a region= label of yours wins)
  --slots     NF_WORKER_SLOTS      jobs run side by side (default: 1)
  --types     NF_WORKER_JOB_TYPES  (default: all six)
EOF
}

cmd_worker() {
    local name="" gpu_type="" gpus=1 labels="" slots=1 types="generate,audit,distill,train,evaluate,deploy"
    while (($#)); do
        case $1 in
        --name) name=${2:?--name needs a value}; shift 2 ;;
        --gpu-type) gpu_type=${2:?--gpu-type needs a value}; shift 2 ;;
        --gpus | --gpu-count) gpus=${2:?--gpus needs a number}; shift 2 ;;
        --labels) labels=${2:?--labels needs k=v[,k=v]}; shift 2 ;;
        --slots) slots=${2:?--slots needs a number}; shift 2 ;;
        --types) types=${2:?--types needs a list}; shift 2 ;;
        --list)
            forge_workers_status
            return 0
            ;;
        --stop)
            local stop=${2:?--stop needs a name} pid
            stop=worker-${stop#worker-}
            [[ " ${FORGE_SERVICES[*]} " != *" $stop "* ]] || forge_die "$stop is a service of the stack"
            forge_worker_register "$stop"
            pid=$(forge_svc_pid "$stop") || forge_die "no running worker named $stop"
            forge_say "$stop: stopping (it finishes its jobs first)"
            forge_stop_pid "$pid" "$stop" 90
            rm -f "$(forge_svc_pidfile "$stop")"
            return 0
            ;;
        -h | --help)
            forge_worker_usage
            return 0
            ;;
        *) forge_worker_usage >&2; forge_die "unknown option: $1" ;;
        esac
    done
    forge_require_stack
    [[ $name =~ ^[A-Za-z0-9_.-]*$ ]] || forge_die "--name: letters, digits, . _ - only"
    if [[ -z $name ]]; then
        local n=2
        while [[ -e $FORGE_RUN/worker-$n.pid ]]; do n=$((n + 1)); done
        name=$n
    fi
    name=worker-${name#worker-}
    [[ " ${FORGE_SERVICES[*]} " != *" $name "* ]] || forge_die "--name: $name is a service of the stack"
    forge_worker_register "$name"
    if forge_svc_pid "$name" >/dev/null; then
        forge_die "$name is already running (./forge worker --stop ${name#worker-})"
    fi
    # forge_svc_start passes forge_service_env's lines on top of our environment; for an
    # extra worker those are only the shared ones, so take the `worker` entry's (API URL,
    # registration token, handlers, artifact root) from env.sh, then the options given.
    local line
    while IFS= read -r line; do export "${line?}"; done < <(forge_service_env worker)
    # a worker is in the stack's region unless its labels say another (deploy jobs pick
    # workers by region)
    [[ ,$labels, == *,region=* ]] || labels=${labels:+$labels,}region=us-east-1
    export NF_WORKER_GPU_TYPE=$gpu_type NF_WORKER_GPU_COUNT=$gpus NF_WORKER_LABELS=$labels
    export NF_WORKER_SLOTS=$slots NF_WORKER_JOB_TYPES=$types
    export NF_WORKER_HOSTNAME="$(hostname)-${name}"
    forge_svc_start "$name"
    local log deadline=$((SECONDS + 30))
    log=$(forge_svc_log "$name")
    until grep -q '"event":"registered"' "$log" 2>/dev/null; do
        forge_svc_pid "$name" >/dev/null || { forge_tail_log "$log" 40; forge_die "$name exited"; }
        ((SECONDS < deadline)) || { forge_tail_log "$log" 40; forge_die "$name did not register in 30s"; }
        sleep 0.25
    done
    local id
    id=$(grep -m1 '"event":"registered"' "$log" | python3 -c 'import json, sys; print(json.load(sys.stdin)["worker_id"])')
    forge_say "$name registered as $id (gpu_type=${gpu_type:-none} gpus=$gpus labels=${labels:-none} slots=$slots)"
    echo "  log: ${log#"$FORGE_ROOT"/}   stop: ./forge worker --stop ${name#worker-}"
}
