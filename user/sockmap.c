// SPDX-License-Identifier: GPL-2.0
/*
 * sockmap.c - bounded, lossless sockmap forwarding (see sockmap.h and
 * include/kfwd/sockmap.h for the protocol with bpf/kfwd.bpf.c).
 */
#include "sockmap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/magic.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>

#if __has_include("kfwd.skel.h")
#define SOCKMAP_HAVE_SKEL 1
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kfwd/sockmap.h"
#include "kfwd.skel.h"
#include "loop.h"
#include "mem_budget.h"
#else
#define SOCKMAP_HAVE_SKEL 0
#endif

static void set_why(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

#if !SOCKMAP_HAVE_SKEL

/* Long: load, attach and pin in order, each step with the reason it failed and its unwinding. */
int sockmap_init(const char *pin_dir, char *why, size_t whylen)
{
	(void)pin_dir;
	set_why(why, whylen, "built without the BPF skeleton (kfwd.skel.h)");
	errno = ENOSYS;
	return -1;
}

void sockmap_shutdown(void)
{
}

bool sockmap_ready(void)
{
	return false;
}

const char *sockmap_pin_dir(void)
{
	return NULL;
}

int sockmap_probe_access(void)
{
	errno = ENOSYS;
	return -1;
}

void sockmap_release_pins(void)
{
}

int sockmap_event_fd(void)
{
	errno = ENOSYS;
	return -1;
}

void sockmap_share_after_fork(uint8_t tag)
{
	(void)tag;
}

void sockmap_notify(uint64_t flow_id)
{
	(void)flow_id;
}

int sockmap_handle_events(sockmap_event_cb cb, void *ctx)
{
	(void)cb;
	(void)ctx;
	errno = ENOSYS;
	return -1;
}

int sockmap_flow_add(int fd_a, int fd_b, uint64_t cap_bytes, uint64_t *flow_id)
{
	(void)fd_a;
	(void)fd_b;
	(void)cap_bytes;
	(void)flow_id;
	errno = ENOSYS;
	return -1;
}

/* Long: the hand-over is one transaction (drain, map, pause, pending bytes) with one unwinding path. */
int sockmap_flow_add_ex(const struct sockmap_flow_args *args, uint64_t *flow_id)
{
	(void)args;
	(void)flow_id;
	errno = ENOSYS;
	return -1;
}

int sockmap_flow_pump(uint64_t flow_id, struct sockmap_want *want)
{
	(void)flow_id;
	(void)want;
	errno = ENOSYS;
	return -1;
}

int sockmap_flow_stats(uint64_t flow_id, struct sockmap_stats *st)
{
	(void)flow_id;
	(void)st;
	errno = ENOSYS;
	return -1;
}

int sockmap_flow_del(uint64_t flow_id)
{
	(void)flow_id;
	errno = ENOSYS;
	return -1;
}

void *sockmap_flow_owner(uint64_t flow_id)
{
	(void)flow_id;
	return NULL;
}

void sockmap_bytes_redirected(uint64_t out[2])
{
	out[SOCKMAP_A_TO_B] = 0;
	out[SOCKMAP_B_TO_A] = 0;
}

#else /* SOCKMAP_HAVE_SKEL */

#define SM_BUF_SIZE (128 * 1024)
#define SM_DRAIN_MAX (64 * 1024 * 1024)
/* Bytes the drain at flow start may read before it gives up on a source that
 * never pauses (the bytes go back to the caller, see sockmap_flow_args.spill) */
#define SM_START_DRAIN_MAX (2 * 1024 * 1024)
#define SM_STABLE_TRIES 64
#define SM_RETRY_MS 1 /* dst still has redirected bytes queued */
#define SM_READ_MAX (1024 * 1024) /* one pass-mode read, at most */
/* Most bytes a resume round (src_peek()) copies out of src's psock queue */
#define SM_PEEK_MAX SM_READ_MAX
#define SM_DRAIN_WAIT_MAX_MS 500 /* longest wait for dst to take redirected bytes */
/* drain_wait() waits for this many bytes more: a client reading in bursts
 * would otherwise be looked at again and again for the last few */
#define SM_DRAIN_SLACK (64 * 1024)
/* drain_wait(): bytes per ms from which a client counts as fast (10 MB/s) */
#define SM_DRAIN_FAST_RATE 10000
#define SM_RCVBUF_DIV 8 /* src's SO_RCVBUF: cap / this (see src_rcvbuf_fit()) */
#define SM_START_GEN 1 /* pause_count of a new direction: it starts paused */
/* A flow id: tag (sockmap_share_after_fork) << 56 | slot generation << 32 | slot. */
#define SM_TAG_SHIFT 56
#define SM_GEN_MASK 0xffffffu

/* tcpi_state values (include/net/tcp_states.h), not in the uapi headers */
enum {
	SM_TCP_TIME_WAIT = 6,
	SM_TCP_CLOSE = 7,
	SM_TCP_CLOSE_WAIT = 8,
	SM_TCP_LAST_ACK = 9,
	SM_TCP_CLOSING = 11,
};

static const char *const sm_pin_names[] = {
	"kfwd_socks", "kfwd_dirs", "kfwd_ctl", "kfwd_events", "kfwd_verdict",
};

struct sm_dir {
	int src;
	int dst;
	uint64_t src_cookie;
	uint64_t dst_cookie;
	uint64_t user_read; /* recv()d from src since add */
	uint64_t user_written; /* written to dst since add */
	uint64_t peeked; /* front of src's psock queue already in buf or written */
	uint64_t drain_tx; /* drain_wait(): dst's bytes written when the wait began */
	uint64_t drain_ms; /* drain_wait(): when it began (now_ms()), 0: not waiting */
	uint64_t drain_rate; /* drain_wait(): bytes per ms dst took, 0: unknown */
	uint64_t rx_base; /* src data bytes consumed before add */
	uint64_t dst_base; /* dst bytes_acked + outq at add */
	char *buf;
	size_t bufsize;
	size_t head;
	size_t tail;
	uint32_t synced_gen; /* pause generation dst was seen drained in */
	struct kfwd_ctl ctl; /* last resume request written */
	bool ctl_written;
	bool eof;
	bool done;
	bool active; /* false: the other direction of a one-way flow */
	bool cut; /* limited: src ended before end_pos */
	bool limited; /* src's bytes end at end_pos (SOCKMAP_B_LIMIT) */
	uint64_t end_pos;
	struct kfwd_dir kd; /* last snapshot of the program's state */
};

struct sm_flow {
	uint64_t id;
	void *owner;
	void (*on_event)(void *owner);
	int fd_a;
	int fd_b;
	unsigned int flags;
	struct mem_charge charge; /* max-memory: args->mem_charge while the flow lives */
	struct sm_dir dir[2];
};

static struct {
	struct kfwd *skel;
	struct ring_buffer *rb;
	int socks_fd;
	int dirs_fd;
	int ctl_fd;
	int prog_fd;
	bool attached;
	bool pins_released; /* sockmap_release_pins(): the pin dir is another process's now */
	uint8_t tag; /* this worker's, in its flow ids; 0 without workers */
	/* Unpinning goes through this fd: after `user` the bpffs root above the pin dir is not
	 * searchable, the pin dir itself is the user's (user/privdrop.c). */
	int pin_dir_fd;
	struct sm_flow **flows; /* slot -> flow */
	uint32_t *gens; /* slot -> generation */
	uint32_t nslots;
	uint64_t lost_seen;
	sockmap_event_cb cb;
	void *cb_ctx;
	uint64_t ended_redirected[2]; /* by enum sockmap_dir, flows already deleted */
	int ncb;
} sm = {
	.socks_fd = -1,
	.dirs_fd = -1,
	.ctl_fd = -1,
	.prog_fd = -1,
	.pin_dir_fd = -1,
};
/* Apart from sm, so that its -1 fds do not put 4 KiB of path in the initialised data. */
static char sm_pin_dir[PATH_MAX];

bool sockmap_ready(void)
{
	return sm.skel != NULL;
}

const char *sockmap_pin_dir(void)
{
	return sm.skel ? sm_pin_dir : NULL;
}

static void unpin_all(void);

int sockmap_probe_access(void)
{
	uint64_t key;

	if (!sm.skel) {
		errno = ENODEV;
		return -1;
	}
	/* An empty map answers ENOENT, which still means the command was allowed. */
	if (bpf_map_get_next_key(sm.dirs_fd, NULL, &key) == 0 || errno == ENOENT)
		return 0;
	return -1;
}

void sockmap_release_pins(void)
{
	if (!sm.skel || sm.pins_released)
		return;
	unpin_all();
	sm.pins_released = true;
}

/* ---- small socket helpers ------------------------------------------- */

static int tcp_info_get(int fd, struct tcp_info *ti)
{
	socklen_t len = sizeof(*ti);

	memset(ti, 0, sizeof(*ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) < 0)
		return -1;
	if (len <
	    offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti->tcpi_bytes_received)) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return 0;
}

