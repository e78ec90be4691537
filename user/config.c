// SPDX-License-Identifier: GPL-2.0
/* Configuration: line directives, '#' comments, the embedded default. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include <llhttp.h>

#include "config.h"
#include "kfwd/ctl.h"
#include "log.h"
#include "pipe_pool.h"
#include "util.h"

#define MAX_TOKENS 64
/* A playlist is held whole in memory while it is rewritten: a bound per response. */
#define PLAYLIST_MAX_SIZE_LIMIT (64 << 20)
/* The kernel's MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL and MAX_TCP_KEEPCNT. */
#define TCP_KEEP_SECONDS_MAX 32767
#define TCP_KEEP_COUNT_MAX 127
/*
 * Dead peers on a router: a phone that sleeps or leaves the Wi-Fi, a set-top box switched off at
 * the wall. An idle connection is probed after 30 s and dropped after 3 unanswered probes 5 s
 * apart (45 s, as rtp2httpd). Bytes unacknowledged for 30 s drop a connection sending into the
 * void; since Linux 5.11 the same bound also drops a live peer that keeps its receive window
 * shut that long (a paused player), hence 30 s and not rtp2httpd's 10 s (live streams only).
 */
#define TCP_KEEPALIVE_IDLE_DEFAULT 30
#define TCP_KEEPALIVE_INTVL_DEFAULT 5
#define TCP_KEEPALIVE_CNT_DEFAULT 3
#define TCP_USER_TIMEOUT_DEFAULT_MS 30000
#define CONFIG_TEXT_MAX (1 << 20)

/* Loopback only, so the open url-embedded route is reachable from this host alone. */
/*
 * Descriptors one client connection holds at most: its socket, the upstream socket, and a
 * pipe (two fds) for each direction of a spliced exchange.
 */
#define FDS_PER_CONNECTION 6
/*
 * Descriptors that belong to no connection: epoll, signalfd, the control socket, listeners,
 * metrics clients, c-ares, BPF maps and programs, with room to spare.
 */
#define FDS_RESERVED 64
#define MAX_CONNECTIONS_MAX 1000000
/* Longer durations are typing errors (a unit forgotten: 300000s), not intentions. */
#define DURATION_MAX_MS (30ULL * 24 * 3600 * 1000)
#define UPSTREAM_MAX_FAILS_MAX 1000

static const char embedded_default[] = "listen 127.0.0.1:8080\n"
				       "route /http/ url-embedded\n"
				       "allow *\n";

struct parse_ctx {
	const char *file;
	int line;
	char *err;
	size_t errlen;
	struct config *cfg;
};

