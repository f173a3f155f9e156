#!/usr/bin/env bash
# scripts/services.sh — bring up the local services taskledger's tests need.
#
#   PostgreSQL  127.0.0.1:5432, user postgres, trust auth over TCP
#   RabbitMQ    127.0.0.1:5672, guest/guest
#   Docker      a working engine + the offline test image taskledger-test-busybox:latest
#               (built FROM scratch from Debian's busybox-static; see scripts/test-image/)
#               + the images of the default task kinds, taskledger-busybox:latest and
#               taskledger-thug:latest, built by scripts/images.sh (cached: seconds once
#               built; the first Thug build takes a few minutes and needs the registries)
#   Slurm       a one-node cluster (munged, slurmctld, slurmd; partition "debug") on
#               127.0.0.1, by scripts/slurm.sh (install ~25s, start ~3s)
#
# Idempotent: anything already running is left alone; missing Debian packages are
# installed with apt-get (root needed only when something must be installed/started).
#
# Usage:   scripts/services.sh [--skip-docker] [--skip-image] [--skip-kind-images]
#                              [--skip-postgres] [--skip-rabbitmq] [--skip-slurm]
#          source scripts/services.sh [same flags]
#            (when sourced, runs in a subshell so the caller's shell options are untouched,
#             then exports TASKLEDGER_DOCKER_BIN, TASKLEDGER_TEST_IMAGE, TASKLEDGER_SLURM
#             and TASKLEDGER_SLURM_PARTITION on success)
#
# Environment:
#   TASKLEDGER_SKIP_DOCKER=1        same as --skip-docker  (no dockerd, no images)
#   TASKLEDGER_SKIP_TEST_IMAGE=1    same as --skip-image   (dockerd yes, test image no)
#   TASKLEDGER_SKIP_KIND_IMAGES=1   same as --skip-kind-images (no scripts/images.sh)
#   TASKLEDGER_SKIP_THUG_IMAGE=1    scripts/images.sh builds taskledger-busybox only
#   TASKLEDGER_IMAGE_CACHE=DIR      scripts/images.sh's cache (default /var/cache/taskledger/images)
#   TASKLEDGER_SKIP_POSTGRES=1      same as --skip-postgres
#   TASKLEDGER_SKIP_RABBITMQ=1      same as --skip-rabbitmq
#   TASKLEDGER_SKIP_SLURM=1         same as --skip-slurm (the Slurm tests then fail)
#   TASKLEDGER_SERVICES_TIMEOUT=60  seconds to wait for each service to answer
#   TASKLEDGER_LOG_DIR=/var/log     where dockerd/apt/build logs go (falls back to /tmp;
#                                   scripts/images.sh logs to taskledger-images.log there)
#   TASKLEDGER_DOCKERD_FLAGS="..."  extra dockerd flags, appended to the defaults
#
# Exit status 0 when every requested service answers.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
fi

# Poll "$@" once a second until it succeeds or $TIMEOUT seconds pass.
_tl_wait_for() {
  local deadline=$((SECONDS + _TL_TIMEOUT))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

_tl_tcp_open() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1; }

# ---------------------------------------------------------------- PostgreSQL --

_tl_pg_ready() {
  if lib_have pg_isready; then
    pg_isready -q -h 127.0.0.1 -p 5432 -t 3 >/dev/null 2>&1
  else
    _tl_tcp_open 127.0.0.1 5432
  fi
}

_tl_pg_auth_ok() {
  [[ "$(PGPASSWORD='' PGCONNECT_TIMEOUT=5 psql -X -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' 2>/dev/null)" == 1 ]]
}

# Prints "<version> <cluster>" of the Debian cluster on port 5432 (or the newest 'main').
_tl_pg_cluster() {
  local c=""
  if lib_have pg_lsclusters; then
    c=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')
    [[ -n $c ]] || c=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "main" { print $1, $2 }' | sort -V | tail -n 1)
  fi
  printf '%s\n' "$c"
}