static bool state_fin_received(uint8_t state)
{
	switch (state) {
	case SM_TCP_CLOSE_WAIT:
	case SM_TCP_LAST_ACK:
	case SM_TCP_CLOSING:
	case SM_TCP_TIME_WAIT:
	case SM_TCP_CLOSE:
		return true;
	default:
		return false;
	}
}

/* Data bytes received by fd (tcpi_bytes_received counts the FIN too). */
static int rx_data(int fd, uint64_t *bytes, bool *fin)
{
	struct tcp_info ti;
	bool f;

	if (tcp_info_get(fd, &ti) < 0)
		return -1;
	f = state_fin_received(ti.tcpi_state) && ti.tcpi_bytes_received;
	*bytes = ti.tcpi_bytes_received - (f ? 1 : 0);
	if (fin)
		*fin = f;
	return 0;
}

/*
 * Bytes that ever entered fd's send queue: bytes_acked + (write_seq -
 * snd_una).  Consistent when bytes_acked did not move across SIOCOUTQ,
 * i.e. snd_una was stable; the value is then exact at the ioctl.
 */
static int tx_written(int fd, uint64_t *bytes)
{
	struct tcp_info t1, t2;
	int outq, i;

	for (i = 0; i < SM_STABLE_TRIES; i++) {
		if (tcp_info_get(fd, &t1) < 0)
			return -1;
		if (ioctl(fd, SIOCOUTQ, &outq) < 0)
			return -1;
		if (tcp_info_get(fd, &t2) < 0)
			return -1;
		if (t1.tcpi_bytes_acked == t2.tcpi_bytes_acked) {
			*bytes = t1.tcpi_bytes_acked + (uint64_t)outq;
			return 0;
		}
	}
	errno = EAGAIN;
	return -1;
}

static int sock_cookie(int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) < 0)
		return -1;
	return 0;
}

/* ---- init / shutdown ------------------------------------------------- */

