// SPDX-License-Identifier: GPL-2.0
/*
 * kfwdctl: look at and change a running kfwd over its netlink control socket
 * (include/kfwd/ctl.h). Every answer is checked: it must come from the daemon's port id, from
 * uid 0 (or the uid the published file names: kfwd ran `user`) and, when the published file
 * names it, from the daemon's pid. Anything else is an
 * impostor, reported as such.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "common_ctl.h"

enum exit_code {
	EX_OK = 0,
	EX_FAIL = 1, /* kfwd refused or failed the command */
	EX_USAGE = 2, /* bad command line */
	EX_UNREACH = 3, /* kfwd is not running, or does not answer */
	EX_IMPOSTOR = 4, /* something that is not kfwd answered, holds the port id, or wrote FILE */
	EX_PERM = 5, /* permission denied (by kfwd, or FILE unreadable) */
	EX_PROTO = 6, /* malformed or incompatible answer */
};

static const char usage_text[] =
	"usage: kfwdctl [OPTIONS] COMMAND [ARGS]\n"
	"\n"
	"options (before the command):\n"
	"  -j, --json          JSON output (monitor: one object per line)\n"
	"  -f, --file FILE     where kfwd published its port id and pid (default " KFWD_CTL_FILE_DEFAULT
	")\n"
	"  -p, --port-id N     talk to this netlink port id (then FILE only names the pid to expect,\n"
	"                      if given with -f; otherwise any uid-0 answerer is accepted)\n"
	"  -t, --timeout SEC   how long to wait for an answer (default 5)\n"
	"  -h, --help          this text;  -V, --version\n"
	"\n"
	"commands:\n"
	"  status                              version, uptime, listeners, data paths, knobs\n"
	"  stats                               counters (the names of /metrics without kfwd_)\n"
	"  conn list                           open client connections\n"
	"  conn kill ID                        close a connection now\n"
	"  route list                          routes in match order\n"
	"  route add PREFIX TARGET [OPTION...] TARGET: an upstream name or url-embedded; options\n"
	"                                      as in the config file (strip-prefix, host=H, ...)\n"
	"  route del PREFIX [host=H]           host= (empty) names the route without host=\n"
	"  upstream list                       servers, health, connections\n"
	"  upstream drain NAME [ADDR:PORT]     send no new requests there (all servers if none)\n"
	"  upstream enable NAME [ADDR:PORT]    undo drain\n"
	"  set KEY VALUE [KEY VALUE...]        runtime knobs, applied together (keys below)\n"
	"  reload                              re-read the config file; on error nothing changes\n"
	"  monitor [count N]                   live events: open, close, pause, resume, config\n"
	"  help                                this text\n"
	"\n"
	"Read-only commands (status, stats, conn list, route list, upstream list, monitor) are for\n"
	"uid 0 and members of kfwd's ctl-group; the others for uid 0 only. route add/del and set\n"
	"change the running configuration only: reload (the file) drops them. Connections that\n"
	"are open keep the configuration they started with.\n"
	"\n"
	"exit status: 0 ok, 1 kfwd refused or failed the command, 2 usage, 3 kfwd not running or\n"
	"not answering, 4 something other than kfwd answered or holds its port id (squatter),\n"
	"5 permission denied, 6 malformed or incompatible answer.\n";

static struct {
	bool json;
	const char *file;
	bool file_given;
	uint32_t portid;
	bool portid_given;
	int timeout_ms;
} opt = { .file = KFWD_CTL_FILE_DEFAULT, .timeout_ms = 5000 };

/* The daemon as published, and our socket. */
static struct {
	int fd;
	uint32_t portid;
	pid_t pid; /* 0: unknown (-p without -f) */
	uid_t uid; /* kfwd's uid after `user` (published), else 0 */
	uint32_t seq;
} peer = { .fd = -1 };

static uint32_t rxbuf[KFWD_CTL_RECV_MAX / 4];
static uint32_t txbuf[KFWD_CTL_MSG_MAX / 4];

