// SPDX-License-Identifier: GPL-2.0
/*
 * TLS contexts (OpenSSL 3): the server contexts of TLS listeners with SNI certificate choice,
 * the client contexts of TLS origins, session ticket keys kept and rotated in memory, the kTLS
 * probe, and the handshake error counters by reason class. Connections are in xprt_tls.c.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

/* RFC 7301 wire format: one protocol, length-prefixed. */
static const unsigned char alpn_http11[] = "\x08http/1.1";
#define ALPN_HTTP11_LEN (sizeof(alpn_http11) - 1)

/*
 * Ticket keys: a new key every TICKET_KEY_ROTATE_S; tickets of the previous key still resume
 * (and get a fresh ticket), so a ticket lives at most two periods. Session lifetime matches.
 */
#define TICKET_KEY_ROTATE_S 3600
#define TICKET_NAME_LEN 16
#define TICKET_AES_LEN 32
#define TICKET_HMAC_LEN 32
#define TICKET_IV_LEN 16
#define TICKET_SESSION_TIMEOUT_S (2 * TICKET_KEY_ROTATE_S)
#define SESSION_ID_CONTEXT "kfwd"
/* A DNS name is at most 253 characters. */
#define SNI_NAME_MAX 256

uint64_t tls_handshake_errors[TLS_ERR_COUNT];

static const char *const err_class_names[TLS_ERR_COUNT] = {
	[TLS_ERR_PLAIN_HTTP] = "plain_http",
	[TLS_ERR_PROTOCOL] = "protocol",
	[TLS_ERR_CERT_VERIFY] = "cert_verify",
	[TLS_ERR_PEER_ALERT] = "peer_alert",
	[TLS_ERR_ABORTED] = "aborted",
	[TLS_ERR_TIMEOUT] = "timeout",
	[TLS_ERR_OTHER] = "other",
};

struct ticket_key {
	unsigned char name[TICKET_NAME_LEN];
	unsigned char aes[TICKET_AES_LEN];
	unsigned char hmac[TICKET_HMAC_LEN];
	time_t created;
	bool valid;
};

/* [0] encrypts new tickets; [1] is the one before it, still accepted. */
static struct ticket_key ticket_keys[2];
static bool ktls_ok;
static struct tls_set *current_set;

struct sni_entry {
	char *name; /* a SAN dNSName: "host.example" or "*.example" */
	SSL_CTX *ctx;
};

struct tls_set {
	unsigned int refcount;
	SSL_CTX **listeners; /* [n_listens] */
	size_t n_listeners;
	SSL_CTX **certs; /* tls-cert contexts, [n_certs] */
	size_t n_certs;
	struct sni_entry *sni; /* names of the tls-cert certificates, in config order */
	size_t n_sni;
	struct tls_client *upstreams; /* [n_upstreams]; .ctx NULL without tls */
	size_t n_upstreams;
	struct tls_client *routes; /* [n_routes] */
	size_t n_routes;
};

const char *tls_err_class_name(enum tls_err_class c)
{
	return c < TLS_ERR_COUNT ? err_class_names[c] : "?";
}

void tls_count_handshake_error(enum tls_err_class c)
{
	if (c < TLS_ERR_COUNT)
		tls_handshake_errors[c]++;
}

static time_t now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static int ticket_key_new(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return -1;
	k->created = now_s();
	k->valid = true;
	return 0;
}

void tls_ticket_rotate(void)
{
	struct ticket_key next;

	/* Without fresh randomness the current key stays: tickets keep working. */
	if (ticket_key_new(&next) < 0) {
		log_warn("TLS ticket key rotation: no random bytes; keeping the current key");
		return;
	}
	ticket_keys[1] = ticket_keys[0];
	ticket_keys[0] = next;
	OPENSSL_cleanse(&next, sizeof(next));
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, struct ticket_key *k)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac, sizeof(k->hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	return EVP_MAC_CTX_set_params(hctx, params);
}

/*
 * OpenSSL's ticket key callback: @enc 1 encrypts a new ticket with the current key; 0 looks
 * the ticket's key up: 2 found (resume, and issue a new ticket), 0 unknown (full handshake),
 * -1 error. Always 2: a TLS 1.3 client uses a ticket once (RFC 8446 C.4), and OpenSSL 3.0
 * sends none after a resumption that does not ask for one, so the next connection would pay a
 * full handshake.
 */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_key *k = NULL;

	if (enc) {
		if (now_s() - ticket_keys[0].created >= TICKET_KEY_ROTATE_S)
			tls_ticket_rotate();
		k = &ticket_keys[0];
		if (!k->valid || RAND_bytes(iv, TICKET_IV_LEN) != 1)
			return -1;
		memcpy(key_name, k->name, TICKET_NAME_LEN);
		if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 ||
		    ticket_mac_init(hctx, k) != 1)
			return -1;
		return 1;
	}
	for (int i = 0; i < 2; i++)
		if (ticket_keys[i].valid && !memcmp(key_name, ticket_keys[i].name, TICKET_NAME_LEN))
			k = &ticket_keys[i];
	if (!k)
		return 0;
	if (ticket_mac_init(hctx, k) != 1 ||
	    EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
		return -1;
	return 2;
}

