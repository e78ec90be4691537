// SPDX-License-Identifier: GPL-2.0
/*
 * The TLS transport: struct xprt_ops over a non-blocking OpenSSL SSL on an endpoint's socket.
 * It owns the endpoint's SSL (e->xprt_ctx) from xprt_tls_server/client to release; the fd stays
 * the caller's. Without kTLS every byte passes SSL_read/SSL_write (the bounded copy path).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "conn_details.h"
#include "log.h"
#include "xprt_tls.h"

/* TLS record content type "handshake": the first byte a TLS client sends. */
#define TLS_RECORD_HANDSHAKE 0x16
/* Application data read and dropped while waiting for the peer's close_notify. */
#define SHUTDOWN_DISCARD_BYTES 4096
#define SHUTDOWN_DISCARD_ROUNDS 16

struct tls_conn {
	SSL *ssl;
	struct tls_set *set; /* a reference: the SNI callback reads its certificate table */
	char *name; /* client: the server name its sessions are saved under (SSL app data) */
	const struct tls_client *client; /* client: its origin settings (pool identity) */
	bool server;
	bool first_byte_seen; /* server: the first byte was checked for clear-text HTTP */
	bool plain_http;
	bool handshake_done;
	bool fatal; /* OpenSSL forbids SSL_shutdown after a fatal error */
	bool ktls; /* both directions in the kernel: splice like a plain socket */
};

static struct tls_conn *conn_new(struct endpoint *e, struct tls_set *set, SSL_CTX *ctx)
{
	struct tls_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ssl = SSL_new(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, e->fd) != 1) {
		SSL_free(c->ssl);
		free(c);
		ERR_clear_error();
		errno = ENOMEM;
		return NULL;
	}
	c->set = tls_set_get(set);
	return c;
}

static void conn_attach(struct endpoint *e, struct tls_conn *c)
{
	e->xprt = &xprt_tls_ops;
	e->xprt_ctx = c;
	e->xprt_want = 0;
}

int xprt_tls_server(struct endpoint *e, struct tls_set *set, SSL_CTX *ctx)
{
	struct tls_conn *c = conn_new(e, set, ctx);

	if (!c)
		return -1;
	c->server = true;
	SSL_set_accept_state(c->ssl);
	conn_attach(e, c);
	return 0;
}

int xprt_tls_client(struct endpoint *e, struct tls_set *set, struct tls_client *tc,
		    const char *host)
{
	SSL_SESSION *sess;
	const char *name = tc->sni ? tc->sni : host;
	unsigned char addr[sizeof(struct in6_addr)];
	bool is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
	struct tls_conn *c = conn_new(e, set, tc->ctx);
	int ok = 1;

	if (!c)
		return -1;
	SSL_set_connect_state(c->ssl);
	/* RFC 6066: no SNI for an address; the certificate is then checked for that address. */
	if (!is_ip)
		ok = SSL_set_tlsext_host_name(c->ssl, name);
	if (ok == 1 && tc->verify)
		ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) :
			     SSL_set1_host(c->ssl, name);
	c->name = ok == 1 ? strdup(name) : NULL;
	if (!c->name || SSL_set_app_data(c->ssl, c->name) != 1) {
		SSL_free(c->ssl);
		tls_set_put(c->set);
		free(c->name);
		free(c);
		ERR_clear_error();
		errno = EINVAL;
		return -1;
	}
	c->client = tc;
	sess = tls_client_take_session(tc, name);
	if (sess) {
		/* A session that does not fit any more only means a full handshake. */
		SSL_set_session(c->ssl, sess);
		SSL_SESSION_free(sess);
		ERR_clear_error();
	}
	conn_attach(e, c);
	return 0;
}

/*
 * Map a failed SSL call: WANT_READ/WANT_WRITE (either can come from either call: a read may
 * have to send, a write may have to read) are EAGAIN with e->xprt_want; close_notify is 0; an
 * EOF without close_notify is ECONNRESET, so a cut body is never mistaken for a whole one.
 */
static ssize_t io_fail(struct endpoint *e, struct tls_conn *c, int rc)
{
	int err = SSL_get_error(c->ssl, rc), saved = errno;
	unsigned long e_last = ERR_peek_last_error();

	switch (err) {
	case SSL_ERROR_WANT_READ:
		e->xprt_want = EPOLLIN;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		e->xprt_want = EPOLLOUT;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		e->xprt_want = 0;
		return 0;
	case SSL_ERROR_SYSCALL:
		c->fatal = true;
		errno = saved ? saved : ECONNRESET;
		break;
	default:
		c->fatal = true;
		errno = ERR_GET_LIB(e_last) == ERR_LIB_SSL &&
					ERR_GET_REASON(e_last) ==
						SSL_R_UNEXPECTED_EOF_WHILE_READING ?
				ECONNRESET :
				EPROTO;
		break;
	}
	e->xprt_want = 0;
	ERR_clear_error();
	return -1;
}