static int fail(struct parse_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int parse_uint(const char *text, unsigned long max, unsigned long *out);

static int fail(struct parse_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->file, ctx->line);
	if (n < 0 || (size_t)n >= ctx->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *const data_path_names[] = {
	[DATA_PATH_SPLICE] = "splice",
	[DATA_PATH_COPY] = "copy",
	[DATA_PATH_SOCKMAP] = "sockmap",
	[DATA_PATH_SOCKMAP_UNBOUNDED] = "sockmap-unbounded",
};

const char *data_path_name(enum data_path dp)
{
	return dp <= DATA_PATH_SOCKMAP_UNBOUNDED ? data_path_names[dp] : "?";
}

int data_path_parse(const char *name)
{
	/* auto: the fastest bounded path measured here, splice; it never picks sockmap. */
	if (!strcmp(name, "auto"))
		return DATA_PATH_SPLICE;
	for (int i = 0; i <= DATA_PATH_SOCKMAP_UNBOUNDED; i++)
		if (!strcmp(name, data_path_names[i]))
			return i;
	return -1;
}

static bool is_sockmap(int dp)
{
	return dp == DATA_PATH_SOCKMAP || dp == DATA_PATH_SOCKMAP_UNBOUNDED;
}

bool config_wants_tls(const struct config *cfg)
{
	if (cfg->n_tls_certs)
		return true;
	for (size_t i = 0; i < cfg->n_listens; i++)
		if (cfg->listens[i].tls)
			return true;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (cfg->upstreams[i].tls.on)
			return true;
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (cfg->routes[i].tls.on)
			return true;
	return false;
}

bool config_wants_sockmap(const struct config *cfg)
{
	if (is_sockmap(cfg->data_path))
		return true;
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (is_sockmap(cfg->routes[i].mode))
			return true;
	return false;
}

/* A decimal number at the start of @text; *@unit points at what follows it. */
static int leading_number(const char *text, unsigned long long *v, char **unit)
{
	if (!isdigit((unsigned char)text[0]))
		return -1;
	errno = 0;
	*v = strtoull(text, unit, 10);
	return errno ? -1 : 0;
}

int parse_size(const char *text, size_t *out)
{
	unsigned long long v, mult = 1;
	char *end;

	if (leading_number(text, &v, &end) < 0)
		return -1;
	if (!strcasecmp(end, "k"))
		mult = 1024;
	else if (!strcasecmp(end, "m"))
		mult = 1024 * 1024;
	else if (!strcasecmp(end, "g"))
		mult = 1024ULL * 1024 * 1024;
	else if (*end)
		return -1;
	if (v > SIZE_MAX / mult)
		return -1;
	*out = (size_t)(v * mult);
	return 0;
}

/* HAProxy convention: a bare number is milliseconds. */
int parse_duration_ms(const char *text, uint64_t *out)
{
	unsigned long long v, mult;
	char *end;

	if (leading_number(text, &v, &end) < 0)
		return -1;
	if (!*end || !strcmp(end, "ms"))
		mult = 1;
	else if (!strcmp(end, "s"))
		mult = 1000;
	else if (!strcmp(end, "m"))
		mult = 60000;
	else if (!strcmp(end, "h"))
		mult = 3600000;
	else
		return -1;
	if (v > DURATION_MAX_MS / mult)
		return -1;
	*out = v * mult;
	return 0;
}

/*
 * "ADDR:PORT", "[V6]:PORT", "*:PORT". Names (resolved now, blocking) only where @allow_names:
 * upstream servers are resolved once when the config is loaded, before the event loop runs.
 */
static void *grow(void *arr, size_t n, size_t elem)
{
	/* Arrays grow one element at a time: configs are small and parsed once. */
	return realloc(arr, (n + 1) * elem);
}

static struct upstream *find_upstream(struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (!strcmp(cfg->upstreams[i].name, name))
			return &cfg->upstreams[i];
	return NULL;
}

/* parse_addr_port() zeroes what it does not set: equal addresses are equal bytes. */
static bool same_addr(const struct sockaddr_any *a, const struct sockaddr_any *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

static int add_listen(struct parse_ctx *ctx, struct listen_addr **arr, size_t *n, const char *text,
		      const char *proto)
{
	struct listen_addr *a = grow(*arr, *n, sizeof(**arr));

	if (!a)
		return fail(ctx, "out of memory");
	*arr = a;
	memset(&a[*n], 0, sizeof(a[*n]));
	if (parse_addr_port(text, &a[*n].addr, false) < 0)
		return fail(ctx, "bad listen address '%s' (want ADDR:PORT or [V6]:PORT)", text);
	if (strlen(proto) >= sizeof(a[*n].proto))
		return fail(ctx, "unknown protocol '%s'", proto);
	for (size_t i = 0; i < *n; i++)
		if (same_addr(&a[i].addr, &a[*n].addr))
			return fail(ctx, "duplicate listen %s (already at %s%d)", text,
				    a[i].from_args ? "-l " : "line ", a[i].line);
	snprintf(a[*n].text, sizeof(a[*n].text), "%s", text);
	a[*n].line = ctx->line;
	a[*n].from_args = !strcmp(ctx->file, "-l");
	snprintf(a[*n].proto, sizeof(a[*n].proto), "%s", proto);
	(*n)++;
	return 0;
}

/* A copy of @v into *@out for a FILE option; a second one is an error. */
static int set_file_option(struct parse_ctx *ctx, const char *name, const char *v, char **out)
{
	if (!v || !*v)
		return fail(ctx, "%s needs a file name", name);
	if (*out)
		return fail(ctx, "%s given twice", name);
	*out = strdup(v);
	return *out ? 0 : fail(ctx, "out of memory");
}

/* listen ADDR:PORT [PROTOCOL] [tls cert=FILE key=FILE] */
static int parse_listen(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	int tls_at = ntok > 2 && strcmp(tok[2], "tls") ? 3 : 2;
	struct listen_addr *a;

	if (ntok < 2 || (ntok > tls_at && strcmp(tok[tls_at], "tls")))
		return fail(ctx, "usage: listen ADDR:PORT [PROTOCOL] [tls cert=FILE key=FILE]");
	if (add_listen(ctx, &cfg->listens, &cfg->n_listens, tok[1], tls_at == 3 ? tok[2] : "http") <
	    0)
		return -1;
	if (ntok == tls_at)
		return 0;
	a = &cfg->listens[cfg->n_listens - 1];
	a->tls = true;
	for (int i = tls_at + 1; i < ntok; i++) {
		if (!strncmp(tok[i], "cert=", 5)) {
			if (set_file_option(ctx, "cert=", tok[i] + 5, &a->tls_cert) < 0)
				return -1;
		} else if (!strncmp(tok[i], "key=", 4)) {
			if (set_file_option(ctx, "key=", tok[i] + 4, &a->tls_key) < 0)
				return -1;
		} else {
			return fail(ctx, "unknown listen tls option '%s' (cert=FILE key=FILE)",
				    tok[i]);
		}
	}
	if (!a->tls_cert || !a->tls_key)
		return fail(ctx, "listen %s tls needs cert=FILE and key=FILE", tok[1]);
	return 0;
}

/*
 * One option of an origin's "tls ..." (sni=NAME, verify=on|off, ca=FILE; sni= only where
 * @sni_allowed): 1 when @o was one, 0 when it is not a TLS option, -1 on error.
 */
static int parse_tls_origin_option(struct parse_ctx *ctx, struct tls_origin *t, const char *o,
				   bool sni_allowed)
{
	const char *v = strchr(o, '=');

	v = v ? v + 1 : NULL;
	if (!strcmp(o, "tls")) {
		t->on = true;
		t->verify = true;
		t->line = ctx->line;
		return 1;
	}
	if (strncmp(o, "sni=", 4) && strncmp(o, "verify=", 7) && strncmp(o, "ca=", 3))
		return 0;
	if (!t->on)
		return fail(ctx, "'%s' needs 'tls' before it", o);
	if (!strncmp(o, "verify=", 7)) {
		if (strcmp(v, "on") && strcmp(v, "off"))
			return fail(ctx, "usage: verify=on|off");
		t->verify = !strcmp(v, "on");
		return 1;
	}
	if (!strncmp(o, "ca=", 3))
		return set_file_option(ctx, "ca=", v, &t->ca) < 0 ? -1 : 1;
	if (!sni_allowed)
		return fail(ctx, "sni= does not apply here: the name is the URL's host");
	if (!*v || strlen(v) > 253 || strpbrk(v, "/:[]*"))
		return fail(ctx, "bad sni= name '%s'", v);
	return set_file_option(ctx, "sni=", v, &t->sni) < 0 ? -1 : 1;
}

static int parse_upstream(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	struct upstream *u;

	int nserv = 0, rc;

	while (2 + nserv < ntok && strcmp(tok[2 + nserv], "tls"))
		nserv++;
	if (nserv == 0)
		return fail(ctx, "usage: upstream NAME ADDR:PORT [ADDR:PORT ...] "
				 "[tls [sni=NAME] [verify=on|off] [ca=FILE]]");
	if (strlen(tok[1]) >= CONFIG_NAME_MAX)
		return fail(ctx, "upstream name too long");
	if (find_upstream(cfg, tok[1]))
		return fail(ctx, "upstream '%s' defined twice", tok[1]);
	u = grow(cfg->upstreams, cfg->n_upstreams, sizeof(*u));
	if (!u)
		return fail(ctx, "out of memory");
	cfg->upstreams = u;
	u = &cfg->upstreams[cfg->n_upstreams++];
	memset(u, 0, sizeof(*u));
	snprintf(u->name, sizeof(u->name), "%s", tok[1]);
	u->servers = calloc((size_t)nserv, sizeof(*u->servers));
	if (!u->servers)
		return fail(ctx, "out of memory");
	for (int i = 2 + nserv; i < ntok; i++) {
		rc = parse_tls_origin_option(ctx, &u->tls, tok[i], true);
		if (rc < 0)
			return -1;
		if (rc == 0)
			return fail(ctx, "unknown upstream tls option '%s'", tok[i]);
	}
	for (int i = 2; i < 2 + nserv; i++) {
		struct upstream_server *s = &u->servers[u->n_servers];

		if (parse_addr_port(tok[i], &s->addr, true) < 0)
			return fail(ctx, "bad upstream server '%s' (want ADDR:PORT)", tok[i]);
		snprintf(s->text, sizeof(s->text), "%s", tok[i]);
		u->n_servers++;
	}
	return 0;
}

static const struct {
	unsigned int num;
	const char *name;
} known_methods[] = {
#define KFWD_METHOD(NUM, NAME, STRING) { NUM, #STRING },
	HTTP_ALL_METHOD_MAP(KFWD_METHOD)
#undef KFWD_METHOD
};

static int parse_methods(const char *list, uint64_t *out)
{
	char copy[512], *save = NULL;

	if (strlen(list) >= sizeof(copy))
		return -1;
	strcpy(copy, list);
	*out = 0;
	for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
		int found = -1;

		/* Only numbers llhttp knows: llhttp_method_name() aborts on any other. */
		for (size_t i = 0; i < sizeof(known_methods) / sizeof(known_methods[0]); i++) {
			if (known_methods[i].num < 64 && !strcmp(known_methods[i].name, m)) {
				found = (int)known_methods[i].num;
				break;
			}
		}
		if (found < 0)
			return -1;
		*out |= 1ULL << found;
	}
	return *out ? 0 : -1;
}

static int parse_retry_on(const char *list, unsigned int *out)
{
	char copy[128], *save = NULL;

	if (strlen(list) >= sizeof(copy))
		return -1;
	strcpy(copy, list);
	*out = 0;
	for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		if (!strcmp(w, "connect"))
			*out |= RETRY_ON_CONNECT;
		else if (!strcmp(w, "5xx"))
			*out |= RETRY_ON_5XX;
		else if (!strcmp(w, "timeout"))
			*out |= RETRY_ON_TIMEOUT;
		else if (strcmp(w, "none"))
			return -1;
	}
	return 0;
}

static bool valid_host_pattern(const char *p)
{
	if (!strcmp(p, "*"))
		return true;
	if (!strncmp(p, "*.", 2))
		p += 2;
	if (!*p)
		return false;
	for (; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_' &&
		    *p != ':' && *p != '[' && *p != ']')
			return false;
	return true;
}

/*
 * Request headers a route may not set or remove: hop-by-hop and framing fields, which kfwd
 * decides per connection and message (RFC 9110 §7.6.1), and the fields kfwd adds itself.
 */
static const char *const kfwd_owned_headers[] = {
	"Host",
	"Content-Length",
	"Transfer-Encoding",
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"TE",
	"Trailer",
	"Upgrade",
	"X-Forwarded-For",
	"X-Forwarded-Proto",
	"X-Forwarded-Host",
	"Forwarded",
	"Via",
};

/* RFC 9110 §5.6.2 token characters. */
static bool valid_field_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

/* RFC 9110 §5.5: visible characters, spaces and tabs; no CR, LF or other control bytes. */
static bool valid_field_value(const char *s)
{
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return false;
	return true;
}

/* set-header NAME VALUE | remove-header NAME at opt[*i]; *i moves past its words. */
static int parse_header_override(struct parse_ctx *ctx, struct route *r, char **opt, int nopt,
				 int *i)
{
	bool set = !strcmp(opt[*i], "set-header");
	int words = set ? 2 : 1;
	struct header_override *h;
	const char *name;

	if (*i + words >= nopt)
		return fail(ctx,
			    set ? "usage: set-header NAME VALUE" : "usage: remove-header NAME");
	name = opt[*i + 1];
	if (!valid_field_name(name))
		return fail(ctx, "bad header name '%s'", name);
	for (size_t k = 0; k < ARRAY_LEN(kfwd_owned_headers); k++)
		if (!strcasecmp(name, kfwd_owned_headers[k]))
			return fail(ctx, "%s: '%s' is set by kfwd (hop-by-hop or framing)", opt[*i],
				    name);
	if (set && !valid_field_value(opt[*i + 2]))
		return fail(ctx, "bad value for header '%s' (control characters)", name);
	h = grow(r->header_overrides, r->n_header_overrides, sizeof(*h));
	if (!h)
		return fail(ctx, "out of memory");
	r->header_overrides = h;
	h = &r->header_overrides[r->n_header_overrides];
	h->name = strdup(name);
	h->value = set ? strdup(opt[*i + 2]) : NULL;
	if (!h->name || (set && !h->value)) {
		free(h->name);
		free(h->value);
		return fail(ctx, "out of memory");
	}
	r->n_header_overrides++;
	*i += words;
	return 0;
}

/* *@dst = a copy of @v, the previous value freed: of a repeated option the last one counts. */
static int replace_string(struct parse_ctx *ctx, char **dst, const char *v)
{
	char *copy = strdup(v);

	if (!copy)
		return fail(ctx, "out of memory");
	free(*dst);
	*dst = copy;
	return 0;
}

/*
 * The retry and timeout options of a route (@o, its value @v after the '='): 1 when @o is one
 * of them, 0 when not, -1 on a bad value.
 */
static int parse_route_timing(struct parse_ctx *ctx, struct route *r, const char *o, const char *v)
{
	unsigned long n;

	if (!strncmp(o, "retries=", 8)) {
		if (parse_uint(v, 10, &n) < 0)
			return fail(ctx, "retries must be 0..10");
		r->retries = (unsigned int)n;
	} else if (!strncmp(o, "retry-on=", 9)) {
		if (parse_retry_on(v, &r->retry_on) < 0)
			return fail(ctx, "bad retry-on '%s' (connect,5xx,timeout or none)", v);
	} else if (!strcmp(o, "retry-non-idempotent")) {
		r->retry_non_idempotent = true;
	} else if (!strncmp(o, "retry-backoff=", 14)) {
		if (parse_duration_ms(v, &r->retry_backoff_ms) < 0)
			return fail(ctx, "bad retry-backoff '%s'", v);
	} else if (!strncmp(o, "retry-backoff-max=", 18)) {
		if (parse_duration_ms(v, &r->retry_backoff_max_ms) < 0)
			return fail(ctx, "bad retry-backoff-max '%s'", v);
	} else if (!strncmp(o, "connect-timeout=", 16)) {
		if (parse_duration_ms(v, &r->connect_timeout_ms) < 0 || !r->connect_timeout_ms)
			return fail(ctx, "bad connect-timeout '%s'", v);
	} else if (!strncmp(o, "response-timeout=", 17)) {
		if (parse_duration_ms(v, &r->response_timeout_ms) < 0 || !r->response_timeout_ms)
			return fail(ctx, "bad response-timeout '%s'", v);
	} else if (!strncmp(o, "idle-timeout=", 13)) {
		if (parse_duration_ms(v, &r->idle_timeout_ms) < 0 || !r->idle_timeout_ms)
			return fail(ctx, "bad idle-timeout '%s'", v);
	} else {
		return 0;
	}
	return 1;
}

/* One branch per route option, each with its own check and FILE:LINE message. */
static int parse_route_options(struct parse_ctx *ctx, struct route *r, char **opt, int nopt)
{
	for (int i = 0; i < nopt; i++) {
		const char *o = opt[i], *v = strchr(o, '=');
		int rc;

		v = v ? v + 1 : NULL;
		if (!strcmp(o, "set-header") || !strcmp(o, "remove-header")) {
			if (parse_header_override(ctx, r, opt, nopt, &i) < 0)
				return -1;
			continue;
		}
		if (r->kind == ROUTE_URL_EMBEDDED) {
			rc = parse_tls_origin_option(ctx, &r->tls, o, false);
			if (rc < 0)
				return -1;
			if (rc > 0)
				continue;
		}
		rc = parse_route_timing(ctx, r, o, v);
		if (rc < 0)
			return -1;
		if (rc > 0)
			continue;
		if (!strcmp(o, "strip-prefix")) {
			r->strip_prefix = true;
		} else if (!strncmp(o, "host=", 5)) {
			if (!valid_host_pattern(v))
				return fail(ctx, "bad host pattern '%s' (name or *.suffix)", v);
			if (replace_string(ctx, &r->host, v) < 0)
				return -1;
		} else if (!strncmp(o, "methods=", 8)) {
			if (parse_methods(v, &r->methods) < 0)
				return fail(ctx, "bad method list '%s' (e.g. GET,HEAD)", v);
		} else if (!strncmp(o, "host-rewrite=", 13)) {
			if (r->kind == ROUTE_URL_EMBEDDED)
				return fail(ctx,
					    "host-rewrite does not apply to url-embedded routes");
			if (!*v || strpbrk(v, "\r\n"))
				return fail(ctx, "host-rewrite needs a value");
			if (replace_string(ctx, &r->host_rewrite, v) < 0)
				return -1;
		} else if (!strcmp(o, "forwarded")) {
			r->forwarded = true;
		} else if (!strncmp(o, "mode=", 5)) {
			r->mode = data_path_parse(v);
			if (r->mode < 0)
				return fail(
					ctx,
					"bad mode '%s' (splice|copy|sockmap|sockmap-unbounded|auto)",
					v);
		} else if (!strncmp(o, "on-slow=", 8)) {
			if (strcmp(v, "pause") && strcmp(v, "drop-frames"))
				return fail(ctx, "bad on-slow '%s' (pause or drop-frames)", v);
			r->drop_frames = !strcmp(v, "drop-frames");
		} else if (!strncmp(o, "auth=", 5)) {
			const char *colon = strchr(v, ':');

			if (!colon || colon == v || strlen(v) >= ROUTE_AUTH_MAX)
				return fail(ctx, "bad auth (USER:PASS, at most %d bytes)",
					    ROUTE_AUTH_MAX - 1);
			if (replace_string(ctx, &r->auth, v) < 0)
				return -1;
		} else if (!strncmp(o, "user-agent=", 11) && r->kind == ROUTE_RTSP_GATEWAY) {
			if (!*v || strpbrk(v, "\r\n"))
				return fail(ctx, "user-agent needs a value");
			if (replace_string(ctx, &r->user_agent, v) < 0)
				return -1;
		} else {
			return fail(ctx, "unknown route option '%s'", o);
		}
	}
	if (r->retry_backoff_max_ms < r->retry_backoff_ms)
		return fail(ctx, "retry-backoff-max is below retry-backoff");
	return 0;
}

static int parse_access_rule(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	struct access_rule *rule;
	char text[128], *slash;

	if (ntok != 2)
		return fail(ctx, "usage: %s CIDR|HOST-PATTERN", tok[0]);
	rule = grow(cfg->rules, cfg->n_rules, sizeof(*rule));
	if (!rule)
		return fail(ctx, "out of memory");
	cfg->rules = rule;
	rule = &cfg->rules[cfg->n_rules++];
	memset(rule, 0, sizeof(*rule));
	rule->allow = !strcmp(tok[0], "allow");
	if (strlen(tok[1]) >= sizeof(text))
		return fail(ctx, "pattern too long");
	strcpy(text, tok[1]);
	slash = strchr(text, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, text, rule->addr) == 1 ||
	    inet_pton(AF_INET6, text, rule->addr) == 1) {
		unsigned long bits;

		rule->is_cidr = true;
		rule->family = strchr(text, ':') ? AF_INET6 : AF_INET;
		bits = rule->family == AF_INET ? 32 : 128;
		if (slash && parse_uint(slash + 1, bits, &bits) < 0)
			return fail(ctx, "bad prefix length in '%s'", tok[1]);
		rule->prefix_len = (unsigned int)bits;
		/* 10.1.2.3/8 is 10.0.0.0/8 or a typing error: say which was meant. */
		for (unsigned int i = rule->prefix_len; i < (rule->family == AF_INET ? 32u : 128u);
		     i++)
			if (rule->addr[i / 8] & (0x80 >> (i % 8)))
				return fail(ctx, "'%s' has bits set past its /%u prefix", tok[1],
					    rule->prefix_len);
		return 0;
	}
	if (slash || !valid_host_pattern(tok[1]))
		return fail(ctx, "'%s' is neither a CIDR nor a host pattern", tok[1]);
	rule->host = strdup(tok[1]);
	return rule->host ? 0 : fail(ctx, "out of memory");
}

