// SPDX-License-Identifier: GPL-2.0
/*
 * Allocation counter for `make bench` only (LD_PRELOAD, never linked into kfwd): counts the
 * calls to malloc, calloc, realloc and free of the process into a shared file named by
 * KFWD_MALLOC_COUNT_FILE (MALLOC_COUNT_SLOTS little-endian uint64), which the bench reads
 * before and after a load run to report allocations per request. glibc's __libc_* entry
 * points do the work, so no dlsym() recursion at start-up.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { MC_MALLOC, MC_CALLOC, MC_REALLOC, MC_FREE, MALLOC_COUNT_SLOTS };

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static uint64_t fallback[MALLOC_COUNT_SLOTS];
static uint64_t *counts = fallback;

__attribute__((constructor)) static void malloc_count_init(void)
{
	const char *path = getenv("KFWD_MALLOC_COUNT_FILE");
	size_t len = sizeof(uint64_t) * MALLOC_COUNT_SLOTS;
	void *p;
	int fd;

	if (!path)
		return;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (ftruncate(fd, (off_t)len) == 0) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED)
			counts = p;
	}
	close(fd);
}

static void count(int slot)
{
	__atomic_fetch_add(&counts[slot], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t size)
{
	count(MC_MALLOC);
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	count(MC_CALLOC);
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	count(MC_REALLOC);
	return __libc_realloc(p, size);
}

void free(void *p)
{
	if (p)
		count(MC_FREE);
	__libc_free(p);
}