static int pin_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int ensure_bpffs(const char *pin_dir, char *why, size_t whylen)
{
	char parent[PATH_MAX];
	struct statfs sfs;
	char *slash;

	if (strlen(pin_dir) >= sizeof(parent)) {
		set_why(why, whylen, "pin dir too long");
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(parent, pin_dir);
	slash = strrchr(parent, '/');
	if (!slash || slash == parent) {
		set_why(why, whylen, "pin dir %s must be below a bpffs mount", pin_dir);
		errno = EINVAL;
		return -1;
	}
	*slash = '\0';
	if (statfs(parent, &sfs) < 0) {
		set_why(why, whylen, "statfs %s: %s", parent, strerror(errno));
		return -1;
	}
	if (sfs.f_type != BPF_FS_MAGIC) {
		if (mount("bpf", parent, "bpf", 0, "mode=0700") < 0) {
			set_why(why, whylen, "mount bpffs on %s: %s", parent, strerror(errno));
			return -1;
		}
	}
	if (mkdir(pin_dir, 0700) < 0 && errno != EEXIST) {
		set_why(why, whylen, "mkdir %s: %s", pin_dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* Detach every verdict program from a pinned sockmap of a previous run. */
static void detach_all(int map_fd)
{
	static const enum bpf_attach_type types[] = {
		BPF_SK_SKB_VERDICT,
		BPF_SK_SKB_STREAM_VERDICT,
		BPF_SK_SKB_STREAM_PARSER,
		BPF_SK_MSG_VERDICT,
	};
	__u32 ids[64], cnt, i, t;
	int fd;

	for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		cnt = sizeof(ids) / sizeof(ids[0]);
		if (bpf_prog_query(map_fd, types[t], 0, NULL, ids, &cnt) < 0)
			continue;
		for (i = 0; i < cnt; i++) {
			fd = bpf_prog_get_fd_by_id(ids[i]);
			if (fd < 0)
				continue;
			bpf_prog_detach2(fd, map_fd, types[t]);
			close(fd);
		}
	}
}

/* Remove what a crashed run left: attachments on its sockhash, all pins. */
static int cleanup_stale(const char *dir, char *why, size_t whylen)
{
	char path[PATH_MAX];
	struct dirent *de;
	int map_fd, prog_fd;
	DIR *d;

	if (pin_path(path, sizeof(path), dir, "kfwd_socks") == 0) {
		map_fd = bpf_obj_get(path);
		if (map_fd >= 0) {
			detach_all(map_fd);
			if (pin_path(path, sizeof(path), dir, "kfwd_verdict") == 0) {
				prog_fd = bpf_obj_get(path);
				if (prog_fd >= 0) {
					bpf_prog_detach2(prog_fd, map_fd, BPF_SK_SKB_VERDICT);
					close(prog_fd);
				}
			}
			close(map_fd);
		}
	}

	d = opendir(dir);
	if (!d) {
		set_why(why, whylen, "opendir %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (pin_path(path, sizeof(path), dir, de->d_name) < 0)
			continue;
		if (unlink(path) < 0 && errno != ENOENT) {
			set_why(why, whylen, "unlink stale pin %s: %s", path, strerror(errno));
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	return 0;
}

static void unpin_all(void)
{
	for (size_t i = 0; i < sizeof(sm_pin_names) / sizeof(sm_pin_names[0]); i++)
		unlinkat(sm.pin_dir_fd, sm_pin_names[i], 0);
}

static int pin_all(char *why, size_t whylen)
{
	struct bpf_map *maps[] = {
		sm.skel->maps.kfwd_socks,
		sm.skel->maps.kfwd_dirs,
		sm.skel->maps.kfwd_ctl,
		sm.skel->maps.kfwd_events,
	};
	char path[PATH_MAX];
	size_t i;
	int err;

	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		if (pin_path(path, sizeof(path), sm_pin_dir, bpf_map__name(maps[i])) < 0)
			goto fail_errno;
		err = bpf_map__pin(maps[i], path);
		if (err) {
			errno = -err;
			goto fail_errno;
		}
	}
	if (pin_path(path, sizeof(path), sm_pin_dir, "kfwd_verdict") < 0)
		goto fail_errno;
	err = bpf_program__pin(sm.skel->progs.kfwd_verdict, path);
	if (err) {
		errno = -err;
		goto fail_errno;
	}
	return 0;

fail_errno:
	set_why(why, whylen, "pin %s: %s", path, strerror(errno));
	unpin_all();
	return -1;
}

static struct sm_flow *flow_get(uint64_t id);

/* Tell the flow's owner, then the caller of sockmap_handle_events(). Either may delete the
 * flow: nothing of it is touched after its on_event. */
static void notify_flow(uint64_t flow_id)
{
	struct sm_flow *f = flow_get(flow_id);

	if (f && f->on_event)
		f->on_event(f->owner);
	if (sm.cb)
		sm.cb(sm.cb_ctx, flow_id);
	sm.ncb++;
}

static int on_event(void *ctx, void *data, size_t size)
{
	const struct kfwd_event *ev = data;

	(void)ctx;
	if (size < sizeof(*ev))
		return 0;
	notify_flow(ev->flow_id);
	return 0;
}

static int silent_print(enum libbpf_print_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* libbpf is silent unless KFWD_BPF_DEBUG is set (verifier log etc.). */
static int silent_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	if (!getenv("KFWD_BPF_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/*
 * Long: the start-up sequence (bpffs, stale pins, open, load, pin, attach, event ring), each
 * step undone by the ones after it on failure; split, the unwinding would be spread out.
 */
int sockmap_init(const char *pin_dir, char *why, size_t whylen)
{
	int err;

	if (sm.skel) {
		set_why(why, whylen, "already initialised");
		errno = EALREADY;
		return -1;
	}
	if (!pin_dir)
		pin_dir = KFWD_PIN_DIR_DEFAULT;
	if (strlen(pin_dir) >= sizeof(sm_pin_dir)) {
		set_why(why, whylen, "pin dir too long");
		errno = ENAMETOOLONG;
		return -1;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK) < 0) {
		set_why(why, whylen, "no kernel BTF (/sys/kernel/btf/vmlinux)");
		return -1;
	}
	if (ensure_bpffs(pin_dir, why, whylen) < 0)
		return -1;
	if (cleanup_stale(pin_dir, why, whylen) < 0)
		return -1;
	strcpy(sm_pin_dir, pin_dir);
	sm.pin_dir_fd = open(pin_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sm.pin_dir_fd < 0) {
		set_why(why, whylen, "open %s: %s", pin_dir, strerror(errno));
		return -1;
	}

	libbpf_set_print(silent_print);
	sm.skel = kfwd__open();
	if (!sm.skel) {
		set_why(why, whylen, "open BPF object: %s", strerror(errno));
		return -1;
	}
	err = kfwd__load(sm.skel);
	if (err) {
		set_why(why, whylen,
			"load BPF program: %s (needs sockmap, BTF, CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON; KFWD_BPF_DEBUG=1 for the verifier log)",
			strerror(-err));
		errno = -err;
		goto err_destroy;
	}
	sm.socks_fd = bpf_map__fd(sm.skel->maps.kfwd_socks);
	sm.dirs_fd = bpf_map__fd(sm.skel->maps.kfwd_dirs);
	sm.ctl_fd = bpf_map__fd(sm.skel->maps.kfwd_ctl);
	sm.prog_fd = bpf_program__fd(sm.skel->progs.kfwd_verdict);

	/* libbpf 1.1 has no sockmap link: classic attach, detached at
	 * shutdown or by cleanup_stale() of the next run. */
	if (bpf_prog_attach(sm.prog_fd, sm.socks_fd, BPF_SK_SKB_VERDICT, 0)) {
		set_why(why, whylen, "attach verdict to sockhash: %s", strerror(errno));
		goto err_destroy;
	}
	sm.attached = true;

	sm.rb = ring_buffer__new(bpf_map__fd(sm.skel->maps.kfwd_events), on_event, NULL, NULL);
	if (!sm.rb) {
		set_why(why, whylen, "ring buffer: %s", strerror(errno));
		goto err_detach;
	}
	if (pin_all(why, whylen) < 0)
		goto err_rb;
	sm.lost_seen = sm.skel->bss->kfwd_events_lost;
	return 0;

err_rb:
	ring_buffer__free(sm.rb);
	sm.rb = NULL;
err_detach:
	bpf_prog_detach2(sm.prog_fd, sm.socks_fd, BPF_SK_SKB_VERDICT);
	sm.attached = false;
err_destroy:
	err = errno;
	kfwd__destroy(sm.skel);
	sm.skel = NULL;
	sm.socks_fd = sm.dirs_fd = sm.ctl_fd = sm.prog_fd = -1;
	close(sm.pin_dir_fd);
	sm.pin_dir_fd = -1;
	errno = err;
	return -1;
}

static void flow_free(struct sm_flow *f)
{
	mem_budget_leave(&f->charge);
	free(f->dir[0].buf);
	free(f->dir[1].buf);
	free(f);
}

static void flow_unmap(struct sm_flow *f)
{
	int i;

	for (i = 0; i < 2; i++) {
		bpf_map_delete_elem(sm.socks_fd, &f->dir[i].src_cookie);
		bpf_map_delete_elem(sm.dirs_fd, &f->dir[i].src_cookie);
		bpf_map_delete_elem(sm.ctl_fd, &f->dir[i].src_cookie);
	}
}

void sockmap_shutdown(void)
{
	uint32_t i;

	if (!sm.skel)
		return;
	for (i = 0; i < sm.nslots; i++) {
		if (sm.flows[i]) {
			flow_unmap(sm.flows[i]);
			flow_free(sm.flows[i]);
		}
	}
	free(sm.flows);
	free(sm.gens);
	sm.flows = NULL;
	sm.gens = NULL;
	sm.nslots = 0;
	if (sm.attached)
		bpf_prog_detach2(sm.prog_fd, sm.socks_fd, BPF_SK_SKB_VERDICT);
	sm.attached = false;
	if (!sm.pins_released) {
		unpin_all();
		rmdir(sm_pin_dir);
	}
	sm.pins_released = false;
	ring_buffer__free(sm.rb);
	sm.rb = NULL;
	kfwd__destroy(sm.skel);
	sm.skel = NULL;
	sm.socks_fd = sm.dirs_fd = sm.ctl_fd = sm.prog_fd = -1;
	close(sm.pin_dir_fd);
	sm.pin_dir_fd = -1;
}

int sockmap_event_fd(void)
{
	if (!sm.rb) {
		errno = ENODEV;
		return -1;
	}
	return ring_buffer__epoll_fd(sm.rb);
}

int sockmap_handle_events(sockmap_event_cb cb, void *ctx)
{
	uint64_t lost;
	uint32_t i;
	int err;

	if (!sm.rb) {
		errno = ENODEV;
		return -1;
	}
	sm.cb = cb;
	sm.cb_ctx = ctx;
	sm.ncb = 0;
	err = ring_buffer__consume(sm.rb);
	if (err < 0) {
		errno = -err;
		return -1;
	}
	lost = sm.skel->bss->kfwd_events_lost;
	if (lost != sm.lost_seen) {
		/* the ring overflowed: any flow may be waiting */
		sm.lost_seen = lost;
		for (i = 0; i < sm.nslots; i++) {
			if (sm.flows[i])
				notify_flow(sm.flows[i]->id);
		}
		/* A master's workers have flows of their own. */
		if (sm.cb)
			sm.cb(sm.cb_ctx, SOCKMAP_FLOW_ALL);
	}
	sm.cb = NULL;
	return sm.ncb;
}

void sockmap_share_after_fork(uint8_t tag)
{
	sm.tag = tag;
	/* The master detaches and unpins; this process only closes its copies of the fds. */
	sm.attached = false;
	sm.pins_released = true;
}

void sockmap_notify(uint64_t flow_id)
{
	if (flow_id != SOCKMAP_FLOW_ALL) {
		notify_flow(flow_id);
		return;
	}
	for (uint32_t i = 0; i < sm.nslots; i++)
		if (sm.flows[i])
			notify_flow(sm.flows[i]->id);
}

/* ---- flows ----------------------------------------------------------- */

static struct sm_flow *flow_get(uint64_t id)
{
	uint32_t slot = (uint32_t)id;

	if (!sm.skel || slot >= sm.nslots || !sm.flows[slot] || sockmap_flow_tag(id) != sm.tag ||
	    sm.gens[slot] != ((uint32_t)(id >> 32) & SM_GEN_MASK)) {
		errno = ENOENT;
		return NULL;
	}
	return sm.flows[slot];
}

static int slot_alloc(uint32_t *slot)
{
	struct sm_flow **nf;
	uint32_t *ng;
	uint32_t i, n;

	for (i = 0; i < sm.nslots; i++) {
		if (!sm.flows[i]) {
			*slot = i;
			return 0;
		}
	}
	n = sm.nslots ? sm.nslots * 2 : 64;
	if (n > KFWD_MAX_SOCKS / 2) {
		errno = ENOSPC;
		return -1;
	}
	nf = realloc(sm.flows, n * sizeof(*nf));
	if (!nf)
		return -1;
	sm.flows = nf;
	ng = realloc(sm.gens, n * sizeof(*ng));
	if (!ng)
		return -1;
	sm.gens = ng;
	for (i = sm.nslots; i < n; i++) {
		sm.flows[i] = NULL;
		sm.gens[i] = 0;
	}
	*slot = sm.nslots;
	sm.nslots = n;
	return 0;
}

/* Bytes src may still deliver to this direction: the rest of a body with a
 * limit, no limit otherwise.  Uses the last snapshot of the program. */
static uint64_t src_left(const struct sm_dir *d)
{
	uint64_t pos = d->rx_base + d->kd.redirected + d->user_read;

	if (!d->limited)
		return UINT64_MAX;
	return pos < d->end_pos ? d->end_pos - pos : 0;
}

static int buf_reserve(struct sm_dir *d, size_t len)
{
	char *nb;

	if (len <= d->bufsize)
		return 0;
	nb = realloc(d->buf, len);
	if (!nb)
		return -1;
	d->buf = nb;
	d->bufsize = len;
	return 0;
}

static int buf_append(struct sm_dir *d, const void *p, size_t len)
{
	if (!len)
		return 0;
	if (buf_reserve(d, d->tail + len) < 0)
		return -1;
	memcpy(d->buf + d->tail, p, len);
	d->tail += len;
	return 0;
}

/*
 * Read everything queued on src into the buffer and return the number of
 * data bytes src received so far, all of them now consumed: after an
 * EAGAIN, SIOCINQ says 0 and no byte arrived across that check.  A sender
 * that keeps the window busy makes bytes arrive while we read, so only
 * the moment of the check has to be quiet, not the whole drain.
 */
static int drain_src(struct sm_dir *d, uint64_t *consumed)
{
	uint64_t r1, r2;
	ssize_t n;
	int i, inq;

	for (i = 0; i < SM_STABLE_TRIES; i++) {
		for (;;) {
			if (d->tail + SM_BUF_SIZE / 2 > d->bufsize) {
				char *nb;

				if (d->bufsize >= SM_START_DRAIN_MAX) {
					errno = ENOBUFS;
					return -1;
				}
				nb = realloc(d->buf, d->bufsize * 2);
				if (!nb)
					return -1;
				d->buf = nb;
				d->bufsize *= 2;
			}
			n = recv(d->src, d->buf + d->tail, d->bufsize - d->tail, MSG_DONTWAIT);
			if (n > 0) {
				d->tail += (size_t)n;
				continue;
			}
			if (n == 0) {
				d->eof = true;
				break;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return -1;
		}
		if (rx_data(d->src, &r1, NULL) < 0 || ioctl(d->src, SIOCINQ, &inq) < 0 ||
		    rx_data(d->src, &r2, NULL) < 0)
			return -1;
		if (r1 == r2 && inq == 0) {
			*consumed = r2;
			return 0;
		}
	}
	errno = EAGAIN;
	return -1;
}

/* Bytes that reached src between drain_src() and the sockhash insert sit
 * in its receive queue, unseen by the program until more data comes: read
 * them whole (a partial read would let the program see the rest again). */
static int read_leftover(struct sm_dir *d)
{
	uint64_t now;
	size_t want;
	ssize_t n;

	if (d->eof)
		return 0;
	if (rx_data(d->src, &now, NULL) < 0)
		return -1;
	if (now == d->rx_base)
		return 0;
	want = (size_t)(now - d->rx_base) + SM_BUF_SIZE;
	if (want > SM_DRAIN_MAX) {
		errno = ENOBUFS;
		return -1;
	}
	if (want > src_left(d))
		want = (size_t)src_left(d);
	if (!want)
		return 0;
	if (buf_reserve(d, d->tail + want) < 0)
		return -1;
	n = recv(d->src, d->buf + d->tail, want, MSG_DONTWAIT);
	if (n > 0) {
		d->tail += (size_t)n;
		d->user_read += (uint64_t)n;
		return 0;
	}
	if (n == 0) {
		d->eof = true;
		return 0;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return -1;
}

static int ctl_write(struct sm_dir *d, uint64_t user_read, uint64_t user_written);

int sockmap_flow_add(int fd_a, int fd_b, uint64_t cap_bytes, uint64_t *flow_id)
{
	struct sockmap_flow_args a = {
		.fd_a = fd_a,
		.fd_b = fd_b,
		.cap_bytes = cap_bytes,
	};

	return sockmap_flow_add_ex(&a, flow_id);
}

/*
 * The drain of direction @upto (and of those before it) read bytes it could
 * not finish with: hand them back so the caller forwards them another way.
 * Nothing is in the map yet.
 */
static int spill_drained(struct sm_flow *f, const struct sockmap_flow_args *args, int upto)
{
	size_t pend_len[2] = { args->pending_a_to_b_len, args->pending_b_to_a_len };
	int i;

	for (i = 0; i <= upto; i++) {
		struct sm_dir *d = &f->dir[i];

		if (d->active && d->tail > pend_len[i] &&
		    args->spill(args->owner, i, d->buf + pend_len[i], d->tail - pend_len[i]) < 0)
			return -1;
	}
	return 0;
}

/*
 * Size src's receive buffer, and its window clamp with it (raising
 * SO_RCVBUF alone leaves the clamp the connect set, 6.18), to a fraction of
 * the cap: the bytes the program passes at the cap then close src's window
 * after about that many, so a paused producer waits quietly for the resume
 * round (src_peek()) instead of filling a queue autotuned up to tcp_rmem's
 * maximum, and the round copies that whole queue at once.
 */
static int src_rcvbuf_fit(int fd, uint64_t cap)
{
	int val = (int)(cap / SM_RCVBUF_DIV);

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &val, sizeof(val)) < 0)
		return -1;
	return setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &val, sizeof(val));
}

/*
 * Long: one ordered hand-over (drain both sources, insert the directions then the sockets,
 * read what arrived in between, request the redirect) with one unwinding path; the order of
 * these steps is what keeps bytes in sequence (see the comments at each).
 */
int sockmap_flow_add_ex(const struct sockmap_flow_args *args, uint64_t *flow_id)
{
	const void *pend[2] = { args->pending_a_to_b, args->pending_b_to_a };
	size_t pend_len[2] = { args->pending_a_to_b_len, args->pending_b_to_a_len };
	struct kfwd_dir kd;
	struct sm_flow *f;
	int inserted_dirs = 0, inserted_socks = 0;
	bool give_back = false;
	uint64_t fdval;
	uint32_t slot;
	int i, err;

	if (!sm.skel) {
		errno = ENODEV;
		return -1;
	}
	if (args->fd_a < 0 || args->fd_b < 0 || args->fd_a == args->fd_b) {
		errno = EINVAL;
		return -1;
	}
	if (slot_alloc(&slot) < 0)
		return -1;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	f->fd_a = args->fd_a;
	f->fd_b = args->fd_b;
	f->flags = args->flags;
	f->owner = args->owner;
	f->on_event = args->on_event;
	sm.gens[slot] = (sm.gens[slot] + 1) & SM_GEN_MASK;
	if (!sm.gens[slot])
		sm.gens[slot] = 1;
	f->id = ((uint64_t)sm.tag << SM_TAG_SHIFT) | ((uint64_t)sm.gens[slot] << 32) | slot;

	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];

		d->src = i ? args->fd_b : args->fd_a;
		d->dst = i ? args->fd_a : args->fd_b;
		d->active = i == SOCKMAP_B_TO_A || !(args->flags & SOCKMAP_B_TO_A_ONLY);
		d->done = !d->active;
		d->limited = i == SOCKMAP_B_TO_A && (args->flags & SOCKMAP_B_LIMIT);
		d->bufsize = SM_BUF_SIZE;
		d->buf = malloc(d->bufsize);
		if (!d->buf)
			goto err_free;
		if (pend_len[i] && buf_append(d, pend[i], pend_len[i]) < 0)
			goto err_free;
	}
	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];

		if (sock_cookie(d->src, &d->src_cookie) < 0)
			goto err_free;
	}
	f->dir[0].dst_cookie = f->dir[1].src_cookie;
	f->dir[1].dst_cookie = f->dir[0].src_cookie;

	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];
		size_t pending = d->tail;

		if (!d->active)
			continue;
		if (drain_src(d, &d->rx_base) < 0) {
			if ((errno == ENOBUFS || errno == EAGAIN) && args->spill)
				errno = spill_drained(f, args, i) < 0 ? ENOMEM : EAGAIN;
			goto err_free;
		}
		if (tx_written(d->dst, &d->dst_base) < 0)
			goto err_free;
		if (d->limited) {
			/* the body ends limit_b_to_a bytes after the pending ones:
			 * what the drain read past it is not the body's */
			size_t drained = d->tail - pending;

			if (drained > args->limit_b_to_a)
				d->tail = pending + (size_t)args->limit_b_to_a;
			d->end_pos = d->rx_base - drained + args->limit_b_to_a;
		}
	}

	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];

		if (!d->active)
			continue;
		memset(&kd, 0, sizeof(kd));
		kd.flow_id = f->id;
		kd.src_cookie = d->src_cookie;
		kd.dst_cookie = d->dst_cookie;
		kd.cap = args->cap_bytes ? args->cap_bytes : SOCKMAP_CAP_DEFAULT;
		kd.rx_base = d->rx_base;
		kd.dst_base = d->dst_base;
		kd.state = KFWD_PASS;
		kd.pause_count = SM_START_GEN;
		if (args->flags & SOCKMAP_UNBOUNDED)
			kd.flags |= KFWD_F_UNBOUNDED;
		if (args->flags & SOCKMAP_CAP_UNACKED)
			kd.flags |= KFWD_F_CAP_UNACKED;
		if (d->limited) {
			kd.flags |= KFWD_F_LIMIT;
			kd.end_pos = d->end_pos;
		}
		if (!(kd.flags & KFWD_F_UNBOUNDED) && src_rcvbuf_fit(d->src, kd.cap) < 0)
			goto err_unmap;
		bpf_map_delete_elem(sm.ctl_fd, &d->src_cookie);
		if (bpf_map_update_elem(sm.dirs_fd, &d->src_cookie, &kd, BPF_NOEXIST) < 0)
			goto err_unmap;
		inserted_dirs++;
	}
	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];

		fdval = (uint64_t)d->src;
		if (bpf_map_update_elem(sm.socks_fd, &d->src_cookie, &fdval, BPF_NOEXIST) < 0) {
			/* 6.18 takes only ESTABLISHED sockets: a FIN that arrived after the
			 * caller's check. What is ours is in the buffers or, for a socket
			 * already inserted, in its psock queue: read it before the removal
			 * purges that queue, then hand it all back. */
			if (errno == EOPNOTSUPP && args->spill) {
				give_back = true;
				for (int j = 0; j < inserted_socks; j++)
					if (f->dir[j].active && read_leftover(&f->dir[j]) < 0)
						give_back = false;
				errno = EOPNOTSUPP;
			}
			goto err_unmap;
		}
		inserted_socks++;
	}
	for (i = 0; i < 2; i++) {
		if (f->dir[i].active && read_leftover(&f->dir[i]) < 0)
			goto err_unmap;
	}
	/*
	 * Ask for the redirect now, promising what the buffer holds, not at
	 * the first pump after writing it: the bytes written first (a
	 * tunnel's "200", a request the client pipelined) make the peer
	 * answer, and an answer that beat the request was passed, after which
	 * a producer faster than the client keeps the direction in user space
	 * for good (each later skb arrives while we still write).
	 */
	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];

		if (!d->active || d->eof)
			continue;
		d->kd.pause_count = SM_START_GEN;
		if (ctl_write(d, d->user_read, d->user_written + (d->tail - d->head)) < 0)
			goto err_unmap;
	}

	sm.flows[slot] = f;
	*flow_id = f->id;
	if (args->mem_charge)
		mem_budget_join(&f->charge, args->mem_charge);
	return 0;