static int parse_route(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	struct route *r;

	if (ntok < 3)
		return fail(ctx,
			    "usage: route PREFIX NAME [strip-prefix] | route PREFIX url-embedded | "
			    "route PREFIX rtsp-gateway");
	if (tok[1][0] != '/')
		return fail(ctx, "route prefix '%s' must start with '/'", tok[1]);
	r = grow(cfg->routes, cfg->n_routes, sizeof(*r));
	if (!r)
		return fail(ctx, "out of memory");
	cfg->routes = r;
	r = &cfg->routes[cfg->n_routes];
	memset(r, 0, sizeof(*r));
	r->line = ctx->line;
	r->prefix = strdup(tok[1]);
	if (!r->prefix)
		return fail(ctx, "out of memory");
	r->prefix_len = strlen(r->prefix);
	cfg->n_routes++;
	r->mode = -1;
	r->retries = 1;
	r->retry_on = RETRY_ON_CONNECT;
	r->retry_backoff_ms = 20;
	r->retry_backoff_max_ms = 1000;
	if (!strcmp(tok[2], "url-embedded")) {
		r->kind = ROUTE_URL_EMBEDDED;
		return parse_route_options(ctx, r, tok + 3, ntok - 3);
	}
	if (!strcmp(tok[2], "rtsp-gateway")) {
		/* GET and HEAD only: the gateway plays a stream, it forwards no request. */
		r->kind = ROUTE_RTSP_GATEWAY;
		r->methods = (1ULL << HTTP_GET) | (1ULL << HTTP_HEAD);
		return parse_route_options(ctx, r, tok + 3, ntok - 3);
	}
	r->kind = ROUTE_UPSTREAM;
	/* Looked up once the file is read: upstreams may come after the routes using them. */
	if (strlen(tok[2]) >= CONFIG_NAME_MAX)
		return fail(ctx, "upstream name too long");
	strcpy(r->upstream_name, tok[2]);
	return parse_route_options(ctx, r, tok + 3, ntok - 3);
}

