#!/usr/bin/env bash
# Load benchmark: Portcullis side by side with CNCF distribution's own
# pull-through proxy (docker-registry with proxy.remoteurl), both in front of
# the same real registry holding a cosign-signed image, on loopback, driven by
# the same load generator (wrk). One command:
#
#   bash benches/load.sh            # DURATION=5 BIG_MIB=512 to change the runs
#   ONLY=flood bash benches/load.sh # only the flood rows (cached requests
#                                   # beside a flood of cold decisions)
#   ONLY=replicas bash benches/load.sh # only the three-replica rows (a Garage
#                                   # bucket and Redis; needs both installed)
#
# Needs: cargo, docker-registry, wrk, curl, openssl, python3 (installed with
# apt-get when missing and run as root). Everything it starts is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5}
BIG_MIB=${BIG_MIB:-512}
DELAY_MS=${DELAY_MS:-20}
ONLY=${ONLY:-}                     # "flood" or "replicas": only those rows
CACHED_CONN=${CACHED_CONN:-4}      # wrk connections for the cached request beside the flood
FLOOD_IMAGES=${FLOOD_IMAGES:-200}  # distinct images the flood asks for in turn
FLOOD_SIGS=${FLOOD_SIGS:-10}       # wrong signatures on each, all verified per decision
FLOOD_CONN=${FLOOD_CONN:-32}       # flood connections
FLOOD_KEYS=${FLOOD_KEYS:-50}       # keys of the flood images' authority, each signature tried with each
[[ $ONLY == flood ]] && BIG_MIB=1  # the big layer is not read by the flood rows
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need=()
for tool in docker-registry wrk curl openssl python3; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install them)" >&2
    exit 2
  fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not up: $1" >&2; exit 1; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

echo "building portcullis (release)…" >&2
(cd "$ROOT" && cargo build --release --locked --quiet --bin portcullis)
PORTCULLIS="${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis"

registry() { # name port [proxy-url]
  local dir="$WORK/$1"; mkdir -p "$dir/storage"
  {
    printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n'
    printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$dir/storage"
    printf 'http:\n  addr: 127.0.0.1:%s\n' "$2"
    [[ -n ${3:-} ]] && printf 'proxy:\n  remoteurl: %s\n' "$3"
  } >"$dir/config.yml"
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$2/v2/"
}

# wrk: requests/s, p50, p99
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
wrk_parse() { # wrk output on stdin -> "rps p50_ms p99_ms"
  python3 -c '
import re, sys
t = sys.stdin.read()
def ms(pct):
    m = re.search(str(pct) + r"%\s+([\d.]+)(us|ms|s|m)\b", t)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
try:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    print(f"{rps:.0f} {ms(50):.3f} {ms(99):.3f}")
except (AttributeError, KeyError):
    sys.stderr.write("unreadable wrk output:\n" + t)
    print("0 0 0")'
}
wrk_run() { # url connections -> "rps p50_ms p99_ms"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency -H "$ACCEPT" "$1" 2>/dev/null | wrk_parse
}
ROWS=()
row() { ROWS+=("$1"); echo "$1" >&2; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.1f}x' if b else 'n/a')"; }

# --- upstream with a signed image --------------------------------------------
UP=$(free_port); registry upstream "$UP"
push_blob() { # repo file
  local d; d="sha256:$(sha "$2")"
  local loc; loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$UP/v2/$1/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  [[ $loc == http* ]] || loc="http://127.0.0.1:$UP$loc"
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$2" "$loc&digest=$d" -o /dev/null
  echo "$d"
}
push_manifest() { # repo ref file
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$3" \
    "http://127.0.0.1:$UP/v2/$1/manifests/$2" -o /dev/null
}
F="$WORK/fixture"; mkdir -p "$F"
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$F/config"
head -c 4096 /dev/urandom >"$F/small"
head -c $((1024 * 1024)) /dev/urandom >"$F/mib"
echo "generating a ${BIG_MIB} MiB layer…" >&2
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$F/big"
CFG=$(push_blob bench/app "$F/config"); SMALL=$(push_blob bench/app "$F/small")
MIB=$(push_blob bench/app "$F/mib"); BIG=$(push_blob bench/app "$F/big")
desc() { printf '{"mediaType":"%s","digest":"%s","size":%s}' "$1" "$2" "$(stat -c %s "$3")"; }
LAYER=application/vnd.oci.image.layer.v1.tar
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s,%s,%s]}' \
  "$(desc application/vnd.oci.image.config.v1+json "$CFG" "$F/config")" \
  "$(desc $LAYER "$SMALL" "$F/small")" "$(desc $LAYER "$MIB" "$F/mib")" "$(desc $LAYER "$BIG" "$F/big")" >"$F/manifest"
