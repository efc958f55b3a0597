#!/usr/bin/env bash
# Real Apache Kafka for local runs and tests -- no Docker, no tarball download:
# one broker (KRaft, broker+controller in one JVM), or with --cluster three such
# nodes forming one KRaft quorum (replication factor 3, min.insync.replicas=2).
#
# Why: vidpulse's Kafka code must be tested against a genuine broker, and the
# only things we can count on are Java 17, Maven and Maven Central. So the
# broker jars come from Maven Central via deploy/kafka/pom.xml and are run
# with plain `java -cp`.
#
# Usage: deploy/kafka/kafka.sh fetch|start|stop|status|reset [--cluster]
#        deploy/kafka/kafka.sh start-node|stop-node N --cluster
#   fetch   download the broker jars into the cache (idempotent)
#   start   fetch, format storage once, start in the background, wait until
#           ready, print the bootstrap address on stdout (no-op if running):
#           "127.0.0.1:<port>", or with --cluster the three nodes' addresses
#   stop    SIGTERM, wait up to 30 s, then SIGKILL (with --cluster: every node)
#   status  exit 0 iff our broker (every node of the cluster) is running and ready
#   reset   stop and delete the data dir
#   start-node N / stop-node N   one node (1-3) of the cluster, for fault tests
#
# --cluster (or VIDPULSE_KAFKA_CLUSTER=1) picks the three-node cluster; it has its
# own data dir and ports, so it runs beside the single broker.
#
# Environment (all optional):
#   VIDPULSE_CACHE_DIR               jar cache root       (default <repo>/.cache)
#   VIDPULSE_KAFKA_DATA_DIR          logs, config, pid    (default <cache>/kafka-data;
#                                    cluster: <cache>/kafka-cluster-data, node N in node-N/)
#   VIDPULSE_KAFKA_PORT              PLAINTEXT listener   (default 19092; cluster: node N
#                                    listens on this + N - 1, default base 19192)
#   VIDPULSE_KAFKA_CONTROLLER_PORT   KRaft controller     (default 19093; cluster: node N
#                                    on this + N - 1, default base 19195)
#   VIDPULSE_KAFKA_HEAP              max heap             (default 512m; cluster: 384m a node)
#   VIDPULSE_KAFKA_START_TIMEOUT     ready wait, seconds  (default 60; cluster: 120)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[[ -n "$KAFKA_VERSION" ]] || { echo "kafka.sh: no <kafka.version> in $POM" >&2; exit 1; }

CACHE_DIR="${VIDPULSE_CACHE_DIR:-$REPO_DIR/.cache}"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
LIBS_DIR="$KAFKA_HOME/libs"
FETCH_STAMP="$KAFKA_HOME/.fetched"          # holds the sha256 of the pom it came from
M2_DIR="$CACHE_DIR/m2"

COMMAND="${1:-}"
NODE_ARG=""
CLUSTER="${VIDPULSE_KAFKA_CLUSTER:-0}"
shift || true
for arg in "$@"; do
    case "$arg" in
        --cluster) CLUSTER=1 ;;
        [1-3]) NODE_ARG="$arg" ;;
        *) echo "kafka.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[[ "$CLUSTER" == 1 ]] || CLUSTER=0

if ((CLUSTER)); then
    NODES=(1 2 3)
    DATA_DIR="${VIDPULSE_KAFKA_DATA_DIR:-$CACHE_DIR/kafka-cluster-data}"
    BASE_PORT="${VIDPULSE_KAFKA_PORT:-19192}"
    BASE_CONTROLLER_PORT="${VIDPULSE_KAFKA_CONTROLLER_PORT:-19195}"
    HEAP="${VIDPULSE_KAFKA_HEAP:-384m}"
    START_TIMEOUT="${VIDPULSE_KAFKA_START_TIMEOUT:-120}"
    REPLICAS=3
    MIN_ISR=2
else
    NODES=(1)
    DATA_DIR="${VIDPULSE_KAFKA_DATA_DIR:-$CACHE_DIR/kafka-data}"
    BASE_PORT="${VIDPULSE_KAFKA_PORT:-19092}"
    BASE_CONTROLLER_PORT="${VIDPULSE_KAFKA_CONTROLLER_PORT:-19093}"
    HEAP="${VIDPULSE_KAFKA_HEAP:-512m}"
    START_TIMEOUT="${VIDPULSE_KAFKA_START_TIMEOUT:-60}"
    REPLICAS=1
    MIN_ISR=1
fi
# One broker per folder, however it is reached: a symlinked .cache (a git worktree's) must name the same
# files, or another checkout's `status` would not recognise the broker and its `stop` would orphan it.
if [[ -d "$DATA_DIR" ]]; then DATA_DIR="$(cd -P "$DATA_DIR" && pwd)"; fi
LOCK_FILE="$DATA_DIR/.kafka.sh.lock"
CLUSTER_ID_FILE="$DATA_DIR/cluster.id"      # cluster: the id every node is formatted with

