# shellcheck shell=bash
# deploy/local/install.sh - installs what the stack and the tests need, and only what is
# missing, so a second run costs a few dpkg/python look-ups. Used by `./forge up`,
# `./forge test`, `./forge install` and (through ./forge) by .ci/run on a fresh Debian 12.
# Sourced after lib.sh with FORGE_ROOT set.

# Debian 12 packages: the C toolchain and libraries (DESIGN §2), the backing servers, the
# JDK + Maven that fetch and run the Kafka broker, and the lint tools. (Go, which builds
# the object store, comes with the machine: Debian 12's golang is too old for it.)
FORGE_APT_PACKAGES=(
    build-essential cmake pkg-config
    librdkafka-dev libhiredis-dev libevent-dev libcjson-dev libsodium-dev libcmocka-dev libpq-dev
    libcurl4-openssl-dev
    postgresql-15 redis-server redis-tools
    openjdk-17-jre-headless maven
    clang-format clang-tidy
    clang-14 libclang-rt-14-dev # libFuzzer and the sanitizers' runtimes (./forge fuzz)
    python3 python3-pip python3-yaml curl ca-certificates procps
    chromium # the dashboard's browser test (dashboard.sh); no browser is ever downloaded
)

# Python packages for the tests and the Kafka readiness check: "pip name:import name".
FORGE_PIP_MODULES=(
    pytest:pytest
    jsonschema:jsonschema
    openapi-schema-validator:openapi_schema_validator
    pyyaml:yaml
    confluent-kafka:confluent_kafka
    requests:requests
    openai:openai
    pyarrow:pyarrow # handlers/requirements.txt: the handlers read and write Parquet
    datasketch:datasketch # handlers/requirements.txt: near-duplicates (generate, distill, audit)
    py3langid:py3langid # handlers/requirements.txt: audit's language identification
)

FORGE_KAFKA_LIB=$FORGE_ROOT/deploy/kafka/lib

# The object store (objstore.sh): versitygw, built from its Go module into the git-ignored
# .forge/bin, shared by both profiles.
FORGE_VERSITYGW_VERSION=v1.8.0
FORGE_TOOLS_BIN=$FORGE_ROOT/.forge/bin
FORGE_VERSITYGW=$FORGE_TOOLS_BIN/versitygw

forge_install_deps() {
    forge_install_apt
    forge_install_pip
    forge_install_ml
    forge_install_kafka_jars
    forge_install_versitygw
    forge_install_dashboard # dashboard.sh: npm ci when package-lock.json changed
}

forge_apt_missing() {
    # One dpkg-query for all (a call per package costs ~20 ms each). `dpkg -s` would also
    # succeed for removed-but-configured packages; the status string is the reliable test.
    local -A installed=()
    local name pkg
    while read -r name; do installed[$name]=1; done < <(
        dpkg-query -W -f='${Package} ${Status}\n' "${FORGE_APT_PACKAGES[@]}" 2>/dev/null |
            awk '$2 == "install" && $3 == "ok" && $4 == "installed" { print $1 }' || true
    )
    for pkg in "${FORGE_APT_PACKAGES[@]}"; do
        [[ -n ${installed[$pkg]:-} ]] || echo "$pkg"
    done
}