_tl_ensure_pg_trust() {
  if ! lib_have psql; then
    lib_warn "psql not found; cannot verify trust auth for user postgres on 127.0.0.1"
    return 0
  fi
  _tl_pg_auth_ok && return 0
  local ver cl hba
  read -r ver cl <<<"$(_tl_pg_cluster)" || true
  hba="/etc/postgresql/${ver:-none}/${cl:-main}/pg_hba.conf"
  [[ -n ${ver:-} && -f $hba ]] ||
    lib_die "PostgreSQL answers on 127.0.0.1:5432 but 'psql -h 127.0.0.1 -U postgres' without a password fails, and no Debian pg_hba.conf was found to fix it." \
      "Fix: add 'host all postgres 127.0.0.1/32 trust' at the top of pg_hba.conf and reload PostgreSQL."
  lib_need_root "editing $hba" "start the service yourself"
  lib_say "postgresql: adding 'host all postgres 127.0.0.1/32 trust' to the top of $hba"
  sed -i '1i host    all    postgres    127.0.0.1/32    trust    # added by taskledger scripts/services.sh' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" reload >/dev/null 2>&1 ||
    lib_die "could not reload PostgreSQL cluster $ver/$cl after editing $hba." \
      "Fix: run 'pg_ctlcluster --skip-systemctl-redirect $ver $cl reload' and check its log."
  _tl_wait_for _tl_pg_auth_ok ||
    lib_die "trust auth for user postgres on 127.0.0.1 still fails after editing $hba." \
      "Fix: check the earlier lines of $hba and that role 'postgres' exists."
}

