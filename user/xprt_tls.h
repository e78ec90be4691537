/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_XPRT_TLS_H
#define KFWD_XPRT_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "endpoint.h"
#include "tls.h"

extern const struct xprt_ops xprt_tls_ops;

/*
 * Make @e (its fd connected and non-blocking) a TLS server endpoint with @ctx from @set (a
 * reference on @set is held until release), or a TLS client towards @host (the SNI and the name
 * verified unless @c->sni overrides it; an IP literal is verified as an address, no SNI),
 * offering @c's saved session for that name if it has one. 0, or -1 (errno), @e unchanged.
 */
int xprt_tls_server(struct endpoint *e, struct tls_set *set, SSL_CTX *ctx);
int xprt_tls_client(struct endpoint *e, struct tls_set *set, struct tls_client *c,
		    const char *host);

/* A TLS endpoint whose handshake has not finished (nor failed)? */
bool xprt_tls_handshaking(const struct endpoint *e);
/* After a failed handshake: was it clear-text HTTP on a TLS port? */
bool xprt_tls_plain_http(const struct endpoint *e);
/* For kfwdctl conn list: "TLSv1.3", the cipher, the server name (NULL before the handshake). */
void xprt_tls_info(const struct endpoint *e, const char **version, const char **cipher,
		   const char **sni);
/*
 * A TLS origin connection in good standing (handshake done, no fatal error): its identity for
 * the keep-alive pool, the struct tls_client it was made with and the server name it sent and
 * verified. False otherwise (a server side, a failed or unfinished connection).
 */
bool xprt_tls_origin(const struct endpoint *e, const void **settings, const char **name);
/* The connection's SSL, for session resumption and tests. */
SSL *xprt_tls_ssl(const struct endpoint *e);

#endif