int tls_ktls_probe(char *why, size_t whylen)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int lfd, cfd = -1, afd = -1, rc = -1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		snprintf(why, whylen, "probe socket: %s", strerror(errno));
		return -1;
	}
	/* TCP_ULP needs an established TCP socket: a loopback connection to ourselves. */
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) < 0) {
		snprintf(why, whylen, "probe listen: %s", strerror(errno));
		goto out;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		snprintf(why, whylen, "probe connect: %s", strerror(errno));
		goto out;
	}
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (afd < 0) {
		snprintf(why, whylen, "probe accept: %s", strerror(errno));
		goto out;
	}
	if (setsockopt(cfd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
		rc = 1;
	} else {
		/* ENOENT: the kernel has no "tls" ULP (CONFIG_TLS off, module absent). */
		snprintf(why, whylen, "setsockopt TCP_ULP \"tls\": %s%s", strerror(errno),
			 errno == ENOENT ? ", kernel without CONFIG_TLS" : "");
		rc = 0;
	}
out:
	if (afd >= 0)
		close(afd);
	if (cfd >= 0)
		close(cfd);
	close(lfd);
	return rc;
}

bool tls_ktls_available(void)
{
	return ktls_ok;
}

int tls_init(void)
{
	static bool done;
	char why[160];
	int rc;

	if (done)
		return 0;
	if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS,
			     NULL) != 1) {
		log_err("OpenSSL initialisation failed");
		return -1;
	}
	if (!ticket_keys[0].valid && ticket_key_new(&ticket_keys[0]) < 0) {
		log_err("TLS ticket key: no random bytes");
		return -1;
	}
	rc = tls_ktls_probe(why, sizeof(why));
#ifdef OPENSSL_NO_KTLS
	if (rc == 1) {
		snprintf(why, sizeof(why), "OpenSSL built without kTLS");
		rc = 0;
	}
#endif
	ktls_ok = rc == 1;
	if (ktls_ok)
		log_info("kTLS available: TLS sockets splice once the handshake is done");
	else
		log_info("kTLS unavailable (%s): TLS uses the copy path", why);
	done = true;
	return 0;
}

void tls_fini(void)
{
	tls_set_put(current_set);
	current_set = NULL;
	OPENSSL_cleanse(ticket_keys, sizeof(ticket_keys));
}

/*
 * OpenSSL's reason for the oldest queued error (the cause; later entries only say where it
 * surfaced), @fallback without one; clears the queue.
 */
static void openssl_reason(char *out, size_t outlen, const char *fallback)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	if (e && ERR_SYSTEM_ERROR(e))
		reason = strerror(ERR_GET_REASON(e));
	snprintf(out, outlen, "%s", reason ? reason : fallback);
	ERR_clear_error();
}

static int set_fail(char *err, size_t errlen, const struct config *cfg, int line, const char *what,
		    const char *arg)
{
	char reason[160];

	openssl_reason(reason, sizeof(reason), "failed");
	snprintf(err, errlen, "%s:%d: %s%s%s: %s", cfg->path ? cfg->path : "<embedded>", line, what,
		 arg ? " " : "", arg ? arg : "", reason);
	return -1;
}

