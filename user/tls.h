/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_TLS_H
#define KFWD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "config.h"

/* Why a TLS handshake failed; kfwd_tls_handshake_errors_total{reason=...} */
enum tls_err_class {
	TLS_ERR_PLAIN_HTTP, /* clear-text HTTP sent to a TLS port */
	TLS_ERR_PROTOCOL, /* no common version, cipher or group; not TLS at all */
	TLS_ERR_CERT_VERIFY, /* origination: the origin's certificate or name did not verify */
	TLS_ERR_PEER_ALERT, /* the peer refused us with an alert (e.g. our certificate) */
	TLS_ERR_ABORTED, /* EOF or reset in the middle of the handshake */
	TLS_ERR_TIMEOUT, /* counted by the session when its handshake timer fires */
	TLS_ERR_OTHER,
	TLS_ERR_COUNT,
};

extern uint64_t tls_handshake_errors[TLS_ERR_COUNT];

const char *tls_err_class_name(enum tls_err_class c);
void tls_count_handshake_error(enum tls_err_class c);

/*
 * Process-wide set-up: OpenSSL, the in-memory session ticket keys, and the kTLS probe, whose
 * result is logged once ("kTLS unavailable (<why>): TLS uses the copy path"). 0 or -1; calls
 * after a successful one do nothing.
 */
int tls_init(void);
void tls_fini(void);

/*
 * kTLS: does TCP_ULP "tls" attach to a connected loopback TCP socket? 1 yes, 0 no with the
 * reason in @why, -1 when the probe itself could not run (reason in @why).
 */
int tls_ktls_probe(char *why, size_t whylen);
/* The start-up probe's answer, and whether OpenSSL was built with kTLS. */
bool tls_ktls_available(void);

/* Ticket keys: a new current key now; the previous one still decrypts (and is renewed). */
void tls_ticket_rotate(void);

/*
 * Origination settings built from one struct tls_origin: the context and the name to send and
 * verify (NULL: the caller's host name).
 */
/* Saved sessions per origin context: one per server name, the oldest replaced first. */
#define TLS_CLIENT_SESSIONS 16

struct tls_client_session {
	char *name;
	SSL_SESSION *sess;
};

struct tls_client {
	SSL_CTX *ctx;
	bool verify;
	char *sni; /* a copy of the config's sni=, or NULL */
	char *key; /* the upstream's name, or the url-embedded route's prefix */
	/* Resumption towards origins: the newest ticket per name, taken by the next connection. */
	struct tls_client_session sessions[TLS_CLIENT_SESSIONS];
	unsigned int next_slot;
};

/* The saved session for @name, now the caller's (SSL_SESSION_free), or NULL. */
SSL_SESSION *tls_client_take_session(struct tls_client *c, const char *name);

/*
 * Every TLS context one configuration needs: one per TLS listener (its cert= as default, the
 * tls-cert certificates chosen by SNI), one per TLS upstream and per url-embedded tls route.
 * Built at load and at reload; a failed build leaves the caller with its old set. Reference
 * counted: every TLS connection holds one (the SNI callback reads the certificate table).
 */
struct tls_set;

/*
 * Build the set for @cfg. Errors are "FILE:LINE: what: OpenSSL's reason" in @err; NULL then.
 * Key files readable by anyone but root are warned about (log_warn), not refused.
 */
struct tls_set *tls_set_build(const struct config *cfg, char *err, size_t errlen);
struct tls_set *tls_set_get(struct tls_set *set);
void tls_set_put(struct tls_set *set);
/*
 * The set new connections use. tls_apply builds @cfg's set and makes it current (0), or leaves
 * the current one serving and returns -1 with @err (a failed reload keeps the old certificates).
 * Connections keep the set they started with until they close. No TLS in @cfg: current is NULL.
 */
int tls_apply(const struct config *cfg, char *err, size_t errlen);
/* Make @set (built by tls_set_build, or NULL) current; takes the caller's reference. */
void tls_install(struct tls_set *set);
struct tls_set *tls_current(void);

/* The listener's server context (listens[@i]), or NULL for a plain listener. */
SSL_CTX *tls_set_listener(const struct tls_set *set, size_t i);
/* The origination settings of upstreams[@i] / routes[@i], or NULL without tls. */
struct tls_client *tls_set_upstream(const struct tls_set *set, size_t i);
struct tls_client *tls_set_route(const struct tls_set *set, size_t i);
/*
 * The same by the upstream's name / the route's prefix: a session that began under an older
 * configuration finds its origin's settings in the current set (NULL: gone, or no tls now).
 */
struct tls_client *tls_set_upstream_named(const struct tls_set *set, const char *name);
struct tls_client *tls_set_route_prefixed(const struct tls_set *set, const char *prefix);

/*
 * 1 when @path is a key file someone other than root and @owner (the `user` kfwd runs as, who
 * must read it at reload; 0 without one) may read (warned about), 0, -1 (errno).
 */
int tls_key_file_exposed(const char *path, uid_t owner);

/* Class of a failed handshake from SSL_get_error()'s @ssl_err and the error queue. */
enum tls_err_class tls_classify_error(SSL *ssl, int ssl_err);

#endif
