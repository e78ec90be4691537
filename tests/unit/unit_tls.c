// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests of the TLS contexts (user/tls.c) and the TLS transport (user/xprt_tls.c): both
 * ends of a non-blocking socketpair driven in one thread, certificates made by the openssl
 * command in a temporary directory. unit_tls() runs them (tests/unit/unit.h's counters).
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "config.h"
#include "unit.h"
#include "tls.h"
#include "xprt_tls.h"

static char dir[] = "/tmp/kfwd-unit-tls-XXXXXX";

/* Rounds of the one-thread pump before a test gives up (each round tries both ends). */
#define PUMP_ROUNDS 200000
#define BULK_BYTES (1 << 20)
/* Reads ask for more than a record, writes offer 70001 bytes. */
#define BULK_READ (64 << 10)
/* Small socket buffers so both ends hit WANT_WRITE/WANT_READ many times per MiB. */
#define SMALL_SOCKBUF 4096
/* Heap an idle server-side TLS connection may keep with SSL_MODE_RELEASE_BUFFERS. */
#define IDLE_SERVER_MAX (24 << 10)
#define IDLE_CONNS 32
#define CLIENT_RESUME_ROUNDS 4
/* 1000 handshakes cut at a random step (a step: one call on each end; 4 finish TLS 1.3). */
#define ABORT_ROUNDS 1000
#define ABORT_WARMUP 50
#define ABORT_MAX_STEPS 5
/* Measured: +0; the margin is for OpenSSL state built lazily on a path not yet taken. */
#define ABORT_HEAP_SLACK (4 << 10)
/* Keeps the blocks handed to OpenSSL aligned for any type. */
#define ALLOC_HDR 16
/* Any uid other than root's, for the key file owner check (the test runs as root). */
#define UNIT_USER_UID 65534

/*
 * OpenSSL's live heap, counted by allocation functions installed before OpenSSL allocates
 * anything (a size header in front of each block). Exact, and unaffected by malloc caches.
 */
static size_t ossl_live;
static bool ossl_counted;

static void *count_malloc(size_t n, const char *file, int line)
{
	unsigned char *p = malloc(n + ALLOC_HDR);

	if (!p)
		return NULL;
	*(size_t *)p = n;
	ossl_live += n;
	return p + ALLOC_HDR;
}

static void count_free(void *q, const char *file, int line)
{
	unsigned char *p = q;

	if (!p)
		return;
	p -= ALLOC_HDR;
	ossl_live -= *(size_t *)p;
	free(p);
}

static void *count_realloc(void *q, size_t n, const char *file, int line)
{
	unsigned char *p = q;
	size_t old;

	if (!p)
		return count_malloc(n, file, line);
	if (n == 0) {
		count_free(q, file, line);
		return NULL;
	}
	p -= ALLOC_HDR;
	old = *(size_t *)p;
	p = realloc(p, n + ALLOC_HDR);
	if (!p)
		return NULL;
	*(size_t *)p = n;
	ossl_live = ossl_live - old + n;
	return p + ALLOC_HDR;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* A throwaway CA in @dir/ca.{pem,key} and a leaf @name.{pem,key} signed by it for @sans. */
static int make_ca(void)
{
	return sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		  "-keyout ca.key -out ca.pem -days 2 -subj /CN=kfwd-unit-ca 2>/dev/null",
		  dir);
}

static int make_leaf(const char *name, const char *sans)
{
	return sh("cd %s && printf 'subjectAltName=%s\\n' > %s.ext && "
		  "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key "
		  "-out %s.csr -subj /CN=%s 2>/dev/null && "
		  "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
		  "-extfile %s.ext -out %s.pem 2>/dev/null && chmod 600 %s.key",
		  dir, sans, name, name, name, name, name, name, name, name);
}

static struct config *load(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct config *load(const char *fmt, ...)
{
	char text[2048], err[512];
	struct config *cfg;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	cfg = config_load_text("unit.conf", text, NULL, 0, err, sizeof(err));
	if (!cfg)
		fprintf(stderr, "  config: %s\n", err);
	return cfg;
}

struct pair {
	struct endpoint srv, cli;
};

static int pair_open(struct pair *p)
{
	int sv[2], small = SMALL_SOCKBUF;

	memset(p, 0, sizeof(*p));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	p->srv.fd = sv[0];
	p->cli.fd = sv[1];
	return 0;
}

static void pair_close(struct pair *p)
{
	if (p->srv.xprt)
		p->srv.xprt->release(&p->srv);
	if (p->cli.xprt)
		p->cli.xprt->release(&p->cli);
	close(p->srv.fd);
	close(p->cli.fd);
}

/* Both handshakes to an end: 1 both done, -1 either failed (*@srv_rc/@cli_rc tell which). */
static int handshake(struct pair *p, int *srv_rc, int *cli_rc)
{
	int s = 0, c = 0;

	for (int i = 0; i < PUMP_ROUNDS && (s == 0 || c == 0); i++) {
		if (s == 0)
			s = p->srv.xprt->handshake(&p->srv);
		if (c == 0)
			c = p->cli.xprt->handshake(&p->cli);
		if (s < 0 || c < 0)
			break;
	}
	if (srv_rc)
		*srv_rc = s;
	if (cli_rc)
		*cli_rc = c;
	return s == 1 && c == 1 ? 1 : -1;
}

static int pair_tls(struct pair *p, struct tls_set *set, size_t listener, struct tls_client *tc,
		    const char *host)
{
	if (pair_open(p) < 0)
		return -1;
	if (xprt_tls_server(&p->srv, set, tls_set_listener(set, listener)) < 0 ||
	    xprt_tls_client(&p->cli, set, tc, host) < 0)
		return -1;
	return 0;
}

static void fill(unsigned char *b, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

/*
 * Move @n bytes each way at once through the TLS transport with the pump the flow uses: send
 * what is buffered, read what is there; EAGAIN with xprt_want is the only way to wait.
 */
static bool bulk_both_ways(struct pair *p, size_t n)
{
	unsigned char *out[2], *in[2];
	size_t sent[2] = { 0 }, got[2] = { 0 }, most_got = 0;
	struct endpoint *ep[2] = { &p->srv, &p->cli };
	bool ok = false, saw_eagain = false;

	for (int i = 0; i < 2; i++) {
		out[i] = malloc(n);
		in[i] = malloc(n);
		if (!out[i] || !in[i])
			goto out;
		fill(out[i], n, (unsigned int)i + 1);
	}
	for (int r = 0; r < PUMP_ROUNDS && (got[0] < n || got[1] < n); r++) {
		for (int i = 0; i < 2; i++) {
			/* Odd sizes, so records and socket buffers never line up. */
			size_t chunk = sent[i] < n ? n - sent[i] : 0;
			ssize_t k;

			if (chunk > 70001)
				chunk = 70001;
			if (chunk) {
				k = ep[i]->xprt->send(ep[i], out[i] + sent[i], chunk, false);
				if (k > 0)
					sent[i] += (size_t)k;
				else if (k < 0 && errno == EAGAIN)
					saw_eagain = true;
				else
					goto out;
			}
			do {
				k = ep[!i]->xprt->recv(ep[!i], in[i] + got[i],
						       n - got[i] > BULK_READ ? BULK_READ :
										n - got[i]);
				if (k > 0) {
					got[i] += (size_t)k;
					most_got = (size_t)k > most_got ? (size_t)k : most_got;
				} else if (k < 0 && errno != EAGAIN)
					goto out;
			} while (k > 0 && got[i] < n && ep[!i]->xprt->pending(ep[!i]));
		}
	}
	ok = got[0] == n && got[1] == n && !memcmp(in[0], out[0], n) && !memcmp(in[1], out[1], n) &&
	     saw_eagain;
	/* A read returns at most one record, whatever the buffer: TLS is read in 16 KiB steps. */
	CHECK(most_got == TLS_RECORD_MAX);
out:
	for (int i = 0; i < 2; i++) {
		free(out[i]);
		free(in[i]);
	}
	return ok;
}

/* The subject CN of the certificate the client was shown. */
static bool peer_cn_is(struct endpoint *cli, const char *cn)
{
	X509 *x = SSL_get1_peer_certificate(xprt_tls_ssl(cli));
	char buf[128] = "";

	if (!x)
		return false;
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
	X509_free(x);
	return !strcmp(buf, cn);
}

static struct config *tls_config(void)
{
	return load("listen 127.0.0.1:1 tls cert=%s/default.pem key=%s/default.key\n"
		    "tls-cert %s/exact.pem %s/exact.key\n"
		    "tls-cert %s/wild.pem %s/wild.key\n"
		    "upstream o 127.0.0.1:2 tls ca=%s/ca.pem\n"
		    "upstream other-ca 127.0.0.1:2 tls\n"
		    "upstream noverify 127.0.0.1:2 tls verify=off\n"
		    "upstream named 127.0.0.1:2 tls sni=exact.test ca=%s/ca.pem\n"
		    "route /https/ url-embedded tls ca=%s/ca.pem\n"
		    "route / o\n",
		    dir, dir, dir, dir, dir, dir, dir, dir, dir);
}

static void test_handshake_sni_bulk(struct tls_set *set)
{
	struct tls_client *o = tls_set_upstream(set, 0);
	struct pair p;
	const char *ver, *cipher, *sni;

	/* Exact SAN name: the tls-cert certificate, verified against the CA and the name. */
	CHECK(pair_tls(&p, set, 0, o, "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(peer_cn_is(&p.cli, "exact"));
	xprt_tls_info(&p.srv, &ver, &cipher, &sni);
	CHECK(ver && !strcmp(ver, "TLSv1.3") && cipher && sni && !strcmp(sni, "exact.test"));
	{
		const unsigned char *alpn;
		unsigned int alpn_len;

		SSL_get0_alpn_selected(xprt_tls_ssl(&p.cli), &alpn, &alpn_len);
		CHECK(alpn_len == 8 && !memcmp(alpn, "http/1.1", 8));
	}
	/* 1 MiB each way at once, byte-exact, through 4 KiB socket buffers. */
	CHECK(bulk_both_ways(&p, BULK_BYTES));
	pair_close(&p);

	/* Wildcard: one label under *.wild.test. */
	CHECK(pair_tls(&p, set, 0, o, "a.wild.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(peer_cn_is(&p.cli, "wild"));
	pair_close(&p);

	/* Two labels do not match the wildcard: the default certificate, which fails the name. */
	CHECK(pair_tls(&p, set, 0, o, "a.b.wild.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == -1);
	pair_close(&p);

	/* An unknown name gets the listener's certificate. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 2), "nobody.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(peer_cn_is(&p.cli, "default"));
	pair_close(&p);

	/* A client offering only h2 gets no ALPN answer (and HTTP/1.1), not a failed handshake. */
	CHECK(pair_tls(&p, set, 0, o, "exact.test") == 0);
	CHECK(SSL_set_alpn_protos(xprt_tls_ssl(&p.cli), (const unsigned char *)"\x02h2", 3) == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	{
		const unsigned char *alpn;
		unsigned int alpn_len = 1;

		SSL_get0_alpn_selected(xprt_tls_ssl(&p.cli), &alpn, &alpn_len);
		CHECK(alpn_len == 0);
	}
	pair_close(&p);

	/* sni= overrides the host the connection is for. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 3), "127.0.0.1") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(peer_cn_is(&p.cli, "exact"));
	pair_close(&p);

	/* By name and prefix: what a session of an older configuration looks up. */
	CHECK(tls_set_upstream_named(set, "o") == o && tls_set_upstream_named(set, "none") == NULL);
	CHECK(tls_set_upstream_named(set, "noverify") == tls_set_upstream(set, 2));
	CHECK(tls_set_route_prefixed(set, "/https/") == tls_set_route(set, 0));
	CHECK(tls_set_route_prefixed(set, "/") == NULL); /* a route without tls */
	/* The url-embedded tls route verifies against its ca= too. */
	CHECK(tls_set_route(set, 0) != NULL && tls_set_route(set, 1) == NULL);
	CHECK(pair_tls(&p, set, 0, tls_set_route(set, 0), "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	pair_close(&p);
}

/* After one end failed: the other end's handshake to its end (1, or -1). */
static int finish_other(struct endpoint *e)
{
	int rc = 0;

	for (int i = 0; i < PUMP_ROUNDS && rc == 0; i++)
		rc = e->xprt->handshake(e);
	return rc;
}

static void test_verify_failures(struct tls_set *set)
{
	uint64_t before = tls_handshake_errors[TLS_ERR_CERT_VERIFY];
	uint64_t alerts = tls_handshake_errors[TLS_ERR_PEER_ALERT];
	struct pair p;
	int s, c;

	/* The system store does not know the throwaway CA; the server hears the client's alert. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 1), "exact.test") == 0);
	CHECK(handshake(&p, &s, &c) == -1 && c == -1);
	CHECK(s == -1 || finish_other(&p.srv) == -1);
	pair_close(&p);
	CHECK(tls_handshake_errors[TLS_ERR_CERT_VERIFY] == before + 1);
	CHECK(tls_handshake_errors[TLS_ERR_PEER_ALERT] == alerts + 1);

	/* The right CA but another name. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 0), "nobody.test") == 0);
	CHECK(handshake(&p, &s, &c) == -1 && c == -1);
	pair_close(&p);
	CHECK(tls_handshake_errors[TLS_ERR_CERT_VERIFY] == before + 2);

	/* verify=off accepts it. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 2), "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	pair_close(&p);
}

/* tls-min-version 1.3 against a client that stops at 1.2: "protocol" here, an alert there. */
static void test_version_mismatch(void)
{
	uint64_t proto = tls_handshake_errors[TLS_ERR_PROTOCOL];
	uint64_t alerts = tls_handshake_errors[TLS_ERR_PEER_ALERT];
	struct config *cfg = load("listen 127.0.0.1:1 tls cert=%s/exact.pem key=%s/exact.key\n"
				  "tls-min-version 1.3\n"
				  "upstream o 127.0.0.1:2 tls verify=off\nroute / o\n",
				  dir, dir);
	char err[512];
	struct tls_set *set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	struct pair p;
	int s, c;

	CHECK(set != NULL);
	if (set && pair_tls(&p, set, 0, tls_set_upstream(set, 0), "exact.test") == 0) {
		CHECK(SSL_set_min_proto_version(xprt_tls_ssl(&p.cli), TLS1_2_VERSION) == 1 &&
		      SSL_set_max_proto_version(xprt_tls_ssl(&p.cli), TLS1_2_VERSION) == 1);
		CHECK(handshake(&p, &s, &c) == -1 && s == -1);
		CHECK(c == -1 || finish_other(&p.cli) == -1);
		pair_close(&p);
	}
	CHECK(tls_handshake_errors[TLS_ERR_PROTOCOL] == proto + 1);
	CHECK(tls_handshake_errors[TLS_ERR_PEER_ALERT] == alerts + 1);
	tls_set_put(set);
	config_free(cfg);
}

/* A small exchange each way on an established pair: true when both arrived intact. */
static bool ping(struct pair *p)
{
	char buf[16];

	return p->cli.xprt->send(&p->cli, "ping", 4, false) == 4 &&
	       p->srv.xprt->recv(&p->srv, buf, sizeof(buf)) == 4 && !memcmp(buf, "ping", 4) &&
	       p->srv.xprt->send(&p->srv, "pong", 4, false) == 4 &&
	       p->cli.xprt->recv(&p->cli, buf, sizeof(buf)) == 4 && !memcmp(buf, "pong", 4);
}

/* close_notify both ways: true when both ends saw the other's. */
static bool close_both(struct pair *p)
{
	int s = 0, c = 0;

	for (int i = 0; i < PUMP_ROUNDS && (s == 0 || c == 0); i++) {
		if (s == 0)
			s = p->srv.xprt->shutdown(&p->srv);
		if (c == 0)
			c = p->cli.xprt->shutdown(&p->cli);
	}
	return s == 1 && c == 1;
}

static void test_close_notify(struct tls_set *set)
{
	struct pair p;
	char buf[64];
	int s = 0, c = 0;

	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 0), "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(p.srv.xprt->send(&p.srv, "bye", 3, false) == 3);
	/* The server closes; the client reads the data, then EOF (0), then closes too. */
	s = p.srv.xprt->shutdown(&p.srv);
	CHECK(s == 0 && p.srv.xprt_want == EPOLLIN);
	CHECK(p.cli.xprt->recv(&p.cli, buf, sizeof(buf)) == 3 && !memcmp(buf, "bye", 3));
	CHECK(p.cli.xprt->recv(&p.cli, buf, sizeof(buf)) == 0);
	for (int i = 0; i < 100 && (s == 0 || c == 0); i++) {
		if (c == 0)
			c = p.cli.xprt->shutdown(&p.cli);
		if (s == 0)
			s = p.srv.xprt->shutdown(&p.srv);
	}
	CHECK(s == 1 && c == 1);
	pair_close(&p);

	/* A peer that vanishes without close_notify is an error, never a clean EOF. */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 0), "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	shutdown(p.srv.fd, SHUT_WR);
	errno = 0;
	CHECK(p.cli.xprt->recv(&p.cli, buf, sizeof(buf)) == -1 && errno == ECONNRESET);
	pair_close(&p);
}

/* A handshake offering @sess: 1 resumed, 0 full handshake, -1 failed. Closed cleanly. */
static int resumed(struct tls_set *set, struct tls_client *o, SSL_SESSION *sess)
{
	struct pair p;
	int rc = -1;

	if (pair_tls(&p, set, 0, o, "exact.test") == 0 &&
	    SSL_set_session(xprt_tls_ssl(&p.cli), sess) == 1 && handshake(&p, NULL, NULL) == 1)
		rc = SSL_session_reused(xprt_tls_ssl(&p.cli)) == 1;
	if (rc >= 0 && !close_both(&p))
		rc = -1;
	pair_close(&p);
	return rc;
}

/*
 * Origination resumes by itself: a connection files its ticket under the server name, the next
 * connection to that name takes it (once); another name, or another upstream, never sees it.
 */
static void test_client_resumes(struct tls_set *set)
{
	struct tls_client *o = tls_set_upstream(set, 0);
	struct pair p;

	for (int i = 0; i < CLIENT_RESUME_ROUNDS; i++) {
		CHECK(pair_tls(&p, set, 0, o, "exact.test") == 0);
		CHECK(handshake(&p, NULL, NULL) == 1 && ping(&p));
		/* The first may do a full handshake; every later one resumes. */
		if (i > 0)
			CHECK(SSL_session_reused(xprt_tls_ssl(&p.cli)) == 1);
		/* Pooled origin connections end without close_notify: the ticket stays good. */
		pair_close(&p);
	}
	CHECK(pair_tls(&p, set, 0, o, "exact2.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(SSL_session_reused(xprt_tls_ssl(&p.cli)) == 0);
	pair_close(&p);
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 2), "exact.test") == 0);
	CHECK(handshake(&p, NULL, NULL) == 1);
	CHECK(SSL_session_reused(xprt_tls_ssl(&p.cli)) == 0);
	pair_close(&p);
}

/* A ticket of the current key, unused: a fresh connection's, taken out of the origin cache. */
static SSL_SESSION *fresh_ticket(struct tls_set *set, struct tls_client *o)
{
	SSL_SESSION *sess = NULL;
	struct pair p;
	char buf[16];

	/* TLS 1.3 tickets arrive after the handshake: the client reads to take them. */
	if (pair_tls(&p, set, 0, o, "exact.test") == 0 && handshake(&p, NULL, NULL) == 1 &&
	    p.srv.xprt->send(&p.srv, "x", 1, false) == 1 &&
	    p.cli.xprt->recv(&p.cli, buf, sizeof(buf)) == 1)
		sess = tls_client_take_session(o, "exact.test");
	pair_close(&p);
	return sess;
}

/* Server tickets: a ticket resumes once; the key before the current one still decrypts. */
static void test_resumption(struct tls_set *set)
{
	struct tls_client *o = tls_set_upstream(set, 0);
	SSL_SESSION *t[3];

	for (int i = 0; i < 3; i++) {
		t[i] = fresh_ticket(set, o);
		CHECK(t[i] && SSL_SESSION_is_resumable(t[i]));
	}
	CHECK(resumed(set, o, t[0]) == 1);
	/* Used: a TLS 1.3 client does not offer it again (RFC 8446 C.4). */
	CHECK(!SSL_SESSION_is_resumable(t[0]));
	tls_ticket_rotate();
	CHECK(resumed(set, o, t[1]) == 1);
	tls_ticket_rotate();
	tls_ticket_rotate();
	CHECK(resumed(set, o, t[2]) == 0);
	for (int i = 0; i < 3; i++)
		SSL_SESSION_free(t[i]);
}

static void test_plain_http_and_abort(struct tls_set *set)
{
	uint64_t plain = tls_handshake_errors[TLS_ERR_PLAIN_HTTP];
	uint64_t aborted = tls_handshake_errors[TLS_ERR_ABORTED];
	const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct pair p;

	CHECK(pair_open(&p) == 0);
	CHECK(xprt_tls_server(&p.srv, set, tls_set_listener(set, 0)) == 0);
	CHECK(p.srv.xprt->handshake(&p.srv) == 0 && p.srv.xprt_want == EPOLLIN);
	CHECK(write(p.cli.fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1));
	CHECK(p.srv.xprt->handshake(&p.srv) == -1);
	CHECK(xprt_tls_plain_http(&p.srv));
	CHECK(tls_handshake_errors[TLS_ERR_PLAIN_HTTP] == plain + 1);
	pair_close(&p);

	/* A client gone mid-handshake (after its ClientHello) is "aborted". */
	CHECK(pair_tls(&p, set, 0, tls_set_upstream(set, 0), "exact.test") == 0);
	CHECK(p.cli.xprt->handshake(&p.cli) == 0);
	CHECK(p.srv.xprt->handshake(&p.srv) == 0);
	shutdown(p.cli.fd, SHUT_RDWR);
	CHECK(p.srv.xprt->handshake(&p.srv) == -1);
	CHECK(!xprt_tls_plain_http(&p.srv));
	CHECK(tls_handshake_errors[TLS_ERR_ABORTED] == aborted + 1);
	pair_close(&p);
}

static void test_config_and_files(void)
{
	static const struct {
		const char *text;
		const char *want;
	} bad[] = {
		{ "listen 127.0.0.1:1 tls cert=a.pem\nroute /http/ url-embedded\n",
		  ":1: listen 127.0.0.1:1 tls needs cert=FILE and key=FILE" },
		{ "listen 127.0.0.1:1 tls cert=a key=b bogus=1\nroute /http/ url-embedded\n",
		  ":1: unknown listen tls option 'bogus=1'" },
		{ "listen 127.0.0.1:1\nupstream o 127.0.0.1:2 verify=off\nroute / o\n",
		  ":2: bad upstream server 'verify=off'" },
		{ "listen 127.0.0.1:1\nupstream o 127.0.0.1:2 tls verify=maybe\nroute / o\n",
		  ":2: usage: verify=on|off" },
		{ "listen 127.0.0.1:1\nupstream o tls\nroute / o\n", ":2: usage: upstream" },
		{ "listen 127.0.0.1:1\nroute /https/ url-embedded tls sni=x\n",
		  ":2: sni= does not" },
		{ "listen 127.0.0.1:1\nroute /https/ url-embedded ca=x\n",
		  ":2: 'ca=x' needs 'tls'" },
		{ "listen 127.0.0.1:1\nroute /http/ url-embedded\ntls-min-version 1.1\n",
		  ":3: usage: tls-min-version 1.2|1.3" },
		{ "listen 127.0.0.1:1\nroute /http/ url-embedded\ntls-cert a.pem\n",
		  ":3: usage: tls-cert" },
	};
	char err[512], path[300];
	struct config *cfg;
	struct tls_set *set;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg = config_load_text("unit.conf", bad[i].text, NULL, 0, err, sizeof(err));
		CHECK(!cfg && strstr(err, bad[i].want));
		if (cfg || !strstr(err, bad[i].want))
			fprintf(stderr, "  case %zu: '%s'\n", i, cfg ? "(accepted)" : err);
		config_free(cfg);
	}

	/* Files are checked when the contexts are built: FILE:LINE and OpenSSL's reason. */
	cfg = load("listen 127.0.0.1:1\nroute /http/ url-embedded\n"
		   "listen 127.0.0.1:3 tls cert=%s/missing.pem key=%s/default.key\n",
		   dir, dir);
	set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	CHECK(cfg && !set && strstr(err, "unit.conf:3: certificate ") &&
	      strstr(err, "missing.pem: ") && strstr(err, "No such file"));
	config_free(cfg);

	cfg = load("listen 127.0.0.1:1 tls cert=%s/default.pem key=%s/exact.key\n"
		   "route /http/ url-embedded\n",
		   dir, dir);
	set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	CHECK(cfg && !set && strstr(err, "unit.conf:1: key ") && strstr(err, "values mismatch"));
	config_free(cfg);

	cfg = load("listen 127.0.0.1:1\nroute /http/ url-embedded\ntls-ciphers NOTACIPHER\n"
		   "listen 127.0.0.1:3 tls cert=%s/default.pem key=%s/default.key\n",
		   dir, dir);
	set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	CHECK(cfg && !set && strstr(err, "unit.conf:3: tls-ciphers NOTACIPHER: no cipher match"));
	config_free(cfg);

	cfg = load("listen 127.0.0.1:1\nupstream o 127.0.0.1:2 tls ca=%s/default.key\n"
		   "route / o\n",
		   dir);
	set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	CHECK(cfg && !set && strstr(err, "unit.conf:2: ca= "));
	config_free(cfg);

	/* Key file modes: 0600 root-owned is private; group- or world-readable is exposed. */
	snprintf(path, sizeof(path), "%s/default.key", dir);
	CHECK(chmod(path, 0600) == 0 && tls_key_file_exposed(path, 0) == (getuid() != 0));
	CHECK(chmod(path, 0640) == 0 && tls_key_file_exposed(path, 0) == 1);
	CHECK(chmod(path, 0600) == 0);
	/* Owned by the user kfwd runs as (who reads it at reload): private too. */
	CHECK(chown(path, UNIT_USER_UID, -1) == 0 && tls_key_file_exposed(path, 0) == 1 &&
	      tls_key_file_exposed(path, UNIT_USER_UID) == 0);
	CHECK(chown(path, getuid(), -1) == 0);
	snprintf(path, sizeof(path), "%s/nothing.key", dir);
	CHECK(tls_key_file_exposed(path, 0) == -1);
}

static void test_reload(void)
{
	struct config *a = tls_config(), *b, *broken;
	struct tls_set *old;
	struct pair p1, p2;
	char err[512];

	b = load("listen 127.0.0.1:1 tls cert=%s/exact.pem key=%s/exact.key\n"
		 "upstream o 127.0.0.1:2 tls ca=%s/ca.pem\nroute / o\n",
		 dir, dir, dir);
	broken = load("listen 127.0.0.1:1 tls cert=%s/gone.pem key=%s/exact.key\n"
		      "route /http/ url-embedded\n",
		      dir, dir);
	CHECK(a && b && broken && tls_apply(a, err, sizeof(err)) == 0);
	if (!a || !b || !broken || !tls_current())
		goto out;
	old = tls_current();
	CHECK(pair_tls(&p1, old, 0, tls_set_upstream(old, 0), "default.test") == 0);
	CHECK(handshake(&p1, NULL, NULL) == 1 && peer_cn_is(&p1.cli, "default"));

	/* A failed reload keeps the old set serving. */
	CHECK(tls_apply(broken, err, sizeof(err)) == -1 && tls_current() == old);
	CHECK(strstr(err, "unit.conf:1: certificate ") != NULL);

	/* A good one swaps: new connections get the new certificate... */
	CHECK(tls_apply(b, err, sizeof(err)) == 0 && tls_current() != old);
	CHECK(pair_tls(&p2, tls_current(), 0, tls_set_upstream(tls_current(), 0), "exact.test") ==
	      0);
	CHECK(handshake(&p2, NULL, NULL) == 1 && peer_cn_is(&p2.cli, "exact"));
	CHECK(ping(&p2));
	pair_close(&p2);
	/* ...while the connection made before keeps working on the set it holds. */
	CHECK(ping(&p1));
	CHECK(close_both(&p1));
	pair_close(&p1);
	CHECK(tls_apply(broken, err, sizeof(err)) == -1);
out:
	config_free(a);
	config_free(b);
	config_free(broken);
}

/*
 * Heap a server end holds per idle keep-alive TLS connection (after one request and response;
 * the client ends freed before measuring), with OpenSSL's buffers released when idle
 * (@release) or kept.
 */
static size_t idle_bytes(struct tls_set *set, size_t n, bool release)
{
	struct pair *p = calloc(n, sizeof(*p));
	size_t before, after, ok = 0;

	if (!p)
		return 0;
	before = ossl_live;
	for (size_t i = 0; i < n; i++) {
		if (pair_tls(&p[i], set, 0, tls_set_upstream(set, 0), "exact.test") < 0)
			break;
		if (!release)
			SSL_clear_mode(xprt_tls_ssl(&p[i].srv), SSL_MODE_RELEASE_BUFFERS);
		ok += handshake(&p[i], NULL, NULL) == 1 && ping(&p[i]);
		p[i].cli.xprt->release(&p[i].cli);
		p[i].cli.xprt = NULL;
	}
	after = ossl_live;
	for (size_t i = 0; i < n; i++)
		pair_close(&p[i]);
	free(p);
	return ok == n && after > before ? (after - before) / n : 0;
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/*
 * One handshake cut after a random number of steps by closing the client's socket (or run to
 * the end): the server side must fail or finish, never hang, and free everything.
 */
static void aborted_handshake(struct tls_set *set, unsigned int steps)
{
	struct pair p;
	int s = 0, c = 0;

	if (pair_tls(&p, set, 0, tls_set_upstream(set, 0), "exact.test") < 0) {
		failed++;
		return;
	}
	for (unsigned int i = 0; i < steps && (s == 0 || c == 0) && s >= 0 && c >= 0; i++) {
		if (c == 0)
			c = p.cli.xprt->handshake(&p.cli);
		if (s == 0)
			s = p.srv.xprt->handshake(&p.srv);
	}
	shutdown(p.cli.fd, SHUT_RDWR);
	for (int i = 0; i < PUMP_ROUNDS && s == 0; i++)
		s = p.srv.xprt->handshake(&p.srv);
	if (s == 0)
		failed++;
	pair_close(&p);
}

static void test_many_aborted_handshakes(struct tls_set *set)
{
	uint64_t aborted = tls_handshake_errors[TLS_ERR_ABORTED];
	size_t heap_before, heap_after;
	int fds_before = count_fds();

	if (!ossl_counted) {
		printf("tls: OpenSSL's heap not counted (it allocated before main)\n");
		return;
	}
	unsigned int seed = 1;

	/* Warm OpenSSL's lazily built state (error strings, method tables) at every step. */
	for (int i = 0; i < ABORT_WARMUP; i++)
		aborted_handshake(set, (unsigned int)i % ABORT_MAX_STEPS);
	heap_before = ossl_live;
	for (int i = 0; i < ABORT_ROUNDS; i++) {
		seed = seed * 1103515245u + 12345u;
		aborted_handshake(set, (seed >> 16) % ABORT_MAX_STEPS);
	}
	heap_after = ossl_live;
	printf("tls: %d aborted handshakes: OpenSSL heap %+zd bytes, fds %+d\n", ABORT_ROUNDS,
	       (ssize_t)(heap_after - heap_before), count_fds() - fds_before);
	CHECK(count_fds() == fds_before);
	CHECK(tls_handshake_errors[TLS_ERR_ABORTED] > aborted);
	CHECK(heap_after <= heap_before + ABORT_HEAP_SLACK);
	if (heap_after > heap_before + ABORT_HEAP_SLACK)
		fprintf(stderr, "  heap grew by %zu bytes\n", heap_after - heap_before);
}

static void test_idle_memory(struct tls_set *set)
{
	size_t released, kept;

	if (!ossl_counted) {
		printf("tls: OpenSSL's heap not counted (it allocated before main)\n");
		return;
	}
	released = idle_bytes(set, IDLE_CONNS, true);
	kept = idle_bytes(set, IDLE_CONNS, false);
	printf("tls: heap per idle TLS server connection: %zu bytes (buffers kept: %zu)\n",
	       released, kept);
	/* Measured on OpenSSL 3.0.22: 13.6 KiB released, 46 KiB kept. */
	CHECK(released > 0 && released < IDLE_SERVER_MAX && released * 2 < kept);
}

static void test_ktls_probe(void)
{
	char why[160] = "";
	int rc = tls_ktls_probe(why, sizeof(why));

	/* Either answer is valid; "no" always says why. This kernel (6.18, no CONFIG_TLS): no. */
	CHECK(rc == 1 || (rc == 0 && strstr(why, "TCP_ULP")));
	CHECK(tls_ktls_available() == (rc == 1));
}

/* Before main: OpenSSL takes its allocation functions only before its first allocation. */
__attribute__((constructor)) static void count_openssl_heap(void)
{
	ossl_counted = CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) == 1;
}

void unit_tls(void)
{
	struct config *cfg;
	struct tls_set *set;
	char err[512];

	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir) || make_ca() || make_leaf("default", "DNS:default.test") ||
	    make_leaf("exact", "DNS:exact.test,DNS:exact2.test") ||
	    make_leaf("wild", "DNS:*.wild.test")) {
		fprintf(stderr, "FAIL unit_tls: cannot make certificates in %s\n", dir);
		failed++;
		return;
	}
	CHECK(tls_init() == 0);
	test_ktls_probe();
	test_config_and_files();
	cfg = tls_config();
	set = cfg ? tls_set_build(cfg, err, sizeof(err)) : NULL;
	CHECK(set != NULL);
	if (!set)
		fprintf(stderr, "  tls_set_build: %s\n", err);
	if (set) {
		test_handshake_sni_bulk(set);
		test_verify_failures(set);
		test_version_mismatch();
		test_close_notify(set);
		test_resumption(set);
		test_client_resumes(set);
		test_plain_http_and_abort(set);
		test_idle_memory(set);
		test_many_aborted_handshakes(set);
	}
	test_reload();
	tls_set_put(set);
	config_free(cfg);
	tls_fini();
	sh("rm -rf %s", dir);
}
