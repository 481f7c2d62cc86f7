#!/usr/bin/env bash
# The blog's publishing flow, with curl, against a running sagaflow server. Nobody orchestrates
# it: moderation → preview → publication → notification, each service reacting to the event
# before it.
#   1. an author and a subscriber (who sets a push key and subscribes to the author);
#   2. the author writes an article and publishes it (202 with the flow id); the article is
#      polled until it leaves PENDING_PUBLISH — PUBLISHED with its preview URL, or REJECTED
#      when moderation's draw says no (it approves 80 % of the posts that pass its rules by
#      default, each post with its own draw: after a "no" the author tries another article,
#      three in all, and whichever end comes is shown); the subscriber's push records; the
#      flow's timeline from the engine (GET /api/v1/flows/{flow_id});
#   3. an article containing "casino": REJECTED, with the reason;
#   4. the internal endpoints, a world apart from user tokens: init-keys (with the one-time
#      token the server printed at start, in SAGAFLOW_BLOG_INIT_TOKEN; without it, or once it
#      was used, 401 — then set SAGAFLOW_BLOG_API_KEY to a key an earlier run printed), a post
#      read with X-API-Key, and the same read without a key and with a user's token, both 401.
#
# Usage: apps/blog/demo.sh [BASE_URL]     (default http://127.0.0.1:8080; start it with `cargo run`)
# With the engine's API keys configured, set SAGAFLOW_API_KEY to a key with the read right (for
# the flow's timeline).
set -euo pipefail
base=${1:-${BLOG_URL:-http://127.0.0.1:8080}}
engine_key=${SAGAFLOW_API_KEY:-}
blog_key=${SAGAFLOW_BLOG_API_KEY:-}
init_token=${SAGAFLOW_BLOG_INIT_TOKEN:-}

say() { printf '\n== %s\n' "$*"; }
fail() { echo "demo.sh: $*" >&2; exit 1; }
# A JSON string field (the last one of that name), with \" and \\ unescaped.
json_field() { sed -n 's/.*"'"$1"'":"\(\([^"\\]\|\\.\)*\)".*/\1/p' | sed 's/\\"/"/g; s/\\\\/\\/g'; }
json_number() { sed -n 's/.*"'"$1"'":\(-\{0,1\}[0-9][0-9]*\).*/\1/p'; }

request() { # METHOD PATH [HEADER] [JSON]: sets code and body
  local args=(-sS -X "$1" "$base$2" -w '\n%{http_code}') out
  if [ -n "${3:-}" ]; then args+=(-H "$3"); fi
  if [ -n "${4:-}" ]; then args+=(-H 'content-type: application/json' -d "$4"); fi
  out=$(curl "${args[@]}") || fail "$1 $2: no answer from $base (is the server running?)"
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  last="$1 $2"
}

expect() { # CODE: fails unless the last request answered it
  [ "$code" = "$1" ] || fail "$last answered $code, expected $1: $body"
}

show() { # prints the last request and its answer
  printf '  %s\n  → %s %s\n' "$last" "$code" "$body"
}

user() { # NAME: registers and logs in; sets uid and token
  request POST /api/users "" "{\"email\":\"$1@blog.example\",\"username\":\"$1\",\"password\":\"secret\"}"
  expect 201
  show
  uid=$(printf '%s' "$body" | json_number id)
  local out
  out=$(curl -sS -X POST "$base/api/users/login" -d "username=$1&password=secret" -w '\n%{http_code}') ||
    fail "POST /api/users/login: no answer from $base"
  code=${out##*$'\n'} body=${out%$'\n'*} last="POST /api/users/login (form: username=$1&password=secret)"
  expect 200
  token=$(printf '%s' "$body" | json_field access_token)
  [ -n "$token" ] || fail "the login gave no token: $body"
  printf '  %s\n  → %s {"access_token":"%.12s…","token_type":"bearer"}\n' "$last" "$code" "$token"
}

article() { # TOKEN TITLE BODY: writes a draft and publishes it; sets post, slug and flow
  request POST /api/articles "authorization: Bearer $1" \
    "{\"title\":\"$2\",\"description\":\"a demo post\",\"body\":\"$3\"}"
  expect 201
  show
  post=$(printf '%s' "$body" | json_number id)
  slug=$(printf '%s' "$body" | json_field slug)
  request POST "/api/articles/$post/publish" "authorization: Bearer $1"
  expect 202
  show
  flow=$(printf '%s' "$body" | json_field flow_id)
  [ -n "$flow" ] || fail "the publish gave no flow id: $body"
}

settle() { # SLUG TOKEN: polls the article, as its author (only the author sees a post
  # that is not published), until it leaves PENDING_PUBLISH; sets status
  local i
  for i in $(seq 1 200); do
    request GET "/api/articles/$1" "authorization: Bearer $2"
    expect 200
    status=$(printf '%s' "$body" | json_field status)
    if [ "$status" != PENDING_PUBLISH ]; then
      echo "  GET /api/articles/$1 (polled $i×)"
      printf '  → status %s, preview_url %s%s\n' "$status" \
        "$(printf '%s' "$body" | json_field preview_url | grep . || echo null)" \
        "$(printf '%s' "$body" | json_field reason | sed 's/^/, reason: /')"
      return
    fi
    sleep 0.1
  done
  fail "article $1 is still PENDING_PUBLISH after 20 s: $body"
}

pushes() { # TOKEN: prints the user's push records
  request GET /api/users/me/notifications "authorization: Bearer $1"
  expect 200
  echo "  $last"
  if [ "$body" = "[]" ]; then echo "  → 200 [] (no push records)"; return; fi
  printf '%s' "$body" | grep -o '{[^{}]*}' | while read -r record; do
    printf '  → post %s to push key %s: %s\n' "$(printf '%s' "$record" | json_number post_id)" \
      "$(printf '%s' "$record" | json_field push_key)" "$(printf '%s' "$record" | json_field message)"
  done
}

flow_json() { # FLOW: sets code and body to the flow's timeline
  request GET "/api/v1/flows/$1" "${engine_key:+authorization: Bearer $engine_key}"
  case "$code" in
    200) ;;
    401 | 403) fail "reading the flow was refused (set SAGAFLOW_API_KEY to a key with the read right): $body" ;;
    *) expect 200 ;;
  esac
}

