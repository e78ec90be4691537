/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CONFIG_H
#define KFWD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "addr.h"

#define CONFIG_NAME_MAX 64
/* route ... auth=USER:PASS, NUL included */
#define ROUTE_AUTH_MAX 256

struct server_state;

struct upstream_server {
	struct sockaddr_any addr;
	char text[80]; /* as written in the config, for logs and kfwdctl */
	struct upstream *upstream;
	/* Health, connection slots and waiters: upstream.c's runtime table, which outlives
	 * configurations (NULL until the configuration is applied, see upstream_attach()). */
	struct server_state *state;
};

/* TLS towards an origin: an upstream's "tls ..." options, or a url-embedded route's. */
struct tls_origin {
	bool on;
	bool verify; /* verify=on (default): chain against ca= or the system store, and the name */
	char *sni; /* sni=: the name sent and verified; NULL: the upstream's host or URL host */
	char *ca; /* ca=FILE: PEM CA bundle instead of the system store */
	int line; /* where it was written, for certificate errors */
};

struct upstream {
	char name[CONFIG_NAME_MAX];
	struct upstream_server *servers;
	size_t n_servers;
	size_t next_server; /* round-robin cursor */
	struct tls_origin tls;
	const struct config *cfg; /* owner: an upstream connection holds a reference on it */
};

enum route_kind {
	ROUTE_UPSTREAM,
	ROUTE_URL_EMBEDDED,
	ROUTE_RTSP_GATEWAY, /* /rtsp/HOST[:PORT]/PATH: kfwd plays the RTSP URL, answers MPEG-TS */
};

enum retry_on {
	RETRY_ON_CONNECT = 1 << 0, /* connect refused / timed out: nothing was sent */
	RETRY_ON_5XX = 1 << 1,
	RETRY_ON_TIMEOUT = 1 << 2, /* no response head in time */
};

/* set-header NAME VALUE / remove-header NAME: the request as sent upstream, after hop-by-hop
 * handling (user/http_rewrite.c). */
struct header_override {
	char *name;
	char *value; /* NULL: remove-header */
};

struct route {
	char *prefix;
	size_t prefix_len;
	enum route_kind kind;
	struct upstream *upstream; /* ROUTE_UPSTREAM: set once the whole file is read */
	char upstream_name[CONFIG_NAME_MAX];
	bool strip_prefix;
	char *host; /* host=: exact name or "*.suffix"; NULL matches any */
	uint64_t methods; /* methods=: bit per llhttp method; 0 allows all */
	char *host_rewrite; /* host-rewrite=VALUE: the Host sent upstream */
	bool forwarded; /* forwarded: add an RFC 7239 Forwarded header */
	unsigned int retries;
	unsigned int retry_on; /* enum retry_on */
	bool retry_non_idempotent;
	uint64_t retry_backoff_ms;
	uint64_t retry_backoff_max_ms;
	int mode; /* mode=: an enum data_path for this route, or -1 for data-path */
	struct tls_origin tls; /* url-embedded "tls": /https/host[:port]/path */
	uint64_t connect_timeout_ms; /* 0: the global value */
	uint64_t response_timeout_ms;
	uint64_t idle_timeout_ms;
	bool drop_frames; /* RTSP on-slow=drop-frames: a slow client loses whole '$' frames */
	char *auth; /* RTSP auth=USER:PASS: kfwd answers the server's 401 with these */
	char *user_agent; /* user-agent=: the RTSP gateway's User-Agent; NULL: rtsp-user-agent */
	struct header_override *header_overrides; /* in the order written */
	size_t n_header_overrides;
	int line; /* where it was defined, for messages */
};

/* allow/deny for url-embedded destinations, in order; first match wins; default deny. */
struct access_rule {
	bool allow;
	bool is_cidr;
	int family;
	unsigned char addr[16];
	unsigned int prefix_len;
	char *host; /* host pattern: exact, "*.suffix" or "*" */
};

enum data_path {
	DATA_PATH_SPLICE,
	DATA_PATH_COPY,
	DATA_PATH_SOCKMAP, /* tunnels in the kernel (bounded); bodies spliced */
	DATA_PATH_SOCKMAP_UNBOUNDED, /* the same without the cap: measured unbounded */
};

