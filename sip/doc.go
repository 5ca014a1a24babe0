// Package sip is dialtone's SIP side on github.com/emiago/sipgo: one
// endpoint that owns the transport and the checks, and components with one
// job each that share it.
//
// # Components
//
//   - Server (New; server.go, auth.go, outbound.go, hop.go and the transport files
//     frontdoor*.go, fastpath.go, udp.go, transport_tcp.go, listener.go) is
//     the endpoint. It serves the sockets (ServeUDP, ServeTCP, ServeTLS),
//     runs the front door and the fast path, owns sipgo's user agent,
//     server and client, and makes the checks every request passes: load
//     (MaxInFlight, closing), well-formedness, the brute-force guard
//     (Guard), and digest authentication with its nonces (authenticate,
//     used by the Registrar with 401 and the Proxy with 407). It answers
//     OPTIONS itself and hands every other request to the component
//     registered for its method; a method nobody registered gets 405 with
//     an Allow header listing what is served, an unknown method 501 (RFC
//     3261 §8.2.1). Close drains the handlers of every component.
//   - Registrar (NewRegistrar; register.go, parse.go) takes REGISTER (RFC
//     3261 §10.3): digest with 401, the expires bounds of RegistrarConfig,
//     bindings written through the store. Its handler only answers, so the
//     endpoint runs it on the fast path too.
//   - Proxy (NewProxy; proxy.go, invite.go, fork.go, dialog.go,
//     indialog.go) takes INVITE, ACK, CANCEL, BYE and the in-dialog
//     methods: a stateful proxy (RFC 3261 §16) that authenticates callers
//     with 407, routes with store.Route, forks to live bindings, keeps the
//     table of the dialogs it created and loose-routes inside them, and
//     writes a call record per INVITE. A call to a disabled target goes to
//     its Announcer (without one: 486 at once).
//   - Announcer (NewAnnouncer; announce.go, with sip/media) plays the
//     announcement to callers of disabled targets: 183 with early media,
//     then 486. It is admin's Announcer (SetAnnouncementWAV).
//   - Notifier (NewNotifier; notify.go) sends check-sync NOTIFYs to Yealink
//     phones over their registered flows and waits for the fetch that
//     follows. It is admin's Notifier and FetchWaiter.
//
// Create the endpoint, then the components on it (before it serves);
// cmd/dialtone wires all four and hands the Announcer and the Notifier to
// the admin API. Each component registers its own metrics on the
// endpoint's registerer, under the same names whatever is wired.
//
// Inside this package `sip` means sipgo's message package; our own names are
// unqualified.
//
// # Policies
//
// Where the RFCs leave a choice, the components decide as follows.
//
//   - Digest (RFC 7616, RFC 8760): a challenge carries two WWW-Authenticate
//     headers, SHA-256 then MD5, both qop="auth", realm = the account's
//     sip_domain (the host of the To URI). Credentials must use qop=auth with
//     a cnonce and nc; MD5 and SHA-256 only (no -sess, no auth-int); the
//     digest uri must name the Request-URI (compared on scheme, user, host and
//     port); the username must be the To user (else 403). Clients whose
//     User-Agent starts with one of Config.MD5OnlyUserAgents (by default old
//     baresip, whose libre aborts on an unknown algorithm) get MD5 alone.
//   - Unknown users and wrong passwords get the same 401 after the same
//     digest computation (against a random dummy password). The reason
//     (unknown_user, bad_password, stale, replay, bad_nonce, bad_realm,
//     malformed, wrong_user) is only in metrics and info-level logs.
//   - Nonces and nonce counts are internal/digest's: stateless HMAC nonces
//     bound to the realm and the client's IP address (not its port, which a
//     NAT may change), valid for Config.NonceTTL by the store's clock. An
//     expired nonce with a correct response gets a fresh challenge with
//     stale=true (RFC 7616 §3.3); with a wrong response, a plain challenge.
//     The highest nonce count accepted per nonce is remembered (at most
//     2 × 2^18 nonces); an nc not above the last one is refused with a fresh
//     challenge. The store keeps passwords, so HA1 is derived per request.
//   - Expires (RFC 3261 §10.3, §20.19): a contact's expires parameter wins
//     over the Expires header, which wins over RegistrarConfig.DefaultExpires. Values
//     are digits only, surrounding blanks ignored; above 2^32-1 they saturate
//     (never wrap to 0). Anything else is malformed and answered 400 (we do
//     not apply §20.19's "treat as 3600", which would create a binding the
//     phone did not ask for). 0 removes; 1..MinExpires-1 gets 423 with
//     Min-Expires; above MaxExpires is clamped, and the 200 shows the granted
//     value.
//   - Contact: "*" only alone and with "Expires: 0", else 400. At most 20
//     Contact values per REGISTER, 512 bytes per contact URI, sip/sips
//     schemes only, q must be a qvalue; else 400. The store keeps at most
//     store.Options.MaxContacts bindings per AOR and evicts the one that
//     expires soonest. A REGISTER without Contact is a query.
//   - Call-ID/CSeq ordering (§10.3 step 7): a repeated or older CSeq on the
//     same Call-ID for an existing binding is answered 500 "Out of Order"
//     (the status RFC 3261 uses for an out-of-order CSeq in §12.2.2).
//   - Store outcomes: a disabled user adding or refreshing → 403 (removing is
//     allowed); the user deleted between the digest check and the write →
//     404.
//   - The 200 lists every live binding with ;expires=<seconds left> (and q,
//     +sip.instance when set) and a Date header.
//   - Responses over UDP go to the packet's source address and port
//     (symmetric, like RFC 3581 rport for everyone), never to a Via sent-by
//     that may be forged or parsed empty. sipgo's UDP size limit is raised
//     once to 8 KiB so that a 200 listing many bindings is not dropped.
//   - Every request must carry exactly one From, To, Call-ID and CSeq, a
//     CSeq method equal to the request method, a sip/sips Request-URI with a
//     host, SIP/2.0, at most 100 header fields besides Via (any number of Via:
//     the message size bounds them) and 4 KiB per unstructured header value;
//     otherwise 400 (416, 505). Every handler runs under recover().
//   - The front door (frontdoor.go) sees every message before sipgo. It
//     unfolds headers and removes the legal whitespace sipgo misreads
//     (around Via separators and header parameters, inside CSeq). A request
//     sipgo cannot parse is answered 400 with a reason naming the problem
//     ("Bad Request (Unterminated Quoted String in Contact)"), addressed from
//     Via, From, To, Call-ID and CSeq read by our own strict reader; it is
//     dropped only when no usable Via is left (and never answered if it is an
//     ACK). Other SIP versions get 505; methods are case-sensitive tokens,
//     and any but the fourteen sipgo routes gets 501 with Allow ("register" is
//     unknown). Header text that is not valid UTF-8, and display names that
//     are neither tokens nor one quoted string, get 400, so nothing of them
//     reaches the store or the admin API. These answers are written straight
//     to the socket, without a transaction.
//   - Messages are bounded: over UDP by the datagram (a Content-Length beyond
//     it is 400, a datagram over sipgo's 32 KiB read buffer 513), over
//     TCP/TLS by 64 KiB (513, then the connection is closed).
//   - Load: at most Config.MaxInFlight requests are handled at once; beyond,
//     503 with a Retry-After of 5-35 s (spread so a re-registration storm
//     does not come back in step). While closing, every request gets 503.
//   - REGISTER and OPTIONS take a fast path (fastpath.go): the front door's
//     parse is kept (each message is parsed once), the request runs through
//     the same wrapper and handlers as on sipgo's path (the same checks,
//     metrics, 503s and recover), and the answer is written straight to the
//     socket or connection, without a sipgo server transaction or a
//     goroutine per message. Over UDP a retransmission (same Via branch,
//     Call-ID, CSeq and source) gets the last final response again for 32 s
//     (Timer J) from a bounded cache, and is absorbed while the first copy
//     is still handled. Requests with credentials (which wait for the
//     store's commit) run on a pool of at most 512 workers, with up to
//     MaxInFlight accepted and the rest queued, so the socket keeps being
//     read. Requests whose top Via lacks an RFC 3261 branch, REGISTER on an
//     endpoint without a Registrar, and all other methods, go through sipgo;
//     Config.DisableFastPath sends REGISTER and OPTIONS there too.
//   - TCP and TLS (transport_tcp.go): we frame the byte stream ourselves
//     (RFC 3261 §18.3), so a request sipgo cannot parse is answered and the
//     connection kept; only a stream that cannot be framed (a broken or
//     conflicting Content-Length, a message over 64 KiB) is closed. A new
//     connection has Config.FirstRequestTimeout (10 s) for its TLS handshake
//     and first complete message; after it, Config.TCPIdleTimeout without a
//     byte from the peer closes it (default 61 min, cmd/dialtone sets MaxExpires + 60 s: longer than any
//     binding lives without a refresh, so a registered phone's flow survives
//     even without keepalives), and a write blocked for 10 s fails.
//     Connections are capped (Config.MaxConnections, 10,000, and
//     MaxConnectionsPerIP, 200 per IPv4 address or IPv6 /64): beyond, a new
//     one is closed at accept.
//     Temporary accept errors (out of descriptors) are retried after a
//     back-off of 5 ms doubling to 1 s, as net/http does, never ending the
//     serve loop. CRLFCRLF keepalives are answered with CRLF (RFC 5626).
//   - UDP (udp.go): one bounded table of source addresses per socket
//     (Config.UDPSources, 65,536, in two halves) is all the per-source state
//     the transport keeps; sipgo's own memory of sources is emptied whenever
//     the older half is forgotten. Noise and refused messages never enter it.
//   - Calls (Proxy, Announcer): INVITE authenticated with
//     407; a disabled target hears the announcement as early media, then
//     486; registered targets are forked to as a stateful proxy. ACK is never
//     answered, CANCEL/BYE without a transaction or dialog get 481, methods
//     we know but do not serve 405 with Allow, unknown methods 501.
//   - Identity (RFC 3325): P-Asserted-Identity and P-Preferred-Identity
//     from phones are removed from every request we forward and every
//     response we relay, and so are
//     auto-answer requests (Call-Info with answer-after, Alert-Info asking
//     for auto-answer, ring-answer or intercom, Answer-Mode and
//     Priv-Answer-Mode of RFC 5373). A forwarded INVITE carries
//     P-Asserted-Identity: "Name" <sip:extension@sip_domain> of the
//     authenticated caller (quotes, backslashes and control characters
//     dropped from the name).
//   - In-dialog routing (dialog.go, indialog.go): only inside dialogs we
//     created by proxying an INVITE, recorded at its 1xx with a To-tag
//     (early) or its 2xx (confirmed), identified by Call-ID, From-tag and
//     To-tag (either direction). A request is relayed only from one party
//     of the dialog to the other: it must come from the host and transport
//     of the flow recorded for the party it claims to be (the port may
//     change: TCP reconnection, NAT rebinding), and it goes over the other
//     party's recorded flow (a TCP/TLS flow that is gone gets 480, never a
//     new connection). Every Route is removed: one a party adds later is
//     ignored, and the Request-URI is never looked up among bindings. A
//     request with our Route and a To-tag that matches no dialog of ours
//     gets 481 (RFC 3261 §12.2.2) and goes nowhere, whoever sent it: a
//     request inside a dialog is not authenticated, so challenging it would
//     not help. Without a To-tag it is outside any dialog: an INVITE is an
//     initial INVITE (407, then routed to the Request-URI user as a call),
//     a BYE gets 481, other methods 405 as without our Route (we relay no
//     request outside a dialog). A dialog ends at its BYE (whatever the
//     answer), at a 481 from the other party, or when its INVITE fails
//     (early dialogs of branches that did not answer; at most 4 per
//     branch, whatever the number of To-tags a phone invents). The table is
//     bounded (ProxyConfig.Dialogs, Proxy.SetDialogLimits): 100,000 dialogs (at the cap a new call gets
//     503 before ringing), a confirmed dialog whose ACK did not come
//     through us within 32 s (64×T1) is forgotten, and so is a dialog idle
//     for DialogLimits.Idle or older than DialogLimits.MaxAge (12 h); its
//     later requests get 481.
//   - Check-sync (Notifier): NOTIFY Event: check-sync to a Yealink over the
//     flow it registered on.
//   - Several nodes on etcd (hop.go; docs/design.md, "Several nodes"): a
//     binding held by another node (store.Binding.Node) is reached through
//     that node, never over a new connection to the phone. The INVITE
//     branch (or the check-sync NOTIFY) goes to the node's announced
//     address (store.NodeInfo.SIPAddr) over TCP with our Record-Route and
//     X-Dialtone-Hop: <node>;ts=…;acct=…;user=…;mac=…, an HMAC-SHA256 under
//     store.DB.HopKey over the method, Call-ID, From tag, Request-URI,
//     account, user, node and ts. The receiving node takes it without
//     digest only if it verifies (one header, over TCP/TLS, another node,
//     within 30 s, the right mac, from the host that node announced, for a
//     live binding it holds whose contact is the Request-URI), rings that
//     binding alone over its flow and records the dialog; the sending node
//     writes the call record. Otherwise the header is removed and the
//     request handled as any outside request. Requests one node passes the
//     other inside a dialog carry a Route to the other's announced address
//     (Config.NodeAddr is ours). Bindings of a node without an
//     announcement are skipped as unreachable.
//   - Brute force: failed digests count per source and per user
//     (internal/guard); past the limit a source gets 403 without a challenge,
//     but a source with working registrations only loses the guessed user.
//     A failure counts only once its nonce verified (ours, issued to this
//     address, not expired): an Authorization nobody challenged this address
//     for — a spoofed datagram — counts nothing. Stale nonces, replayed
//     counts, malformed credentials and other realms never count.
package sip
