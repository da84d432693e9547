#!/usr/bin/env bash
# How the home daemon scales with nodes, and what dead nodes cost: N OpenSSH sshd on 127.0.0.1
# (one client HOME knowing them all), then wall times of `mrunctl status`, `mrunctl nodes`,
# `mrunctl nodes --refresh` and an `mrun --each` start, and the daemon's resident memory,
# each against the same with no node (the baseline, measured in the same run).
#
#   bench/daemon-nodes.sh [N] [BIN_DIR]     # N nodes (default 30); binaries from BIN_DIR
#                                           # (default target/release; give another build's
#                                           # directory to compare)
#
# UPLOAD=1: no MRUN_REMOTE_AGENT, so mrun installs its agent into each node's own HOME
# (~/.cache/mrun), as it does for a user who installed nothing on the nodes (about 1 GB of
# /tmp with 30 nodes and a debug-info build).
#
# Needs sshd, ssh-keygen and python3 (the node that accepts TCP and never speaks). Runs as any
# user that can log in to itself with a key (root in CI). Medians of REPS (default 5) runs.
set -euo pipefail

N=${1:-30}
BIN=$(cd "${2:-$(dirname "$0")/../target/release}" && pwd)
REPS=${REPS:-5}
for tool in /usr/sbin/sshd /usr/bin/ssh-keygen python3 "$BIN/mrun" "$BIN/mrunctl" "$BIN/mrun-agent"; do
    command -v "$tool" >/dev/null || { echo "daemon-nodes: $tool is missing" >&2; exit 1; }
done
mkdir -p /run/sshd 2>/dev/null || true