int tls_key_file_exposed(const char *path, uid_t owner)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	return (st.st_mode & (S_IRGRP | S_IROTH)) ||
	       (st.st_uid != 0 && st.st_uid != owner && (st.st_mode & S_IRUSR));
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *sel;

	/* A client offering only other protocols (h2) gets no ALPN answer and HTTP/1.1. */
	if (SSL_select_next_proto(&sel, outlen, alpn_http11, ALPN_HTTP11_LEN, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static bool sni_match(const char *pattern, const char *name)
{
	const char *dot;

	if (!strcasecmp(pattern, name))
		return true;
	/* "*.example" covers exactly one label before ".example" (RFC 6125 6.4.3). */
	if (strncmp(pattern, "*.", 2))
		return false;
	dot = strchr(name, '.');
	return dot && dot != name && !strcasecmp(dot + 1, pattern + 2);
}

/* SNI: an exact name of a tls-cert certificate first, then a wildcard, else the default. */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_set *set = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	SSL_CTX *pick = NULL;

	if (!name || !set)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < set->n_sni && !pick; i++)
		if (set->sni[i].name[0] != '*' && sni_match(set->sni[i].name, name))
			pick = set->sni[i].ctx;
	for (size_t i = 0; i < set->n_sni && !pick; i++)
		if (set->sni[i].name[0] == '*' && sni_match(set->sni[i].name, name))
			pick = set->sni[i].ctx;
	if (pick && !SSL_set_SSL_CTX(ssl, pick))
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

/* Versions, ciphers and modes every context shares; -1 with @err set. */
static int ctx_common(SSL_CTX *ctx, const struct config *cfg, char *err, size_t errlen)
{
	int min = cfg->tls_min_version == TLS_VERSION_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
	uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;

	if (ktls_ok)
		opts |= SSL_OP_ENABLE_KTLS;
	SSL_CTX_set_options(ctx, opts);
	/*
	 * Partial writes: SSL_write returns after each record, like write(2) on a socket, and the
	 * copy buffer may move between retries. Release buffers: an idle connection keeps no
	 * OpenSSL read/write buffer (about 34 KiB each way otherwise).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_min_proto_version(ctx, min) != 1)
		return set_fail(err, errlen, cfg, 0, "tls-min-version", NULL);
	if (cfg->tls_ciphers && SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1)
		return set_fail(err, errlen, cfg, cfg->tls_ciphers_line, "tls-ciphers",
				cfg->tls_ciphers);
	if (cfg->tls_ciphersuites && SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1)
		return set_fail(err, errlen, cfg, cfg->tls_ciphersuites_line, "tls-ciphersuites",
				cfg->tls_ciphersuites);
	return 0;
}

static void warn_exposed_key(const struct config *cfg, int line, const char *key)
{
	if (tls_key_file_exposed(key, cfg->has_user ? cfg->run_uid : 0) == 1)
		log_warn(
			"%s:%d: key %s is readable by others than root%s (chmod 600, owner root%s)",
			cfg->path ? cfg->path : "<embedded>", line, key,
			cfg->has_user ? " and user" : "", cfg->has_user ? " or user" : "");
}

/* A server context for @cert (PEM, then its chain) and @key, or NULL with @err set. */
static SSL_CTX *server_ctx_new(struct tls_set *set, const struct config *cfg, const char *cert,
			       const char *key, int line, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		set_fail(err, errlen, cfg, line, "TLS context", NULL);
		return NULL;
	}
	if (ctx_common(ctx, cfg, err, errlen) < 0)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		set_fail(err, errlen, cfg, line, "certificate", cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		set_fail(err, errlen, cfg, line, "key", key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		set_fail(err, errlen, cfg, line, "key", key);
		goto fail;
	}
	warn_exposed_key(cfg, line, key);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	/* OpenSSL reads the ticket callback of the context the handshake started on. */
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, set);
	/* Stateless tickets only: no server-side session cache to grow. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, TICKET_SESSION_TIMEOUT_S);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
				       sizeof(SESSION_ID_CONTEXT) - 1);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The dNSName entries of @ctx's certificate's subjectAltName into set->sni. */
static int add_sni_names(struct tls_set *set, SSL_CTX *ctx, const struct config *cfg, int line,
			 const char *cert, char *err, size_t errlen)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
	size_t before = set->n_sni;
	int rc = 0;

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const unsigned char *data;
		struct sni_entry *grown;
		int len;

		if (gn->type != GEN_DNS)
			continue;
		data = ASN1_STRING_get0_data(gn->d.dNSName);
		len = ASN1_STRING_length(gn->d.dNSName);
		if (len <= 0 || len >= SNI_NAME_MAX || memchr(data, '\0', (size_t)len))
			continue;
		grown = realloc(set->sni, (set->n_sni + 1) * sizeof(*set->sni));
		if (!grown) {
			rc = -1;
			break;
		}
		set->sni = grown;
		set->sni[set->n_sni].name = strndup((const char *)data, (size_t)len);
		if (!set->sni[set->n_sni].name) {
			rc = -1;
			break;
		}
		set->sni[set->n_sni++].ctx = ctx;
	}
	GENERAL_NAMES_free(names);
	if (rc < 0) {
		snprintf(err, errlen, "%s:%d: out of memory", cfg->path ? cfg->path : "<embedded>",
			 line);
		return -1;
	}
	if (set->n_sni == before) {
		snprintf(err, errlen, "%s:%d: certificate %s has no DNS name in subjectAltName",
			 cfg->path ? cfg->path : "<embedded>", line, cert);
		return -1;
	}
	return 0;
}