push_manifest bench/app v1 "$F/manifest"
DIGEST="sha256:$(sha "$F/manifest")"

# cosign's legacy layout: a simple-signing payload signed with an ECDSA P-256 key.
openssl ecparam -name prime256v1 -genkey -noout -out "$F/key.pem" 2>/dev/null
openssl ec -in "$F/key.pem" -pubout -out "$F/vendor.pub" 2>/dev/null
printf '{"critical":{"identity":{"docker-reference":"bench/app"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' "$DIGEST" >"$F/payload"
SIG=$(openssl dgst -sha256 -sign "$F/key.pem" "$F/payload" | base64 -w0)
SCFG=$(push_blob bench/app "$F/config"); PAYLOAD=$(push_blob bench/app "$F/payload")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%s,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
  "$(desc application/vnd.oci.image.config.v1+json "$SCFG" "$F/config")" "$PAYLOAD" "$(stat -c %s "$F/payload")" "$SIG" >"$F/sigmanifest"
push_manifest bench/app "${DIGEST/:/-}.sig" "$F/sigmanifest"

# --- a slow path to the upstream, for cold pulls ------------------------------
SLOW=$(free_port)
# A TCP relay: each new connection goes to the next of the target ports, and
# each response's first bytes wait the delay (ms).
cat >"$WORK/relay.py" <<'PY'
import asyncio, itertools, sys
listen, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
targets = itertools.cycle(int(p) for p in sys.argv[3:])
async def pipe(r, w, first_delay):
    try:
        first = True
        while data := await r.read(65536):
            if first and first_delay:
                await asyncio.sleep(delay); first = False
            w.write(data); await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", next(targets))
    await asyncio.gather(pipe(cr, uw, False), pipe(ur, cw, delay > 0))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
python3 "$WORK/relay.py" "$SLOW" "$DELAY_MS" "$UP" &
PIDS+=($!)
wait_http "http://127.0.0.1:$SLOW/v2/"

# --- the two proxies ---------------------------------------------------------
start_portcullis() { # name upstream-port [[cache] lines] [more config] -> sets P_PORT P_ADMIN P_PID
  local dir="$WORK/$1"; mkdir -p "$dir"
  P_PORT=$(free_port); P_ADMIN=$(free_port)
  cp "$F/vendor.pub" "$dir/vendor.pub"
  cat >"$dir/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$P_PORT"
[admin]
listen = "127.0.0.1:$P_ADMIN"
[audit]
sink = "audit.jsonl"
[cache]
dir = "cache"
tag_ttl = "1h"
verdict_ttl = "1h"
${3:-}
[[upstream]]
name = "up"
url = "http://127.0.0.1:$2"
insecure = true
[[authority]]
name = "vendor"
keys = ["vendor.pub"]
[[policy]]
name = "bench"
match = ["up/bench/**"]
signatures = { authorities = ["vendor"] }
${4:-}
EOF
  PORTCULLIS_LOG=warn "$PORTCULLIS" serve --config "$dir/portcullis.toml" >"$dir/log" 2>&1 &
  P_PID=$!; PIDS+=($P_PID)
  wait_http "http://127.0.0.1:$P_ADMIN/healthz"
}
# --- cached requests beside a flood of cold decisions ------------------------
# FLOOD_IMAGES distinct images in flood/images, each with a cosign .sig
# manifest of FLOOD_SIGS layers: a payload naming the image (so each one
# reaches the signature check) and a well-formed ECDSA P-256 signature that
# no key made (random r and s), so every decision verifies all of them and
# denies. deny_ttl = 1s and the images asked for in turn keep decisions cold.
# Their authority holds FLOOD_KEYS keys and each signature is tried with
# each, so verification (FLOOD_SIGS x FLOOD_KEYS ECDSA checks a decision),
# not the upstream serving the signature blobs, is what the flood costs.
flood_fixtures() { # -> $WORK/flood.paths
  cat >"$WORK/flood.py" <<'PY'
import base64, concurrent.futures, hashlib, http.client, json, secrets, socket, sys, threading
port, images, sigs, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
repo = "flood/images"
local = threading.local()
def call(method, path, body=b"", headers={}):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection("127.0.0.1", port)
        local.conn.connect()
        local.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    local.conn.request(method, path, body=body, headers=headers)
    r = local.conn.getresponse(); r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status}")
    return r
def blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = call("POST", f"/v2/{repo}/blobs/uploads/").getheader("Location")
    loc = loc.split("127.0.0.1:%d" % port)[-1]
    call("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, data,
         {"Content-Type": "application/octet-stream"})
    return {"digest": d, "size": len(data)}
def manifest(ref, m):
    data = json.dumps(m).encode()
    call("PUT", f"/v2/{repo}/manifests/{ref}", data,
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    return "sha256:" + hashlib.sha256(data).hexdigest()
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order
def der_int(v):
    b = v.to_bytes(32, "big").lstrip(b"\0")
    if b[0] & 0x80: b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b
def wrong_signature():
    body = der_int(1 + secrets.randbelow(N - 1)) + der_int(1 + secrets.randbelow(N - 1))
    return base64.b64encode(b"\x30" + bytes([len(body)]) + body).decode()
config = dict(blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'),
              mediaType="application/vnd.oci.image.config.v1+json")
layer = dict(blob(secrets.token_bytes(1024)), mediaType="application/vnd.oci.image.layer.v1.tar")
def push(i):
    image = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": config, "layers": [layer], "annotations": {"bench.flood": str(i)}}
    digest = manifest(f"f{i}", image)
    payload = blob(json.dumps({"critical": {"identity": {"docker-reference": repo},
                   "image": {"docker-manifest-digest": digest},
                   "type": "cosign container image signature"}, "optional": None}).encode())
    layers = [dict(payload, mediaType="application/vnd.dev.cosign.simplesigning.v1+json",
                   annotations={"dev.cosignproject.cosign/signature": wrong_signature()})
              for _ in range(sigs)]
    manifest(digest.replace(":", "-") + ".sig",
             {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
              "config": config, "layers": layers})
    return f"/v2/up/{repo}/manifests/{digest}"
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    paths = list(pool.map(push, range(images)))
open(out, "w").write("\n".join(paths) + "\n")
PY
  python3 "$WORK/flood.py" "$UP" "$FLOOD_IMAGES" "$FLOOD_SIGS" "$WORK/flood.paths"
  mkdir -p "$WORK/flood"
  local k keys=()
  for k in $(seq 1 "$FLOOD_KEYS"); do
    openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl ec -pubout -out "$WORK/flood/k$k.pub" 2>/dev/null
    keys+=("\"k$k.pub\"")
  done
  FLOOD_CONFIG=$(printf '[[authority]]\nname = "many"\nkeys = [%s]\n[[policy]]\nname = "flood"\nmatch = ["up/flood/**"]\nsignatures = { authorities = ["many"] }' \
    "$(IFS=,; echo "${keys[*]}")")
  # Each wrk thread walks the list from its own starting point.
  cat >"$WORK/flood.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("FLOOD_PATHS")) do paths[#paths + 1] = line end
local started = 0
function setup(thread) thread:set("start", started); started = started + 1 end
function init() i = start * math.floor(#paths / 2) end
function request()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
LUA
}
counter() { # admin-port metric [label filter] -> sum over its series
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk -v m="$2" -v l="${3:-}" '($1 == m || index($1, m "{") == 1) && (l == "" || index($1, l)) {s += $2} END {printf "%d", s}'
}
flood_rows() {
  echo "pushing $FLOOD_IMAGES flood images with $FLOOD_SIGS signatures each, $FLOOD_KEYS keys…" >&2
  flood_fixtures
  start_portcullis flood "$UP" 'deny_ttl = "1s"' "$FLOOD_CONFIG"
  local url="http://127.0.0.1:$P_PORT/v2/up/bench/app/manifests/$DIGEST" flood_pid=$P_PID
  curl -fsS -H "$ACCEPT" -o /dev/null "$url"
  local first; first=$(head -1 "$WORK/flood.paths")
  local denied; denied=$(curl -sS -H "$ACCEPT" -w ' %{http_code}' "http://127.0.0.1:$P_PORT$first")
  [[ $denied == *' 403' ]] || { echo "a flood image was not denied: $denied" >&2; exit 1; }
  echo "a flood image: $denied" >&2
  local irps ip50 ip99 frps fp50 fp99 drps dp50 dp99
  read -r irps ip50 ip99 < <(wrk_run "$url" "$CACHED_CONN")
  FLOOD_PATHS="$WORK/flood.paths" wrk -t2 -c"$FLOOD_CONN" -d"$((DURATION + 2))s" --timeout 30s --latency \
    -H "$ACCEPT" -s "$WORK/flood.lua" "http://127.0.0.1:$P_PORT" >"$WORK/flood.out" 2>&1 &
  local w=$!
  sleep 1 # the flood is under way before the cached requests start
  local d0 v0 r0 t0 d1 v1 r1 t1
  d0=$(counter "$P_ADMIN" portcullis_pull_decisions_total 'decision="deny"')
  v0=$(counter "$P_ADMIN" portcullis_verification_duration_seconds_count)
  r0=$(counter "$P_ADMIN" portcullis_decisions_refused_total); t0=$(date +%s.%N)
  read -r frps fp50 fp99 < <(wrk_run "$url" "$CACHED_CONN")
  d1=$(counter "$P_ADMIN" portcullis_pull_decisions_total 'decision="deny"')
  v1=$(counter "$P_ADMIN" portcullis_verification_duration_seconds_count)
  r1=$(counter "$P_ADMIN" portcullis_decisions_refused_total); t1=$(date +%s.%N)
  wait "$w" || true
  read -r drps dp50 dp99 < <(wrk_parse <"$WORK/flood.out")
  kill "$flood_pid" 2>/dev/null || true
  local cold; cold=$(python3 -c "print(f'{($v1 - $v0) / ($t1 - $t0):.0f}')")
  FLOOD_ROWS+=("| cached manifest by digest, $CACHED_CONN conn, nothing else running (reference) | $irps req/s, p50 $ip50 ms, p99 $ip99 ms | | |")
  FLOOD_ROWS+=("| the same, beside a flood of cold decisions ($FLOOD_CONN conn over $FLOOD_IMAGES images × $FLOOD_SIGS wrong signatures × $FLOOD_KEYS keys, deny_ttl 1s: $cold cold decisions/s verified, $((v1 - v0)) of $((d1 - d0)) denials, $((r1 - r0)) refused 503; flood $drps req/s, p50 $dp50 ms, p99 $dp99 ms) | $frps req/s, p50 $fp50 ms, p99 $fp99 ms ($(ratio "$fp99" "$ip99") the reference p99) | | |")
  printf '%s\n' "${FLOOD_ROWS[@]}" >&2
}
FLOOD_ROWS=()

# --- three replicas sharing a Garage bucket and Redis ------------------------
# Needs redis-server and garage (cargo install garage --locked); skipped
# without them. One replica against a single instance, measured in this run:
# upstream requests for the same pulls, cached manifest throughput, and a
# blob read from the bucket by a replica that never had it against local disk.
GARAGE=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
start_garage() { # -> S3_TABLE ([cache] lines for the bucket)
  local d="$WORK/garage" node key id secret; mkdir -p "$d"
  local rpc s3 admin; rpc=$(free_port); s3=$(free_port); admin=$(free_port)
  cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  RUST_LOG=warn "$GARAGE" -c "$d/garage.toml" server >"$d/log" 2>&1 &
  GARAGE_PID=$!; PIDS+=($!)
  g() { RUST_LOG=warn "$GARAGE" -c "$d/garage.toml" "$@"; }
  for _ in $(seq 1 200); do node=$(g node id -q 2>/dev/null) && break; sleep 0.05; done
  node=${node%%@*}
  # `node id` answers before the RPC listener is up: retry the layout.
  for _ in $(seq 1 200); do g layout assign -z dc1 -c 1G "$node" >/dev/null 2>&1 && break; sleep 0.1; done
  g layout apply --version 1 >/dev/null
  for _ in $(seq 1 100); do g bucket create portcullis >/dev/null 2>&1 && break; sleep 0.1; done
  key=$(g key create pkey)
  id=$(sed -n 's/^ *Key ID: *//p' <<<"$key"); secret=$(sed -n 's/^ *Secret key: *//p' <<<"$key")
  g bucket allow --read --write --owner portcullis --key pkey >/dev/null
  printf '%s' "$id" >"$d/s3.key"; printf '%s' "$secret" >"$d/s3.secret"
  S3_URL="http://127.0.0.1:$s3"
  S3_TABLE=$(printf 'store = "s3"\n[cache.s3]\nbucket = "portcullis"\nendpoint = "http://127.0.0.1:%s"\nregion = "garage"\naccess_key_id_file = "%s"\nsecret_access_key_file = "%s"' \
    "$s3" "$d/s3.key" "$d/s3.secret")
}
quiet() { # pid: waits (up to 60 s) until it uses under 5% of a core over half a second
  local t0 t1
  for _ in $(seq 1 120); do
    t0=$(awk '{print $14 + $15}' "/proc/$1/stat"); sleep 0.5; t1=$(awk '{print $14 + $15}' "/proc/$1/stat")
    (( (t1 - t0) * 100 < 5 * $(getconf CLK_TCK) / 2 )) && return 0
  done
}
balancer() { # listen port, replica ports...: each new connection goes to the next replica
  python3 "$WORK/relay.py" "$1" 0 "${@:2}" &
  PIDS+=($!)
}
pull_rounds() { # base URL, rounds: the image by tag and each of its blobs, one connection each
  local r b
  for r in $(seq 1 "$2"); do
    curl -fsS -H "$ACCEPT" -o /dev/null "$1/manifests/v1"
    for b in "$CFG" "$SMALL" "$MIB" "$BIG"; do curl -fsS -o /dev/null "$1/blobs/$b"; done
  done
}
replica_rows() {
  if ! command -v redis-server >/dev/null || ! [[ -x $GARAGE ]]; then
    row "| three replicas | skipped: needs redis-server and garage | | |"
    return
  fi
  echo "three replicas on Garage and Redis…" >&2
  start_garage
  local rp; rp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.05; done
  openssl rand -hex 32 >"$WORK/cluster.secret"
  local cluster
  cluster=$(printf '[cluster]\nredis = "redis://127.0.0.1:%s"\nsecret_file = "%s"' "$rp" "$WORK/cluster.secret")
  local ports=() admins=() n
  for n in 1 2 3; do
    start_portcullis "replica$n" "$UP" "$S3_TABLE" "$cluster"; ports+=("$P_PORT"); admins+=("$P_ADMIN")
  done
  start_portcullis ha-single "$UP"; local single=$P_PORT single_admin=$P_ADMIN
  local lb; lb=$(free_port); balancer "$lb" "${ports[@]}"; wait_http "http://127.0.0.1:$lb/v2/"
  local rounds=6
  pull_rounds "http://127.0.0.1:$single/v2/up/bench/app" "$rounds"
  pull_rounds "http://127.0.0.1:$lb/v2/up/bench/app" "$rounds"
  # GETs (what registries rate-limit) and HEADs (a replica confirming that
  # the repository holds content another replica fetched) apart.
  gets() { echo $(($(counter "$1" portcullis_upstream_requests_total) - $(heads "$1"))); }
  heads() { echo $(($(counter "$1" portcullis_upstream_requests_total 'kind="manifest_head"') + $(counter "$1" portcullis_upstream_requests_total 'kind="blob_head"'))); }
  local one one_heads three=0 three_heads=0 a
  one=$(gets "$single_admin"); one_heads=$(heads "$single_admin")
  for a in "${admins[@]}"; do three=$((three + $(gets "$a"))); three_heads=$((three_heads + $(heads "$a"))); done
  row "| upstream requests for $rounds pulls of the signed image (manifest by tag, 4 blobs, its signature): three replicas round-robin vs one instance | $three GETs, $three_heads HEADs (three replicas) | $one GETs, $one_heads HEADs (one instance) | $(ratio "$three" "$one") GETs |"

  # Uploads to the bucket run beside serving: let them end first.
  local busy
  for _ in $(seq 1 600); do
    busy=0; for a in "${admins[@]}"; do busy=$((busy + $(counter "$a" portcullis_shared_uploads_in_flight))); done
    ((busy == 0)) && break; sleep 0.1
  done
  sync
  quiet "$GARAGE_PID" # Garage keeps working on what it stored for a while

  # Each measured twice, in turn (replica, single, replica, single): the
  # better run of each, so neither side alone meets a noisy moment.
  better() { python3 -c "a, b = '$1'.split(), '$2'.split(); print(' '.join(a if float(a[0]) >= float(b[0]) else b))"; }
  local ru="http://127.0.0.1:${ports[0]}/v2/up/bench/app/manifests/$DIGEST"
  local su="http://127.0.0.1:$single/v2/up/bench/app/manifests/$DIGEST"
  local r1 s1 r2 s2 srps sp50 sp99 rrps rp50 rp99
  r1=$(wrk_run "$ru" 16); s1=$(wrk_run "$su" 16); r2=$(wrk_run "$ru" 16); s2=$(wrk_run "$su" 16)
  read -r rrps rp50 rp99 < <(better "$r1" "$r2")
  read -r srps sp50 sp99 < <(better "$s1" "$s2")
  row "| cached manifest by digest, 16 conn: one replica of three vs a single instance | $rrps req/s, p50 $rp50 ms, p99 $rp99 ms (replica) | $srps req/s, p50 $sp50 ms, p99 $sp99 ms (single) | $(ratio "$rrps" "$srps") req/s |"

  # A fourth replica that never saw the image: the big blob from the bucket
  # (granted through the others' references), then from its own disk. The
  # reference: a GET of the object straight from Garage.
  start_portcullis replica4 "$UP" "$S3_TABLE" "$cluster"
  local url="http://127.0.0.1:$P_PORT/v2/up/bench/app/blobs/$BIG" from_bucket warm fetched direct
  direct=$(curl -fsS -o /dev/null -w '%{speed_download}' --aws-sigv4 "aws:amz:garage:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    --user "$(cat "$WORK/garage/s3.key"):$(cat "$WORK/garage/s3.secret")" \
    "$S3_URL/portcullis/blobs/sha256/${BIG#sha256:}" | awk '{printf "%.0f", $1/1048576}')
  from_bucket=$(speed "$url"); sync; warm=$(best3 "$url")
  fetched=$(counter "$P_ADMIN" portcullis_upstream_requests_total 'kind="blob"')
  row "| ${BIG_MIB} MiB blob on a replica that never had it, from the bucket ($fetched upstream blob GETs; a GET straight from Garage: $direct MiB/s) vs then from its local disk | $from_bucket MiB/s (bucket, checked and stored before serving) | $warm MiB/s (local disk) | $(ratio "$from_bucket" "$warm") |"
}

print_table() {
  echo
  echo "| measurement | Portcullis | distribution proxy | Portcullis / distribution |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}" "${FLOOD_ROWS[@]}"
}
if [[ $ONLY == flood ]]; then flood_rows; print_table; exit 0; fi
speed() { curl -fsS -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.0f", $1/1048576}'; }
best3() { local a b c; a=$(speed "$1"); b=$(speed "$1"); c=$(speed "$1"); printf '%s\n' "$a" "$b" "$c" | sort -n | tail -1; }
if [[ $ONLY == replicas ]]; then replica_rows; print_table; exit 0; fi

start_portcullis portcullis "$UP"; PC=$P_PORT; PC_ADMIN=$P_ADMIN; PC_PID=$P_PID
DP=$(free_port); registry distribution "$DP" "http://127.0.0.1:$UP"; DP_PID=${PIDS[-1]}

P_URL="http://127.0.0.1:$PC/v2/up/bench/app"
D_URL="http://127.0.0.1:$DP/v2/bench/app"
IDLE_P=$(rss_mib "$PC_PID"); IDLE_D=$(rss_mib "$DP_PID")
for u in "$P_URL" "$D_URL"; do
  curl -fsS -H "$ACCEPT" -o /dev/null "$u/manifests/v1"
  curl -fsS -o /dev/null "$u/blobs/$MIB"
  curl -fsS -o /dev/null "$u/blobs/$SMALL"
done

# --- wrk: requests/s, p50, p99 -----------------------------------------------
for what in digest tag; do
  ref=$DIGEST; [[ $what == tag ]] && ref=v1
  for c in 1 16 64; do
    read -r prps pp50 pp99 < <(wrk_run "$P_URL/manifests/$ref" "$c")
    read -r drps dp50 dp99 < <(wrk_run "$D_URL/manifests/$ref" "$c")
    row "| cached manifest by $what, $c conn | $prps req/s, p50 $pp50 ms, p99 $pp99 ms | $drps req/s, p50 $dp50 ms, p99 $dp99 ms | $(ratio "$prps" "$drps") req/s |"
  done
done

# --- blobs: warm and cold ${BIG_MIB} MiB ---------------------------------------
# Direct and warm: best of three (the upstream's file is then in the page
# cache for the cold fetches too). Cold: the first fetch through each proxy.
DIRECT=$(best3 "http://127.0.0.1:$UP/v2/bench/app/blobs/$BIG")
P_COLD=$(speed "$P_URL/blobs/$BIG"); D_COLD=$(speed "$D_URL/blobs/$BIG")
sync # let both caches' writes reach the disk before the warm reads
P_WARM=$(best3 "$P_URL/blobs/$BIG"); D_WARM=$(best3 "$D_URL/blobs/$BIG")
row "| ${BIG_MIB} MiB blob, cold (direct from upstream: $DIRECT MiB/s) | $P_COLD MiB/s | $D_COLD MiB/s | $(ratio "$P_COLD" "$D_COLD") |"
row "| ${BIG_MIB} MiB blob, warm | $P_WARM MiB/s | $D_WARM MiB/s | $(ratio "$P_WARM" "$D_WARM") |"

# --- memory under 1,000 concurrent blob downloads ----------------------------
peak() { # pid seconds -> peak RSS MiB while sampling
  local pid=$1 end=$((SECONDS + $2)) max=0 cur
  while ((SECONDS < end)); do
    cur=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status"); ((cur > max)) && max=$cur; sleep 0.2
  done
  awk -v k="$max" 'BEGIN {printf "%.1f", k/1024}'
}
for side in P D; do
  if [[ $side == P ]]; then url="$P_URL/blobs/$MIB"; pid=$PC_PID; else url="$D_URL/blobs/$MIB"; pid=$DP_PID; fi
  wrk -t2 -c1000 -d"${DURATION}s" "$url" >"$WORK/wrk1000.$side" 2>&1 &
  w=$!
  eval "PEAK_$side=$(peak "$pid" "$DURATION")"
  wait "$w" || true
done
row "| resident memory idle | $IDLE_P MiB | $IDLE_D MiB | |"
row "| resident memory, 1,000 concurrent 1 MiB blob downloads | $PEAK_P MiB | $PEAK_D MiB | |"

# --- cold signed pull through a ${DELAY_MS} ms upstream ---------------------------
start_portcullis cold "$SLOW"
DP2=$(free_port); registry distribution-cold "$DP2" "http://127.0.0.1:$SLOW"
timed() { curl -fsS -H "$ACCEPT" -o /dev/null -w '%{time_total}' "$1" | awk '{printf "%.1f", $1*1000}'; }
T_DIRECT=$(timed "http://127.0.0.1:$SLOW/v2/bench/app/manifests/v1")
T_P=$(timed "http://127.0.0.1:$P_PORT/v2/up/bench/app/manifests/v1")
T_D=$(timed "http://127.0.0.1:$DP2/v2/bench/app/manifests/v1")
TRIPS=$(curl -fsS "http://127.0.0.1:$P_ADMIN/metrics" | awk '/^portcullis_upstream_requests_total/ {s+=$2} END {print s}')
row "| cold signed manifest by tag, upstream +${DELAY_MS} ms/response (direct GET: $T_DIRECT ms, 1 round trip) | $T_P ms, $TRIPS upstream requests (verified) | $T_D ms (unverified) | |"

flood_rows
replica_rows
print_table