forge_install_apt() {
    local missing
    mapfile -t missing < <(forge_apt_missing)
    ((${#missing[@]})) || return 0
    forge_say "installing Debian packages: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || forge_die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    # Debian starts a freshly installed server (a system-wide redis on 6379, a
    # postgresql cluster on 5432), which would collide with the dev stack's ports.
    # A policy-rc.d that answers 101 ("action forbidden") is Debian's documented way
    # to keep package scripts from starting services. Kept if one was already there.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if ((rc == 0)); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    fi
    ((made_policy)) && "${sudo[@]}" rm -f "$policy"
    ((rc == 0)) || forge_die "apt-get failed (exit $rc)"
}

forge_install_pip() {
    local missing
    # One interpreter start for all checks: python3 -c per module costs ~0.2 s each.
    mapfile -t missing < <(python3 - "${FORGE_PIP_MODULES[@]}" <<'PY'
import importlib.util, sys
for entry in sys.argv[1:]:
    pip_name, module = entry.split(":")
    if importlib.util.find_spec(module) is None:
        print(pip_name)
PY
    )
    ((${#missing[@]})) || return 0
    forge_say "installing Python packages: ${missing[*]}"
    # tests/requirements.txt holds the version bounds (it includes the handlers' own
    # handlers/requirements.txt); installing the whole file keeps one source of truth.
    forge_pip_install "$FORGE_ROOT/tests/requirements.txt"
}

# forge_pip_install FILE: pip install -r FILE into the machine's python3. Debian's own
# python3 refuses pip installs into the system (PEP 668) - there, --break-system-packages
# is the documented way for a machine that is only a dev/CI box; a pyenv or venv python
# needs no flag.
forge_pip_install() {
    local flags=(-q --disable-pip-version-check --root-user-action=ignore)
    if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages &&
        [[ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]]; then
        flags+=(--break-system-packages)
    fi
    python3 -m pip install "${flags[@]}" -r "$1" || forge_die "pip install -r $1 failed"
}

# The handlers' ML runtime (handlers/requirements-ml.txt: torch, transformers, peft, ...),
# pinned exactly: the stand-in models are built from fixed seeds and the tests state their
# losses. PyPI's torch for Linux is a CUDA build: about 3 GB to download and 5.5 GB in
# site-packages (measured: 58 s on a dev box with a fast mirror). The check - every pin
# installed at its exact version, read from the packages' metadata without importing
# them - takes ~0.1 s, so a re-run skips the install.
forge_ml_missing() {
    python3 - "$FORGE_ROOT/handlers/requirements-ml.txt" <<'PY'
import re, sys
from importlib import metadata
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s#;]+)", line)
    if not m:
        continue
    try:
        have = metadata.version(m.group(1))
    except metadata.PackageNotFoundError:
        have = None
    # torch reports a local build tag (2.15.0+cu132): the release is what is pinned
    if have is None or have.split("+")[0] != m.group(2):
        print(f"{m.group(1)}=={m.group(2)}")
PY
}

forge_install_ml() {
    local missing
    mapfile -t missing < <(forge_ml_missing)
    ((${#missing[@]})) || return 0
    forge_say "installing the handlers' ML runtime (${missing[*]}; torch is ~3 GB)"
    forge_pip_install "$FORGE_ROOT/handlers/requirements-ml.txt"
}

# The Kafka broker's jars come from Maven Central (deploy/kafka/pom.xml) into the
# git-ignored lib/. A stamp holding the pom's hash marks a complete copy: a missing or
# different stamp (first run, interrupted copy, edited pom) refetches into an emptied
# lib/, so jars of an old version never linger on the broker's classpath.
forge_install_kafka_jars() {
    local pom=$FORGE_ROOT/deploy/kafka/pom.xml stamp=$FORGE_KAFKA_LIB/.pom.sha256 want
    want=$(sha256sum "$pom" | cut -d' ' -f1)
    [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
    forge_say "fetching the Kafka broker jars (Maven Central)"
    mkdir -p "$FORGE_KAFKA_LIB"
    rm -f "$FORGE_KAFKA_LIB"/*.jar
    # Maven's own output (escape codes even in batch mode) is kept for a failure only.
    mvn -q -B -f "$pom" dependency:copy-dependencies >"$FORGE_KAFKA_LIB/.mvn.log" 2>&1 ||
        { forge_tail_log "$FORGE_KAFKA_LIB/.mvn.log" 40; forge_die "mvn could not fetch the Kafka jars"; }
    echo "$want" >"$stamp"
}

# versitygw from the Go module proxy: `go install` builds it (about a minute on 2 cores,
# once; docs/object-store.md). A stamp holding the version marks a finished build, so
# an interrupted one or a version bump builds again. The build goes to a temporary
# GOBIN first: a half-written binary never sits at the path the stack runs.
forge_install_versitygw() {
    local stamp=$FORGE_TOOLS_BIN/.versitygw.version go tmp
    [[ -x $FORGE_VERSITYGW && -f $stamp && $(cat "$stamp") == "$FORGE_VERSITYGW_VERSION" ]] && return 0
    go=$(command -v go || true)
    [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
    [[ -n $go ]] || forge_die "the object store (versitygw) is built with Go >= 1.21, and no 'go' is on PATH"
    forge_say "building versitygw $FORGE_VERSITYGW_VERSION (go install, about a minute the first time)"
    mkdir -p "$FORGE_TOOLS_BIN"
    tmp=$(mktemp -d "$FORGE_TOOLS_BIN/.gobin.XXXXXX")
    # Go keeps its module and build caches under $HOME; without one (a bare CI
    # environment) they go to .forge/go.
    local goenv=()
    [[ -n ${HOME:-} ]] || goenv=(GOPATH="$FORGE_ROOT/.forge/go" GOCACHE="$FORGE_ROOT/.forge/go/cache")
    # GOTOOLCHAIN=auto: an older Go fetches the one versitygw's go.mod asks for (1.25).
    env "${goenv[@]}" GOBIN="$tmp" GOTOOLCHAIN=auto GOFLAGS=-modcacherw "$go" install \
        "github.com/versity/versitygw/cmd/versitygw@$FORGE_VERSITYGW_VERSION" >"$tmp/.go.log" 2>&1 ||
        { forge_tail_log "$tmp/.go.log" 40; rm -rf "$tmp"; forge_die "go install of versitygw failed"; }
    mv -f "$tmp/versitygw" "$FORGE_VERSITYGW"
    rm -rf "$tmp"
    echo "$FORGE_VERSITYGW_VERSION" >"$stamp"
}
