/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_SESSION_H
#define KFWD_SESSION_H

#include <stdbool.h>
#include <netinet/in.h>
#include <stdint.h>

#include "config.h"
#include "conn_details.h"
#include "endpoint.h"
#include "flow.h"
#include "http.h"
#include "loop.h"
#include "route.h"
#include "upstream.h"

enum session_state {
	S_REQUEST_HEAD, /* waiting for / reading a request head (idle keep-alive included) */
	S_RESOLVING, /* url-embedded host name lookup */
	S_QUEUED, /* waiting for a connection slot on the chosen server */
	S_BACKOFF, /* waiting before a retry */
	S_CONNECTING, /* upstream connect in progress */
	S_EXCHANGE, /* request forwarded, response awaited or forwarded */
	S_REPLYING, /* kfwd's own response (an error) going out, then close */
	S_LINGER, /* client write side shut; reading until the client closes */
};

struct session;

/*
 * A protocol: what a listener speaks (listen ADDR:PORT [proto]). The session proper (session.c)
 * owns the connection's lifecycle, its endpoints and epoll interest, its timer, kfwd's own
 * error replies and the linger; it hands everything protocol-specific to these operations.
 */
struct proto_ops {
	const char *name; /* the listen keyword */
	/*
	 * Its exchange record (struct exchange) is taken at a request's first byte and given back
	 * at the request's end, so an idle connection holds only its struct session. False: taken
	 * with the connection for its whole life (RTSP, the gateway).
	 */
	bool exchange_per_request;
	/*
	 * Its upstream connections are plain HTTP/1.1 keep-alive ones that may be taken from and
	 * given back to the idle pool (keyed by address only). A protocol that owns its upstream
	 * connection for the client's lifetime (RTSP, the gateway) leaves it false: a pooled HTTP
	 * connection to the same address must never carry it.
	 */
	bool pooled_upstream;
	/* S_REQUEST_HEAD and S_EXCHANGE: move the protocol on (read heads, pump flows). */
	void (*step)(struct session *s);
	/* The session timer fired in any state but S_REPLYING and S_LINGER. */
	void (*timeout)(struct session *s);
	/* The upstream connection is ready (new, or taken from the pool): start the exchange. */
	void (*connected)(struct session *s);
	/* No upstream could serve the request (after retries): answer @status, or close. */
	void (*connect_failed)(struct session *s, int status);
	/* The session closes while it holds an exchange: release what the protocol holds (a
	 * sockmap flow...). May be NULL. */
	void (*release)(struct session *s);
	/* Add the protocol's own `kfwdctl conn list` details (RTSP session...). May be NULL. */
	void (*describe)(const struct session *s, struct conn_details *d);
	/* S_EXCHANGE: the epoll interest of both endpoints, for a protocol that does not move
	 * its bytes through the two flows as HTTP does. NULL: the flows decide. */
	void (*interest)(const struct session *s, uint32_t *client, uint32_t *upstream);
	/* Over max-connections: answer in the protocol (its 503, then close) from the state
	 * session_create left, S_REQUEST_HEAD. NULL: kfwd's HTTP 503 at once. */
	void (*reject)(struct session *s);
	/* SIGTERM: end the connection at a clean point of the protocol. NULL: close when idle,
	 * else after the transaction in progress (close_after). */
	void (*drain)(struct session *s);
};

/*
 * What one direction of a connection carried over all its exchanges: each exchange's flow
 * starts from it and leaves its counters here when it ends, so `conn list`, the close event
 * and the access log see the connection's totals whether an exchange is held or not.
 */
struct flow_tally {
	uint64_t bytes_spliced;
	uint64_t bytes_copied;
	uint64_t bytes_out;
	uint32_t pauses;
	uint32_t resumes;
	uint32_t earned; /* struct flow's: where the next body's allowance starts */
};

/*
 * The state of one exchange: a request, its upstream connection and its response (for HTTP),
 * or the connection's whole life for a protocol that holds its upstream (a tunnel after CONNECT
 * or Upgrade keeps it to the end too). Taken from a capped free list at the first byte of a
 * request and given back when the exchange ends, so an idle keep-alive connection holds only
 * its struct session.
 */