HOST=127.0.0.1
STOP_TIMEOUT=30

# Sets the paths and ports of node $1. The single broker's node lives in DATA_DIR itself (as it always
# did), a cluster's node N in DATA_DIR/node-N.
use_node() {
    NODE_ID="$1"
    if ((CLUSTER)); then NODE_DIR="$DATA_DIR/node-$NODE_ID"; else NODE_DIR="$DATA_DIR"; fi
    LOG_DIRS="$NODE_DIR/logs"                   # Kafka's own data (topics + metadata log)
    PROPS="$NODE_DIR/server.properties"
    LOG4J_CONF="$NODE_DIR/log4j2.properties"
    BROKER_LOG="$NODE_DIR/broker.log"
    PID_FILE="$NODE_DIR/broker.pid"
    ADDR_FILE="$NODE_DIR/broker.address"        # address of the running broker
    PORT=$((BASE_PORT + NODE_ID - 1))
    CONTROLLER_PORT=$((BASE_CONTROLLER_PORT + NODE_ID - 1))
}

voters() {
    local n out=""
    for n in "${NODES[@]}"; do out+="${out:+,}$n@$HOST:$((BASE_CONTROLLER_PORT + n - 1))"; done
    echo "$out"
}

bootstrap() {
    local n out=""
    for n in "${NODES[@]}"; do out+="${out:+,}$HOST:$((BASE_PORT + n - 1))"; done
    echo "$out"
}
STARTED_LINE="Kafka Server started"         # logged by KafkaRaftServer once serving

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

# Serialise start/stop/reset so parallel test runners don't race each other.
take_lock() {
    mkdir -p "$DATA_DIR"
    exec 9>"$LOCK_FILE"
    flock 9
}

fetched() { [[ -f "$FETCH_STAMP" && "$(cat "$FETCH_STAMP")" == "$(pom_sum)" ]]; }

fetch() {
    fetched && return 0
    mkdir -p "$KAFKA_HOME"
    exec 8>"$KAFKA_HOME/.fetch.lock"
    flock 8
    if fetched; then exec 8>&-; return 0; fi   # fetched by another process meanwhile
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION)"
    log "fetching Kafka $KAFKA_VERSION jars into $LIBS_DIR"
    mkdir -p "$M2_DIR"
    local tmp="$KAFKA_HOME/libs.tmp.$$"
    rm -rf "$tmp"
    mvn -q -B -Dstyle.color=never -f "$POM" \
        -Dmaven.repo.local="$M2_DIR" \
        dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 \
        || { rm -rf "$tmp"; die "maven fetch failed"; }
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    pom_sum >"$FETCH_STAMP"
    exec 8>&-
}