/* Contract: up to @len plaintext bytes; 0 after the peer's close_notify; -1 with errno. */
static ssize_t tls_recv(struct endpoint *e, void *buf, size_t len)
{
	struct tls_conn *c = e->xprt_ctx;
	size_t got = 0;
	int rc;

	ERR_clear_error();
	errno = 0;
	rc = SSL_read_ex(c->ssl, buf, len, &got);
	if (rc == 1) {
		e->xprt_want = 0;
		return (ssize_t)got;
	}
	return io_fail(e, c, rc);
}

/*
 * Contract: writes a prefix of @buf (one or more records, at most 16 KiB each) and returns its
 * length. After -1 EAGAIN the next call must start with the same bytes (the buffer may have
 * moved and grown). @more is a hint for plain sockets; records are sealed per call here.
 */
static ssize_t tls_send(struct endpoint *e, const void *buf, size_t len, bool more)
{
	struct tls_conn *c = e->xprt_ctx;
	size_t done = 0;
	int rc;

	if (len == 0)
		return 0;
	ERR_clear_error();
	errno = 0;
	rc = SSL_write_ex(c->ssl, buf, len, &done);
	if (rc == 1) {
		e->xprt_want = 0;
		return (ssize_t)done;
	}
	/* A write never returns 0: ZERO_RETURN here means the connection is closed. */
	if (SSL_get_error(c->ssl, rc) == SSL_ERROR_ZERO_RETURN) {
		errno = EPIPE;
		return -1;
	}
	return io_fail(e, c, rc);
}

static bool tls_can_splice(const struct endpoint *e)
{
	const struct tls_conn *c = e->xprt_ctx;

	/* Plaintext OpenSSL already decrypted must be read with SSL_read before splicing. */
	return c->ktls && !SSL_has_pending(c->ssl);
}

static size_t tls_pending(const struct endpoint *e)
{
	const struct tls_conn *c = e->xprt_ctx;
	int n;

	/* SSL_has_pending also counts a record read but not yet decrypted: recv makes progress. */
	if (!SSL_has_pending(c->ssl))
		return 0;
	n = SSL_pending(c->ssl);
	return n > 0 ? (size_t)n : 1;
}

/* Server: a first byte that is not a TLS handshake record but a letter is clear-text HTTP. */
static int check_first_byte(struct endpoint *e, struct tls_conn *c)
{
	unsigned char b;
	ssize_t n = recv(e->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		e->xprt_want = EPOLLIN;
		return 0;
	}
	if (n <= 0) {
		tls_count_handshake_error(TLS_ERR_ABORTED);
		log_debug("TLS handshake: %s before the first byte",
			  n == 0 ? "EOF" : strerror(errno));
		c->fatal = true;
		return -1;
	}
	c->first_byte_seen = true;
	if (b != TLS_RECORD_HANDSHAKE && b >= 'A' && b <= 'Z') {
		c->plain_http = true;
		c->fatal = true;
		tls_count_handshake_error(TLS_ERR_PLAIN_HTTP);
		log_debug("TLS handshake: clear-text HTTP on a TLS port");
		return -1;
	}
	return 1;
}

static void note_ktls(struct tls_conn *c)
{
	c->ktls = BIO_get_ktls_send(SSL_get_wbio(c->ssl)) &&
		  BIO_get_ktls_recv(SSL_get_rbio(c->ssl));
}

static int tls_handshake(struct endpoint *e)
{
	struct tls_conn *c = e->xprt_ctx;
	enum tls_err_class cls;
	int rc, err, saved;

	if (c->handshake_done)
		return 1;
	if (c->fatal)
		return -1;
	if (c->server && !c->first_byte_seen) {
		rc = check_first_byte(e, c);
		if (rc <= 0)
			return rc;
	}
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(c->ssl);
	if (rc == 1) {
		c->handshake_done = true;
		e->xprt_want = 0;
		note_ktls(c);
		return 1;
	}
	saved = errno;
	err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		e->xprt_want = err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
		return 0;
	}
	c->fatal = true;
	e->xprt_want = 0;
	cls = tls_classify_error(c->ssl, err);
	tls_count_handshake_error(cls);
	/* Debug only: scanners must not flood the log. */
	if (klog_level >= KLOG_DEBUG) {
		unsigned long last = ERR_peek_last_error();
		long vr = SSL_get_verify_result(c->ssl);

		log_debug("TLS handshake failed (%s): %s%s%s", tls_err_class_name(cls),
			  last ? ERR_reason_error_string(last) : strerror(saved ? saved : EPIPE),
			  vr != X509_V_OK ? ": " : "",
			  vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
	}
	ERR_clear_error();
	return -1;
}