struct exchange {
	void *proto_data; /* the protocol's own state (RTSP, the gateway), freed by its release */
	struct endpoint upstream;
	struct flow req; /* client -> upstream */
	struct flow resp; /* upstream -> client */

	/* Parse state exists only while a head is being read (2.2 KB each). */
	struct http_head *rq;
	struct http_head *rs;
	uint8_t req_method; /* llhttp method of the current request */
	/* The request in progress only (0.7 KiB): taken at its head, given back at its end. */
	struct route_target *target;
	/* A playlist response read whole before its URIs are rewritten (user/http1.c), or NULL */
	struct playlist_fetch *playlist;
	struct upstream_server *server; /* chosen for this attempt (NULL: url-embedded) */
	struct upstream_server *conn_server; /* whose connection slot the upstream fd holds */
	struct upstream_waiter wait; /* S_QUEUED: in the server's FIFO */
	unsigned int attempts; /* retries done for this request */
	int last_failure_status; /* what the last failed attempt would have answered */
	struct sockaddr_any *up_addr; /* with target: the request in progress only */
	struct resolve_req *resolve;
	struct buf req_head; /* forwarded request head, kept for one retry */
	enum body_framing req_framing;
	uint64_t req_length;
	bool req_is_head;
	bool req_keep_alive;
	bool client_http10;
	bool upstream_reused;
	bool retried;
	bool interim_sent; /* a 1xx went toward the client */
	unsigned int interim_count; /* 1xx responses received for this request */
	size_t interim_bytes;
	bool response_started; /* the final response head went toward the client */
	bool req_failed; /* upstream refused request bytes */
	bool req_sent; /* request fully forwarded: the response timeout runs */
	bool req_upgrade; /* the client asked to switch protocols */
	bool connect_tunnel; /* a CONNECT request */
	bool tunnel; /* 101 or CONNECT: both flows carry raw bytes until EOF */
	/* A tunnel or a response body handed to the BPF sockmap: the daemon no longer reads or
	 * writes its sockets until the flow is done. */
	bool sockmap;
	bool sockmap_response; /* only the response body, upstream to client */
	uint64_t sockmap_flow;
	uint32_t sm_events_client;
	uint32_t sm_events_upstream;
	bool sm_timer; /* the timer runs for the sockmap module */
	uint64_t sm_last_bytes; /* for the idle timeout: bytes moved at sm_last_change_ms */
	uint64_t sm_last_change_ms;
	bool final_response; /* final response head parsed */
	bool upstream_reusable;

	/* The access log's record of the request in progress (user/access_log.c) */
	bool log_pending;
	bool log_has_method;
	bool log_sockmap; /* a body or tunnel of this request went through the sockmap */
	int log_status; /* its final status; 0 until one is known */
	uint64_t log_start_ms;
	uint64_t log_in0, log_out0; /* the flows' bytes_out when the request began */
	uint64_t log_spliced0;
	char *log_target; /* only while an access log is configured */
};

/*
 * One client connection: what it holds while idle between requests (its socket, transport,
 * timer, the registry links and what `conn list` shows), and its exchange while one runs.
 */
struct session {
	uint64_t id;
	struct session *prev, *next;
	const struct proto_ops *proto; /* chosen by the listener (a request may switch it) */
	const struct config *cfg;
	struct exchange *x; /* NULL while an HTTP keep-alive connection is idle */
	struct timer timer;
	uint64_t created_ms;
	uint64_t requests;
	struct endpoint client;
	const struct route *route; /* of the request in progress, or of the last one */
	/* ADDR:PORT or HOST:PORT of the current or last upstream ("" before any); set it with
	 * session_set_upstream_text(), which allocates only when it changes. */
	const char *up_addr_text;
	struct flow_tally tally[DIR_COUNT];
	enum session_state state;
	int last_status;
	bool close_after;
	/* The client's IP address in binary (text: session_client_host()); family 0: unknown. */
	sa_family_t client_family;
	uint8_t client_ip[16];
};

/* Take over an accepted client socket speaking @proto. @reject: answer 503 and close (over the
 * limit). @tls: the listener's TLS context (the client speaks TLS first), or NULL. */