# Modest footprint: tests run alongside on a 2-core box.
jvm_opts() {
    JVM_OPTS=(-Xms64m -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$LIBS_DIR/*")
}

java_cmd() { jvm_opts; java "${JVM_OPTS[@]}" "$@"; }

write_config() {
    mkdir -p "$LOG_DIRS"
    # Static quorum (controller.quorum.voters) rather than `format --standalone`:
    # the voter set then comes from this file, so changing the ports between
    # runs keeps working on already-formatted storage.
    cat >"$PROPS" <<EOF
# Generated by deploy/kafka/kafka.sh -- rewritten on every start.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$LOG_DIRS

num.partitions=3
default.replication.factor=$REPLICAS
min.insync.replicas=$MIN_ISR
auto.create.topics.enable=true
offsets.topic.replication.factor=$REPLICAS
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$REPLICAS
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=$REPLICAS
share.coordinator.state.topic.min.isr=$MIN_ISR
# No 3 s wait before the first consumer-group rebalance: faster tests.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    cat >"$LOG4J_CONF" <<'EOF'
# Generated by deploy/kafka/kafka.sh. INFO to stderr: the broker's output goes
# to broker.log, and the tools' stdout stays clean for the script to read.
status = warn
# Keep logging until the JVM is gone, so the broker's shutdown is in the log.
shutdownHook = disable
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.err.ref = STDERR
# Full config dumps ("KafkaConfig values: ...") for every component: noise.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

new_cluster_id() {
    local cluster_id
    # Same shape as `kafka-storage.sh random-uuid` (16 random bytes, base64url,
    # no padding, not starting with '-') without paying for another JVM start.
    until [[ "${cluster_id:-}" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    echo "$cluster_id"
}

format_storage() {
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    local cluster_id
    if ((CLUSTER)); then   # every node of one cluster is formatted with the same id
        [[ -s "$CLUSTER_ID_FILE" ]] || new_cluster_id >"$CLUSTER_ID_FILE"
        cluster_id="$(cat "$CLUSTER_ID_FILE")"
    else
        cluster_id="$(new_cluster_id)"
    fi
    log "formatting $LOG_DIRS (cluster id $cluster_id)"
    java_cmd kafka.tools.StorageTool format --config "$PROPS" \
        --cluster-id "$cluster_id" --ignore-formatted >>"$BROKER_LOG" 2>&1 \
        || { tail -n 30 "$BROKER_LOG" >&2; die "storage format failed"; }
}

# Pid of our broker if it is alive (and really is our java process), else "".
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(cat "$PID_FILE")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS"; then
        echo "$pid"
    fi
}

# True while pid exists and is not a zombie (a zombie still answers kill -0).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

is_ready() {
    local addr
    [[ -n "$(running_pid)" && -f "$ADDR_FILE" ]] || return 1
    addr="$(cat "$ADDR_FILE")"
    port_open "${addr%:*}" "${addr##*:}" && grep -qF "$STARTED_LINE" "$BROKER_LOG" 2>/dev/null
}

# Every node of this mode ready.
all_ready() {
    local n
    for n in "${NODES[@]}"; do use_node "$n"; is_ready || return 1; done
}

start() {
    command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
    fetch
    take_lock
    local n addresses=""
    # A cluster's nodes start together: none becomes ready before a quorum of controllers runs.
    for n in "${NODES[@]}"; do use_node "$n"; launch_node; done
    for n in "${NODES[@]}"; do use_node "$n"; await_node; addresses+="${addresses:+,}$(cat "$ADDR_FILE")"; done
    echo "$addresses"
}

LAUNCHED=()   # nodes this invocation started: only those are stopped again if the start fails

# Node (use_node) started in the background unless it runs already.
launch_node() {
    [[ -n "$(running_pid)" ]] && return 0
    LAUNCHED+=("$NODE_ID")
    rm -f "$PID_FILE" "$ADDR_FILE"
    if port_open "$HOST" "$PORT" || port_open "$HOST" "$CONTROLLER_PORT"; then
        die "port $PORT or $CONTROLLER_PORT on $HOST is already in use by another process"
    fi

    write_config
    [[ -f "$BROKER_LOG" ]] && mv -f "$BROKER_LOG" "$BROKER_LOG.1"
    format_storage

    # setsid: own session, so the broker outlives the caller's job/process group.
    # The inner bash writes its own pid and then execs java (same pid), which is
    # right whether or not setsid had to fork. 8>&- 9>&-: keep our lock fds from it.
    jvm_opts
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        java "${JVM_OPTS[@]}" kafka.Kafka "$PROPS" \
        </dev/null >>"$BROKER_LOG" 2>&1 8>&- 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
    echo "$HOST:$PORT" >"$ADDR_FILE"
}

# Waits for node (use_node) to be ready; on failure stops the nodes this invocation started and exits 1.
await_node() {
    wait_ready && return 0
    if [[ -n "$(running_pid)" ]]; then
        log "broker $NODE_ID (pid $(running_pid)) did not become ready within ${START_TIMEOUT}s; last log lines:"
    else
        log "broker $NODE_ID exited; last log lines:"
    fi
    tail -n 40 "$BROKER_LOG" >&2 || true
    local n
    ((${#LAUNCHED[@]})) && { stop_locked "${LAUNCHED[@]}" >/dev/null 2>&1 || true; }
    exit 1
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        is_ready && return 0
        [[ -n "$(running_pid)" ]] || { log "broker process exited"; return 1; }
        sleep 0.25
    done
    return 1
}

# Stops the given nodes (default: the one use_node picked) together: SIGTERM to all first, so the last
# node of a cluster does not wait out its controlled shutdown on a quorum that is already gone.
stop_locked() {
    local n pid pids=() nodes=("$@")
    ((${#nodes[@]})) || nodes=("$NODE_ID")
    for n in "${nodes[@]}"; do
        use_node "$n"
        pid="$(running_pid)"
        if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    local deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${pids[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if alive "$pid"; then
            log "broker pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
        fi
    done
    for n in "${nodes[@]}"; do use_node "$n"; rm -f "$PID_FILE" "$ADDR_FILE"; done
}

stop() {
    [[ -d "$DATA_DIR" ]] || return 0
    take_lock
    local n
    stop_locked "${NODES[@]}"
}

reset() {
    stop
    rm -rf "$DATA_DIR"
}

# start-node/stop-node N: one node of the cluster (the rest keep running), for fault tests.
one_node() {
    ((CLUSTER)) || die "$COMMAND is for the cluster: add --cluster"
    [[ -n "$NODE_ARG" ]] || die "$COMMAND needs a node number, 1 to 3"
    take_lock
    use_node "$NODE_ARG"
}

case "$COMMAND" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    status) all_ready ;;
    reset) reset ;;
    start-node) command -v java >/dev/null || die "java not found"; fetch; one_node; launch_node; await_node; cat "$ADDR_FILE" ;;
    stop-node) one_node; stop_locked ;;
    *) echo "usage: $0 fetch|start|stop|status|reset [--cluster] | start-node|stop-node N --cluster" >&2; exit 2 ;;
esac