/* max-memory: sized for a small router; a smaller budget than one MiB is a typo */
#define MAX_MEMORY_DEFAULT (64u << 20)
#define MAX_MEMORY_MIN (1u << 20)

/* sun_path of struct sockaddr_un */
#define CONFIG_SOCKET_PATH_MAX 108
#define CONFIG_PATH_MAX 256
#define SYSLOG_SOCKET_DEFAULT "/dev/log"

enum access_log_kind {
	ACCESS_LOG_OFF,
	ACCESS_LOG_FILE,
	ACCESS_LOG_SYSLOG,
};

#define CONFIG_PROTO_MAX 16
/* The largest TLS record's plaintext (RFC 8446 5.1): an SSL_read returns at most this much. */
#define TLS_RECORD_MAX (16 << 10)
/*
 * tls-copy-buffer-size: four records. Measured (README "TLS"): the TLS copy path costs the
 * same CPU per GiB with 16 KiB to 256 KiB buffers, so a stalled TLS client holds a few records,
 * not the pipe's megabyte.
 */
#define TLS_COPY_BUFFER_DEFAULT (4 * TLS_RECORD_MAX)
/* workers N: event-loop processes at most (also what `auto` is capped to) */
#define CONFIG_WORKERS_MAX 64
/*
 * Rejected clients still get a 503 and a clean close, up to this many past max-connections
 * (accept.c); the default max-connections leaves their descriptors free.
 */
#define ACCEPT_REJECT_SLACK 256

struct listen_addr {
	struct sockaddr_any addr;
	char text[80];
	int line; /* in the configuration file; -l options: its position, from 1 */
	bool from_args; /* given with -l */
	/* listen ADDR:PORT [PROTO]: what the listener speaks ("http" by default); user/proto.c
	 * knows the protocols and rejects an unknown one when the configuration is applied. */
	char proto[CONFIG_PROTO_MAX];
	bool tls; /* listen ADDR:PORT tls cert=FILE key=FILE */
	char *tls_cert; /* PEM: the certificate, then its chain */
	char *tls_key;
};

/* tls-cert FILE KEY: one more certificate offered by SNI on every TLS listener. */
struct tls_cert_file {
	char *cert;
	char *key;
	int line;
};

/* tls-min-version */
enum tls_version {
	TLS_VERSION_1_2,
	TLS_VERSION_1_3,
};

struct config {
	char *path; /* NULL for the embedded default */

	struct listen_addr *listens;
	size_t n_listens;
	struct upstream *upstreams;
	size_t n_upstreams;
	struct route *routes;
	size_t n_routes;
	struct access_rule *rules;
	size_t n_rules;

	enum data_path data_path;
	size_t sockmap_cap; /* bytes in flight per direction in sockmap mode */
	size_t sockmap_body_min; /* Content-Length bodies at least this long use sockmap; 0: none */
	char bpf_pin_dir[128];
	size_t pipe_size;
	size_t pipe_high_water;
	size_t pipe_low_water;
	size_t copy_buffer_size;
	size_t tls_copy_buffer_size; /* the bound of a flow with a TLS endpoint (copy path) */
	size_t playlist_max_size; /* HLS/M3U playlists read whole up to this; 0: not rewritten */
	size_t max_memory; /* bytes held in flight by every flow together (mem_budget.h); 0: off */
	int client_sndbuf;
	int upstream_rcvbuf;
	unsigned int max_connections;
	size_t max_request_line;
	size_t max_header_size;
	uint64_t connect_timeout_ms;
	uint64_t response_timeout_ms;
	uint64_t client_timeout_ms;
	uint64_t transfer_timeout_ms;
	uint64_t drain_timeout_ms;
	uint64_t tunnel_timeout_ms;
	bool connect_enabled; /* CONNECT host:port, to destinations allow/deny admits */
	/* The HTTP->RTSP gateway (user/rtsp_gateway.c) */
	char *rtsp_user_agent;
	uint64_t rtsp_handshake_timeout_ms; /* request to the PLAY answer */
	uint64_t rtsp_first_media_timeout_ms; /* PLAY answer to the first media frame */
	uint64_t upstream_idle_timeout_ms;
	unsigned int upstream_max_idle;
	unsigned int upstream_max_conns; /* per server; 0 = unlimited */
	uint64_t upstream_down_time_ms;
	struct tls_cert_file *tls_certs;
	size_t n_tls_certs;
	char *tls_ciphers; /* tls-ciphers: TLS 1.2 cipher list; NULL: OpenSSL's default */
	int tls_ciphers_line;
	char *tls_ciphersuites; /* tls-ciphersuites: TLS 1.3 suites; NULL: OpenSSL's default */
	int tls_ciphersuites_line;
	enum tls_version tls_min_version;
	unsigned int upstream_max_fails; /* consecutive connect failures that mark a server down */
	bool has_metrics;
	struct listen_addr metrics;
	int log_level;