struct ssl_ctx_st;
struct session *session_create(int fd, const struct config *cfg, const struct proto_ops *proto,
			       bool reject, struct ssl_ctx_st *tls);
/* SIGTERM: idle connections close now, the others after their current transaction. */
void session_drain_all(void);
unsigned int session_count(void);
/* A worker process (user/workers.c): its number for `conn list` details (worker=, pid=) and
 * the first of its connection ids, so ids stay unique across workers. */
void session_set_worker(unsigned int worker, uint64_t first_id);
struct session *session_first(void);
void session_kill(struct session *s);
const char *session_state_name(enum session_state st);
/* The client's address alone (X-Forwarded-For), "unknown" when getpeername() failed. */
void session_client_host(const struct session *s, char out[INET6_ADDRSTRLEN]);
/* The client's ADDR:PORT (its address alone once the socket is gone). */
void session_peer_text(const struct session *s, char *out, size_t len);
/* The details of `kfwdctl conn list`: the protocol's, then each endpoint transport's. */
void session_describe(const struct session *s, struct conn_details *d);

/* ---- for the modules a session is built from (upstream_conn, tunnel, sockmap_path, http1) */

/* Move the session on as far as it goes now, then set its epoll interest. */
void session_run(struct session *s);
/* The loop handler of both endpoints. */
void session_endpoint_event(struct loop_handler *h, uint32_t events);
/* Close the connection (the upstream one too) and free the session after this batch. */
void session_close(struct session *s);
/* kfwd's own answer; the connection closes after it. Only before any final response byte. */
void session_reply_error(struct session *s, int status);
void session_reply_error_headers(struct session *s, int status, const char *extra_headers);
/* FIN after the last byte, then read until the client closes (or a short timeout). */
void session_begin_linger(struct session *s);
/* The exchange's transfer timer fired: re-arm while the flows progress, else cut it. */
void session_exchange_idle(struct session *s);
/* SIGTERM received: no new requests, no retries. */
bool session_draining(void);
/* @fn runs after each session closed its client socket (accept.c: a descriptor is free). */
void session_set_closed_hook(void (*fn)(void));
/* Interim responses wait for the client: the upstream is not read meanwhile. */
bool session_interim_backlogged(const struct session *s);

void session_endpoint_attach(struct endpoint *e, int fd);
/* Close the upstream socket and give its connection slot back. */
void session_close_upstream(struct session *s);
/* tcp-keepalive and tcp-user-timeout on @fd. */
void session_dead_peer_options(int fd, const struct config *cfg);
uint64_t session_connect_timeout(const struct session *s);
uint64_t session_response_timeout(const struct session *s);
uint64_t session_idle_timeout(const struct session *s);

void session_set_upstream_text(struct session *s, const char *text);
/* s->x for a request's first byte (an HTTP keep-alive connection), or NULL (no memory); a
 * held one is kept. */
struct exchange *session_exchange_take(struct session *s);
/* The exchange is over and its upstream endpoint closed or pooled: s->x goes back to the free
 * list (after this loop batch: events already read may still name its upstream endpoint). */
void session_exchange_put(struct session *s);
/* A flow of @s for `conn list`: the exchange's, or one holding the connection's totals in
 * @idle (an idle connection holds no flow). */
const struct flow *session_flow_view(const struct session *s, enum flow_dir dir, struct flow *idle);
/* s->target (and s->up_addr) for a new request, emptied, or NULL. */
struct route_target *session_target_start(struct session *s);
void session_target_end(struct session *s);

/* Heads being parsed: allocated while one is read, freed when done. */
struct http_head *session_head_start(struct http_head **slot, bool is_request);
void session_head_free(struct http_head **slot);

/* Responses by status class; the status the access log records for the request. */
void session_count_status(int status);
/* An error kfwd answers itself, in the error counters (4xx, 502, 504). */
void session_count_error(int status);
void session_final_status(struct session *s, int status);
/* The access log's record of a request: begun at its head, written when it is over. */
void session_access_begin(struct session *s, const char *target, size_t len);
void session_access_end(struct session *s);

#endif