err_unmap:
	err = errno;
	for (i = 0; i < 2; i++)
		bpf_map_delete_elem(sm.ctl_fd, &f->dir[i].src_cookie);
	for (i = 0; i < inserted_socks; i++)
		bpf_map_delete_elem(sm.socks_fd, &f->dir[i].src_cookie);
	for (i = 0; i < 2 && inserted_dirs; i++) {
		if (f->dir[i].active) {
			bpf_map_delete_elem(sm.dirs_fd, &f->dir[i].src_cookie);
			inserted_dirs--;
		}
	}
	errno = err;
	if (give_back)
		errno = spill_drained(f, args, 1) < 0 ? ENOMEM : EAGAIN;
err_free:
	err = errno;
	flow_free(f);
	errno = err;
	return -1;
}

static void set_timeout(int *tmo, int ms)
{
	if (*tmo < 0 || ms < *tmo)
		*tmo = ms;
}

/*
 * Bytes the program passed to src's psock queue that we have not read:
 * we know them from the program's stream position, so we can promise
 * them before reading them (see request_resume()).
 */
static uint64_t passed_unread(const struct sm_dir *d)
{
	uint64_t passed;

	if (!d->kd.seq0_set || d->kd.next_pos < d->rx_base + d->kd.redirected)
		return 0;
	passed = d->kd.next_pos - d->rx_base - d->kd.redirected;
	return passed > d->user_read ? passed - d->user_read : 0;
}