struct size_directive {
	const char *name;
	size_t offset;
	size_t min, max;
};

struct duration_directive {
	const char *name;
	size_t offset;
};

#define CFG_OFF(field) offsetof(struct config, field)

static const struct size_directive size_directives[] = {
	{ "pipe-size", CFG_OFF(pipe_size), 4096, 1 << 30 },
	{ "pipe-high-water", CFG_OFF(pipe_high_water), 1, 1 << 30 },
	{ "pipe-low-water", CFG_OFF(pipe_low_water), 0, 1 << 30 },
	{ "copy-buffer-size", CFG_OFF(copy_buffer_size), 4096, 1 << 30 },
	{ "tls-copy-buffer-size", CFG_OFF(tls_copy_buffer_size), TLS_RECORD_MAX, 1 << 30 },
	{ "max-request-line", CFG_OFF(max_request_line), 64, 1 << 20 },
	{ "max-header-size", CFG_OFF(max_header_size), 256, 1 << 20 },
	{ "sockmap-cap", CFG_OFF(sockmap_cap), 65536, 1 << 30 },
	{ "sockmap-body-min", CFG_OFF(sockmap_body_min), 0, SIZE_MAX },
	{ "playlist-max-size", CFG_OFF(playlist_max_size), 0, PLAYLIST_MAX_SIZE_LIMIT },
	{ "max-memory", CFG_OFF(max_memory), 0, SIZE_MAX },
};

static const struct duration_directive duration_directives[] = {
	{ "connect-timeout", CFG_OFF(connect_timeout_ms) },
	{ "response-timeout", CFG_OFF(response_timeout_ms) },
	{ "client-timeout", CFG_OFF(client_timeout_ms) },
	{ "transfer-timeout", CFG_OFF(transfer_timeout_ms) },
	{ "drain-timeout", CFG_OFF(drain_timeout_ms) },
	{ "tunnel-timeout", CFG_OFF(tunnel_timeout_ms) },
	{ "upstream-idle-timeout", CFG_OFF(upstream_idle_timeout_ms) },
	{ "upstream-down-time", CFG_OFF(upstream_down_time_ms) },
	{ "rtsp-handshake-timeout", CFG_OFF(rtsp_handshake_timeout_ms) },
	{ "rtsp-first-media-timeout", CFG_OFF(rtsp_first_media_timeout_ms) },
};

static int parse_uint(const char *text, unsigned long max, unsigned long *out)
{
	char *end;

	if (!isdigit((unsigned char)text[0]))
		return -1;
	errno = 0;
	*out = strtoul(text, &end, 10);
	if (errno || *end || *out > max)
		return -1;
	return 0;
}

