/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every counter kfwd exports, defined once. The control protocol's attribute numbers
 * (enum kfwd_stats_attr), kfwdctl's names, the daemon's snapshot and /metrics are all
 * generated from KFWD_COUNTERS, so a counter added here appears everywhere.
 *
 * X(ID, NAME, LABEL, KIND, HELP, VALUE)
 *   ID     KFWD_STAT_<ID>: the attribute number is the position in this list, so new counters
 *          go at the end (kfwdctl and kfwd of different builds still understand each other).
 *   NAME   the wire/JSON name; /metrics shows "kfwd_" NAME. "base.value" is one member of a
 *          labelled family: /metrics renders it as kfwd_base{LABEL="value"}, kfwdctl -j as
 *          {"base": {"value": N}}. Members of one family are adjacent.
 *   LABEL  the label's name for a family member, NULL otherwise.
 *   KIND   COUNTER (only grows) or GAUGE (a level).
 *   HELP   the Prometheus HELP text (the family's first member carries it).
 *   VALUE  an expression the daemon evaluates for the value (user/metrics.c); kfwdctl and the
 *          protocol parser ignore it.
 */
#ifndef KFWD_COUNTERS_H
#define KFWD_COUNTERS_H

#define KFWD_COUNTERS(X)                                                                         \
	X(CONN_ACCEPTED, "connections_accepted_total", NULL, COUNTER,                            \
	  "Client connections accepted.", stats.connections_accepted)                            \
	X(CONN_ACTIVE, "connections_active", NULL, GAUGE, "Client connections open now.",        \
	  stats.connections_active)                                                              \
	X(CONN_REJECTED, "connections_rejected_total", NULL, COUNTER,                            \
	  "Clients refused over max-connections.", stats.connections_rejected)                   \
	X(REQUESTS, "requests_total", NULL, COUNTER, "Request heads parsed.", stats.requests)    \
	X(RESP_1XX, "responses_total.1xx", "class", COUNTER,                                     \
	  "Responses sent to clients by status class.", stats.responses[0])                      \
	X(RESP_2XX, "responses_total.2xx", "class", COUNTER, "", stats.responses[1])             \
	X(RESP_3XX, "responses_total.3xx", "class", COUNTER, "", stats.responses[2])             \
	X(RESP_4XX, "responses_total.4xx", "class", COUNTER, "", stats.responses[3])             \
	X(RESP_5XX, "responses_total.5xx", "class", COUNTER, "", stats.responses[4])             \
	X(UP_CONNECTS, "upstream_connects_total", NULL, COUNTER, "New upstream connections.",    \
	  stats.upstream_connects)                                                               \
	X(UP_REUSES, "upstream_reuses_total", NULL, COUNTER,                                     \
	  "Requests sent on a pooled connection.", stats.upstream_reuses)                        \
	X(UP_CONNECT_ERRORS, "upstream_connect_errors_total", NULL, COUNTER,                     \
	  "Upstream connects that failed.", stats.upstream_connect_errors)                       \
	X(UP_RETRIES, "upstream_retries_total", NULL, COUNTER,                                   \
	  "Requests resent after a stale pooled connection.", stats.upstream_retries)            \
	X(UP_IDLE, "upstream_idle", NULL, GAUGE, "Idle pooled upstream connections.",            \
	  upstream_pool_idle_count())                                                            \
	X(SPLICED_REQ, "bytes_spliced_total.request", "direction", COUNTER,                      \
	  "Bytes moved socket to pipe by splice (never in user space).",                         \
	  stats.bytes_spliced[DIR_REQUEST])                                                      \
	X(SPLICED_RESP, "bytes_spliced_total.response", "direction", COUNTER, "",                \
	  stats.bytes_spliced[DIR_RESPONSE])                                                     \
	X(COPIED_REQ, "bytes_copied_total.request", "direction", COUNTER,                        \
	  "Bytes that passed through user space (heads, chunk lines, copy path).",               \
	  stats.bytes_copied[DIR_REQUEST])                                                       \
	X(COPIED_RESP, "bytes_copied_total.response", "direction", COUNTER, "",                  \
	  stats.bytes_copied[DIR_RESPONSE])                                                      \
	X(SOCKMAP_REQ, "bytes_sockmap_total.request", "direction", COUNTER,                      \
	  "Bytes redirected in the kernel by the sockmap program (live flows included).",        \
	  sockmap_bytes[SOCKMAP_A_TO_B])                                                         \
	X(SOCKMAP_RESP, "bytes_sockmap_total.response", "direction", COUNTER, "",                \
	  sockmap_bytes[SOCKMAP_B_TO_A])                                                         \
	X(PAUSES, "pauses_total", NULL, COUNTER, "Flows paused at the high-water mark (edges).", \
	  stats.pauses)                                                                          \
	X(RESUMES, "resumes_total", NULL, COUNTER, "Flows resumed below the low-water mark.",    \
	  stats.resumes)                                                                         \
	X(PAUSED_FLOWS, "paused_flows", NULL, GAUGE, "Flows whose source has EPOLLIN off now.",  \
	  stats.paused_flows)                                                                    \
	X(PIPES_IN_USE, "pipes_in_use", NULL, GAUGE, "Pipes held by flows.", stats.pipes_in_use) \
	X(PIPES_POOLED, "pipes_pooled", NULL, GAUGE, "Empty pipes kept for reuse.",              \
	  stats.pipes_pooled)                                                                    \
	X(PIPE_FALLBACKS, "pipe_fallbacks_total", NULL, COUNTER,                                 \
	  "Bodies copied because no pipe could be had.", stats.pipe_fallbacks)                   \
	X(CLIENT_ERRORS, "client_errors_total", NULL, COUNTER, "4xx answers generated by kfwd.", \
	  stats.client_errors)                                                                   \
	X(UPSTREAM_ERRORS, "upstream_errors_total", NULL, COUNTER,                               \
	  "502 answers generated by kfwd.", stats.upstream_errors)                               \
	X(TIMEOUTS, "timeouts_total", NULL, COUNTER, "504 answers and idle transfers cut.",      \
	  stats.timeouts)                                                                        \
	X(ABORTED, "aborted_transfers_total", NULL, COUNTER,                                     \
	  "Responses cut because a peer failed mid-body.", stats.aborted_transfers)              \
	X(CTL_REQUESTS, "ctl_requests_total", NULL, COUNTER, "Control requests received.",       \
	  stats.ctl_requests)                                                                    \
	X(CTL_DENIED, "ctl_denied_total", NULL, COUNTER,                                         \
	  "Control requests refused by the permission model.", stats.ctl_denied)                 \
	X(CTL_MALFORMED, "ctl_malformed_total", NULL, COUNTER,                                   \
	  "Control messages rejected as malformed.", stats.ctl_malformed)                        \
	X(CTL_DROPPED, "ctl_replies_dropped_total", NULL, COUNTER,                               \
	  "Control answers dropped (the reader's buffer was full).", stats.ctl_dropped)          \
	X(CTL_EVENTS, "ctl_events_total", NULL, COUNTER, "Monitor events delivered.",            \
	  stats.ctl_events)                                                                      \
	X(CTL_EVENTS_LOST, "ctl_events_lost_total", NULL, COUNTER,                               \
	  "Monitor events dropped for a slow subscriber.", stats.ctl_events_lost)                \
	X(ACCESS_LOG_DROPPED, "access_log_dropped_total", NULL, COUNTER,                         \
	  "Access log lines lost (buffer full, write failed, syslog not taking them).",          \
	  stats.access_log_dropped)                                                              \
	X(INTERIM_FLOODS, "interim_floods_total", NULL, COUNTER,                                 \
	  "502 answers for more interim (1xx) responses than allowed.", stats.interim_floods)    \
	X(ACCEPT_PAUSES, "accept_pauses_total", NULL, COUNTER,                                   \
	  "Listeners paused because the fd limit was reached.", stats.accept_pauses)             \
	X(LOG_SUPPRESSED, "log_suppressed_total", NULL, COUNTER,                                 \
	  "Log lines dropped by the rate limit.", stats.log_suppressed)                          \
	X(SOCKMAP_FLOWS, "sockmap_flows_total", NULL, COUNTER,                                   \
	  "Tunnels and response bodies handed to the BPF sockmap.", stats.sockmap_flows)         \
	X(SOCKMAP_RESPONSES, "sockmap_responses_total", NULL, COUNTER,                           \
	  "Response bodies (upstream to client only) handed to the BPF sockmap.",                \
	  stats.sockmap_responses)                                                               \
	X(SOCKMAP_START_FALLBACKS, "sockmap_start_fallbacks_total", NULL, COUNTER,               \
	  "Hand-overs to the sockmap given up (source never paused): they splice.",              \
	  stats.sockmap_start_fallbacks)                                                         \
	X(TUNNELS, "tunnels_total", NULL, COUNTER, "Upgrade (101) and CONNECT tunnels opened.",  \
	  stats.tunnels)                                                                         \
	X(TLS_HS_PLAIN_HTTP, "tls_handshake_errors_total.plain_http", "reason", COUNTER,         \
	  "TLS handshakes that failed, by reason (user/tls.h).",                                 \
	  tls_handshake_errors[TLS_ERR_PLAIN_HTTP])                                              \
	X(TLS_HS_PROTOCOL, "tls_handshake_errors_total.protocol", "reason", COUNTER, "",         \
	  tls_handshake_errors[TLS_ERR_PROTOCOL])                                                \
	X(TLS_HS_CERT_VERIFY, "tls_handshake_errors_total.cert_verify", "reason", COUNTER, "",   \
	  tls_handshake_errors[TLS_ERR_CERT_VERIFY])                                             \
	X(TLS_HS_PEER_ALERT, "tls_handshake_errors_total.peer_alert", "reason", COUNTER, "",     \
	  tls_handshake_errors[TLS_ERR_PEER_ALERT])                                              \
	X(TLS_HS_ABORTED, "tls_handshake_errors_total.aborted", "reason", COUNTER, "",           \
	  tls_handshake_errors[TLS_ERR_ABORTED])                                                 \
	X(TLS_HS_TIMEOUT, "tls_handshake_errors_total.timeout", "reason", COUNTER, "",           \
	  tls_handshake_errors[TLS_ERR_TIMEOUT])                                                 \
	X(TLS_HS_OTHER, "tls_handshake_errors_total.other", "reason", COUNTER, "",               \
	  tls_handshake_errors[TLS_ERR_OTHER])                                                   \
	X(RTSP_REQUESTS, "rtsp_requests_total", NULL, COUNTER,                                   \
	  "RTSP requests from clients (kfwd's own answers included).", stats.rtsp_requests)      \
	X(RTSP_RESPONSES, "rtsp_responses_total", NULL, COUNTER, "RTSP responses from servers.", \
	  stats.rtsp_responses)                                                                  \
	X(RTSP_FRAMES, "rtsp_frames_total", NULL, COUNTER,                                       \
	  "RTSP interleaved ('$') frames forwarded, both directions.", stats.rtsp_frames)        \
	X(RTSP_FRAMES_DROPPED, "rtsp_frames_dropped_total", NULL, COUNTER,                       \
	  "RTSP interleaved frames discarded for slow clients (on-slow=drop-frames).",           \
	  stats.rtsp_frames_dropped)                                                             \
	X(RTSP_BYTES_DROPPED, "rtsp_bytes_dropped_total", NULL, COUNTER,                         \
	  "Bytes of the RTSP interleaved frames discarded (headers included).",                  \
	  stats.rtsp_bytes_dropped)                                                              \
	X(GW_HS_OK, "rtsp_gateway_handshakes_total.ok", "outcome", COUNTER,                      \
	  "HTTP->RTSP gateway handshakes by outcome.", stats.gateway_handshakes[GATEWAY_OK])     \
	X(GW_HS_UNREACH, "rtsp_gateway_handshakes_total.unreachable", "outcome", COUNTER, "",    \
	  stats.gateway_handshakes[GATEWAY_UNREACHABLE])                                         \
	X(GW_HS_TIMEOUT, "rtsp_gateway_handshakes_total.timeout", "outcome", COUNTER, "",        \
	  stats.gateway_handshakes[GATEWAY_TIMEOUT])                                             \
	X(GW_HS_REFUSED, "rtsp_gateway_handshakes_total.refused", "outcome", COUNTER, "",        \
	  stats.gateway_handshakes[GATEWAY_REFUSED])                                             \
	X(GW_HS_NOT_TS, "rtsp_gateway_handshakes_total.not_ts", "outcome", COUNTER, "",          \
	  stats.gateway_handshakes[GATEWAY_NOT_TS])                                              \
	X(GW_HS_BAD, "rtsp_gateway_handshakes_total.bad_answer", "outcome", COUNTER, "",         \
	  stats.gateway_handshakes[GATEWAY_BAD_ANSWER])                                          \
	X(GW_HS_ABORTED, "rtsp_gateway_handshakes_total.aborted", "outcome", COUNTER, "",        \
	  stats.gateway_handshakes[GATEWAY_ABORTED])                                             \
	X(GW_FRAMES, "rtsp_gateway_frames_total", NULL, COUNTER,                                 \
	  "Media frames the HTTP->RTSP gateway forwarded.", stats.gateway_frames)                \
	X(GW_FRAMES_DROPPED, "rtsp_gateway_frames_dropped_total", NULL, COUNTER,                 \
	  "Gateway media frames dropped (on-slow=drop-frames, malformed RTP).",                  \
	  stats.gateway_frames_dropped)                                                          \
	X(GW_KEEPALIVES, "rtsp_gateway_keepalives_total", NULL, COUNTER,                         \
	  "RTSP keepalives (GET_PARAMETER or OPTIONS) the gateway sent.",                        \
	  stats.gateway_keepalives)                                                              \
	X(PLAYLISTS_REWRITTEN, "playlists_rewritten_total", NULL, COUNTER,                       \
	  "HLS/M3U playlists from url-embedded routes sent with their URIs rewritten.",          \
	  stats.playlists_rewritten)                                                             \
	X(PLAYLISTS_UNMODIFIED, "playlists_unmodified_total", NULL, COUNTER,                     \
	  "Playlists over playlist-max-size, forwarded unmodified.", stats.playlists_unmodified) \
	X(MEMORY_BUDGET, "memory_budget_bytes", NULL, GAUGE,                                     \
	  "max-memory: the budget for bytes held in flight (0: off).", mem_budget.budget)        \
	X(MEMORY_HELD, "memory_held_bytes", NULL, GAUGE,                                         \
	  "Bytes charged to the budget: marks or levels, sized socket buffers, sockmap caps.",   \
	  mem_budget.held)                                                                       \
	X(MEMORY_FLOWS, "memory_flows", NULL, GAUGE, "Flows charged to the budget.",             \
	  mem_budget.flows)                                                                      \
	X(MEMORY_FAIR_SHARE, "memory_fair_share_bytes", NULL, GAUGE,                             \
	  "max-memory / charged flows, at least the 64 KiB floor.", mem_budget_fair_share())     \
	X(PACED_WAKEUPS, "paced_wakeups_total", NULL, COUNTER,                                   \
	  "Flows to a slow, steady reader served on the pace timer instead of EPOLLOUT.",        \
	  stats.paced_wakeups)

#endif