/*
 * Ask the program to resume redirecting after every byte we wrote plus
 * @ahead bytes queued on src that we are about to read and write (see
 * src_read()).  Our buffer must be empty.
 */
static int request_resume(struct sm_dir *d, uint64_t ahead)
{
	return ctl_write(d, d->user_read + ahead, d->user_written + ahead);
}

/* The resume request itself: redirect from the skb at stream position
 * rx_base + redirected + @user_read once dst took @user_written bytes. */
static int ctl_write(struct sm_dir *d, uint64_t user_read, uint64_t user_written)
{
	struct kfwd_ctl c = {
		.user_read = user_read,
		.user_written = user_written,
		.pause_gen = d->kd.pause_count,
	};

	if (d->ctl_written && c.user_read == d->ctl.user_read &&
	    c.user_written == d->ctl.user_written && c.pause_gen == d->ctl.pause_gen)
		return 0;
	/* never 0: the program's reject_seq starts at 0 */
	c.seq = d->ctl.seq + 1;
	if (!c.seq)
		c.seq = 1;
	if (bpf_map_update_elem(sm.ctl_fd, &d->src_cookie, &c, BPF_ANY) < 0)
		return -1;
	d->ctl = c;
	d->ctl_written = true;
	return 0;
}

/*
 * EOF: shut dst down once src's FIN arrived and every data byte before it
 * is in dst's send queue.  d->eof only means recv() returned 0; passed
 * bytes may still wait in src's psock queue after the FIN, so in KFWD_PASS
 * the recv loop (EPOLLIN) has to reach that 0 first.
 */
