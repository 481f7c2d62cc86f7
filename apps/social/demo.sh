#!/usr/bin/env bash
# The social network's two parts, with curl, against a running sagaflow server:
#   A. registration with verification: Ann passes and logs in (200); Tim, 5 years old, fails
#      verification and is refused at login (403, with the reason);
#   B. messages and unread counters: Ann and Bob write to each other, each message a
#      `social-message` saga (store → increment → commit); a send without X-User-Id is a 400;
#      their counters, Bob's dialogs and a page of the dialog; Bob reads the dialog (a
#      `social-read` saga) and his counter drops to 0; Ann's counter knocked off by hand
#      (the internal reset endpoint) and repaired by reconciliation, with the drift metrics.
# User ids are printed as <Ann>, <Bob> and <Tim>.
#
# Usage: apps/social/demo.sh [BASE_URL]     (default http://127.0.0.1:8080; start it with `cargo run`)
# With API keys configured, set SAGAFLOW_API_KEY to a key with the operate and read rights.
set -euo pipefail
base=${1:-${SOCIAL_URL:-http://127.0.0.1:8080}}
key=${SAGAFLOW_API_KEY:-}

say() { printf '\n== %s\n' "$*"; }
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
json_number() { sed -n "s/.*\"$1\":\\(-\\{0,1\\}[0-9][0-9]*\\).*/\\1/p"; }
fail() { echo "demo.sh: $*" >&2; exit 1; }

names=()
named() { # prints stdin with the known user ids replaced by their names
  local script=""
  for entry in "${names[@]}"; do script+="s/${entry%%=*}/<${entry#*=}>/g;"; done
  sed "$script"
}

request() { # METHOD PATH [USER_ID] [JSON]: sets args, the curl arguments
  args=(-sS -X "$1" "$base$2")
  if [ -n "${3:-}" ]; then args+=(-H "x-user-id: $3"); fi
  if [ -n "${4:-}" ]; then args+=(-H 'content-type: application/json' -d "$4"); fi
  if [ -n "$key" ]; then args+=(-H "x-api-key: $key"); fi
}

call() { # METHOD PATH [USER_ID] [JSON]: prints the body
  request "$@"
  curl "${args[@]}"
}

show() { # METHOD PATH [USER_ID] [JSON]: prints the request, the status and the body; sets code
  local out
  request "$@"
  out=$(curl "${args[@]}" -w '\n%{http_code}')
  code=${out##*$'\n'}
  printf '  %s %s%s%s\n  → %s %s\n' "$1" "$2" "${3:+  (X-User-Id: $3)}" "${4:+ $4}" \
    "$code" "${out%$'\n'*}" | named
}

register() { # NAME BIRTHDATE: prints the new user's id
  local id
  id=$(call POST /user/register "" \
    "{\"first_name\":\"$1\",\"second_name\":\"Demo\",\"birthdate\":\"$2\",\"city\":\"Oslo\",\"password\":\"secret\"}" |
    json_field user_id)
  [ -n "$id" ] || fail "registering $1 gave no user id"
  echo "$id"
}

wait_verdict() { # USER_ID: waits until the status leaves 0 (pending verification)
  local profile status
  for _ in $(seq 1 100); do
    profile=$(call GET "/user/get/$1")
    status=$(printf '%s' "$profile" | json_number user_status)
    if [ -n "$status" ] && [ "$status" != 0 ]; then
      printf '  GET /user/get/%s\n  → %s\n' "$1" "$profile" | named
      return
    fi
    sleep 0.1
  done
  fail "user $1 is still pending verification after 10 s: $profile"
}

wait_saga() { # SAGA_ID DEFINITION: waits until the saga ends; prints its end
  local answer status=""
  for _ in $(seq 1 100); do
    answer=$(call GET "/api/v1/sagas/$1")
    status=$(printf '%s' "$answer" | { grep -o '"status":"[a-z_]*"' || true; } | head -n 1 | json_field status)
    case "$status" in
      completed | compensated | failed) echo "  saga $1 ($2): $status"; return ;;
    esac
    case "$answer" in
      *'"code":"unauthorized"'* | *'"code":"forbidden"'*)
        fail "reading saga $1 was refused (set SAGAFLOW_API_KEY to a key with the read right): $answer" ;;
    esac
    sleep 0.1
  done
  fail "saga $1 did not end within 10 s: $answer"
}

send() { # FROM TO TEXT: sends a message, prints its saga id
  local answer saga
  answer=$(call POST "/api/dialog/$2/send" "$1" "{\"text\":\"$3\"}")
  saga=$(printf '%s' "$answer" | json_field saga_id)
  [ -n "$saga" ] || fail "the send gave no saga: $answer"
  echo "$saga"
}

unread() { # USER_ID: the user's total unread
  call GET "/counters/$1" | json_number total
}

expect_unread() { # USER_ID NAME WANT
  local got
  got=$(unread "$1")
  [ "$got" = "$3" ] || fail "$2 has $got unread, expected $3"
}

say "A. Registration with verification"
ann=$(register Ann 1990-05-01); names+=("$ann=Ann")
tim=$(register Tim "$(($(date -u +%Y) - 5))-01-01"); names+=("$tim=Tim")
echo "  POST /user/register: Ann (born 1990) → <Ann>, Tim (5 years old) → <Tim>, each stored"
echo "  pending verification (0) while a social-registration saga asks the verifier"
wait_verdict "$ann"
wait_verdict "$tim"
show POST /login "" "{\"id\":\"$ann\",\"password\":\"secret\"}"
show POST /login "" "{\"id\":\"$tim\",\"password\":\"secret\"}"

say "B. Messages and unread counters"
bob=$(register Bob 1992-07-14); names+=("$bob=Bob")
echo "  POST /user/register Bob → <Bob>"
echo "  a send must say who sends it:"
show POST "/api/dialog/$bob/send" "" '{"text":"who am I?"}'
sagas=()
for m in "$ann $bob Hi Bob!" "$bob $ann Hi Ann, how are you?" "$ann $bob Fine, thanks." \
  "$bob $ann Coffee tomorrow?" "$ann $bob Yes, at ten."; do
  read -r from to text <<<"$m"
  saga=$(send "$from" "$to" "$text")
  sagas+=("$saga")
  printf '  POST /api/dialog/%s/send  (X-User-Id: %s) {"text":"%s"} → saga %s\n' "$to" "$from" "$text" "$saga" | named
done
for saga in "${sagas[@]}"; do
  wait_saga "$saga" social-message
done
expect_unread "$bob" Bob 3
expect_unread "$ann" Ann 2
show GET "/counters/$bob"
show GET "/counters/$ann"
show GET /api/dialog "$bob"
show GET "/api/dialog/$ann/list?limit=10" "$bob"

say "Bob reads the dialog (social-read: mark_read → decrement → settle)"
read_saga=$(call POST "/api/dialog/$ann/read" "$bob" | json_field saga_id)
[ -n "$read_saga" ] || fail "the read gave no saga"
echo "  POST /api/dialog/<Ann>/read  (X-User-Id: <Bob>) → saga $read_saga" | named
wait_saga "$read_saga" social-read
expect_unread "$bob" Bob 0
show GET "/counters/$bob"

say "Reconciliation: Ann's counter reset by hand (internal endpoint), then repaired"
dialog=$(call GET "/counters/$ann" | json_field dialog_id)
show POST "/counters/$dialog/reset" "" "{\"user_id\":\"$ann\"}"
[ "$code" = 200 ] || fail "the reset answered $code (with API keys configured, set SAGAFLOW_API_KEY)"
expect_unread "$ann" Ann 0
show POST /counters/reconcile
[ "$code" = 200 ] || fail "reconciliation answered $code"
expect_unread "$ann" Ann 2
show GET "/counters/$ann"
echo "  GET /metrics | grep sagaflow_social"
call GET /metrics | { grep '^sagaflow_social' || echo "(no sagaflow_social metrics)"; } | sed 's/^/    /'
say "done"