_tl_ensure_postgres() {
  if _tl_pg_ready; then
    _tl_ensure_pg_trust
    lib_say "postgresql already running on 127.0.0.1:5432"
    return 0
  fi
  local installed=0 ver cl
  if ! lib_have pg_ctlcluster || [[ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]]; then
    lib_apt_install postgresql
    installed=1
  fi
  read -r ver cl <<<"$(_tl_pg_cluster)" || true
  if [[ -z ${ver:-} ]]; then
    ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [[ -n $ver ]] || lib_die "PostgreSQL is installed but no server version was found under /usr/lib/postgresql." \
      "Fix: 'apt-get install --reinstall postgresql'."
    cl=main
    lib_need_root "creating PostgreSQL cluster $ver/main" "start the service yourself"
    lib_say "postgresql: creating cluster $ver/main on port 5432"
    pg_createcluster "$ver" main --port 5432 >/dev/null ||
      lib_die "pg_createcluster $ver main failed." "Fix: inspect 'pg_lsclusters' and /var/log/postgresql/."
  fi
  lib_need_root "starting PostgreSQL cluster $ver/$cl" "start the service yourself"
  local out
  if ! out=$(pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" start 2>&1); then
    # "already running" is fine (e.g. still starting up); anything else is fatal.
    grep -qi 'already running' <<<"$out" ||
      lib_die "could not start PostgreSQL cluster $ver/$cl: $out" \
        "Fix: see /var/log/postgresql/postgresql-$ver-$cl.log, then rerun."
  fi
  _tl_wait_for _tl_pg_ready ||
    lib_die "PostgreSQL cluster $ver/$cl started but 127.0.0.1:5432 did not accept connections within ${_TL_TIMEOUT}s." \
      "Fix: check 'pg_lsclusters' (port, listen_addresses) and /var/log/postgresql/postgresql-$ver-$cl.log."
  _tl_ensure_pg_trust
  if ((installed)); then
    lib_say "postgresql: installed and started cluster $ver/$cl on 127.0.0.1:5432"
  else
    lib_say "postgresql: started cluster $ver/$cl on 127.0.0.1:5432"
  fi
}

# ------------------------------------------------------------------ RabbitMQ --

# TCP connect + AMQP 0-9-1 protocol header; a broker answers with a method frame (type 0x01).
_tl_amqp_ready() {
  local first
  first=$(timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    head -c 1 <&3 | od -An -tx1' 2>/dev/null) || return 1
  [[ ${first//[[:space:]]/} == 01 ]]
}

_tl_ensure_rabbitmq() {
  if _tl_amqp_ready; then
    lib_say "rabbitmq already running on 127.0.0.1:5672"
    return 0
  fi
  if _tl_tcp_open 127.0.0.1 5672; then
    lib_die "something listens on 127.0.0.1:5672 but does not speak AMQP 0-9-1." \
      "Fix: find it with 'ss -ltnp sport = :5672' and stop it, or wait if RabbitMQ is still booting."
  fi
  local installed=0 what
  if ! lib_have rabbitmq-server; then
    lib_apt_install rabbitmq-server
    installed=1
  fi
  if pgrep -u rabbitmq -f 'beam.*rabbit' >/dev/null 2>&1; then
    what="rabbitmq: broker process already present, waiting for it"
  else
    lib_need_root "starting rabbitmq-server" "start the service yourself"
    local log="$_TL_LOG_DIR/taskledger-rabbitmq-start.log"
    rabbitmq-server -detached >>"$log" 2>&1 ||
      lib_die "'rabbitmq-server -detached' failed (see $log)." "Fix: check $log and /var/log/rabbitmq/, then rerun."
    what="rabbitmq: started rabbitmq-server -detached"
  fi
  _tl_wait_for _tl_amqp_ready ||
    lib_die "RabbitMQ did not answer AMQP on 127.0.0.1:5672 within ${_TL_TIMEOUT}s." \
      "Fix: check 'rabbitmqctl status' and /var/log/rabbitmq/; raise TASKLEDGER_SERVICES_TIMEOUT if the machine is slow."
  ((installed)) && what="$what (installed rabbitmq-server)"
  lib_say "$what; answering on 127.0.0.1:5672"
}

# -------------------------------------------------------------------- Docker --

# Candidate clients, PATH first. /usr/local/bin/docker (new) may shadow Debian's /usr/bin/docker.
_tl_docker_candidates() {
  local seen=" " c
  for c in "$(command -v docker 2>/dev/null || true)" /usr/bin/docker /usr/local/bin/docker; do
    [[ -n $c && -x $c && $seen != *" $c "* ]] || continue
    seen="$seen$c "
    printf '%s\n' "$c"
  done
}

_tl_docker_ok() { timeout 20 "$1" info --format '{{.ServerVersion}}' </dev/null >/dev/null 2>&1; }

# Sets _TL_DOCKER to the first client that can talk to the daemon.
_tl_pick_docker_client() {
  local c
  while read -r c; do
    if _tl_docker_ok "$c"; then
      _TL_DOCKER=$c
      return 0
    fi
  done < <(_tl_docker_candidates)
  return 1
}

_tl_docker_describe() {
  local v
  v=$("$_TL_DOCKER" version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}} (API {{.Client.APIVersion}})' 2>/dev/null) || v="?"
  printf 'client %s; %s' "$_TL_DOCKER" "$v"
}

_tl_dockerd_pids() { pgrep -x dockerd 2>/dev/null || true; }

# Starts dockerd with the given extra args; waits until a client answers.
# Returns 0 = up, 1 = timed out while still running, 2 = dockerd exited.
_tl_start_dockerd() {
  local log=$1
  shift
  printf '\n==== %s: dockerd %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  _TL_DOCKERD_LOG_FROM=$(wc -l <"$log")
  setsid nohup dockerd "$@" >>"$log" 2>&1 </dev/null &
  local pid=$! deadline=$((SECONDS + _TL_TIMEOUT))
  while ((SECONDS < deadline)); do
    _tl_pick_docker_client && return 0
    # ($! may be setsid itself if it had to fork, hence the pgrep fallback.)
    kill -0 "$pid" 2>/dev/null || [[ -n "$(_tl_dockerd_pids)" ]] || return 2
    sleep 1
  done
  return 1
}

# Errors from the latest dockerd start (the log is mostly gRPC chatter).
_tl_dockerd_log_excerpt() {
  local section
  section=$(tail -n "+${_TL_DOCKERD_LOG_FROM:-1}" "$1")
  grep -E 'level=(error|fatal)|failed to start|^[Ee]rror' <<<"$section" | tail -n 12 || tail -n 12 <<<"$section"
}

_tl_ensure_docker() {
  if _tl_pick_docker_client; then
    lib_say "docker already running ($(_tl_docker_describe))"
    return 0
  fi
  local installed=0
  if ! lib_have dockerd; then
    lib_apt_install docker.io
    installed=1
  fi
  [[ -n "$(_tl_docker_candidates)" ]] || lib_apt_install docker.io
  local log="$_TL_LOG_DIR/taskledger-dockerd.log"

  if [[ -n "$(_tl_dockerd_pids)" ]]; then
    lib_say "docker: a dockerd process is already running (pid $(_tl_dockerd_pids | tr '\n' ' ' | sed 's/ $//')), waiting for it to answer"
    _tl_wait_for _tl_pick_docker_client ||
      lib_die "dockerd is running but 'docker info' fails after ${_TL_TIMEOUT}s." \
        "Fix: look at its log (e.g. $log), stop it ('kill <pid>'), and rerun this script." \
        "If the client is too new for the daemon, try DOCKER_API_VERSION=<daemon API> or /usr/bin/docker."
    lib_say "docker: existing dockerd now answers ($(_tl_docker_describe))"
    return 0
  fi

  lib_need_root "starting dockerd" "start the service yourself"
  # No dockerd: a leftover pid file would only confuse it.
  rm -f /var/run/docker.pid

  # Sandbox defaults: leave host networking alone — no docker0 bridge, no
  # iptables/ip6tables NAT rules, no net.ipv4.ip_forward=1 (tests run containers
  # with --network none; there is no outside network anyway). Containers still get
  # --network none / host. overlay2 is tried first, vfs only if it fails.
  local -a flags=(--bridge=none --iptables=false --ip-forward=false)
  if dockerd --help 2>&1 | grep -q -- '--ip6tables'; then flags+=(--ip6tables=false); fi
  if [[ -n ${TASKLEDGER_DOCKERD_FLAGS:-} ]]; then
    local -a extra
    read -r -a extra <<<"$TASKLEDGER_DOCKERD_FLAGS"
    flags+=("${extra[@]}")
  fi

  local rc=0
  _tl_start_dockerd "$log" "${flags[@]}" || rc=$?
  if ((rc == 2)) && [[ " ${flags[*]} " != *" --storage-driver"* ]] &&
    _tl_dockerd_log_excerpt "$log" | grep -qiE 'overlay|graphdriver|storage.driver|driver not supported'; then
    lib_warn "dockerd failed with the default storage driver (overlay2); retrying with --storage-driver=vfs (slower, more disk)"
    flags+=(--storage-driver=vfs)
    rc=0
    _tl_start_dockerd "$log" "${flags[@]}" || rc=$?
  fi
  case $rc in
    0) ;;
    1)
      _tl_dockerd_log_excerpt "$log" >&2 || true
      lib_die "dockerd started but 'docker info' did not succeed within ${_TL_TIMEOUT}s (log: $log)." \
        "Fix: read the log above; if the client/daemon API versions clash, set DOCKER_API_VERSION or use /usr/bin/docker." \
        "Extra dockerd flags can be passed via TASKLEDGER_DOCKERD_FLAGS (e.g. '--storage-driver=vfs')."
      ;;
    *)
      _tl_dockerd_log_excerpt "$log" >&2 || true
      lib_die "dockerd exited during startup (log: $log)." \
        "Fix: read the log above; extra dockerd flags can be passed via TASKLEDGER_DOCKERD_FLAGS (e.g. '--storage-driver=vfs')."
      ;;
  esac
  local first
  first=$(_tl_docker_candidates | head -n 1)
  if [[ $_TL_DOCKER != "$first" ]]; then
    lib_warn "the docker client first on PATH ($first) cannot talk to this daemon; use $_TL_DOCKER (exported as TASKLEDGER_DOCKER_BIN when sourced)"
  fi
  ((installed)) && lib_say "docker: installed docker.io"
  lib_say "started dockerd ${flags[*]} (log: $log; $(_tl_docker_describe))"
}

# ---------------------------------------------------------------- test image --

_TL_IMAGE=taskledger-test-busybox:latest
_TL_IMAGE_LABEL=org.taskledger.test-image.hash

_tl_busybox_static() {
  [[ -x /bin/busybox ]] || return 1
  if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then return 0; fi
  # Not from busybox-static: accept it only if it is statically linked.
  LC_ALL=C ldd /bin/busybox 2>&1 | grep -qE 'not a dynamic executable|statically linked'
}

_tl_image_works() {
  [[ "$(timeout 60 "$_TL_DOCKER" run --rm --network none "$_TL_IMAGE" sh -c 'echo ok' 2>/dev/null)" == ok ]]
}

_tl_ensure_test_image() {
  local dockerfile="$_TL_SCRIPT_DIR/test-image/Dockerfile"
  [[ -f $dockerfile ]] || lib_die "missing $dockerfile." "Fix: restore it from git ('git checkout -- scripts/test-image/Dockerfile')."
  local bb_note=""
  if ! _tl_busybox_static; then
    lib_apt_install busybox-static
    bb_note=" (installed busybox-static)"
    _tl_busybox_static || lib_die "/bin/busybox is still missing or not statically linked after installing busybox-static." \
      "Fix: 'apt-get install --reinstall busybox-static' and check 'ldd /bin/busybox'."
  fi
  local hash have
  hash=$(cat "$dockerfile" /bin/busybox | sha256sum | cut -d' ' -f1)
  have=$("$_TL_DOCKER" image inspect --format "{{ index .Config.Labels \"$_TL_IMAGE_LABEL\" }}" "$_TL_IMAGE" 2>/dev/null || true)
  if [[ $have == "$hash" ]] && _tl_image_works; then
    lib_say "test image $_TL_IMAGE already built and runs with --network none"
    return 0
  fi

  local ctx log="$_TL_LOG_DIR/taskledger-test-image-build.log" t0=$SECONDS
  ctx=$(mktemp -d)
  cp "$dockerfile" "$ctx/Dockerfile"
  cp /bin/busybox "$ctx/busybox"
  # The Docker 28 CLI defaults to BuildKit via the buildx plugin; Debian's docker.io
  # ships none, so fall back to the legacy builder when buildx is unavailable.
  local buildkit=0
  if "$_TL_DOCKER" buildx version >/dev/null 2>&1; then buildkit=1; fi
  printf '\n==== %s: building %s (hash %s, DOCKER_BUILDKIT=%s)\n' "$(date -u +%FT%TZ)" "$_TL_IMAGE" "$hash" "$buildkit" >>"$log"
  if ! DOCKER_BUILDKIT=$buildkit "$_TL_DOCKER" build --network none \
    --label "$_TL_IMAGE_LABEL=$hash" -t "$_TL_IMAGE" "$ctx" >>"$log" 2>&1; then
    rm -rf "$ctx"
    tail -n 20 "$log" >&2 || true
    lib_die "building $_TL_IMAGE failed (log: $log)." "Fix: read the log above; try the build by hand with DOCKER_BUILDKIT=0."
  fi
  rm -rf "$ctx"
  # Drop superseded builds of this image (untagged, carrying our label).
  "$_TL_DOCKER" image prune -f --filter "label=$_TL_IMAGE_LABEL" >/dev/null 2>&1 || true
  _tl_image_works ||
    lib_die "$_TL_IMAGE was built but 'docker run --rm --network none $_TL_IMAGE sh -c \"echo ok\"' does not print ok." \
      "Fix: run that command by hand to see the error (runc/cgroup problems show up there)."
  lib_say "built test image $_TL_IMAGE in $((SECONDS - t0))s$bb_note; verified 'sh -c \"echo ok\"' with --network none"
}

# --------------------------------------------------------------- kind images --

# The default task kinds' images (scripts/images.sh: labelled with their recipe's hash,
# so this takes about a second once they are built).
_tl_ensure_kind_images() {
  local images="$_TL_SCRIPT_DIR/images.sh" t0=$SECONDS
  [[ -f $images ]] || lib_die "missing $images." \
    "Fix: restore it from git ('git checkout -- scripts/images.sh scripts/images')."
  lib_say "kind images: scripts/images.sh (log: $_TL_LOG_DIR/taskledger-images.log)"
  if ! TASKLEDGER_DOCKER_BIN=$_TL_DOCKER TASKLEDGER_LOG_DIR=$_TL_LOG_DIR bash "$images" </dev/null; then
    lib_die "scripts/images.sh failed (its messages above name the step)." \
      "Fix: follow its 'Fix:' line and rerun; to go on without the kind images pass --skip-kind-images" \
      "(TASKLEDGER_SKIP_KIND_IMAGES=1), or TASKLEDGER_SKIP_THUG_IMAGE=1 to leave out only Thug."
  fi
  lib_say "kind images ready in $((SECONDS - t0))s"
}

# --------------------------------------------------------------------- Slurm --

_tl_ensure_slurm() {
  local slurm="$_TL_SCRIPT_DIR/slurm.sh"
  [[ -f $slurm ]] || lib_die "missing $slurm." "Fix: restore it from git ('git checkout -- scripts/slurm.sh')."
  TASKLEDGER_SERVICES_TIMEOUT=$_TL_TIMEOUT LIB_APT_LOG=$LIB_APT_LOG bash "$slurm" </dev/null ||
    lib_die "scripts/slurm.sh failed (its messages above name the step)." \
      "Fix: follow its 'Fix:' line and rerun; to go on without Slurm pass --skip-slurm (TASKLEDGER_SKIP_SLURM=1)."
}

# ---------------------------------------------------------------------- main --

_tl_usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

_tl_main() {
  # shellcheck source=scripts/lib.sh
  source "$_TL_SCRIPT_DIR/lib.sh"
  LIB_NAME=services LIB_SELF=$_TL_SELF
  local skip_docker=${TASKLEDGER_SKIP_DOCKER:-0} skip_image=${TASKLEDGER_SKIP_TEST_IMAGE:-0}
  local skip_kind=${TASKLEDGER_SKIP_KIND_IMAGES:-0}
  local skip_pg=${TASKLEDGER_SKIP_POSTGRES:-0} skip_rmq=${TASKLEDGER_SKIP_RABBITMQ:-0}
  local skip_slurm=${TASKLEDGER_SKIP_SLURM:-0}
  while (($#)); do
    case $1 in
      --skip-docker) skip_docker=1 ;;
      --skip-image) skip_image=1 ;;
      --skip-kind-images) skip_kind=1 ;;
      --skip-postgres) skip_pg=1 ;;
      --skip-rabbitmq) skip_rmq=1 ;;
      --skip-slurm) skip_slurm=1 ;;
      -h | --help) _tl_usage; return 0 ;;
      *) lib_die "unknown argument '$1'." "Fix: see '$_TL_SELF --help'." ;;
    esac
    shift
  done
  _TL_TIMEOUT=${TASKLEDGER_SERVICES_TIMEOUT:-60}
  _TL_LOG_DIR=$(lib_log_dir)
  LIB_APT_LOG=$_TL_LOG_DIR/taskledger-services-apt.log
  _TL_DOCKER=""

  local up=()
  if [[ $skip_pg == 1 ]]; then lib_say "postgresql skipped"; else _tl_ensure_postgres; up+=(postgresql); fi
  if [[ $skip_rmq == 1 ]]; then lib_say "rabbitmq skipped"; else _tl_ensure_rabbitmq; up+=(rabbitmq); fi
  if [[ $skip_docker == 1 ]]; then
    lib_say "docker skipped (TASKLEDGER_SKIP_DOCKER=1 / --skip-docker)"
  else
    _tl_ensure_docker
    up+=(docker)
    if [[ $skip_image == 1 ]]; then
      lib_say "test image skipped"
    else
      _tl_ensure_test_image
      up+=("$_TL_IMAGE")
    fi
    if [[ $skip_kind == 1 ]]; then
      lib_say "kind images skipped (TASKLEDGER_SKIP_KIND_IMAGES=1 / --skip-kind-images)"
    else
      _tl_ensure_kind_images
      up+=(taskledger-busybox:latest)
      [[ ${TASKLEDGER_SKIP_THUG_IMAGE:-0} == 1 ]] || up+=(taskledger-thug:latest)
    fi
  fi
  if [[ $skip_slurm == 1 ]]; then
    lib_say "slurm skipped (TASKLEDGER_SKIP_SLURM=1 / --skip-slurm)"
  else
    _tl_ensure_slurm
    up+=(slurm)
  fi
  lib_say "all up: ${up[*]:-nothing requested}"

  if [[ -n ${_TL_ENV_OUT:-} ]]; then
    {
      [[ -n $_TL_DOCKER ]] && printf 'export TASKLEDGER_DOCKER_BIN=%q\n' "$_TL_DOCKER"
      [[ -n $_TL_DOCKER && $skip_image != 1 ]] && printf 'export TASKLEDGER_TEST_IMAGE=%q\n' "$_TL_IMAGE"
      [[ $skip_slurm != 1 ]] && printf 'export TASKLEDGER_SLURM=1\nexport TASKLEDGER_SLURM_PARTITION=debug\n'
      true
    } >"$_TL_ENV_OUT"
  fi
}

_TL_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_TL_SELF=$_TL_SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  _tl_main "$@"
else
  # Sourced: run in a subshell with strict mode so failures don't kill the caller's
  # shell and its options stay untouched; then import the exported variables.
  _tl_env_out=$(mktemp)
  (
    set -euo pipefail
    _TL_ENV_OUT=$_tl_env_out _tl_main "$@"
  )
  _tl_rc=$?
  if ((_tl_rc == 0)); then
    # shellcheck disable=SC1090
    . "$_tl_env_out"
  fi
  rm -f "$_tl_env_out"
  # shellcheck disable=SC2046 # one word per function name
  unset -f $(compgen -A function _tl_) 2>/dev/null
  unset _tl_env_out _TL_SCRIPT_DIR _TL_SELF _TL_IMAGE _TL_IMAGE_LABEL
  eval "unset _tl_rc; return $_tl_rc"
fi