static int try_finish(struct sm_dir *d, int *tmo)
{
	uint64_t rx, tx;
	bool fin;

	if (d->limited) {
		/* a body with a length ends at its last byte, not at a FIN */
		if (d->head != d->tail)
			return 0;
		if (src_left(d)) {
			if (!d->eof) {
				if (rx_data(d->src, &rx, &fin) < 0)
					return -1;
				if (!fin)
					return 0;
				if (rx - d->rx_base != d->kd.redirected + d->user_read) {
					set_timeout(tmo, SM_RETRY_MS);
					return 0;
				}
			}
			/*
			 * src ended before the body did.  Deliver what came and
			 * end with a FIN, as a cut splice does: the client sees
			 * fewer bytes than the Content-Length.  A reset would
			 * throw away bytes still in dst's queues.
			 */
			d->cut = true;
		}
	} else {
		if (rx_data(d->src, &rx, &fin) < 0)
			return -1;
		if (!fin || d->head != d->tail)
			return 0;
		if (rx - d->rx_base != d->kd.redirected + d->user_read) {
			set_timeout(tmo, SM_RETRY_MS);
			return 0;
		}
	}
	if (tx_written(d->dst, &tx) < 0)
		return -1;
	if (tx - d->dst_base != d->kd.redirected + d->user_written) {
		set_timeout(tmo, SM_RETRY_MS);
		return 0;
	}
	if (shutdown(d->dst, SHUT_WR) < 0 && errno != ENOTCONN)
		return -1;
	d->eof = true;
	d->done = true;
	return 0;
}

/*
 * Take a fresh snapshot of the program's state once bytes read from src are
 * in our buffer, before they are checked against dst (dir_pump()) and
 * written.  The snapshot taken before the recv() can be a generation old:
 * the resume request written just before the recv() lets the program
 * resume at the next skb (on another CPU: softirq of the sender), redirect
 * up to the cap into dst's psock queue, pause again (pause_count + 1) and
 * pass the skbs after them, all before our recv() returns those skbs.
 * Checked against the old @redirected, dst's send queue matches while the
 * new redirected bytes still wait for the psock worker (a slow client: it
 * only retries once the socket is writable), and ours would overtake them.
 * After the recv() the
 * program cannot resume again: every request in kfwd_ctl is for a
 * generation before the one that passed these bytes, and the recv() took
 * them from the psock queue under its lock, after the program stored the
 * state that passed them.
 *
 * A limited direction may thus also have read past end_pos (the read size
 * came from the old snapshot): those bytes are not the body's and are
 * dropped, as the ones the program leaves behind are.  1, or -1: error.
 */
static int src_read_resync(struct sm_dir *d)
{
	uint64_t pos, excess;

	if (bpf_map_lookup_elem(sm.dirs_fd, &d->src_cookie, &d->kd) < 0)
		return -1;
	if (!d->limited)
		return 1;
	pos = d->rx_base + d->kd.redirected + d->user_read;
	if (pos > d->end_pos) {
		excess = pos - d->end_pos;
		d->tail -= excess < d->tail ? (size_t)excess : d->tail;
	}
	return 1;
}

/*
 * Read from src in pass mode, our buffer empty.  When the program's stream
 * position says how many bytes wait in src's psock queue (@ahead) and one
 * recv() takes them all, promise them first (request_resume()): the skb
 * after them then resumes the redirect if it arrives once we wrote them,
 * without src's queue ever having to be empty while we write, which a
 * producer about as fast as we are rarely allows.  1: bytes in the
 * buffer; 0: nothing now; -1: error.
 */
static int src_read(struct sm_dir *d, uint64_t ahead, int *tmo)
{
	uint64_t left = src_left(d);
	size_t want = d->bufsize < left ? d->bufsize : (size_t)left;
	uint64_t rx;
	ssize_t n;
	bool fin;

	if (ahead > left)
		ahead = left;
	if (ahead) {
		want = ahead < SM_READ_MAX ? (size_t)ahead : SM_READ_MAX;
		if (buf_reserve(d, want) < 0)
			return -1;
		if ((uint64_t)want == ahead && request_resume(d, ahead) < 0)
			return -1;
	} else if (request_resume(d, 0) < 0) {
		return -1;
	}
	for (;;) {
		n = recv(d->src, d->buf, want, MSG_DONTWAIT);
		if (n >= 0 || errno != EINTR)
			break;
	}
	if (n > 0) {
		d->user_read += (uint64_t)n;
		d->head = 0;
		d->tail = (size_t)n;
		return src_read_resync(d);
	}
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
	/*
	 * The FIN can reach the socket before every passed skb reached the
	 * psock queue: this 0 is final only once every byte received was
	 * redirected or read here.  Until then, read again shortly.
	 */
	if (rx_data(d->src, &rx, &fin) < 0)
		return -1;
	if (fin && rx - d->rx_base == d->kd.redirected + d->user_read)
		d->eof = true;
	else
		set_timeout(tmo, SM_RETRY_MS);
	return 0;
}