static int errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int errorf(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("kfwdctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Out of memory (or an output stream failed): nothing sensible is left to do. */
static void __attribute__((noreturn)) die_errno(void)
{
	perror("kfwdctl");
	exit(EX_FAIL);
}

/* ------------------------------------------------------------------ JSON */

struct json {
	FILE *out; /* stdout, or a string being rendered */
	int depth;
	bool first[32];
};

static struct json J;

static void json_sep(void)
{
	if (J.depth > 0 && !J.first[J.depth])
		fputc(',', J.out);
	J.first[J.depth] = false;
}

static void json_string(const char *s)
{
	fputc('"', J.out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(J.out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(J.out, "\\u%04x", c);
		else
			fputc(c, J.out);
	}
	fputc('"', J.out);
}

static void json_key(const char *key)
{
	json_sep();
	if (key) {
		json_string(key);
		fputc(':', J.out);
	}
}

static void json_open(const char *key, char bracket)
{
	json_key(key);
	fputc(bracket, J.out);
	J.depth++;
	J.first[J.depth] = true;
}

static void json_close(char bracket)
{
	J.depth--;
	fputc(bracket, J.out);
	if (J.depth == 0 && J.out == stdout)
		fputc('\n', J.out);
}

static void json_str(const char *key, const char *v)
{
	json_key(key);
	json_string(v);
}

static void json_u64(const char *key, uint64_t v)
{
	json_key(key);
	fprintf(J.out, "%" PRIu64, v);
}

static void json_bool(const char *key, bool v)
{
	json_key(key);
	fputs(v ? "true" : "false", J.out);
}

/* "key=value" as a member "key": value, the value a number when it is all digits. */
static void json_kv(const char *item)
{
	const char *eq = strchr(item, '=');
	const char *v = eq ? eq + 1 : "";
	char key[64];
	size_t klen = eq ? (size_t)(eq - item) : strlen(item);
	size_t digits = strspn(v, "0123456789");

	if (klen >= sizeof(key))
		klen = sizeof(key) - 1;
	for (size_t i = 0; i < klen; i++)
		key[i] = item[i] == '-' ? '_' : item[i];
	key[klen] = '\0';
	json_key(key);
	if (*v && !v[digits] && (digits == 1 || v[0] != '0') && digits < 20)
		fputs(v, J.out);
	else
		json_string(v);
}

/* "age-ms" -> "age_ms" */
static const char *json_name(const char *name, char *buf, size_t len)
{
	size_t i;

	for (i = 0; name[i] && i + 1 < len; i++)
		buf[i] = name[i] == '-' ? '_' : name[i];
	buf[i] = '\0';
	return buf;
}

static void json_attr(const char *key, const struct nlattr *a, const struct kctl_policy *pol);

/*
 * The attributes of @nest (or of the top-level @tb-less attribute list) as JSON members, named
 * after the policy; "a.b" names group into "a": {"b": ...}; repeated attributes become arrays.
 */
static void json_members(const struct nlattr *nest, const struct kctl_set *set, unsigned int skip)
{
	const struct nlattr *tb[KCTL_SET_TYPES_MAX];
	const char *group = NULL;
	char name[64];

	kctl_parse_nested(nest, set, tb);
	for (unsigned int t = 1; t <= set->max; t++) {
		const struct kctl_policy *pol = &set->attrs[t];
		const char *dot, *key;

		if (pol->type == KCTL_NONE || t == skip)
			continue;
		if (pol->multi) {
			const struct nlattr *a;
			bool any = false;

			mnl_attr_for_each_nested(a, nest)
			{
				if (mnl_attr_get_type(a) != t)
					continue;
				if (!any) {
					if (group) {
						json_close('}');
						group = NULL;
					}
					json_open(json_name(pol->name, name, sizeof(name)),
						  pol->type == KCTL_KV ? '{' : '[');
					any = true;
				}
				json_attr(NULL, a, pol);
			}
			if (any)
				json_close(pol->type == KCTL_KV ? '}' : ']');
			continue;
		}
		if (!tb[t])
			continue;
		dot = strchr(pol->name, '.');
		if (dot) {
			if (group && strncmp(group, pol->name, (size_t)(dot - pol->name) + 1)) {
				json_close('}');
				group = NULL;
			}
			if (!group) {
				snprintf(name, sizeof(name), "%.*s", (int)(dot - pol->name),
					 pol->name);
				json_open(json_name(name, name, sizeof(name)), '{');
				group = pol->name;
			}
			key = json_name(dot + 1, name, sizeof(name));
		} else {
			if (group) {
				json_close('}');
				group = NULL;
			}
			key = json_name(pol->name, name, sizeof(name));
		}
		json_attr(key, tb[t], pol);
	}
	if (group)
		json_close('}');
}

/* @nest as one JSON object: its members (json_members) between braces. */
static void json_object(const struct nlattr *nest, const struct kctl_set *set)
{
	json_open(NULL, '{');
	json_members(nest, set, 0);
	json_close('}');
}

static void json_attr(const char *key, const struct nlattr *a, const struct kctl_policy *pol)
{
	switch (pol->type) {
	case KCTL_U8:
		json_bool(key, mnl_attr_get_u8(a));
		break;
	case KCTL_U32:
		json_u64(key, mnl_attr_get_u32(a));
		break;
	case KCTL_U64:
		json_u64(key, mnl_attr_get_u64(a));
		break;
	case KCTL_STR:
		json_str(key, mnl_attr_get_str(a));
		break;
	case KCTL_KV:
		json_kv(mnl_attr_get_str(a));
		break;
	case KCTL_NEST:
		json_open(key, '{');
		json_members(a, pol->nest, 0);
		json_close('}');
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------ tables */

#define TABLE_MAX_COLS 16

struct table {
	size_t ncols, nrows, cap;
	char **cells; /* nrows * ncols, row 0 = header */
	bool right[TABLE_MAX_COLS];
};

static void table_init(struct table *t, const char *const *heads, const char *align)
{
	memset(t, 0, sizeof(*t));
	while (heads[t->ncols])
		t->ncols++;
	for (size_t i = 0; i < t->ncols; i++)
		t->right[i] = align[i] == 'r';
	t->cap = 16;
	t->cells = calloc(t->cap * t->ncols, sizeof(char *));
	if (!t->cells)
		die_errno();
	for (size_t i = 0; i < t->ncols; i++)
		t->cells[i] = strdup(heads[i]);
	t->nrows = 1;
}

/* A row of ncols values, printf-formatted one after the other from @fmt split on '\t'. */
static void table_row(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void table_row(struct table *t, const char *fmt, ...)
{
	char *line = NULL, *rest, *cell;
	va_list ap;
	size_t c = 0;
	int rc;

	if (t->nrows == t->cap) {
		char **n = realloc(t->cells, t->cap * 2 * t->ncols * sizeof(char *));

		if (!n)
			die_errno();
		t->cells = n;
		t->cap *= 2;
	}
	va_start(ap, fmt);
	rc = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (rc < 0)
		die_errno();
	rest = line;
	while (c < t->ncols) {
		cell = rest ? strsep(&rest, "\t") : NULL;
		t->cells[t->nrows * t->ncols + c++] = strdup(cell && *cell ? cell : "-");
	}
	free(line);
	t->nrows++;
}

static void table_print(struct table *t)
{
	size_t width[TABLE_MAX_COLS] = { 0 };

	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			size_t l = s ? strlen(s) : 0;

			if (l > width[c])
				width[c] = l;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];

			if (!s)
				s = "";
			if (c + 1 == t->ncols && !t->right[c])
				printf("%s", s);
			else
				printf(t->right[c] ? "%*s" : "%-*s", (int)width[c], s);
			if (c + 1 < t->ncols)
				fputs("  ", stdout);
		}
		putchar('\n');
	}
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* ------------------------------------------------------------------ formatting */

static void fmt_duration(uint64_t ms, char *out, size_t len)
{
	uint64_t s = ms / 1000;

	if (s < 60)
		snprintf(out, len, "%" PRIu64 ".%" PRIu64 "s", s, (ms % 1000) / 100);
	else if (s < 3600)
		snprintf(out, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, len, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", s / 3600,
			 s / 60 % 60, s % 60);
	else
		snprintf(out, len, "%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
}

static void fmt_size(uint64_t v, char *out, size_t len)
{
	if (v && v % (1 << 20) == 0)
		snprintf(out, len, "%" PRIu64 "m", v >> 20);
	else if (v && v % 1024 == 0)
		snprintf(out, len, "%" PRIu64 "k", v >> 10);
	else
		snprintf(out, len, "%" PRIu64, v);
}

static const char *str_or(const struct nlattr *a, const char *dflt)
{
	return a ? mnl_attr_get_str(a) : dflt;
}

static uint64_t u64_or0(const struct nlattr *a)
{
	if (!a)
		return 0;
	switch (mnl_attr_get_payload_len(a)) {
	case 1:
		return mnl_attr_get_u8(a);
	case 4:
		return mnl_attr_get_u32(a);
	default:
		return mnl_attr_get_u64(a);
	}
}

/* ------------------------------------------------------------------ talking to kfwd */

static int read_published(uint32_t *portid, pid_t *pid)
{
	char buf[128];
	struct stat st;
	unsigned int p;
	int fd, d, end = 0;
	ssize_t n;

	fd = open(opt.file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return errorf(
				EX_UNREACH,
				"kfwd is not running: %s does not exist (-f FILE or -p PORTID for "
				"an instance with another ctl-socket-file)",
				opt.file);
		if (errno == EACCES)
			return errorf(EX_PERM, "%s: %s", opt.file, strerror(errno));
		if (errno == ELOOP)
			return errorf(EX_IMPOSTOR, "%s is a symbolic link: not trusted", opt.file);
		return errorf(EX_UNREACH, "%s: %s", opt.file, strerror(errno));
	}
	/* Only what root wrote and nobody else can change names the daemon. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022)) {
		close(fd);
		return errorf(EX_IMPOSTOR,
			      "%s is not a regular file owned by root and writable by root alone: "
			      "not trusted",
			      opt.file);
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return errorf(EX_UNREACH, "%s: empty or unreadable", opt.file);
	buf[n] = '\0';
	if (sscanf(buf, "portid=%u pid=%d%n", &p, &d, &end) != 2 || d <= 0)
		return errorf(EX_UNREACH, "%s: not \"portid=N pid=P\"", opt.file);
	/* A kfwd that dropped to `user` answers with that uid; root wrote it here before. */
	peer.uid = 0;
	if (buf[end] == ' ') {
		unsigned int u;
		int more = 0;

		if (sscanf(buf + end, " uid=%u%n", &u, &more) != 1 || more <= 0)
			return errorf(EX_UNREACH, "%s: not \"portid=N pid=P [uid=U]\"", opt.file);
		peer.uid = (uid_t)u;
		end += more;
	}
	if (buf[end] != '\n' && buf[end] != '\0')
		return errorf(EX_UNREACH, "%s: not \"portid=N pid=P [uid=U]\"", opt.file);
	*portid = p;
	*pid = d;
	return EX_OK;
}

static int holder_check(void)
{
	struct kctl_holder h;
	int r = kctl_portid_holder(peer.portid, peer.pid, &h);

	if (r == 0)
		return errorf(EX_UNREACH, "kfwd is not running: nothing holds netlink port id %u%s",
			      peer.portid, peer.pid ? " (the published file is stale)" : "");
	/* Whoever holds it is known only when its fds are readable (as root): then check now,
	 * before talking to it. The credentials of the answer are checked in any case. */
	if (r > 0 && h.pid && ((peer.pid && h.pid != peer.pid) || h.uid != peer.uid)) {
		char expect[64] = "";

		if (peer.pid)
			snprintf(expect, sizeof(expect), " (pid %d)", (int)peer.pid);
		return errorf(EX_IMPOSTOR,
			      "netlink port id %u is held by pid %d (%s, uid %d), not by kfwd%s: "
			      "something is squatting kfwd's port id",
			      peer.portid, (int)h.pid, h.comm, (int)h.uid, expect);
	}
	return EX_OK;
}

static int connect_daemon(void)
{
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK };
	int one = 1, rcvbuf = 4 << 20, rc;

	if (opt.portid_given) {
		peer.portid = opt.portid;
		if (opt.file_given) {
			uint32_t p;

			rc = read_published(&p, &peer.pid);
			if (rc)
				return rc;
			if (p != peer.portid)
				peer.pid = 0;
		}
	} else {
		rc = read_published(&peer.portid, &peer.pid);
		if (rc)
			return rc;
	}
	if (peer.pid && kill(peer.pid, 0) < 0 && errno == ESRCH)
		return errorf(EX_UNREACH,
			      "kfwd is not running: pid %d named by %s is gone (stale file)",
			      (int)peer.pid, opt.file);
	rc = holder_check();
	if (rc)
		return rc;
	peer.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, KFWD_CTL_NETLINK);
	if (peer.fd < 0)
		return errorf(EX_FAIL, "netlink socket: %s", strerror(errno));
	if (setsockopt(peer.fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		return errorf(EX_FAIL, "SO_PASSCRED: %s", strerror(errno));
	if (setsockopt(peer.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 &&
	    setsockopt(peer.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
		return errorf(EX_FAIL, "SO_RCVBUF: %s", strerror(errno));
	if (bind(peer.fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return errorf(EX_FAIL, "bind: %s", strerror(errno));
	peer.seq = (uint32_t)time(NULL);
	return EX_OK;
}

static struct nlmsghdr *request(uint16_t cmd, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(txbuf);

	nlh->nlmsg_type = cmd;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = ++peer.seq;
	mnl_attr_put_u32(nlh, KFWD_A_VERSION, KFWD_CTL_VERSION);
	return nlh;
}

static bool put_str_attr(struct nlmsghdr *nlh, uint16_t type, const char *s)
{
	if (strlen(s) >= KFWD_CTL_STR_MAX)
		return false;
	return mnl_attr_put_strz_check(nlh, sizeof(txbuf), type, s);
}

static int send_request(const struct nlmsghdr *nlh)
{
	struct sockaddr_nl to = { .nl_family = AF_NETLINK, .nl_pid = peer.portid };

	if (sendto(peer.fd, nlh, nlh->nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		if (errno == ECONNREFUSED)
			return errorf(EX_UNREACH,
				      "kfwd is not running: nothing at netlink port id %u",
				      peer.portid);
		return errorf(EX_UNREACH, "send to port id %u: %s", peer.portid, strerror(errno));
	}
	return EX_OK;
}

/*
 * One datagram from the daemon, its origin verified. Returns its length, or 0 after a
 * timeout of @timeout_ms (-1: wait forever), or -exit_code.
 */
static ssize_t receive(int timeout_ms)
{
	for (;;) {
		struct pollfd pfd = { .fd = peer.fd, .events = POLLIN };
		struct kctl_cbuf cbuf;
		struct sockaddr_nl from;
		const struct ucred *cred;
		bool truncated;
		ssize_t n;
		int r;

		r = poll(&pfd, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errorf(EX_FAIL, "poll: %s", strerror(errno));
		if (r == 0)
			return 0;
		n = kctl_recv(peer.fd, rxbuf, sizeof(rxbuf), &from, &cbuf, &cred, &truncated);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			if (errno == ENOBUFS)
				return -errorf(EX_FAIL, "answers lost: receive buffer overrun");
			return -errorf(EX_FAIL, "recvmsg: %s", strerror(errno));
		}
		/* Anyone can send to our port id: only the daemon's port counts. */
		if (from.nl_pid != peer.portid)
			continue;
		if (!cred)
			return -errorf(EX_IMPOSTOR,
				       "answer from port id %u without credentials: not trusted",
				       peer.portid);
		if (cred->uid != peer.uid || (peer.pid && cred->pid != peer.pid)) {
			char expect[64] = "";

			if (peer.pid)
				snprintf(expect, sizeof(expect), ", kfwd is pid %d", (int)peer.pid);
			return -errorf(
				EX_IMPOSTOR,
				"refusing an answer from pid %d (uid %u) at netlink port id %u%s: it "
				"is not kfwd; something is squatting kfwd's port id",
				(int)cred->pid, (unsigned int)cred->uid, peer.portid, expect);
		}
		if (truncated)
			return -errorf(EX_PROTO, "answer larger than %zu bytes", sizeof(rxbuf));
		return n;
	}
}

enum kind {
	KIND_SINGLE, /* one message of the request's type */
	KIND_ACK, /* NLMSG_ERROR */
	KIND_DUMP, /* NLM_F_MULTI messages, then NLMSG_DONE */
};

typedef int (*msg_cb)(const struct kctl_msg *m, void *arg);

struct result {
	const char *cmd;
	char note[KFWD_CTL_STR_MAX]; /* ACK message */
	bool more; /* dump: NLMSG_DONE named a next page */
	uint64_t cursor;
	bool interrupted;
};

static int daemon_error(const struct kctl_msg *m, const char *cmd)
{
	int e = -m->error;

	if (m->ext_msg)
		errorf(0, "%s: %s", cmd, m->ext_msg);
	else
		errorf(0, "%s: %s", cmd, strerror(e));
	if (e == EPERM || e == EACCES)
		return EX_PERM;
	if (e == EPROTO)
		return EX_PROTO;
	return EX_FAIL;
}

static int transact(struct nlmsghdr *req, enum kind kind, msg_cb cb, void *arg, struct result *res)
{
	uint32_t seq = req->nlmsg_seq;
	int rc = send_request(req);

	if (rc)
		return rc;
	res->more = false;
	res->interrupted = false;
	res->note[0] = '\0';
	for (;;) {
		ssize_t n = receive(opt.timeout_ms);
		const void *pos = rxbuf;
		size_t rem;
		const struct nlmsghdr *nlh;
		struct kctl_err err;

		if (n < 0)
			return (int)-n;
		if (n == 0)
			return errorf(EX_UNREACH,
				      "%s: no answer from kfwd (port id %u) within %d ms", res->cmd,
				      peer.portid, opt.timeout_ms);
		rem = (size_t)n;
		while ((nlh = kctl_next_msg(&pos, &rem, &err))) {
			struct kctl_msg m;

			if (nlh->nlmsg_seq != seq)
				continue; /* an answer to an earlier request */
			rc = kctl_msg_parse(nlh, &m, &err);
			if (rc != KCTL_PARSE_OK)
				return errorf(EX_PROTO, "%s: malformed answer: %s", res->cmd,
					      rc == KCTL_PARSE_UNKNOWN ? "unknown type" : err.msg);
			if (nlh->nlmsg_type == NLMSG_ERROR) {
				if (m.error)
					return daemon_error(&m, res->cmd);
				if (m.ext_msg)
					snprintf(res->note, sizeof(res->note), "%s", m.ext_msg);
				if (kind == KIND_ACK)
					return EX_OK;
				continue;
			}
			if (nlh->nlmsg_type == NLMSG_DONE) {
				if (kind != KIND_DUMP)
					continue;
				if (m.tb[KFWD_A_CURSOR]) {
					res->more = true;
					res->cursor = mnl_attr_get_u64(m.tb[KFWD_A_CURSOR]);
				}
				res->interrupted = nlh->nlmsg_flags & NLM_F_DUMP_INTR;
				return EX_OK;
			}
			if (nlh->nlmsg_type != req->nlmsg_type)
				continue;
			if (!m.tb[KFWD_A_VERSION] ||
			    mnl_attr_get_u32(m.tb[KFWD_A_VERSION]) != KFWD_CTL_VERSION)
				return errorf(EX_PROTO, "%s: answer of another protocol version",
					      res->cmd);
			if (cb) {
				rc = cb(&m, arg);
				if (rc)
					return rc;
			}
			if (kind == KIND_SINGLE)
				return EX_OK;
		}
		if (err.msg[0])
			return errorf(EX_PROTO, "%s: malformed answer: %s", res->cmd, err.msg);
	}
}

/* A dump, page after page. */
static int dump(uint16_t cmd, const char *name, msg_cb cb, void *arg)
{
	struct result res = { .cmd = name };
	uint64_t cursor = 0;
	bool have_cursor = false;

	for (int page = 0; page < 1000000; page++) {
		struct nlmsghdr *req = request(cmd, NLM_F_DUMP);
		int rc;

		if (have_cursor)
			mnl_attr_put_u64(req, KFWD_A_CURSOR, cursor);
		rc = transact(req, KIND_DUMP, cb, arg, &res);
		if (rc)
			return rc;
		if (res.interrupted)
			errorf(0, "%s: the configuration changed while listing; run it again",
			       name);
		if (!res.more)
			return EX_OK;
		cursor = res.cursor;
		have_cursor = true;
	}
	return errorf(EX_PROTO, "%s: endless listing", name);
}

static int ack_command(struct nlmsghdr *req, const char *name)
{
	struct result res = { .cmd = name };
	int rc = transact(req, KIND_ACK, NULL, NULL, &res);

	if (rc)
		return rc;
	if (opt.json) {
		json_open(NULL, '{');
		json_bool("ok", true);
		if (res.note[0])
			json_str("note", res.note);
		json_close('}');
	} else if (res.note[0]) {
		printf("%s\n", res.note);
	}
	return EX_OK;
}

/* ------------------------------------------------------------------ status, stats */

static int status_cb(const struct kctl_msg *m, void *arg)
{
	const struct nlattr *st = m->tb[KFWD_A_STATUS], *tb[KFWD_ST_MAX + 1], *a;
	char up[32], started[64], v1[32], v2[32], v3[32], v4[32];
	time_t t;
	struct tm tm;
	bool first = true;

	if (!st)
		return errorf(EX_PROTO, "status: answer without status");
	if (opt.json) {
		json_object(st, &kctl_status);
		return EX_OK;
	}
	kctl_parse_nested(st, &kctl_status, tb);
	fmt_duration(u64_or0(tb[KFWD_ST_UPTIME_MS]), up, sizeof(up));
	t = (time_t)u64_or0(tb[KFWD_ST_STARTED]);
	gmtime_r(&t, &tm);
	strftime(started, sizeof(started), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("kfwd %s, pid %" PRIu64 ", up %s (since %s)%s\n", str_or(tb[KFWD_ST_VERSION], "?"),
	       u64_or0(tb[KFWD_ST_PID]), up, started,
	       u64_or0(tb[KFWD_ST_DRAINING]) ? ", shutting down" : "");
	printf("config       %s (configuration %" PRIu64 ", %" PRIu64 " runtime change%s)\n",
	       tb[KFWD_ST_CONFIG_FILE] && *mnl_attr_get_str(tb[KFWD_ST_CONFIG_FILE]) ?
		       mnl_attr_get_str(tb[KFWD_ST_CONFIG_FILE]) :
		       "<embedded>",
	       u64_or0(tb[KFWD_ST_CONFIG_GEN]), u64_or0(tb[KFWD_ST_RUNTIME_CHANGES]),
	       u64_or0(tb[KFWD_ST_RUNTIME_CHANGES]) == 1 ? "" : "s");
	fputs("listen      ", stdout);
	mnl_attr_for_each_nested(a, st)
	{
		if (mnl_attr_get_type(a) == KFWD_ST_LISTEN)
			printf(" %s", mnl_attr_get_str(a));
	}
	putchar('\n');
	printf("metrics      %s\n", str_or(tb[KFWD_ST_METRICS], "off"));
	printf("connections  %" PRIu64 " (max-connections %" PRIu64 ")\n",
	       u64_or0(tb[KFWD_ST_CONNECTIONS]), u64_or0(tb[KFWD_ST_MAX_CONNS]));
	mnl_attr_for_each_nested(a, st)
	{
		const struct nlattr *dp[KFWD_DP_MAX + 1];

		if (mnl_attr_get_type(a) != KFWD_ST_DATAPATH)
			continue;
		kctl_parse_nested(a, &kctl_datapath, dp);
		printf("%-12s %-8s %s%s%s%s\n", first ? "data paths" : "",
		       str_or(dp[KFWD_DP_NAME], "?"),
		       u64_or0(dp[KFWD_DP_AVAILABLE]) ? "available" : "not available",
		       u64_or0(dp[KFWD_DP_DEFAULT]) ? " (default)" : "",
		       dp[KFWD_DP_REASON] ? ": " : "", str_or(dp[KFWD_DP_REASON], ""));
		first = false;
	}
	fmt_size(u64_or0(tb[KFWD_ST_PIPE_SIZE]), v1, sizeof(v1));
	fmt_size(u64_or0(tb[KFWD_ST_PIPE_HIGH]), v2, sizeof(v2));
	fmt_size(u64_or0(tb[KFWD_ST_PIPE_LOW]), v3, sizeof(v3));
	fmt_size(u64_or0(tb[KFWD_ST_COPY_BUF]), v4, sizeof(v4));
	printf("knobs        data-path %s  pipe-size %s  pipe-high-water %s  pipe-low-water %s  "
	       "copy-buffer-size %s  log-level %s\n",
	       str_or(tb[KFWD_ST_DATA_PATH], "?"), v1, v2, v3, v4,
	       str_or(tb[KFWD_ST_LOG_LEVEL], "?"));
	if (u64_or0(tb[KFWD_ST_MAX_MEMORY])) {
		fmt_size(u64_or0(tb[KFWD_ST_MAX_MEMORY]), v1, sizeof(v1));
		fmt_size(u64_or0(tb[KFWD_ST_MEMORY_HELD]), v2, sizeof(v2));
		fmt_size(u64_or0(tb[KFWD_ST_FAIR_SHARE]), v3, sizeof(v3));
		printf("memory       max-memory %s  held %s  fair share %s\n", v1, v2, v3);
	} else {
		printf("memory       max-memory off\n");
	}
	printf("control      port id %" PRIu64 ", ctl-group %s, monitors %" PRIu64 "\n",
	       u64_or0(tb[KFWD_ST_CTL_PORT_ID]), str_or(tb[KFWD_ST_CTL_GROUP], "none (root only)"),
	       u64_or0(tb[KFWD_ST_SUBSCRIBERS]));
	return EX_OK;
}

static int stats_cb(const struct kctl_msg *m, void *arg)
{
	const struct nlattr *n = m->tb[KFWD_A_STATS], *tb[KFWD_STAT_MAX + 1];

	if (!n)
		return errorf(EX_PROTO, "stats: answer without counters");
	if (opt.json) {
		json_object(n, &kctl_stats);
		return EX_OK;
	}
	kctl_parse_nested(n, &kctl_stats, tb);
#define V(x) u64_or0(tb[KFWD_STAT_##x])
	printf("connections   accepted %" PRIu64 "  active %" PRIu64 "  rejected %" PRIu64 "\n",
	       V(CONN_ACCEPTED), V(CONN_ACTIVE), V(CONN_REJECTED));
	printf("requests      %" PRIu64 "\n", V(REQUESTS));
	printf("responses     1xx %" PRIu64 "  2xx %" PRIu64 "  3xx %" PRIu64 "  4xx %" PRIu64
	       "  5xx %" PRIu64 "\n",
	       V(RESP_1XX), V(RESP_2XX), V(RESP_3XX), V(RESP_4XX), V(RESP_5XX));
	printf("bytes         splice   request %" PRIu64 "  response %" PRIu64 "\n", V(SPLICED_REQ),
	       V(SPLICED_RESP));
	printf("              sockmap  request %" PRIu64 "  response %" PRIu64 "\n", V(SOCKMAP_REQ),
	       V(SOCKMAP_RESP));
	printf("              copy     request %" PRIu64 "  response %" PRIu64
	       "  (heads and chunk lines included)\n",
	       V(COPIED_REQ), V(COPIED_RESP));
	printf("sockmap       flows %" PRIu64 "  response bodies %" PRIu64
	       "  start fallbacks %" PRIu64 "  tunnels %" PRIu64 "\n",
	       V(SOCKMAP_FLOWS), V(SOCKMAP_RESPONSES), V(SOCKMAP_START_FALLBACKS), V(TUNNELS));
	printf("backpressure  pauses %" PRIu64 "  resumes %" PRIu64 "  paused now %" PRIu64 "\n",
	       V(PAUSES), V(RESUMES), V(PAUSED_FLOWS));
	printf("upstream      connects %" PRIu64 "  reuses %" PRIu64 "  connect errors %" PRIu64
	       "  retries %" PRIu64 "  idle %" PRIu64 "\n",
	       V(UP_CONNECTS), V(UP_REUSES), V(UP_CONNECT_ERRORS), V(UP_RETRIES), V(UP_IDLE));
	printf("pipes         in use %" PRIu64 "  pooled %" PRIu64 "  fallbacks to copy %" PRIu64
	       "\n",
	       V(PIPES_IN_USE), V(PIPES_POOLED), V(PIPE_FALLBACKS));
	printf("errors        client %" PRIu64 "  upstream %" PRIu64 "  timeouts %" PRIu64
	       "  aborted transfers %" PRIu64 "\n",
	       V(CLIENT_ERRORS), V(UPSTREAM_ERRORS), V(TIMEOUTS), V(ABORTED));
	printf("control       requests %" PRIu64 "  denied %" PRIu64 "  malformed %" PRIu64
	       "  answers dropped %" PRIu64 "  events %" PRIu64 "  events lost %" PRIu64 "\n",
	       V(CTL_REQUESTS), V(CTL_DENIED), V(CTL_MALFORMED), V(CTL_DROPPED), V(CTL_EVENTS),
	       V(CTL_EVENTS_LOST));
	printf("hardening     interim floods %" PRIu64 "  accept pauses %" PRIu64
	       "  log lines suppressed %" PRIu64 "\n",
	       V(INTERIM_FLOODS), V(ACCEPT_PAUSES), V(LOG_SUPPRESSED));
#undef V
	return EX_OK;
}

static int single(uint16_t cmd, const char *name, msg_cb cb)
{
	struct result res = { .cmd = name };

	return transact(request(cmd, 0), KIND_SINGLE, cb, NULL, &res);
}

/* ------------------------------------------------------------------ lists */

struct rows {
	size_t n, cap;
	struct row {
		uint64_t key;
		char *text; /* tab-separated cells, or a JSON object */
	} * v;
};

static void rows_add(struct rows *r, uint64_t key, char *text)
{
	if (r->n == r->cap) {
		struct row *n = realloc(r->v, (r->cap ? r->cap * 2 : 64) * sizeof(*n));

		if (!n)
			die_errno();
		r->v = n;
		r->cap = r->cap ? r->cap * 2 : 64;
	}
	r->v[r->n].key = key;
	r->v[r->n++].text = text;
}

static int row_cmp(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

static void flow_cells(const struct nlattr *f, uint64_t *bytes, uint64_t *queued, bool *paused,
		       uint64_t *pauses)
{
	const struct nlattr *tb[KFWD_FLOW_MAX + 1];

	*bytes = *queued = *pauses = 0;
	*paused = false;
	if (!f)
		return;
	kctl_parse_nested(f, &kctl_flow, tb);
	*bytes = u64_or0(tb[KFWD_FLOW_BYTES]);
	*queued = u64_or0(tb[KFWD_FLOW_QUEUED]);
	*paused = u64_or0(tb[KFWD_FLOW_PAUSED]);
	*pauses = u64_or0(tb[KFWD_FLOW_PAUSES]);
}

/* One nested object as a JSON string. */
static char *json_object_text(const struct nlattr *nest, const struct kctl_set *set)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		die_errno();
	J.out = f;
	json_object(nest, set);
	J.out = stdout;
	if (fclose(f) != 0)
		die_errno();
	return buf;
}

/* A row of cells, printf-formatted and tab-separated (table_row splits them). */
static void rows_addf(struct rows *r, uint64_t key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void rows_addf(struct rows *r, uint64_t key, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (rc < 0)
		die_errno();
	rows_add(r, key, text);
}

/*
 * Under -j, @nest as the JSON object of row @key, rendered now (the message is gone after the
 * callback), printed sorted later: true. Without -j: false, the caller adds table cells.
 */
static bool json_row(struct rows *r, uint64_t key, const struct nlattr *nest,
		     const struct kctl_set *set)
{
	if (!opt.json)
		return false;
	rows_add(r, key, json_object_text(nest, set));
	return true;
}

/* The repeated KFWD_CONN_DETAIL items of @c joined by spaces ("-" when none). */
static void conn_details_text(const struct nlattr *c, char *out, size_t len)
{
	const struct nlattr *a;
	size_t used = 0;

	snprintf(out, len, "-");
	mnl_attr_for_each_nested(a, c)
	{
		int n;

		if (mnl_attr_get_type(a) != KFWD_CONN_DETAIL)
			continue;
		n = snprintf(out + used, len - used, "%s%s", used ? " " : "", mnl_attr_get_str(a));
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
}

static int conn_cb(const struct kctl_msg *m, void *arg)
{
	struct rows *rows = arg;
	const struct nlattr *c = m->tb[KFWD_A_CONN], *tb[KFWD_CONN_MAX + 1];
	uint64_t up_b, up_q, up_p, dn_b, dn_q, dn_p;
	bool up_paused, dn_paused;
	char age[32], details[1024];

	if (!c)
		return EX_OK;
	kctl_parse_nested(c, &kctl_conn, tb);
	if (json_row(rows, u64_or0(tb[KFWD_CONN_ID]), c, &kctl_conn))
		return EX_OK;
	flow_cells(tb[KFWD_CONN_REQ], &up_b, &up_q, &up_paused, &up_p);
	flow_cells(tb[KFWD_CONN_RESP], &dn_b, &dn_q, &dn_paused, &dn_p);
	fmt_duration(u64_or0(tb[KFWD_CONN_AGE_MS]), age, sizeof(age));
	conn_details_text(c, details, sizeof(details));
	rows_addf(rows, u64_or0(tb[KFWD_CONN_ID]),
		  "%" PRIu64 "\t%s\t%s\t%s\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
		  "/%" PRIu64 "\t%s\t%" PRIu64 "\t%s\t%s\t%s",
		  u64_or0(tb[KFWD_CONN_ID]), str_or(tb[KFWD_CONN_CLIENT], "-"),
		  str_or(tb[KFWD_CONN_UPSTREAM], "-"), str_or(tb[KFWD_CONN_ROUTE], "-"),
		  str_or(tb[KFWD_CONN_STATE], "?"), u64_or0(tb[KFWD_CONN_REQUESTS]), up_b, dn_b,
		  up_q, dn_q,
		  up_paused && dn_paused ? "both" :
		  up_paused		 ? "request" :
		  dn_paused		 ? "response" :
					   "-",
		  up_p + dn_p, age, str_or(tb[KFWD_CONN_PROTO], "-"), details);
	return EX_OK;
}

static void rows_free(struct rows *rows)
{
	for (size_t i = 0; i < rows->n; i++)
		free(rows->v[i].text);
	free(rows->v);
}

static void print_rows(struct rows *rows, bool sort, const char *const *heads, const char *align)
{
	if (sort)
		qsort(rows->v, rows->n, sizeof(*rows->v), row_cmp);
	if (opt.json) {
		putchar('[');
		for (size_t i = 0; i < rows->n; i++)
			printf("%s%s", i ? "," : "", rows->v[i].text);
		puts("]");
	} else {
		struct table t;

		table_init(&t, heads, align);
		for (size_t i = 0; i < rows->n; i++)
			table_row(&t, "%s", rows->v[i].text);
		table_print(&t);
	}
	rows_free(rows);
}

/* A list command: dump the daemon's objects through @cb, then print them. */
static int list_rows(uint16_t cmd, const char *name, msg_cb cb, bool sort, const char *const *heads,
		     const char *align)
{
	struct rows rows = { 0 };
	int rc = dump(cmd, name, cb, &rows);

	if (rc) {
		rows_free(&rows);
		return rc;
	}
	print_rows(&rows, sort, heads, align);
	return EX_OK;
}

static int conn_list(void)
{
	static const char *const heads[] = { "ID",     "CLIENT",  "UPSTREAM", "ROUTE",
					     "STATE",  "REQS",	  "BYTES-UP", "BYTES-DOWN",
					     "QUEUED", "PAUSED",  "PAUSES",   "AGE",
					     "PROTO",  "DETAILS", NULL };
	return list_rows(KFWD_CMD_CONN_LIST, "conn list", conn_cb, true, heads, "rlllllrrrlrrll");
}

static int route_cb(const struct kctl_msg *m, void *arg)
{
	struct rows *rows = arg;
	const struct nlattr *r = m->tb[KFWD_A_ROUTE], *tb[KFWD_ROUTE_MAX + 1];

	if (!r)
		return EX_OK;
	kctl_parse_nested(r, &kctl_route, tb);
	if (json_row(rows, u64_or0(tb[KFWD_ROUTE_INDEX]), r, &kctl_route))
		return EX_OK;
	rows_addf(rows, u64_or0(tb[KFWD_ROUTE_INDEX]), "%" PRIu64 "\t%s\t%s\t%s\t%s",
		  u64_or0(tb[KFWD_ROUTE_INDEX]), str_or(tb[KFWD_ROUTE_PREFIX], "?"),
		  str_or(tb[KFWD_ROUTE_TARGET], "?"), str_or(tb[KFWD_ROUTE_OPTIONS], "-"),
		  str_or(tb[KFWD_ROUTE_ORIGIN], "?"));
	return EX_OK;
}

static int route_list(void)
{
	static const char *const heads[] = { "#", "PREFIX", "TARGET", "OPTIONS", "ORIGIN", NULL };
	return list_rows(KFWD_CMD_ROUTE_LIST, "route list", route_cb, true, heads, "rllll");
}

static int upstream_cb(const struct kctl_msg *m, void *arg)
{
	struct rows *rows = arg;
	const struct nlattr *u = m->tb[KFWD_A_UPSTREAM_INFO], *tb[KFWD_UP_MAX + 1], *s;

	if (!u)
		return EX_OK;
	kctl_parse_nested(u, &kctl_upstream, tb);
	if (json_row(rows, rows->n, u, &kctl_upstream))
		return EX_OK;
	mnl_attr_for_each_nested(s, u)
	{
		const struct nlattr *st[KFWD_SRV_MAX + 1];
		char down[32] = "-";

		if (mnl_attr_get_type(s) != KFWD_UP_SERVER)
			continue;
		kctl_parse_nested(s, &kctl_server, st);
		if (u64_or0(st[KFWD_SRV_DOWN_MS]))
			fmt_duration(u64_or0(st[KFWD_SRV_DOWN_MS]), down, sizeof(down));
		rows_addf(rows, rows->n, "%s\t%s\t%s\t%" PRIu64 "\t%" PRIu64 "\t%s",
			  str_or(tb[KFWD_UP_NAME], "?"), str_or(st[KFWD_SRV_ADDR], "?"),
			  str_or(st[KFWD_SRV_STATE], "?"), u64_or0(st[KFWD_SRV_CONNS]),
			  u64_or0(st[KFWD_SRV_FAILURES]), down);
	}
	return EX_OK;
}

static int upstream_list(void)
{
	static const char *const heads[] = { "UPSTREAM", "SERVER",   "STATE", "CONNS",
					     "FAILURES", "DOWN-FOR", NULL };
	return list_rows(KFWD_CMD_UPSTREAM_LIST, "upstream list", upstream_cb, false, heads,
			 "lllrrr");
}

/* ------------------------------------------------------------------ monitor */

static const char *event_name(uint64_t type)
{
	static const char *const names[] = { "?",      "open",	 "close",    "pause",
					     "resume", "config", "heartbeat" };

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

struct monitor {
	long count; /* events to print before exiting; 0: no limit */
	long seen;
	uint32_t seq;
};

static void print_event(const struct nlattr *ev)
{
	const struct nlattr *tb[KFWD_EV_MAX + 1];
	uint64_t type, ms;
	char when[32], dur[32];
	time_t t;
	struct tm tm;

	kctl_parse_nested(ev, &kctl_event, tb);
	type = u64_or0(tb[KFWD_EV_TYPE]);
	if (opt.json) {
		json_open(NULL, '{');
		json_str("event", event_name(type));
		json_members(ev, &kctl_event, KFWD_EV_TYPE);
		json_close('}');
		fflush(stdout);
		return;
	}
	ms = u64_or0(tb[KFWD_EV_TIME_MS]);
	t = (time_t)(ms / 1000);
	gmtime_r(&t, &tm);
	snprintf(when, sizeof(when), "%02d:%02d:%02d.%03u", tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned int)(ms % 1000));
	if (tb[KFWD_EV_LOST])
		printf("%s (%" PRIu64 " events lost: the receive buffer was full)\n", when,
		       u64_or0(tb[KFWD_EV_LOST]));
	printf("%s %-7s", when, event_name(type));
	switch (type) {
	case KFWD_EVENT_OPEN:
		printf(" conn %" PRIu64 "  client %s", u64_or0(tb[KFWD_EV_CONN_ID]),
		       str_or(tb[KFWD_EV_CLIENT], "?"));
		break;
	case KFWD_EVENT_CLOSE:
		fmt_duration(u64_or0(tb[KFWD_EV_DURATION_MS]), dur, sizeof(dur));
		printf(" conn %" PRIu64 "  client %s  upstream %s  up %" PRIu64 "  down %" PRIu64
		       "  %s  status %" PRIu64,
		       u64_or0(tb[KFWD_EV_CONN_ID]), str_or(tb[KFWD_EV_CLIENT], "?"),
		       str_or(tb[KFWD_EV_UPSTREAM], "-"), u64_or0(tb[KFWD_EV_BYTES_UP]),
		       u64_or0(tb[KFWD_EV_BYTES_DOWN]), dur, u64_or0(tb[KFWD_EV_STATUS]));
		break;
	case KFWD_EVENT_PAUSE:
	case KFWD_EVENT_RESUME:
		printf(" conn %" PRIu64 "  %s  held %" PRIu64 "  pauses %" PRIu64,
		       u64_or0(tb[KFWD_EV_CONN_ID]), str_or(tb[KFWD_EV_DIR], "?"),
		       u64_or0(tb[KFWD_EV_LEVEL]), u64_or0(tb[KFWD_EV_PAUSES]));
		break;
	case KFWD_EVENT_CONFIG:
		printf(" generation %" PRIu64 ": %s", u64_or0(tb[KFWD_EV_GENERATION]),
		       str_or(tb[KFWD_EV_WHAT], "?"));
		break;
	default:
		break;
	}
	putchar('\n');
	fflush(stdout);
}

static int monitor_cb(const struct kctl_msg *m, struct monitor *mon)
{
	const struct nlattr *ev = m->tb[KFWD_A_EVENT], *tb[KFWD_EV_MAX + 1];

	if (!ev)
		return EX_OK;
	kctl_parse_nested(ev, &kctl_event, tb);
	if (u64_or0(tb[KFWD_EV_TYPE]) == KFWD_EVENT_HEARTBEAT)
		return EX_OK;
	print_event(ev);
	if (mon->count && ++mon->seen >= mon->count)
		return -1;
	return EX_OK;
}

static int monitor(long count)
{
	struct monitor mon = { .count = count };
	struct result res = { .cmd = "monitor" };
	struct nlmsghdr *req = request(KFWD_CMD_MONITOR, NLM_F_ACK);
	int rc;

	mon.seq = req->nlmsg_seq;
	rc = transact(req, KIND_ACK, NULL, NULL, &res);
	if (rc)
		return rc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		/* Heartbeats come every KFWD_CTL_HEARTBEAT_MS: three missed, kfwd is gone. */
		ssize_t n = receive(3 * KFWD_CTL_HEARTBEAT_MS);
		const void *pos = rxbuf;
		size_t rem;
		const struct nlmsghdr *nlh;
		struct kctl_err err;

		if (n < 0)
			return (int)-n;
		if (n == 0)
			return errorf(EX_UNREACH, "monitor: no heartbeat from kfwd for %d s",
				      3 * KFWD_CTL_HEARTBEAT_MS / 1000);
		rem = (size_t)n;
		while ((nlh = kctl_next_msg(&pos, &rem, &err))) {
			struct kctl_msg m;

			if (nlh->nlmsg_seq != mon.seq)
				continue;
			if (kctl_msg_parse(nlh, &m, &err) != KCTL_PARSE_OK)
				return errorf(EX_PROTO, "monitor: malformed event: %s", err.msg);
			if (nlh->nlmsg_type == NLMSG_DONE)
				return errorf(EX_UNREACH, "monitor: kfwd stopped");
			if (nlh->nlmsg_type != KFWD_CMD_EVENT)
				continue;
			if (monitor_cb(&m, &mon) < 0)
				return EX_OK;
		}
		if (err.msg[0])
			return errorf(EX_PROTO, "monitor: malformed event: %s", err.msg);
	}
}

/* ------------------------------------------------------------------ commands */

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!*s || *s == '-')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !errno && !*end;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("kfwdctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (kfwdctl help)\n", stderr);
	return EX_USAGE;
}

static bool is(const char *arg, const char *a, const char *b)
{
	return !strcmp(arg, a) || (b && !strcmp(arg, b));
}

static bool is_list(const char *arg)
{
	return is(arg, "list", "ls") || !strcmp(arg, "show");
}

static void help(void)
{
	fputs(usage_text, stdout);
	fputs("\nset keys:\n", stdout);
	for (size_t i = 0; i < kctl_n_setting_keys; i++)
		printf("  %-18s%s\n", kctl_setting_keys[i].key, kctl_setting_keys[i].help);
}

/* Check the command line before talking to anyone: 0 ok, else EX_USAGE. */
static int check_args(int argc, char **argv)
{
	const char *c = argv[0], *sub = argc > 1 ? argv[1] : NULL;
	uint64_t v;

	if (is(c, "status", NULL) || is(c, "stats", NULL) || is(c, "reload", NULL))
		return argc == 1 ? 0 : usage_error("%s takes no argument", c);
	if (is(c, "conn", "connection")) {
		if (sub && is_list(sub) && argc == 2)
			return 0;
		if (sub && is(sub, "kill", NULL) && argc == 3 && parse_u64(argv[2], &v))
			return 0;
		return usage_error("usage: conn list | conn kill ID");
	}
	if (is(c, "route", NULL)) {
		if (sub && is_list(sub) && argc == 2)
			return 0;
		if (sub && is(sub, "add", NULL) && argc >= 4)
			return 0;
		if (sub && is(sub, "del", "delete") &&
		    (argc == 3 || (argc == 4 && !strncmp(argv[3], "host=", 5))))
			return 0;
		return usage_error(
			"usage: route list | route add PREFIX TARGET [OPTION...] | route del PREFIX [host=H]");
	}
	if (is(c, "upstream", NULL)) {
		if (sub && is_list(sub) && argc == 2)
			return 0;
		if (sub && (is(sub, "drain", NULL) || is(sub, "enable", NULL)) &&
		    (argc == 3 || argc == 4))
			return 0;
		return usage_error("usage: upstream list | upstream drain|enable NAME [ADDR:PORT]");
	}
	if (is(c, "set", NULL)) {
		if (argc < 3 || argc % 2 == 0)
			return usage_error("usage: set KEY VALUE [KEY VALUE...]");
		for (int i = 1; i < argc; i += 2)
			if (!kctl_setting_find(argv[i]))
				return usage_error("set: unknown key '%s'", argv[i]);
		return 0;
	}
	if (is(c, "monitor", NULL)) {
		if (argc == 1 || (argc == 3 && is(argv[1], "count", NULL) &&
				  parse_u64(argv[2], &v) && v > 0 && v < LONG_MAX))
			return 0;
		return usage_error("usage: monitor [count N]");
	}
	return usage_error("unknown command '%s'", c);
}

static int run(int argc, char **argv)
{
	const char *c = argv[0], *sub = argc > 1 ? argv[1] : NULL;
	struct nlmsghdr *req;
	struct nlattr *nest;
	uint64_t v;

	if (is(c, "status", NULL))
		return single(KFWD_CMD_STATUS, "status", status_cb);
	if (is(c, "stats", NULL))
		return single(KFWD_CMD_STATS, "stats", stats_cb);
	if (is(c, "reload", NULL))
		return ack_command(request(KFWD_CMD_RELOAD, NLM_F_ACK), "reload");
	if (is(c, "conn", "connection")) {
		if (is_list(sub))
			return conn_list();
		req = request(KFWD_CMD_CONN_KILL, NLM_F_ACK);
		parse_u64(argv[2], &v);
		mnl_attr_put_u64(req, KFWD_A_CONN_ID, v);
		return ack_command(req, "conn kill");
	}
	if (is(c, "route", NULL)) {
		if (is_list(sub))
			return route_list();
		if (is(sub, "add", NULL)) {
			req = request(KFWD_CMD_ROUTE_ADD, NLM_F_ACK);
			if (!put_str_attr(req, KFWD_A_PREFIX, argv[2]) ||
			    !put_str_attr(req, KFWD_A_TARGET, argv[3]))
				return usage_error("route add: argument too long");
			nest = mnl_attr_nest_start(req, KFWD_A_OPTIONS);
			for (int i = 4; i < argc; i++)
				if (!put_str_attr(req, KFWD_A_OPTION, argv[i]))
					return usage_error("route add: options too long");
			mnl_attr_nest_end(req, nest);
			return ack_command(req, "route add");
		}
		req = request(KFWD_CMD_ROUTE_DEL, NLM_F_ACK);
		if (!put_str_attr(req, KFWD_A_PREFIX, argv[2]) ||
		    (argc == 4 && !put_str_attr(req, KFWD_A_HOST, argv[3] + 5)))
			return usage_error("route del: argument too long");
		return ack_command(req, "route del");
	}
	if (is(c, "upstream", NULL)) {
		bool drain = is(sub, "drain", NULL);

		if (is_list(sub))
			return upstream_list();
		req = request(drain ? KFWD_CMD_UPSTREAM_DRAIN : KFWD_CMD_UPSTREAM_ENABLE,
			      NLM_F_ACK);
		if (!put_str_attr(req, KFWD_A_UPSTREAM, argv[2]) ||
		    (argc == 4 && !put_str_attr(req, KFWD_A_SERVER, argv[3])))
			return usage_error("upstream: argument too long");
		return ack_command(req, drain ? "upstream drain" : "upstream enable");
	}
	if (is(c, "set", NULL)) {
		req = request(KFWD_CMD_SET, NLM_F_ACK);
		nest = mnl_attr_nest_start(req, KFWD_A_SETTINGS);
		for (int i = 1; i + 1 < argc; i += 2) {
			struct nlattr *item = mnl_attr_nest_start(req, KFWD_A_SETTING);

			if (!put_str_attr(req, KFWD_SET_KEY, argv[i]) ||
			    !put_str_attr(req, KFWD_SET_VALUE, argv[i + 1]))
				return usage_error("set: argument too long");
			mnl_attr_nest_end(req, item);
		}
		mnl_attr_nest_end(req, nest);
		return ack_command(req, "set");
	}
	if (is(c, "monitor", NULL)) {
		v = 0;
		if (argc == 3)
			parse_u64(argv[2], &v);
		return monitor((long)v);
	}
	return usage_error("unknown command '%s'", c);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "file", required_argument, NULL, 'f' },
		{ "port-id", required_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	double secs;
	char *end;
	int o, rc;

	J.out = stdout;
	while ((o = getopt_long(argc, argv, "+jf:p:t:hV", longopts, NULL)) != -1) {
		switch (o) {
		case 'j':
			opt.json = true;
			break;
		case 'f':
			opt.file = optarg;
			opt.file_given = true;
			break;
		case 'p':
			if (!parse_u64(optarg, &v) || v == 0 || v > UINT32_MAX)
				return usage_error("-p: bad port id '%s'", optarg);
			opt.portid = (uint32_t)v;
			opt.portid_given = true;
			break;
		case 't':
			errno = 0;
			secs = strtod(optarg, &end);
			if (errno || *end || secs <= 0 || secs > 3600)
				return usage_error("-t: bad timeout '%s'", optarg);
			opt.timeout_ms = (int)(secs * 1000);
			break;
		case 'h':
			help();
			return EX_OK;
		case 'V':
			printf("kfwdctl %s, control protocol version %d\n", KFWD_VERSION,
			       KFWD_CTL_VERSION);
			return EX_OK;
		default:
			fputs(usage_text, stderr);
			return EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		fputs(usage_text, stderr);
		return EX_USAGE;
	}
	if (is(argv[0], "help", NULL)) {
		help();
		return EX_OK;
	}
	if (is(argv[0], "version", NULL)) {
		printf("kfwdctl %s, control protocol version %d\n", KFWD_VERSION, KFWD_CTL_VERSION);
		return EX_OK;
	}
	rc = check_args(argc, argv);
	if (rc)
		return rc;
	rc = connect_daemon();
	if (rc)
		return rc;
	rc = run(argc, argv);
	if (fflush(stdout) != 0 && !rc)
		rc = errorf(EX_FAIL, "stdout: %s", strerror(errno));
	close(peer.fd);
	return rc;
}