/* tls-cert FILE KEY, tls-ciphers LIST, tls-ciphersuites LIST, tls-min-version 1.2|1.3 */
static int parse_tls_directive(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	const char *d = tok[0];
	struct tls_cert_file *c;
	char **text;

	if (!strcmp(d, "tls-cert")) {
		if (ntok != 3)
			return fail(ctx, "usage: tls-cert CERT-FILE KEY-FILE");
		c = grow(cfg->tls_certs, cfg->n_tls_certs, sizeof(*c));
		if (!c)
			return fail(ctx, "out of memory");
		cfg->tls_certs = c;
		c = &cfg->tls_certs[cfg->n_tls_certs++];
		memset(c, 0, sizeof(*c));
		c->line = ctx->line;
		c->cert = strdup(tok[1]);
		c->key = strdup(tok[2]);
		return c->cert && c->key ? 0 : fail(ctx, "out of memory");
	}
	if (!strcmp(d, "tls-min-version")) {
		if (ntok == 2 && !strcmp(tok[1], "1.2"))
			cfg->tls_min_version = TLS_VERSION_1_2;
		else if (ntok == 2 && !strcmp(tok[1], "1.3"))
			cfg->tls_min_version = TLS_VERSION_1_3;
		else
			return fail(ctx, "usage: tls-min-version 1.2|1.3");
		return 0;
	}
	if (!strcmp(d, "tls-ciphers")) {
		text = &cfg->tls_ciphers;
		cfg->tls_ciphers_line = ctx->line;
	} else if (!strcmp(d, "tls-ciphersuites")) {
		text = &cfg->tls_ciphersuites;
		cfg->tls_ciphersuites_line = ctx->line;
	} else {
		return fail(ctx, "unknown directive '%s'", d);
	}
	/* The list is checked by OpenSSL when the contexts are built (user/tls.c). */
	if (ntok != 2)
		return fail(ctx, "usage: %s OPENSSL-CIPHER-STRING (one word)", d);
	return replace_string(ctx, text, tok[1]);
}

/* rtsp-user-agent TEXT...: the words joined by one blank (a User-Agent has blanks). */
static int parse_rtsp_user_agent(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	size_t len = 0;

	if (ntok < 2)
		return fail(ctx, "usage: rtsp-user-agent TEXT");
	for (int i = 1; i < ntok; i++)
		len += strlen(tok[i]) + 1;
	free(cfg->rtsp_user_agent);
	cfg->rtsp_user_agent = malloc(len);
	if (!cfg->rtsp_user_agent)
		return fail(ctx, "out of memory");
	cfg->rtsp_user_agent[0] = '\0';
	for (int i = 1; i < ntok; i++) {
		if (i > 1)
			strcat(cfg->rtsp_user_agent, " ");
		strcat(cfg->rtsp_user_agent, tok[i]);
	}
	return 0;
}

/* "syslog" (/dev/log) or "syslog:PATH": the socket's path into @out; -1 if @text is neither. */
static int parse_syslog_target(const char *text, char *out, size_t len)
{
	const char *path;

	if (!strcmp(text, "syslog"))
		path = SYSLOG_SOCKET_DEFAULT;
	else if (!strncmp(text, "syslog:", strlen("syslog:")))
		path = text + strlen("syslog:");
	else
		return -1;
	if (path[0] != '/' || strlen(path) >= len)
		return -1;
	snprintf(out, len, "%s", path);
	return 0;
}

/* Seconds, from a duration (tcp-keepalive's socket options count whole seconds). */
static int parse_seconds(const char *text, unsigned int max, unsigned int *out)
{
	uint64_t ms;

	if (parse_duration_ms(text, &ms) < 0 || ms % 1000 || ms == 0 || ms / 1000 > max)
		return -1;
	*out = (unsigned int)(ms / 1000);
	return 0;
}

/*
 * Logs, dead peers, privileges: the directives that shape the process, not the routing. Long:
 * a flat list of directives, each a few lines; a table would hide their checks.
 */
static int parse_runtime_directive(struct parse_ctx *ctx, char **tok, int ntok)
{
	struct config *cfg = ctx->cfg;
	const char *d = tok[0];
	unsigned long v;

	if (!strcmp(d, "log-target")) {
		if (ntok == 2 && !strcmp(tok[1], "stderr"))
			cfg->log_syslog[0] = '\0';
		else if (ntok != 2 ||
			 parse_syslog_target(tok[1], cfg->log_syslog, sizeof(cfg->log_syslog)) < 0)
			return fail(ctx, "usage: log-target stderr|syslog|syslog:/PATH");
		return 0;
	}
	if (!strcmp(d, "access-log")) {
		if (ntok == 2 && !strcmp(tok[1], "off")) {
			cfg->access_log = ACCESS_LOG_OFF;
		} else if (ntok == 2 && parse_syslog_target(tok[1], cfg->access_log_path,
							    CONFIG_SOCKET_PATH_MAX) == 0) {
			cfg->access_log = ACCESS_LOG_SYSLOG;
		} else if (ntok == 2 && tok[1][0] == '/' &&
			   strlen(tok[1]) < sizeof(cfg->access_log_path)) {
			cfg->access_log = ACCESS_LOG_FILE;
			snprintf(cfg->access_log_path, sizeof(cfg->access_log_path), "%s", tok[1]);
		} else {
			return fail(ctx,
				    "usage: access-log /ABSOLUTE/PATH|syslog|syslog:/PATH|off");
		}
		return 0;
	}
	if (!strcmp(d, "tcp-keepalive")) {
		if (ntok == 2 && !strcmp(tok[1], "off")) {
			cfg->keepalive_idle_s = cfg->keepalive_intvl_s = cfg->keepalive_cnt = 0;
			return 0;
		}
		/* The kernel's limits: MAX_TCP_KEEPIDLE/KEEPINTVL 32767 s, MAX_TCP_KEEPCNT 127. */
		if (ntok != 4 ||
		    parse_seconds(tok[1], TCP_KEEP_SECONDS_MAX, &cfg->keepalive_idle_s) ||
		    parse_seconds(tok[2], TCP_KEEP_SECONDS_MAX, &cfg->keepalive_intvl_s) ||
		    parse_uint(tok[3], TCP_KEEP_COUNT_MAX, &v) < 0 || v == 0)
			return fail(ctx,
				    "usage: tcp-keepalive IDLE INTERVAL COUNT|off (whole seconds "
				    "up to %us, COUNT 1..%u), e.g. tcp-keepalive 30s 5s 3",
				    TCP_KEEP_SECONDS_MAX, TCP_KEEP_COUNT_MAX);
		cfg->keepalive_cnt = (unsigned int)v;
		return 0;
	}
	if (!strcmp(d, "tcp-user-timeout")) {
		if (ntok == 2 && !strcmp(tok[1], "off"))
			cfg->user_timeout_ms = 0;
		else if (ntok != 2 || parse_duration_ms(tok[1], &cfg->user_timeout_ms) < 0 ||
			 cfg->user_timeout_ms == 0 || cfg->user_timeout_ms > INT_MAX)
			return fail(ctx, "usage: tcp-user-timeout DURATION|off");
		return 0;
	}
	if (!strcmp(d, "upgrade-socket")) {
		if (ntok != 2 || (strcmp(tok[1], "off") && tok[1][0] != '/') ||
		    strlen(tok[1]) >= sizeof(cfg->upgrade_socket))
			return fail(ctx,
				    "usage: upgrade-socket /ABSOLUTE/PATH|off (at most %zu bytes)",
				    sizeof(cfg->upgrade_socket) - 1);
		snprintf(cfg->upgrade_socket, sizeof(cfg->upgrade_socket), "%s",
			 strcmp(tok[1], "off") ? tok[1] : "");
		cfg->upgrade_socket_set = true;
		return 0;
	}
	if (!strcmp(d, "user")) {
		struct passwd *pw;

		if (ntok != 2 || strlen(tok[1]) >= sizeof(cfg->user_name))
			return fail(ctx, "usage: user NAME");
		pw = getpwnam(tok[1]);
		if (!pw)
			return fail(ctx, "user: unknown user '%s'", tok[1]);
		if (pw->pw_uid == 0)
			return fail(ctx, "user: '%s' is root: nothing would be dropped", tok[1]);
		cfg->has_user = true;
		cfg->run_uid = pw->pw_uid;
		if (!cfg->has_group)
			cfg->run_gid = pw->pw_gid;
		snprintf(cfg->user_name, sizeof(cfg->user_name), "%s", tok[1]);
		return 0;
	}
	if (!strcmp(d, "group")) {
		struct group *gr;

		if (ntok != 2)
			return fail(ctx, "usage: group NAME");
		gr = getgrnam(tok[1]);
		if (!gr)
			return fail(ctx, "group: unknown group '%s'", tok[1]);
		cfg->has_group = true;
		cfg->run_gid = gr->gr_gid;
		return 0;
	}
	return 1;
}