static void client_session_clear(struct tls_client_session *cs)
{
	free(cs->name);
	SSL_SESSION_free(cs->sess);
	cs->name = NULL;
	cs->sess = NULL;
}

static struct tls_client *client_find(struct tls_client *c, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (c[i].ctx && !strcmp(c[i].key, key))
			return &c[i];
	return NULL;
}

struct tls_client *tls_set_upstream_named(const struct tls_set *set, const char *name)
{
	return set ? client_find(set->upstreams, set->n_upstreams, name) : NULL;
}

struct tls_client *tls_set_route_prefixed(const struct tls_set *set, const char *prefix)
{
	return set ? client_find(set->routes, set->n_routes, prefix) : NULL;
}

SSL_SESSION *tls_client_take_session(struct tls_client *c, const char *name)
{
	for (unsigned int i = 0; i < TLS_CLIENT_SESSIONS; i++) {
		struct tls_client_session *cs = &c->sessions[i];
		SSL_SESSION *sess = cs->sess;

		if (!cs->name || strcmp(cs->name, name))
			continue;
		/* A TLS 1.3 ticket is used once (RFC 8446 C.4); the next one replaces it. */
		cs->sess = NULL;
		client_session_clear(cs);
		return sess;
	}
	return NULL;
}

/*
 * A ticket from an origin (OpenSSL's new-session callback; the SSL's app data is the name it
 * was made for): kept, replacing the name's earlier one. 1: the reference is ours now.
 */
static int client_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_client *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const char *name = SSL_get_app_data(ssl);
	struct tls_client_session *cs = NULL;
	char *key;

	if (!c || !name)
		return 0;
	for (unsigned int i = 0; i < TLS_CLIENT_SESSIONS && !cs; i++)
		if (c->sessions[i].name && !strcmp(c->sessions[i].name, name))
			cs = &c->sessions[i];
	if (!cs)
		cs = &c->sessions[c->next_slot++ % TLS_CLIENT_SESSIONS];
	key = strdup(name);
	if (!key)
		return 0;
	client_session_clear(cs);
	cs->name = key;
	cs->sess = sess;
	return 1;
}

/* The client context of @o into @c (untouched without tls); -1 with @err set. */
static int client_new(struct tls_client *c, const struct tls_origin *o, const char *key,
		      const struct config *cfg, char *err, size_t errlen)
{
	if (!o->on)
		return 0;
	c->key = strdup(key);
	if (!c->key) {
		snprintf(err, errlen, "%s:%d: out of memory", cfg->path ? cfg->path : "<embedded>",
			 o->line);
		return -1;
	}
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx)
		return set_fail(err, errlen, cfg, o->line, "TLS context", NULL);
	c->verify = o->verify;
	if (o->sni && !(c->sni = strdup(o->sni))) {
		snprintf(err, errlen, "%s:%d: out of memory", cfg->path ? cfg->path : "<embedded>",
			 o->line);
		return -1;
	}
	if (ctx_common(c->ctx, cfg, err, errlen) < 0)
		return -1;
	/* SSL_CTX_set_alpn_protos returns 0 on success. */
	if (SSL_CTX_set_alpn_protos(c->ctx, alpn_http11, ALPN_HTTP11_LEN) != 0)
		return set_fail(err, errlen, cfg, o->line, "ALPN", NULL);
	SSL_CTX_set_verify(c->ctx, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	/* Sessions are kept per server name in @c, not in OpenSSL's cache (keyed by id). */
	SSL_CTX_set_session_cache_mode(c->ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(c->ctx, client_new_session);
	SSL_CTX_set_app_data(c->ctx, c);
	if (o->ca) {
		if (SSL_CTX_load_verify_locations(c->ctx, o->ca, NULL) != 1)
			return set_fail(err, errlen, cfg, o->line, "ca=", o->ca);
	} else if (o->verify && SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
		return set_fail(err, errlen, cfg, o->line, "system CA store", NULL);
	}
	return 0;
}

static void clients_free(struct tls_client *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++) {
		for (unsigned int j = 0; j < TLS_CLIENT_SESSIONS; j++)
			client_session_clear(&c[i].sessions[j]);
		SSL_CTX_free(c[i].ctx);
		free(c[i].sni);
		free(c[i].key);
	}
	free(c);
}

static void set_free(struct tls_set *set)
{
	for (size_t i = 0; i < set->n_listeners; i++)
		SSL_CTX_free(set->listeners[i]);
	for (size_t i = 0; i < set->n_certs; i++)
		SSL_CTX_free(set->certs[i]);
	for (size_t i = 0; i < set->n_sni; i++)
		free(set->sni[i].name);
	clients_free(set->upstreams, set->n_upstreams);
	clients_free(set->routes, set->n_routes);
	free(set->listeners);
	free(set->certs);
	free(set->sni);
	free(set);
}

