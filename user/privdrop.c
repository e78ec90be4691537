// SPDX-License-Identifier: GPL-2.0
/*
 * Least privilege: after the listeners, the metrics endpoint, the control socket, the BPF
 * programs and pins, and the log files are open as root, kfwd becomes `user`/`group` and keeps
 * only these capabilities, each for something it still does while running:
 *
 *   CAP_NET_BIND_SERVICE  a reload (or kfwdctl change) that adds a listen or metrics-listen
 *                         port below 1024;
 *   CAP_SYS_RESOURCE      pipes: F_SETPIPE_SZ above /proc/sys/fs/pipe-max-size, and the
 *                         per-user pipe budget (fs/pipe-user-pages-soft, 64 MiB: 64 flows of
 *                         1 MiB pipes) beyond which an unprivileged user's new pipes shrink to
 *                         two pages and resizing them fails;
 *   CAP_BPF               only with the sockmap data path loaded, and only where the kernel
 *                         wants it for map access by fd: before Linux 6.5 every bpf() command
 *                         needed it while kernel.unprivileged_bpf_disabled is set (Debian's
 *                         default); since 6.5 only creating maps and loading programs does. kfwd
 *                         probes a map without it (still as root) and keeps it only if the probe
 *                         fails.
 *
 * Not kept: CAP_NET_ADMIN (the sockhash updates, the event ring and the resume requests work
 * with the fds alone; the program, attachment and maps go away with the fds at exit),
 * CAP_SETUID/CAP_SETGID, so the drop cannot be undone; the bounding set loses everything else
 * before the switch. Loading BPF later (a reload that asks for sockmap for the first time) is
 * therefore not possible: it logs why and tunnels splice.
 */
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "privdrop.h"
#include "sockmap.h"

#define CAP_BIT(c) (1ULL << (c))

/* The permitted set kfwd started with: a container may have withheld some. */
static int permitted_now(uint64_t *out)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (syscall(SYS_capget, &hdr, data) < 0)
		return -1;
	*out = (uint64_t)data[1].permitted << 32 | data[0].permitted;
	return 0;
}

static int capset_raw(uint64_t permitted, uint64_t effective)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };

	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
		data[i].effective = (uint32_t)(effective >> (32 * i));
		data[i].permitted = (uint32_t)(permitted >> (32 * i));
	}
	return (int)syscall(SYS_capset, &hdr, data);
}

/*
 * Does the loaded sockmap need CAP_BPF for map access by fd? Probed while still root, with CAP_BPF
 * and CAP_SYS_ADMIN (bpf_capable() accepts either) out of the effective set for the probe.
 */
static int sockmap_needs_cap_bpf(uint64_t held, bool *needed)
{
	int err;

	*needed = false;
	if (!sockmap_ready())
		return 0;
	if (capset_raw(held, held & ~(CAP_BIT(CAP_BPF) | CAP_BIT(CAP_SYS_ADMIN))) < 0)
		return -1;
	*needed = sockmap_probe_access() < 0;
	err = errno;
	if (capset_raw(held, held) < 0)
		return -1;
	if (*needed && err != EPERM)
		log_warn("user: probing the sockmap maps: %s", strerror(err));
	return 0;
}

/* The highest capability this kernel knows (CAP_LAST_CAP of the headers may be older). */
static int last_cap(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	int last = CAP_LAST_CAP;

	if (f) {
		if (fscanf(f, "%d", &last) != 1)
			last = CAP_LAST_CAP;
		fclose(f);
	}
	return last;
}

/* The pin dir becomes the user's, so kfwd can remove its pins at exit (bpffs checks the
 * directory's permissions for unlink like any file system). */
static int chown_pin_dir(const struct config *cfg)
{
	const char *dir = sockmap_pin_dir();

	if (!dir)
		return 0;
	if (chown(dir, cfg->run_uid, cfg->run_gid) < 0) {
		log_err("user %s: chown %s: %m", cfg->user_name, dir);
		return -1;
	}
	return 0;
}

int privdrop_apply(const struct config *cfg)
{
	uint64_t keep = CAP_BIT(CAP_NET_BIND_SERVICE) | CAP_BIT(CAP_SYS_RESOURCE), held;
	bool need_bpf;
	int last = last_cap();

	if (!cfg->has_user)
		return 0;
	if (permitted_now(&held) < 0) {
		log_err("user: capget: %m");
		return -1;
	}
	if (sockmap_needs_cap_bpf(held, &need_bpf) < 0) {
		log_err("user: capset: %m");
		return -1;
	}
	if (need_bpf)
		keep |= CAP_BIT(CAP_BPF);
	if ((keep & held) != keep)
		log_warn(
			"user %s: kfwd was started without capabilities it would keep (mask "
			"%#llx)%s",
			cfg->user_name, (unsigned long long)(keep & ~held),
			(keep & ~held & CAP_BIT(CAP_SYS_RESOURCE)) ?
				": without CAP_SYS_RESOURCE pipes are limited to pipe-max-size and the "
				"user's pipe budget (fs/pipe-user-pages-soft)" :
				"");
	keep &= held;
	if (chown_pin_dir(cfg) < 0)
		return -1;
	/* Permitted capabilities survive setresuid() only with KEEPCAPS (cleared again by the
	 * kernel at execve, and by us below). */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
		log_err("user: PR_SET_KEEPCAPS: %m");
		return -1;
	}
	for (int c = 0; c <= last; c++) {
		if ((keep & CAP_BIT(c)) || prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == 0)
			continue;
		if (errno == EINVAL)
			continue; /* unknown to this kernel */
		log_err("user: PR_CAPBSET_DROP %d: %m", c);
		return -1;
	}
	if (setgroups(1, &cfg->run_gid) < 0 ||
	    setresgid(cfg->run_gid, cfg->run_gid, cfg->run_gid) < 0 ||
	    setresuid(cfg->run_uid, cfg->run_uid, cfg->run_uid) < 0) {
		log_err("user %s: switching to uid %u gid %u: %m", cfg->user_name,
			(unsigned int)cfg->run_uid, (unsigned int)cfg->run_gid);
		return -1;
	}
	if (capset_raw(keep, keep) < 0) {
		log_err("user %s: capset: %m", cfg->user_name);
		return -1;
	}
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 ||
	    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		log_err("user %s: prctl: %m", cfg->user_name);
		return -1;
	}
	/* Both ids are checked: a kernel that ignored a request must not leave us root. */
	if (getuid() != cfg->run_uid || geteuid() != cfg->run_uid || getegid() != cfg->run_gid) {
		log_err("user %s: the switch did not take effect", cfg->user_name);
		return -1;
	}
	log_info("running as %s (uid %u, gid %u), capabilities kept: %#llx", cfg->user_name,
		 (unsigned int)cfg->run_uid, (unsigned int)cfg->run_gid, (unsigned long long)keep);
	return 0;
}