enum { SM_PEEK_WAIT = 0, SM_PEEK_READ = 1, SM_PEEK_COPY = 2 };

/*
 * Milliseconds to wait before looking again whether dst took the redirected
 * bytes still queued for it (@left of them, @tx written now).  A client
 * slower than SM_DRAIN_FAST_RATE (a paced stream takes a queue at the cap
 * in about a second) is looked at after half the time it needs at the rate
 * it took bytes so far, at most SM_DRAIN_WAIT_MAX_MS: looking every
 * SM_RETRY_MS woke kfwd a thousand times a second per stream.  A fast or
 * not yet measured one every SM_RETRY_MS: each millisecond past its drain
 * is throughput lost, the producer being paused meanwhile.
 */
static int drain_wait(struct sm_dir *d, uint64_t tx, uint64_t left)
{
	uint64_t now = now_ms(), ms;

	if (!d->drain_ms) {
		d->drain_ms = now;
		d->drain_tx = tx;
	} else if (now > d->drain_ms && tx > d->drain_tx) {
		/* bytes per ms, never 0: dst took bytes */
		d->drain_rate = (tx - d->drain_tx) / (now - d->drain_ms) + 1;
	}
	if (!d->drain_rate || d->drain_rate >= SM_DRAIN_FAST_RATE)
		return SM_RETRY_MS;
	ms = (left + SM_DRAIN_SLACK) / d->drain_rate / 2;
	if (ms < SM_RETRY_MS)
		ms = SM_RETRY_MS;
	if (ms > SM_DRAIN_WAIT_MAX_MS)
		ms = SM_DRAIN_WAIT_MAX_MS;
	return (int)ms;
}

/*
 * dst took every redirected byte (@tx written now). What it took over the
 * wait is a lower bound of its rate: it may have finished long before the
 * look. So the rate only grows from it; taken as the rate, one measured
 * across a stall kept a fast client waiting SM_DRAIN_WAIT_MAX_MS at every
 * pause (each wait outlasting its drain measured the same low rate again).
 */
static void drain_done(struct sm_dir *d, uint64_t tx)
{
	uint64_t now = now_ms(), at_least;

	if (d->drain_ms && now > d->drain_ms && tx > d->drain_tx) {
		at_least = (tx - d->drain_tx) / (now - d->drain_ms) + 1;
		if (at_least > d->drain_rate)
			d->drain_rate = at_least;
	}
	d->drain_ms = 0;
}

/*
 * Copy src's psock queue, up to @want bytes, into our buffer with MSG_PEEK.
 * The first d->peeked bytes are already written: the buffer holds the rest,
 * and is left empty (head == tail == 0) when the peek found nothing behind
 * them.  That case is real: the program counts an skb as passed before it
 * reaches the psock queue (it may wait in the psock backlog behind skbs
 * redirected to the same socket), so peek_more() can expect bytes that the
 * peek does not see yet.  An empty buffer must be at 0, as the next read
 * into it (src_read()) starts there: with head left at d->peeked it would
 * skip that many of the bytes it read (counted read, never written, and the
 * EOF check would find every count consistent), or send past tail.
 * Returns the bytes peeked, 0 at src's FIN, -1 with errno.
 */
static ssize_t peek_queue(struct sm_dir *d, uint64_t want)
{
	ssize_t n;

	if (want > SM_PEEK_MAX)
		want = SM_PEEK_MAX;
	if (want > src_left(d))
		want = src_left(d);
	if (buf_reserve(d, (size_t)want) < 0)
		return -1;
	do
		n = recv(d->src, d->buf, (size_t)want, MSG_DONTWAIT | MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n;
	if ((uint64_t)n <= d->peeked) {
		d->head = 0;
		d->tail = 0;
		return n;
	}
	d->head = (size_t)d->peeked;
	d->tail = (size_t)n;
	d->peeked = (uint64_t)n;
	return n;
}

/*
 * Every peeked byte is in dst: did the producer, whose window the queue had
 * not quite closed yet, add bytes behind them meanwhile?  Then the skb after
 * our promise would have been passed already: peek those too and write them
 * first (the queue still holds the window shut).  1: more bytes in the
 * buffer; 0: quiet, promise now; -1: error.
 */
static int peek_more(struct sm_dir *d)
{
	ssize_t n;

	if (bpf_map_lookup_elem(sm.dirs_fd, &d->src_cookie, &d->kd) < 0)
		return -1;
	if (passed_unread(d) <= d->peeked || d->peeked >= SM_PEEK_MAX)
		return 0;
	n = peek_queue(d, passed_unread(d));
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return -1;
	return d->head != d->tail;
}

/*
 * Start a resume round, our buffer empty and @ahead bytes (known from the
 * program's stream position) waiting in src's psock queue.  Those bytes
 * keep src's receive window closed: as long as they stay queued, TCP flow
 * control holds the producer.  So copy them out with MSG_PEEK, write them
 * to dst (dir_pump()), promise them, and only then take them off the
 * queue (peek_consume()).  The skb the reopened window lets in (on
 * loopback it reaches the program before our recv() even returns) finds
 * every byte before it in dst's send queue and resumes the redirect: no
 * race against the producer to win, which the read-then-write copy path
 * (src_read()) loses to any producer faster than the client.
 *
 * The round starts once dst took every redirected byte (until then the
 * queue stays untouched); a client slower than the producer then only
 * makes the write wait for EPOLLOUT, the window still shut.  A queue larger
 * than SM_PEEK_MAX (src's receive buffer is sized well below it, see
 * src_rcvbuf_fit()) takes the copy path.  SM_PEEK_READ: bytes in the
 * buffer; SM_PEEK_WAIT: retry after @tmo; SM_PEEK_COPY: use src_read();
 * -1: error.
 */
static int src_peek(struct sm_dir *d, uint64_t ahead, int *tmo)
{
	uint64_t tx;
	ssize_t n;

	if (!ahead || ahead > SM_PEEK_MAX) {
		d->drain_ms = 0;
		return SM_PEEK_COPY;
	}
	if (tx_written(d->dst, &tx) < 0)
		return -1;
	if (tx - d->dst_base != d->kd.redirected + d->user_written) {
		/* the psock worker still moves redirected bytes into dst */
		set_timeout(tmo,
			    drain_wait(d, tx,
				       d->kd.redirected + d->user_written - (tx - d->dst_base)));
		return SM_PEEK_WAIT;
	}
	drain_done(d, tx);
	d->synced_gen = d->kd.pause_count;
	/* more may have come since the snapshot: take all there is */
	d->peeked = 0;
	n = peek_queue(d, SM_PEEK_MAX);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? SM_PEEK_COPY : -1;
	if (!n)
		return SM_PEEK_COPY; /* src's FIN first: the copy path ends it */
	return SM_PEEK_READ;
}

/*
 * End a resume round: every peeked byte is in dst.  Promise them, then take
 * them off src's queue; the program may resume during that recv(), and
 * whatever it passes after pausing again queues behind them.
 */
static int peek_consume(struct sm_dir *d)
{
	uint64_t left = d->peeked;
	ssize_t n;

	if (ctl_write(d, d->user_read + d->peeked, d->user_written) < 0)
		return -1;
	if (buf_reserve(d, SM_BUF_SIZE) < 0)
		return -1;
	while (left) {
		n = recv(d->src, d->buf, left < d->bufsize ? (size_t)left : d->bufsize,
			 MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* the peeked bytes cannot leave the queue but by our recv() */
			if (n == 0)
				errno = EIO;
			return -1;
		}
		left -= (uint64_t)n;
		d->user_read += (uint64_t)n;
	}
	d->peeked = 0;
	return 0;
}

/*
 * The buffer is written: shrink it back, and end a resume round unless the
 * producer added bytes behind the peeked ones, which are then in the
 * buffer to write first.  0, or -1: error.
 */
static int buf_written(struct sm_dir *d)
{
	int r;

	d->head = 0;
	d->tail = 0;
	if (d->bufsize > SM_BUF_SIZE) {
		char *nb = realloc(d->buf, SM_BUF_SIZE);

		if (nb) {
			d->buf = nb;
			d->bufsize = SM_BUF_SIZE;
		}
	}
	if (!d->peeked)
		return 0;
	r = peek_more(d);
	if (r)
		return r < 0 ? -1 : 0;
	return peek_consume(d);
}

static int dir_pump(struct sm_dir *d, uint32_t *ev_src, uint32_t *ev_dst, int *tmo)
{
	bool waiting = false;
	uint64_t tx, ahead;
	ssize_t n;
	int r;

	if (d->done)
		return 0;
	if (bpf_map_lookup_elem(sm.dirs_fd, &d->src_cookie, &d->kd) < 0)
		return -1;

	for (;;) {
		if (d->head != d->tail) {
			if (d->synced_gen != d->kd.pause_count) {
				/* redirected bytes must leave the dst psock
				 * before ours enter dst's send queue */
				if (tx_written(d->dst, &tx) < 0)
					return -1;
				if (tx - d->dst_base != d->kd.redirected + d->user_written) {
					set_timeout(tmo, SM_RETRY_MS);
					break;
				}
				d->synced_gen = d->kd.pause_count;
			}
			n = send(d->dst, d->buf + d->head, d->tail - d->head,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					*ev_dst |= EPOLLOUT;
					break;
				}
				return -1;
			}
			d->head += (size_t)n;
			d->user_written += (uint64_t)n;
			if (d->head == d->tail && buf_written(d) < 0)
				return -1;
			continue;
		}
		if (d->kd.state != KFWD_PASS || d->eof || !src_left(d)) {
			d->drain_ms = 0; /* no wait of drain_wait() goes on */
			break;
		}
		/* buffer empty: a fresh look at what the program passed */
		if (bpf_map_lookup_elem(sm.dirs_fd, &d->src_cookie, &d->kd) < 0)
			return -1;
		if (d->kd.state != KFWD_PASS || !src_left(d))
			break;
		ahead = passed_unread(d);
		if (ahead > src_left(d))
			ahead = src_left(d);
		r = src_peek(d, ahead, tmo);
		if (r == SM_PEEK_WAIT) {
			/* src stays readable: EPOLLIN would spin */
			waiting = true;
			break;
		}
		if (r == SM_PEEK_COPY)
			r = src_read(d, ahead, tmo);
		if (r < 0)
			return -1;
		if (!r)
			break;
	}

	*ev_src |= EPOLLRDHUP;
	if (d->kd.state == KFWD_PASS && !d->eof && d->head == d->tail && src_left(d) && !waiting)
		*ev_src |= EPOLLIN;
	return try_finish(d, tmo);
}