/* Read and drop what the peer still sends until its close_notify: 1 seen, 0 wait, -1. */
static int await_close_notify(struct endpoint *e, struct tls_conn *c)
{
	char scratch[SHUTDOWN_DISCARD_BYTES];

	for (int i = 0; i < SHUTDOWN_DISCARD_ROUNDS; i++) {
		ssize_t n = tls_recv(e, scratch, sizeof(scratch));

		if (n == 0)
			return 1;
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
	}
	/* Still data: come back on the next readiness event rather than loop here. */
	e->xprt_want = EPOLLIN;
	return 0;
}

/*
 * Contract: send our close_notify (retried on EAGAIN), then wait for the peer's: 1 when both
 * went, 0 to be called again when e->xprt_want is ready, -1 when TLS cannot close cleanly (the
 * caller closes the socket). Before a finished handshake there is nothing to close: 1.
 */
static int tls_shutdown(struct endpoint *e)
{
	struct tls_conn *c = e->xprt_ctx;
	int rc, err;

	if (c->fatal)
		return -1;
	if (!c->handshake_done)
		return 1;
	if (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN && !SSL_want_write(c->ssl))
		return SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN ? 1 :
									  await_close_notify(e, c);
	ERR_clear_error();
	errno = 0;
	rc = SSL_shutdown(c->ssl);
	if (rc == 1) {
		e->xprt_want = 0;
		return 1;
	}
	if (rc == 0)
		return await_close_notify(e, c);
	err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		e->xprt_want = err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
		return 0;
	}
	c->fatal = true;
	ERR_clear_error();
	return -1;
}

static void tls_release(struct endpoint *e)
{
	struct tls_conn *c = e->xprt_ctx;

	if (!c)
		return;
	/*
	 * OpenSSL marks the session of a connection freed without close_notify unresumable; a
	 * pooled origin connection or an idle keep-alive client ends that way and its tickets are
	 * still good. After a fatal error they are not.
	 */
	if (c->handshake_done && !c->fatal)
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c->ssl);
	tls_set_put(c->set);
	free(c->name);
	free(c);
	e->xprt_ctx = NULL;
	e->xprt_want = 0;
}

bool xprt_tls_handshaking(const struct endpoint *e)
{
	const struct tls_conn *c = e->xprt == &xprt_tls_ops ? e->xprt_ctx : NULL;

	return c && !c->handshake_done && !c->fatal;
}

bool xprt_tls_plain_http(const struct endpoint *e)
{
	const struct tls_conn *c = e->xprt == &xprt_tls_ops ? e->xprt_ctx : NULL;

	return c && c->plain_http;
}

void xprt_tls_info(const struct endpoint *e, const char **version, const char **cipher,
		   const char **sni)
{
	const struct tls_conn *c = e->xprt == &xprt_tls_ops ? e->xprt_ctx : NULL;

	*version = *cipher = *sni = NULL;
	if (!c || !c->handshake_done)
		return;
	*version = SSL_get_version(c->ssl);
	*cipher = SSL_get_cipher_name(c->ssl);
	*sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

bool xprt_tls_origin(const struct endpoint *e, const void **settings, const char **name)
{
	const struct tls_conn *c = e->xprt == &xprt_tls_ops ? e->xprt_ctx : NULL;

	if (!c || c->server || !c->handshake_done || c->fatal)
		return false;
	*settings = c->client;
	*name = c->name;
	return true;
}

/* `kfwdctl conn list`: <side>-tls-version, -cipher, -sni (when one was sent or received), -ktls. */
static void tls_describe(const struct endpoint *e, const char *side, struct conn_details *d)
{
	const struct tls_conn *c = e->xprt_ctx;
	const char *version, *cipher, *sni;
	char key[CONN_DETAIL_LEN];

	xprt_tls_info(e, &version, &cipher, &sni);
	if (!version) {
		snprintf(key, sizeof(key), "%s-tls", side);
		conn_details_add(d, key, "handshake");
		return;
	}
	snprintf(key, sizeof(key), "%s-tls-version", side);
	conn_details_add(d, key, "%s", version);
	snprintf(key, sizeof(key), "%s-tls-cipher", side);
	conn_details_add(d, key, "%s", cipher ? cipher : "none");
	if (sni) {
		snprintf(key, sizeof(key), "%s-tls-sni", side);
		conn_details_add(d, key, "%s", sni);
	}
	snprintf(key, sizeof(key), "%s-tls-ktls", side);
	conn_details_add(d, key, "%s", c->ktls ? "yes" : "no");
}

SSL *xprt_tls_ssl(const struct endpoint *e)
{
	const struct tls_conn *c = e->xprt == &xprt_tls_ops ? e->xprt_ctx : NULL;

	return c ? c->ssl : NULL;
}

const struct xprt_ops xprt_tls_ops = {
	.name = "tls",
	.recv = tls_recv,
	.send = tls_send,
	.can_splice = tls_can_splice,
	.pending = tls_pending,
	.handshake = tls_handshake,
	.shutdown = tls_shutdown,
	.release = tls_release,
	.describe = tls_describe,
};