DIR=$(mktemp -d /tmp/mrun-bench-nodes.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in $(daemon_pids); do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

export HOME=$DIR/home XDG_RUNTIME_DIR=$DIR/run MRUN_REMOTE_AGENT=$BIN/mrun-agent
if [ "${UPLOAD:-0}" = 1 ]; then unset MRUN_REMOTE_AGENT; fi
unset MRUN_NODES XDG_CONFIG_HOME SSH_AUTH_SOCK MRUN_NO_DAEMON MRUN_DAEMON_IDLE_SECS
mkdir -p "$HOME/.ssh" "$XDG_RUNTIME_DIR" && chmod 700 "$HOME/.ssh" "$XDG_RUNTIME_DIR"
ssh-keygen -q -t ed25519 -N '' -f "$HOME/.ssh/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_key"
cp "$HOME/.ssh/id_ed25519.pub" "$DIR/authorized_keys"
user=$(id -un)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

names=()
for i in $(seq 0 $((N - 1))); do
    port=$(free_port)
    mkdir -p "$DIR/node-home-$i"
    cat > "$DIR/sshd_$i" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $DIR/host_key
AuthorizedKeysFile $DIR/authorized_keys
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
LogLevel ERROR
SetEnv HOME=$DIR/node-home-$i PATH=/usr/bin:/bin
EOF
    /usr/sbin/sshd -D -f "$DIR/sshd_$i" -E "$DIR/sshd_$i.log" &
    PIDS+=($!)
    printf 'Host n%d\n    HostName 127.0.0.1\n    Port %d\n    User %s\n    IdentityFile %s\n' \
        "$i" "$port" "$user" "$HOME/.ssh/id_ed25519" >> "$HOME/.ssh/config"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$DIR/host_key.pub")" >> "$HOME/.ssh/known_hosts"
    names+=("n$i")
done
NODES=$(IFS=,; echo "${names[*]}")

# Dead nodes: a port nobody listens on, and a listener that accepts and never speaks.
refused="127.0.0.1:$(free_port)"
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(64); print(s.getsockname()[1], flush=True); time.sleep(3600)' > "$DIR/silent_port" &
PIDS+=($!)
while [ ! -s "$DIR/silent_port" ]; do sleep 0.05; done
silent="127.0.0.1:$(cat "$DIR/silent_port")"

daemon_pids() {
    for p in /proc/[0-9]*; do
        [ "$(tr '\0' ' ' 2>/dev/null < "$p/cmdline")" = "$BIN/mrun --daemon " ] || continue
        tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qx "HOME=$HOME" && echo "${p#/proc/}"
    done
    return 0
}
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
stop_daemon() { for p in $(daemon_pids); do kill "$p"; done; sleep 0.3; }
# Starts the daemon by hand with MRUN_NODES=$1 (an older build watched its own MRUN_NODES;
# this one watches what the requests name) and waits for it.
start_daemon() {
    MRUN_NODES=$1 "$BIN/mrun" --daemon < /dev/null > /dev/null 2>&1 &
    for _ in $(seq 100); do [ -n "$(daemon_pids)" ] && return 0; sleep 0.05; done
    echo "daemon-nodes: the daemon did not start" >&2; return 1
}
now() { date +%s.%N; }
# Seconds one run of the command takes.
timed() { local t0; t0=$(now); "$@" > /dev/null 2>&1 || true; echo "$(now) - $t0" | bc -l; }
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
reps() { for _ in $(seq "$REPS"); do timed "$@"; done | median; }
# Waits until `mrunctl nodes` shows every node of $1 (a comma list) reachable.
all_up() {
    local want; want=$(tr ',' '\n' <<< "$1" | wc -l)
    for _ in $(seq 600); do
        up=$(MRUN_NODES=$1 "$BIN/mrunctl" nodes 2>/dev/null | awk '$2 == "yes"' | wc -l)
        [ "$up" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "daemon-nodes: not every node came up" >&2; return 1
}

echo "daemon-nodes: $N sshd nodes on 127.0.0.1, binaries from $BIN, medians of $REPS, agent ${MRUN_REMOTE_AGENT:-installed into each node HOME ~/.cache/mrun}"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Baseline: the daemon with no node.
start_daemon ""
sleep 2
base_pid=$(daemon_pids | head -1)
base_rss=$(rss_mib "$base_pid")
base_status=$(MRUN_NODES= reps "$BIN/mrunctl" status)
stop_daemon

first=$(MRUN_NODES=$NODES timed "$BIN/mrunctl" nodes | xargs printf "%.3f")
[ -n "$(daemon_pids)" ] || start_daemon "$NODES"
all_up "$NODES"
t0=$(now); all_up "$NODES"; t_up=$(echo "$(now) - $t0" | bc -l)
status=$(MRUN_NODES=$NODES reps "$BIN/mrunctl" status)
nodes=$(MRUN_NODES=$NODES reps "$BIN/mrunctl" nodes)
refresh=$(MRUN_NODES=$NODES reps "$BIN/mrunctl" nodes --refresh)
sleep 5
pid=$(daemon_pids | head -1)
rss=$(rss_mib "$pid")
threads=$(awk '/Threads/ { print $2 }' "/proc/$pid/status")
stop_daemon

printf '%-44s %10s %10s\n' "measure" "$N nodes" "no node"
printf '%-44s %10s %10s\n' "mrunctl status, s" "$status" "$base_status"
printf '%-44s %10s\n' "mrunctl nodes, s" "$nodes"
printf '%-44s %10s\n' "mrunctl nodes --refresh, s" "$refresh"
printf '%-44s %10s\n' "first mrunctl nodes (starts the daemon), s" "$first"
printf '%-44s %10s %10s\n' "daemon resident memory, MiB" "$rss" "$base_rss"
printf '%-44s %10s\n' "daemon memory per node, MiB" "$(echo "($rss - $base_rss) / $N" | bc -l | xargs printf '%.2f')"
printf '%-44s %10s\n' "daemon threads" "$threads"
echo

# Dead nodes: n0 alive, one refusing, one silent.
DEAD="n0,$refused,$silent"
first_dead=$(MRUN_NODES=$DEAD timed "$BIN/mrunctl" nodes | xargs printf "%.3f")
dead_nodes=$(MRUN_NODES=$DEAD reps "$BIN/mrunctl" nodes)
dead_each=$(MRUN_NODES=$DEAD reps "$BIN/mrun" --each true ::: 1)
stop_daemon
alive_first=$(MRUN_NODES=n0 timed "$BIN/mrunctl" nodes | xargs printf "%.3f")
alive_each=$(MRUN_NODES=n0 reps "$BIN/mrun" --each true ::: 1)
stop_daemon
printf '%-44s %10s %10s\n' "measure" "+2 dead" "n0 only"
printf '%-44s %10s %10s\n' "first mrunctl nodes (starts the daemon), s" "$first_dead" "$alive_first"
printf '%-44s %10s\n' "mrunctl nodes later, s" "$dead_nodes"
printf '%-44s %10s %10s\n' "mrun --each true ::: 1, s" "$dead_each" "$alive_each"
echo "(the first run waits up to 3 s for nodes it has never heard of; later ones answer from the watch)"