int sockmap_flow_pump(uint64_t flow_id, struct sockmap_want *want)
{
	struct sm_flow *f = flow_get(flow_id);
	uint32_t ev[2] = { 0, 0 };
	int tmo = -1;

	if (!f)
		return -1;
	if (dir_pump(&f->dir[0], &ev[0], &ev[1], &tmo) < 0)
		return -1;
	if (dir_pump(&f->dir[1], &ev[1], &ev[0], &tmo) < 0)
		return -1;
	if (want) {
		want->events_a = ev[0];
		want->events_b = ev[1];
		want->timeout_ms = tmo;
	}
	if (f->dir[0].done && f->dir[1].done)
		return SOCKMAP_DONE;
	return SOCKMAP_RUNNING;
}

int sockmap_flow_stats(uint64_t flow_id, struct sockmap_stats *st)
{
	struct sm_flow *f = flow_get(flow_id);
	int i;

	if (!f)
		return -1;
	memset(st, 0, sizeof(*st));
	for (i = 0; i < 2; i++) {
		struct sm_dir *d = &f->dir[i];
		struct sockmap_dir_stats *s = &st->dir[i];

		if (d->active && bpf_map_lookup_elem(sm.dirs_fd, &d->src_cookie, &d->kd) < 0)
			return -1;
		s->redirected = d->kd.redirected;
		s->passed = d->kd.passed;
		s->user_read = d->user_read;
		s->user_written = d->user_written;
		s->inflight_max = d->kd.inflight_max;
		s->pause_count = d->kd.pause_count;
		s->resume_count = d->kd.resume_count;
		s->resume_rejects = d->kd.resume_rejects;
		s->resume_early = d->kd.resume_early;
		s->errors = d->kd.errors;
		s->overlaps = d->kd.overlaps;
		s->dup_bytes = d->kd.dup_bytes;
		s->gaps = d->kd.gaps;
		s->past_end = d->kd.past_end;
		s->cut = d->cut;
		s->paused = d->kd.state == KFWD_PASS;
		s->eof = d->eof;
		s->done = d->done;
	}
	return 0;
}

void *sockmap_flow_owner(uint64_t flow_id)
{
	struct sm_flow *f = flow_get(flow_id);

	return f ? f->owner : NULL;
}

/* The redirected bytes of flow @id, added to @out (by enum sockmap_dir). */
static void add_redirected(uint64_t id, uint64_t out[2])
{
	struct sockmap_stats st;

	if (sockmap_flow_stats(id, &st) < 0)
		return;
	out[SOCKMAP_A_TO_B] += st.dir[SOCKMAP_A_TO_B].redirected;
	out[SOCKMAP_B_TO_A] += st.dir[SOCKMAP_B_TO_A].redirected;
}

void sockmap_bytes_redirected(uint64_t out[2])
{
	out[SOCKMAP_A_TO_B] = sm.ended_redirected[SOCKMAP_A_TO_B];
	out[SOCKMAP_B_TO_A] = sm.ended_redirected[SOCKMAP_B_TO_A];
	for (uint32_t i = 0; i < sm.nslots; i++) {
		if (sm.flows[i])
			add_redirected(sm.flows[i]->id, out);
	}
}

int sockmap_flow_del(uint64_t flow_id)
{
	struct sm_flow *f = flow_get(flow_id);
	uint32_t slot = (uint32_t)flow_id;

	if (!f)
		return -1;
	add_redirected(flow_id, sm.ended_redirected);
	flow_unmap(f);
	flow_free(f);
	sm.flows[slot] = NULL;
	return 0;
}

#endif /* SOCKMAP_HAVE_SKEL */