/* Long: the dispatcher of every directive, a flat list of short cases. */
static int parse_directive(struct parse_ctx *ctx, char **tok, int ntok, bool *high_set,
			   bool *low_set)
{
	struct config *cfg = ctx->cfg;
	const char *d = tok[0];
	unsigned long v;
	size_t size;
	int rc;

	if (!strcmp(d, "listen"))
		return parse_listen(ctx, tok, ntok);
	if (!strcmp(d, "upstream"))
		return parse_upstream(ctx, tok, ntok);
	if (!strcmp(d, "route"))
		return parse_route(ctx, tok, ntok);
	if (!strcmp(d, "allow") || !strcmp(d, "deny"))
		return parse_access_rule(ctx, tok, ntok);
	for (size_t i = 0; i < sizeof(size_directives) / sizeof(size_directives[0]); i++) {
		const struct size_directive *sd = &size_directives[i];

		if (strcmp(d, sd->name))
			continue;
		if (ntok != 2 || parse_size(tok[1], &size) < 0)
			return fail(ctx, "usage: %s BYTES (suffix k, m allowed)", d);
		if (size < sd->min || size > sd->max)
			return fail(ctx, "%s must be between %zu and %zu", d, sd->min, sd->max);
		if (!strcmp(d, "max-memory") && size && size < MAX_MEMORY_MIN)
			return fail(ctx, "max-memory must be 0 (off) or at least %u",
				    MAX_MEMORY_MIN);
		*(size_t *)((char *)cfg + sd->offset) = size;
		if (!strcmp(d, "pipe-high-water"))
			*high_set = true;
		if (!strcmp(d, "pipe-low-water"))
			*low_set = true;
		return 0;
	}
	/* After the sizes: tls-copy-buffer-size is one of them. */
	if (!strncmp(d, "tls-", 4))
		return parse_tls_directive(ctx, tok, ntok);
	for (size_t i = 0; i < sizeof(duration_directives) / sizeof(duration_directives[0]); i++) {
		const struct duration_directive *dd = &duration_directives[i];

		if (strcmp(d, dd->name))
			continue;
		if (ntok != 2 ||
		    parse_duration_ms(tok[1], (uint64_t *)((char *)cfg + dd->offset)) < 0)
			return fail(
				ctx,
				"usage: %s DURATION (e.g. 500ms, 5s, 2m; bare = ms; at most 30 days)",
				d);
		return 0;
	}
	if (!strcmp(d, "client-sndbuf") || !strcmp(d, "upstream-rcvbuf")) {
		if (ntok != 2 || parse_size(tok[1], &size) < 0 || size > INT_MAX / 2)
			return fail(ctx, "usage: %s BYTES (0 = kernel autotuning)", d);
		*(d[0] == 'c' ? &cfg->client_sndbuf : &cfg->upstream_rcvbuf) = (int)size;
		return 0;
	}
	if (!strcmp(d, "connect")) {
		if (ntok == 2 && (!strcmp(tok[1], "on") || !strcmp(tok[1], "off")))
			cfg->connect_enabled = !strcmp(tok[1], "on");
		else
			return fail(ctx, "usage: connect on|off");
		return 0;
	}
	if (!strcmp(d, "rtsp-user-agent"))
		return parse_rtsp_user_agent(ctx, tok, ntok);
	if (!strcmp(d, "data-path")) {
		int dp = ntok == 2 ? data_path_parse(tok[1]) : -1;

		if (dp < 0)
			return fail(ctx,
				    "usage: data-path splice|copy|sockmap|sockmap-unbounded|auto");
		cfg->data_path = (enum data_path)dp;
		return 0;
	}
	if (!strcmp(d, "bpf-pin-dir")) {
		if (ntok != 2 || tok[1][0] != '/' || strlen(tok[1]) >= sizeof(cfg->bpf_pin_dir))
			return fail(ctx, "usage: bpf-pin-dir /sys/fs/bpf/DIR");
		strcpy(cfg->bpf_pin_dir, tok[1]);
		return 0;
	}
	if (!strcmp(d, "upstream-max-fails")) {
		if (ntok != 2 || parse_uint(tok[1], UPSTREAM_MAX_FAILS_MAX, &v) < 0)
			return fail(ctx,
				    "usage: upstream-max-fails N (0..%u, 0: never marked down)",
				    UPSTREAM_MAX_FAILS_MAX);
		cfg->upstream_max_fails = (unsigned int)v;
		return 0;
	}
	if (!strcmp(d, "max-connections") || !strcmp(d, "upstream-max-idle") ||
	    !strcmp(d, "upstream-max-conns")) {
		if (ntok != 2 || parse_uint(tok[1], MAX_CONNECTIONS_MAX, &v) < 0)
			return fail(ctx, "usage: %s N", d);
		if (!strcmp(d, "max-connections")) {
			if (v == 0)
				return fail(ctx, "max-connections must be at least 1");
			cfg->max_connections = (unsigned int)v;
		} else if (!strcmp(d, "upstream-max-idle")) {
			cfg->upstream_max_idle = (unsigned int)v;
		} else {
			cfg->upstream_max_conns = (unsigned int)v;
		}
		return 0;
	}
	if (!strcmp(d, "metrics-listen")) {
		if (ntok != 2 || parse_addr_port(tok[1], &cfg->metrics.addr, false) < 0)
			return fail(ctx, "usage: metrics-listen ADDR:PORT");
		snprintf(cfg->metrics.text, sizeof(cfg->metrics.text), "%s", tok[1]);
		cfg->metrics.line = ctx->line;
		cfg->has_metrics = true;
		return 0;
	}
	if (!strcmp(d, "log-level")) {
		if (ntok != 2 || (cfg->log_level = klog_level_parse(tok[1])) < 0)
			return fail(ctx, "usage: log-level error|warn|info|debug");
		return 0;
	}
	if (!strcmp(d, "ctl-port-id")) {
		char *end = NULL;

		cfg->ctl_off = ntok == 2 && !strcmp(tok[1], "off");
		cfg->ctl_port_id = 0;
		if (cfg->ctl_off || (ntok == 2 && !strcmp(tok[1], "pid")))
			return 0;
		errno = 0;
		v = ntok == 2 && isdigit((unsigned char)tok[1][0]) ? strtoul(tok[1], &end, 0) : 0;
		if (v == 0 || errno || *end || v > KFWD_CTL_PORT_ID_MAX)
			return fail(ctx,
				    "usage: ctl-port-id pid|N|off (N: 1..%u, 0x prefix for hex)",
				    KFWD_CTL_PORT_ID_MAX);
		cfg->ctl_port_id = (uint32_t)v;
		return 0;
	}
	if (!strcmp(d, "ctl-socket-file")) {
		if (ntok != 2 || tok[1][0] != '/')
			return fail(ctx, "usage: ctl-socket-file /ABSOLUTE/PATH");
		if (strlen(tok[1]) >= sizeof(cfg->ctl_socket_file))
			return fail(ctx, "ctl-socket-file: path too long");
		snprintf(cfg->ctl_socket_file, sizeof(cfg->ctl_socket_file), "%s", tok[1]);
		return 0;
	}
	if (!strcmp(d, "workers")) {
		if (ntok == 2 && !strcmp(tok[1], "auto")) {
			long n = sysconf(_SC_NPROCESSORS_ONLN);

			v = n < 1		   ? 1 :
			    n > CONFIG_WORKERS_MAX ? CONFIG_WORKERS_MAX :
						     (unsigned long)n;
		} else if (ntok != 2 || parse_uint(tok[1], CONFIG_WORKERS_MAX, &v) < 0 || !v) {
			return fail(ctx, "usage: workers N|auto (N: 1..%d; auto: the online CPUs)",
				    CONFIG_WORKERS_MAX);
		}
		cfg->workers = (unsigned int)v;
		cfg->workers_line = ctx->line;
		return 0;
	}
	if (!strcmp(d, "ctl-group")) {
		struct group *gr;

		if (ntok != 2 || strlen(tok[1]) >= sizeof(cfg->ctl_group_name))
			return fail(ctx, "usage: ctl-group NAME");
		errno = 0;
		gr = getgrnam(tok[1]);
		if (!gr)
			return fail(ctx, "ctl-group: unknown group '%s'", tok[1]);
		cfg->has_ctl_group = true;
		cfg->ctl_group = gr->gr_gid;
		snprintf(cfg->ctl_group_name, sizeof(cfg->ctl_group_name), "%s", tok[1]);
		return 0;
	}
	rc = parse_runtime_directive(ctx, tok, ntok);
	if (rc <= 0)
		return rc;
	return fail(ctx, "unknown directive '%s'", d);
}