wait_notified() { # FLOW: waits until the notification service handled the flow's post_published
  local i
  for i in $(seq 1 300); do
    flow_json "$1"
    if printf '%s' "$body" | grep -Eq '"service":"blog-notification","event":"blog.post_published"[^}]*"outcome":"(handled|compensated)"'; then
      return
    fi
    sleep 0.1
  done
  fail "the notification service did not finish with flow $1 within 30 s: $body"
}

timeline() { # FLOW: prints the flow's entries, one a line (with the detail of a failure)
  flow_json "$1"
  echo "  $last"
  printf '%s' "$body" |
    grep -o '"at":"[^"]*","service":"[^"]*","event":"[^"]*","message_id":"[^"]*","causation_id":\(null\|"[^"]*"\),"outcome":"[^"]*","attempt":[0-9]*,"detail":\(null\|"\([^"\\]\|\\.\)*"\)' |
    sed 's/"at":"\([^"]*\)","service":"\([^"]*\)","event":"\([^"]*\)".*"outcome":"\([^"]*\)","attempt":\([0-9]*\),"detail":"\{0,1\}\(.*\)/\1 \2 \3 \4 \5 \6/; s/"$//; s/ null$//; s/\\"/"/g' |
    while read -r at service event outcome attempt detail; do
      # The time of day of each entry (RFC 3339, UTC): HH:MM:SS.mmm.
      printf '  %s  %-18s %-23s %-13s attempt %s%s\n' "${at:11:12}" "$service" "$event" \
        "$outcome" "$attempt" "${detail:+  ($detail)}"
    done
}

run=$RANDOM$RANDOM

say "GET /health"
request GET /health
expect 200
show

say "1. An author and a subscriber with a push key"
user "author$run"
author=$uid author_token=$token
user "reader$run"
reader_token=$token
request PUT /api/users/me/subscription-key "authorization: Bearer $reader_token" \
  "{\"subscription_key\":\"push-reader$run\"}"
expect 200
show
request POST /api/users/subscribe "authorization: Bearer $reader_token" "{\"target_user_id\":$author}"
expect 200
show

say "2. The author publishes an article: moderation → preview → publication → notification"
for try in 1 2 3; do
  article "$author_token" "Choreography without a conductor" \
    "Moderation, preview, publication and notification, each reacting to the event before it."
  settle "$slug" "$author_token"
  # Each post has its own draw: after a "no" from the draw, another post may pass.
  if [ "$status" != REJECTED ] || [ "$try" = 3 ] || ! printf '%s' "$body" | grep -q 'not approved this time'; then break; fi
  echo "  moderation's draw said no to this one (it approves 80 % by default): the author writes another"
done
case "$status" in
  PUBLISHED)
    echo "  published; the notification service pushes to the subscriber:"
    wait_notified "$flow"
    ;;
  REJECTED) echo "  moderation said no (the server's SAGAFLOW_BLOG_APPROVAL_RATE sets how often its draw approves)" ;;
  ERROR) echo "  a technical step exhausted its retries: dead-lettered, and its compensation marked the post ERROR" ;;
  *) fail "article $slug ended $status" ;;
esac
first_post=$post
pushes "$reader_token"
echo "  the flow's timeline, recorded by the engine under its correlation id:"
timeline "$flow"

say "3. An article breaking moderation's rules"
article "$author_token" "Win big tonight" "Come and play at the casino, everybody wins."
settle "$slug" "$author_token"
[ "$status" = REJECTED ] || fail "the casino article ended $status, expected REJECTED"
timeline "$flow"

say "4. Internal endpoints: service keys, not user tokens"
if [ -n "$init_token" ]; then
  request POST /api/internal/init-keys "x-init-token: $init_token"
else
  request POST /api/internal/init-keys
fi
key=""
case "$code" in
  200)
    show
    key=$(printf '%s' "$body" | grep -o '"key":"[^"]*"' | head -n 1 | json_field key)
    echo "  (keys are shown once and kept only as SHA-256; a later run may use one as SAGAFLOW_BLOG_API_KEY)"
    ;;
  401)
    show
    if [ -n "$blog_key" ]; then
      echo "  no init-keys this time: using SAGAFLOW_BLOG_API_KEY"
      key=$blog_key
    else
      echo "  init-keys needs the one-time token the server printed at start (set SAGAFLOW_BLOG_INIT_TOKEN),"
      echo "  or it was used already: set SAGAFLOW_BLOG_API_KEY to a key an earlier run printed."
    fi
    ;;
  *) expect 200 ;;
esac
if [ -n "$key" ]; then
  request GET "/api/internal/posts/$first_post" "x-api-key: $key"
  expect 200
  printf '  GET /api/internal/posts/%s  (X-API-Key: %.12s…)\n  → %s %s\n' "$first_post" "$key" "$code" "$body"
fi
request GET "/api/internal/posts/$first_post"
expect 401
show
request GET "/api/internal/posts/$first_post" "authorization: Bearer $author_token"
expect 401
printf '  %s  (a user'"'"'s token)\n  → %s %s\n' "$last" "$code" "$body"
say "done"
