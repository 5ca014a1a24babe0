-- wrk script for scripts/bench-provisioning.sh: every request carries the
-- next Digest Authorization from the file named by $DIGEST_AUTH (one per
-- line, written by scripts/digestgen), so no Authorization is ever sent
-- twice: the server refuses a replayed nonce count. The other headers are
-- wrk's -H ones. nginx gets the same script, so both servers see the same
-- requests and the client does the same work for both.
local src
local headers = {}

function init(args)
  src = assert(io.open(os.getenv("DIGEST_AUTH"), "r"))
  for k, v in pairs(wrk.headers) do headers[k] = v end
end

function request()
  local a = src:read("*l")
  if a == nil then
    error("out of Authorization lines")
  end
  headers["Authorization"] = a
  return wrk.format(nil, nil, headers)
end
