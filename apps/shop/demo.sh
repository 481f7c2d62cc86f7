#!/usr/bin/env bash
# The shop's three waiting scenarios, with curl, against a running sagaflow server, printing
# each notification as it arrives:
#   1. paid → reserved → delivered at once (subscription 1);
#   2. paid → waits for stock → stock added → delivered (subscription 2);
#   3. payment refused → money added → paid → waits for stock → stock added → reserved →
#      waits for a courier → accepted → delivered (subscription 3).
#
# Usage: apps/shop/demo.sh [BASE_URL]     (default http://127.0.0.1:8080; start it with `cargo run`)
set -euo pipefail
base=${1:-${SHOP_URL:-http://127.0.0.1:8080}}

say() { printf '\n== %s\n' "$*"; }
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

call() { # METHOD PATH [TOKEN] [JSON]
  local args=(-sS -X "$1" "$base$2")
  [ -n "${3:-}" ] && args+=(-H "authorization: Bearer $3")
  [ -n "${4:-}" ] && args+=(-H 'content-type: application/json' -d "$4")
  curl "${args[@]}"
}

seen=0
notifications() { # TOKEN: prints the ones not printed yet, oldest first
  local all new
  all=$(call GET /notification "$1" | grep -o '"message":"[^"]*"' | sed 's/"message":"\(.*\)"/\1/')
  new=$(printf '%s\n' "$all" | grep -c . || true)
  if [ "$new" -gt "$seen" ]; then
    printf '%s\n' "$all" | head -n $((new - seen)) | tac | sed 's/^/  notification: /'
  fi
  seen=$new
}

wait_status() { # TOKEN ORDER STATUS
  for _ in $(seq 1 100); do
    if call GET "/order/$2" "$1" | grep -q "\"status\":\"$3\""; then
      # Let the step's own notification land before printing.
      sleep 0.2; notifications "$1"; echo "  order $2 is $3"; return
    fi
    sleep 0.1
  done
  echo "order $2 did not reach $3" >&2; exit 1
}

user() {
  local email="demo-$RANDOM$RANDOM@shop.example"
  call POST /profile/register "" "{\"email\":\"$email\",\"password\":\"secret\",\"username\":\"demo\",\"role\":\"customer\"}" >/dev/null
  call POST /profile/login "" "{\"email\":\"$email\",\"password\":\"secret\"}" | json_field token
}

say "1. paid → reserved → delivered (subscription 1, in stock, courier accepts at once)"
seen=0; t=$(user); notifications "$t"
call POST "/billing/add-money?money=50" "$t" >/dev/null; notifications "$t"
o=$(call POST "/order/place?idSubscription=1" "$t" | tr -d '"'); echo "  placed order $o"
wait_status "$t" "$o" Delivered

say "2. paid → waits for stock → stock added → delivered (subscription 2)"
seen=0; t=$(user); notifications "$t"
call POST "/billing/add-money?money=100" "$t" >/dev/null; notifications "$t"
o=$(call POST "/order/place?idSubscription=2" "$t" | tr -d '"'); echo "  placed order $o"
wait_status "$t" "$o" ValidatingStock
echo "  PUT /stock/add?idSubscription=2&count=1"; call PUT "/stock/add?idSubscription=2&count=1" >/dev/null
wait_status "$t" "$o" Delivered

say "3. refused → money added → paid → stock → reserved → courier accepts → delivered (subscription 3)"
seen=0; t=$(user); notifications "$t"
o=$(call POST "/order/place?idSubscription=3" "$t" | tr -d '"'); echo "  placed order $o"
wait_status "$t" "$o" ValidatingBilling
echo "  POST /billing/add-money?money=1300"; call POST "/billing/add-money?money=1300" "$t" >/dev/null
wait_status "$t" "$o" ValidatingStock
echo "  PUT /stock/add?idSubscription=3&count=1"; call PUT "/stock/add?idSubscription=3&count=1" >/dev/null
wait_status "$t" "$o" ValidatingDelivery
echo "  PUT /delivery/accept?idOrder=$o"; call PUT "/delivery/accept?idOrder=$o" >/dev/null
wait_status "$t" "$o" Delivered
say "done"