	/* Control socket (user/ctl.c, kfwdctl) */
	bool ctl_off; /* ctl-port-id off */
	uint32_t ctl_port_id; /* netlink port id; 0: the daemon's pid */
	char ctl_socket_file[256];
	bool has_ctl_group;
	gid_t ctl_group; /* read-only kfwdctl commands also for this group */
	char ctl_group_name[CONFIG_NAME_MAX];

	/* Logs (user/log_sink.c, user/access_log.c) */
	char log_syslog[CONFIG_SOCKET_PATH_MAX]; /* log-target syslog[:PATH]; "" for stderr */
	enum access_log_kind access_log;
	char access_log_path[CONFIG_PATH_MAX]; /* the file, or the syslog socket */

	/* Dead peers, on client and upstream sockets; 0 for off */
	unsigned int keepalive_idle_s; /* tcp-keepalive IDLE INTVL CNT */
	unsigned int keepalive_intvl_s;
	unsigned int keepalive_cnt;
	uint64_t user_timeout_ms; /* tcp-user-timeout */

	/* Least privilege (user/privdrop.c): applied once, at start */
	bool has_user;
	uid_t run_uid;
	gid_t run_gid; /* group NAME, else the user's primary group */
	bool has_group;
	char user_name[CONFIG_NAME_MAX];

	/* Binary upgrade (user/upgrade.c): where a new kfwd asks for the listening sockets */
	char upgrade_socket[CONFIG_SOCKET_PATH_MAX]; /* "" for off */
	bool upgrade_socket_set; /* upgrade-socket given; else next to ctl-socket-file */

	/* Event loops (user/workers.c): 1 = this process serves; more = a master and N workers */
	unsigned int workers;
	int workers_line;

	char *source; /* the text this configuration was parsed from */
	unsigned int refcount; /* config_get/config_put */
};

/*
 * Parse @path (or the embedded default when @path is NULL). @extra_listens (from -l) replace the
 * config's listen lines when given. On error returns NULL after writing "FILE:LINE: what" into @err.
 */
struct config *config_load(const char *path, char *const *extra_listens, size_t n_extra, char *err,
			   size_t errlen);
/* Same, parsing @text (kfwdctl's runtime changes) as if it were the file @path (may be NULL). */
struct config *config_load_text(const char *path, const char *text, char *const *extra_listens,
				size_t n_extra, char *err, size_t errlen);
void config_free(struct config *cfg);
/*
 * A loaded configuration has one reference. Holders: the running configuration (user/ctl.c),
 * every session, every upstream connection (upstream.c). The last config_put() frees it.
 */
const struct config *config_get(const struct config *cfg);
void config_put(const struct config *cfg);

int parse_size(const char *text, size_t *out);
int parse_duration_ms(const char *text, uint64_t *out);
const char *data_path_name(enum data_path dp);
int data_path_parse(const char *name); /* "auto" is splice; -1 if unknown */
/* Does anything in @cfg ask for the sockmap data path? */
bool config_wants_sockmap(const struct config *cfg);
/* Does anything in @cfg terminate or originate TLS? */
bool config_wants_tls(const struct config *cfg);

#endif