struct tls_set *tls_set_build(const struct config *cfg, char *err, size_t errlen)
{
	struct tls_set *set = calloc(1, sizeof(*set));

	if (!set)
		goto oom;
	set->refcount = 1;
	set->listeners = calloc(cfg->n_listens ? cfg->n_listens : 1, sizeof(*set->listeners));
	set->certs = calloc(cfg->n_tls_certs ? cfg->n_tls_certs : 1, sizeof(*set->certs));
	set->upstreams = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*set->upstreams));
	set->routes = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof(*set->routes));
	if (!set->listeners || !set->certs || !set->upstreams || !set->routes)
		goto oom;
	set->n_upstreams = cfg->n_upstreams;
	set->n_routes = cfg->n_routes;
	ERR_clear_error();
	for (size_t i = 0; i < cfg->n_tls_certs; i++) {
		const struct tls_cert_file *f = &cfg->tls_certs[i];

		set->certs[i] = server_ctx_new(set, cfg, f->cert, f->key, f->line, err, errlen);
		if (!set->certs[i])
			goto fail;
		set->n_certs++;
		if (add_sni_names(set, set->certs[i], cfg, f->line, f->cert, err, errlen) < 0)
			goto fail;
	}
	for (size_t i = 0; i < cfg->n_listens; i++) {
		const struct listen_addr *l = &cfg->listens[i];

		set->n_listeners = i + 1;
		if (!l->tls)
			continue;
		set->listeners[i] =
			server_ctx_new(set, cfg, l->tls_cert, l->tls_key, l->line, err, errlen);
		if (!set->listeners[i])
			goto fail;
	}
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (client_new(&set->upstreams[i], &cfg->upstreams[i].tls, cfg->upstreams[i].name,
			       cfg, err, errlen) < 0)
			goto fail;
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (client_new(&set->routes[i], &cfg->routes[i].tls, cfg->routes[i].prefix, cfg,
			       err, errlen) < 0)
			goto fail;
	return set;
oom:
	snprintf(err, errlen, "%s:0: out of memory", cfg->path ? cfg->path : "<embedded>");
fail:
	if (set)
		set_free(set);
	return NULL;
}

struct tls_set *tls_set_get(struct tls_set *set)
{
	if (set)
		set->refcount++;
	return set;
}

void tls_set_put(struct tls_set *set)
{
	if (set && --set->refcount == 0)
		set_free(set);
}

int tls_apply(const struct config *cfg, char *err, size_t errlen)
{
	struct tls_set *set = NULL;

	if (config_wants_tls(cfg)) {
		set = tls_set_build(cfg, err, errlen);
		if (!set)
			return -1;
	}
	tls_install(set);
	return 0;
}

void tls_install(struct tls_set *set)
{
	tls_set_put(current_set);
	current_set = set;
}

struct tls_set *tls_current(void)
{
	return current_set;
}

SSL_CTX *tls_set_listener(const struct tls_set *set, size_t i)
{
	return set && i < set->n_listeners ? set->listeners[i] : NULL;
}

struct tls_client *tls_set_upstream(const struct tls_set *set, size_t i)
{
	return set && i < set->n_upstreams && set->upstreams[i].ctx ? &set->upstreams[i] : NULL;
}

struct tls_client *tls_set_route(const struct tls_set *set, size_t i)
{
	return set && i < set->n_routes && set->routes[i].ctx ? &set->routes[i] : NULL;
}

enum tls_err_class tls_classify_error(SSL *ssl, int ssl_err)
{
	unsigned long e = ERR_peek_last_error();
	int reason = ERR_GET_REASON(e);

	if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
		return TLS_ERR_ABORTED;
	if (ssl_err != SSL_ERROR_SSL)
		return TLS_ERR_OTHER;
	if (SSL_get_verify_result(ssl) != X509_V_OK ||
	    (ERR_GET_LIB(e) == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED))
		return TLS_ERR_CERT_VERIFY;
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return TLS_ERR_OTHER;
	switch (reason) {
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		return TLS_ERR_ABORTED;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_UNKNOWN_PROTOCOL:
		return TLS_ERR_PROTOCOL;
	default:
		break;
	}
	/* Alerts received map to reasons SSL_AD_REASON_OFFSET + the alert number. */
	if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
		return TLS_ERR_PEER_ALERT;
	return TLS_ERR_OTHER;
}