#define WORD_SEPARATORS " \t\r\n"

/*
 * The words of @line, NUL-terminated in place; a word in double quotes keeps its spaces
 * (set-header User-Agent "Mozilla/5.0 (X11)"). Returns their number, TOKENIZE_TOO_MANY or
 * TOKENIZE_UNTERMINATED.
 */
#define TOKENIZE_TOO_MANY (-1)
#define TOKENIZE_UNTERMINATED (-2)
static int tokenize(char *line, char **tok)
{
	char *p = line;
	int n = 0;

	for (;;) {
		p += strspn(p, WORD_SEPARATORS);
		if (!*p || *p == '#')
			return n;
		if (n == MAX_TOKENS)
			return TOKENIZE_TOO_MANY;
		if (*p == '"') {
			char *end = strchr(p + 1, '"');

			if (!end || (end[1] && !strchr(WORD_SEPARATORS, end[1])))
				return TOKENIZE_UNTERMINATED;
			*end = '\0';
			tok[n++] = p + 1;
			p = end + 1;
			continue;
		}
		tok[n++] = p;
		p += strcspn(p, WORD_SEPARATORS);
		if (*p)
			*p++ = '\0';
	}
}

static void set_defaults(struct config *cfg)
{
	cfg->data_path = DATA_PATH_SPLICE;
	cfg->sockmap_cap = 1 << 20;
	cfg->sockmap_body_min = 1 << 20;
	cfg->max_memory = MAX_MEMORY_DEFAULT;
	strcpy(cfg->bpf_pin_dir, "/sys/fs/bpf/kfwd");
	cfg->pipe_size = 1 << 20;
	cfg->copy_buffer_size = 256 << 10;
	cfg->tls_copy_buffer_size = TLS_COPY_BUFFER_DEFAULT;
	cfg->playlist_max_size = 1 << 20;
	cfg->client_sndbuf = 256 << 10;
	cfg->upstream_rcvbuf = 256 << 10;
	cfg->max_connections = 0; /* derived from RLIMIT_NOFILE in check_config() */
	cfg->workers = 1;
	cfg->max_request_line = 8 << 10;
	cfg->max_header_size = 32 << 10;
	cfg->connect_timeout_ms = 5000;
	cfg->response_timeout_ms = 60000;
	cfg->client_timeout_ms = 60000;
	cfg->transfer_timeout_ms = 300000;
	cfg->drain_timeout_ms = 30000;
	cfg->tunnel_timeout_ms = 3600000;
	cfg->upstream_idle_timeout_ms = 60000;
	cfg->rtsp_handshake_timeout_ms = 5000;
	cfg->rtsp_first_media_timeout_ms = 5000;
	cfg->upstream_max_idle = 32;
	cfg->upstream_max_conns = 0;
	cfg->upstream_down_time_ms = 10000;
	cfg->upstream_max_fails = 3;
	cfg->log_level = KLOG_INFO;
	cfg->keepalive_idle_s = TCP_KEEPALIVE_IDLE_DEFAULT;
	cfg->keepalive_intvl_s = TCP_KEEPALIVE_INTVL_DEFAULT;
	cfg->keepalive_cnt = TCP_KEEPALIVE_CNT_DEFAULT;
	cfg->user_timeout_ms = TCP_USER_TIMEOUT_DEFAULT_MS;
	snprintf(cfg->ctl_socket_file, sizeof(cfg->ctl_socket_file), "%s", KFWD_CTL_FILE_DEFAULT);
}

/*
 * "<ctl-socket-file>.upgrade": per instance like the control file (instances sharing a directory
 * must not take over each other's sockets), in the same checked directory; off when too long
 * for a unix socket path.
 */
static void default_upgrade_socket(struct config *cfg)
{
	int n = snprintf(cfg->upgrade_socket, sizeof(cfg->upgrade_socket), "%s.upgrade",
			 cfg->ctl_socket_file);

	if (n < 0 || (size_t)n >= sizeof(cfg->upgrade_socket))
		cfg->upgrade_socket[0] = '\0';
}

/*
 * max-connections when not set: what RLIMIT_NOFILE (main.c raises the soft limit to the hard one
 * first) leaves once the fixed descriptors, the clients rejected with 503, the pooled pipes and
 * the pooled upstream connections are set aside.
 */
static unsigned int default_max_connections(const struct config *cfg)
{
	uint64_t servers = 0, reserved, n;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return MAX_CONNECTIONS_MAX;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		servers += cfg->upstreams[i].n_servers;
	reserved = FDS_RESERVED + ACCEPT_REJECT_SLACK + 2 * (uint64_t)PIPE_POOL_MAX +
		   servers * cfg->upstream_max_idle;
	n = rl.rlim_cur > reserved ? (rl.rlim_cur - reserved) / FDS_PER_CONNECTION : 0;
	if (n < 1)
		n = 1;
	return n > MAX_CONNECTIONS_MAX ? MAX_CONNECTIONS_MAX : (unsigned int)n;
}

/*
 * More than one worker: a binary upgrade hands over one process's listeners, which is not built
 * for workers yet. The default upgrade socket is simply not offered.
 */
static int check_workers(struct parse_ctx *ctx)
{
	struct config *cfg = ctx->cfg;

	ctx->line = cfg->workers_line;
	if (cfg->upgrade_socket_set && cfg->upgrade_socket[0])
		return fail(ctx, "workers %u: binary upgrade (upgrade-socket) needs workers 1",
			    cfg->workers);
	cfg->upgrade_socket[0] = '\0';
	return 0;
}

static int check_config(struct parse_ctx *ctx, bool high_set, bool low_set)
{
	struct config *cfg = ctx->cfg;

	if (!high_set)
		cfg->pipe_high_water = cfg->pipe_size;
	if (!low_set)
		cfg->pipe_low_water = cfg->pipe_size / 4;
	if (cfg->pipe_high_water > cfg->pipe_size)
		return fail(ctx, "pipe-high-water (%zu) exceeds pipe-size (%zu)",
			    cfg->pipe_high_water, cfg->pipe_size);
	if (cfg->pipe_low_water >= cfg->pipe_high_water)
		return fail(ctx, "pipe-low-water (%zu) must be below pipe-high-water (%zu)",
			    cfg->pipe_low_water, cfg->pipe_high_water);
	if (cfg->max_request_line > cfg->max_header_size)
		return fail(ctx, "max-request-line exceeds max-header-size");
	if (!cfg->n_listens)
		return fail(ctx, "no listen address");
	if (!cfg->upgrade_socket_set)
		default_upgrade_socket(cfg);
	if (cfg->workers > 1 && check_workers(ctx) < 0)
		return -1;
	if (!cfg->n_routes)
		return fail(ctx, "no route");
	if (!cfg->max_connections)
		cfg->max_connections = default_max_connections(cfg);
	for (size_t i = 0; cfg->has_metrics && i < cfg->n_listens; i++) {
		if (!same_addr(&cfg->listens[i].addr, &cfg->metrics.addr))
			continue;
		ctx->line = cfg->metrics.line;
		return fail(ctx, "metrics-listen %s is also a listen address", cfg->metrics.text);
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct route *r = &cfg->routes[i];

		for (size_t j = 0; j < i; j++) {
			const struct route *o = &cfg->routes[j];

			if (strcmp(o->prefix, r->prefix) ||
			    (o->host ? !r->host || strcasecmp(o->host, r->host) : !!r->host))
				continue;
			ctx->line = r->line;
			return fail(ctx, "duplicate route %s%s%s (already at line %d)", r->prefix,
				    r->host ? " host=" : "", r->host ? r->host : "", o->line);
		}
	}
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		cfg->upstreams[i].cfg = cfg;
		for (size_t j = 0; j < cfg->upstreams[i].n_servers; j++)
			cfg->upstreams[i].servers[j].upstream = &cfg->upstreams[i];
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		struct route *r = &cfg->routes[i];

		if (r->kind != ROUTE_UPSTREAM)
			continue;
		r->upstream = find_upstream(cfg, r->upstream_name);
		if (!r->upstream) {
			ctx->line = r->line;
			return fail(ctx, "unknown upstream '%s'", r->upstream_name);
		}
	}
	return 0;
}

/* The whole file, NUL-terminated; NULL with @err set. */
static char *read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	size_t len = 0, cap = 0, got;
	char *text = NULL, *grown;

	if (!f) {
		snprintf(err, errlen, "%s:0: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	do {
		if (cap - len < 4096) {
			if (cap >= CONFIG_TEXT_MAX) {
				snprintf(err, errlen, "%s:0: larger than %d bytes", path,
					 CONFIG_TEXT_MAX);
				goto fail;
			}
			cap = cap ? cap * 2 : 16384;
			grown = realloc(text, cap + 1);
			if (!grown) {
				snprintf(err, errlen, "%s:0: out of memory", path);
				goto fail;
			}
			text = grown;
		}
		got = fread(text + len, 1, cap - len, f);
		len += got;
	} while (got > 0);
	if (ferror(f)) {
		snprintf(err, errlen, "%s:0: read error: %s", path, strerror(errno));
		goto fail;
	}
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "%s:0: contains a NUL byte", path);
		goto fail;
	}
	fclose(f);
	text[len] = '\0';
	return text;
fail:
	fclose(f);
	free(text);
	return NULL;
}

struct config *config_load(const char *path, char *const *extra_listens, size_t n_extra, char *err,
			   size_t errlen)
{
	return config_load_text(path, NULL, extra_listens, n_extra, err, errlen);
}

struct config *config_load_text(const char *path, const char *text, char *const *extra_listens,
				size_t n_extra, char *err, size_t errlen)
{
	struct parse_ctx ctx = { .file = path ? path : "<embedded>", .err = err, .errlen = errlen };
	bool high_set = false, low_set = false;
	char *line = NULL, *tok[MAX_TOKENS];
	size_t linecap = 0;
	struct config *cfg;
	FILE *f;
	int ntok;

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		snprintf(err, errlen, "%s: out of memory", ctx.file);
		return NULL;
	}
	ctx.cfg = cfg;
	cfg->refcount = 1;
	set_defaults(cfg);
	/* The text is kept: kfwdctl's runtime changes are edits of it (user/ctl.c). */
	if (text || !path)
		cfg->source = strdup(text ? text : embedded_default);
	else if (!(cfg->source = read_file(path, err, errlen)))
		goto fail;
	if (!cfg->source || (path && !(cfg->path = strdup(path)))) {
		snprintf(err, errlen, "%s: out of memory", ctx.file);
		goto fail;
	}
	/* fmemopen() wants a size of at least 1; a NUL byte alone is a line without words. */
	f = fmemopen(cfg->source, strlen(cfg->source) ? strlen(cfg->source) : 1, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", ctx.file, strerror(errno));
		goto fail;
	}
	while (getline(&line, &linecap, f) >= 0) {
		ctx.line++;
		ntok = tokenize(line, tok);
		if (ntok < 0) {
			fail(&ctx,
			     ntok == TOKENIZE_TOO_MANY ?
				     "too many words" :
				     "a quoted word ends without its closing '\"' (or text follows it)");
			goto fail_file;
		}
		if (ntok == 0)
			continue;
		/* -l replaces the config's listen lines. */
		if (n_extra && !strcmp(tok[0], "listen"))
			continue;
		if (parse_directive(&ctx, tok, ntok, &high_set, &low_set) < 0)
			goto fail_file;
	}
	if (ferror(f)) {
		fail(&ctx, "read error: %s", strerror(errno));
		goto fail_file;
	}
	fclose(f);
	free(line);
	line = NULL;
	for (size_t i = 0; i < n_extra; i++) {
		ctx.file = "-l";
		ctx.line = (int)i + 1;
		if (add_listen(&ctx, &cfg->listens, &cfg->n_listens, extra_listens[i], "http") < 0)
			goto fail;
	}
	ctx.file = path ? path : "<embedded>";
	if (check_config(&ctx, high_set, low_set) < 0)
		goto fail;
	return cfg;

fail_file:
	fclose(f);
fail:
	free(line);
	config_free(cfg);
	return NULL;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		free(cfg->upstreams[i].servers);
		free(cfg->upstreams[i].tls.sni);
		free(cfg->upstreams[i].tls.ca);
	}
	for (size_t i = 0; i < cfg->n_listens; i++) {
		free(cfg->listens[i].tls_cert);
		free(cfg->listens[i].tls_key);
	}
	for (size_t i = 0; i < cfg->n_tls_certs; i++) {
		free(cfg->tls_certs[i].cert);
		free(cfg->tls_certs[i].key);
	}
	free(cfg->tls_certs);
	free(cfg->tls_ciphers);
	free(cfg->rtsp_user_agent);
	free(cfg->tls_ciphersuites);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		free(cfg->routes[i].tls.ca);
		free(cfg->routes[i].prefix);
		free(cfg->routes[i].host);
		free(cfg->routes[i].host_rewrite);
		free(cfg->routes[i].auth);
		free(cfg->routes[i].user_agent);
		for (size_t k = 0; k < cfg->routes[i].n_header_overrides; k++) {
			free(cfg->routes[i].header_overrides[k].name);
			free(cfg->routes[i].header_overrides[k].value);
		}
		free(cfg->routes[i].header_overrides);
	}
	for (size_t i = 0; i < cfg->n_rules; i++)
		free(cfg->rules[i].host);
	free(cfg->rules);
	free(cfg->upstreams);
	free(cfg->routes);
	free(cfg->listens);
	free(cfg->path);
	free(cfg->source);
	free(cfg);
}

/* The reference count is bookkeeping, not part of the configuration: holders see it const. */
const struct config *config_get(const struct config *cfg)
{
	if (cfg)
		((struct config *)cfg)->refcount++;
	return cfg;
}

void config_put(const struct config *cfg)
{
	struct config *c = (struct config *)cfg;

	if (c && --c->refcount == 0)
		config_free(c);
}
