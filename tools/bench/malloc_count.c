/* An LD_PRELOAD malloc counter for tools/bench/tls.py.

The MicroPython unix port's mbedTLS allocates with the C library's malloc, outside the GC heap
that `-X heapsize` bounds; this library counts those bytes so a MicroPython script can read
them between two points of its own run.

Every allocation is counted at its usable size (malloc_usable_size: the request rounded up to
the allocator's granule), so `live` is what the process holds right now and `peak` the most it
held since the last reset. The script reads them through os.getenv, which the unix port passes
to the C library's getenv, intercepted here:

  os.getenv("EF_MALLOC_RESET")  peak := live, forget the large allocations seen; returns "ok"
  os.getenv("EF_MALLOC")        "live peak n big1,big2,..." where n counts allocations since
                                the reset and bigK are the sizes of those of BIG_BYTES or more
                                (the TLS record buffers, the certificate chain), in order

Build: cc -shared -fPIC -O2 -o malloc_count.so malloc_count.c -ldl
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIG_BYTES 1024
#define BIG_SLOTS 64

extern char **environ;

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static long live_bytes, peak_bytes, allocations;
static long big[BIG_SLOTS];
static int n_big;
static char report[64 + BIG_SLOTS * 12];

/* dlsym itself may calloc before the real functions are known: serve that from here. */
static char bootstrap[8192];
static size_t bootstrap_used;
static int resolving;

static int from_bootstrap(void *p) {
    return (char *)p >= bootstrap && (char *)p < bootstrap + sizeof(bootstrap);
}

static void *bootstrap_alloc(size_t size) {
    size_t at = (bootstrap_used + 15) & ~(size_t)15;
    if (at + size > sizeof(bootstrap))
        return NULL;
    bootstrap_used = at + size;
    return bootstrap + at;
}

static void resolve(void) {
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    resolving = 0;
}

static void counted(void *p) {
    if (p == NULL || from_bootstrap(p))
        return;
    long size = (long)malloc_usable_size(p);
    long now = __atomic_add_fetch(&live_bytes, size, __ATOMIC_RELAXED);
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    long peak = __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&peak_bytes, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    if (size >= BIG_BYTES) {
        int slot = __atomic_fetch_add(&n_big, 1, __ATOMIC_RELAXED);
        if (slot < BIG_SLOTS)
            big[slot] = size;
    }
}

static void uncounted(void *p) {
    if (p != NULL && !from_bootstrap(p))
        __atomic_sub_fetch(&live_bytes, (long)malloc_usable_size(p), __ATOMIC_RELAXED);
}

void *malloc(size_t size) {
    resolve();
    if (!real_malloc)
        return bootstrap_alloc(size);
    void *p = real_malloc(size);
    counted(p);
    return p;
}

void *calloc(size_t n, size_t size) {
    resolve();
    if (!real_calloc) {
        void *p = bootstrap_alloc(n * size);
        if (p)
            memset(p, 0, n * size);
        return p;
    }
    void *p = real_calloc(n, size);
    counted(p);
    return p;
}

void *realloc(void *old, size_t size) {
    resolve();
    if (from_bootstrap(old)) {
        void *p = malloc(size);
        size_t room = (size_t)(bootstrap + sizeof(bootstrap) - (char *)old);
        if (p)
            memcpy(p, old, size < room ? size : room);
        return p;
    }
    uncounted(old);
    void *p = real_realloc(old, size);
    if (p == NULL && size != 0 && old != NULL) {
        /* the old block stays allocated */
        counted(old);
        __atomic_sub_fetch(&allocations, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    counted(p);
    return p;
}

void free(void *p) {
    if (p == NULL || from_bootstrap(p))
        return;
    resolve();
    uncounted(p);
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t size) {
    resolve();
    int rc = real_posix_memalign(out, align, size);
    if (rc == 0)
        counted(*out);
    return rc;
}

void *aligned_alloc(size_t align, size_t size) {
    resolve();
    void *p = real_aligned_alloc(align, size);
    counted(p);
    return p;
}

void *memalign(size_t align, size_t size) {
    resolve();
    void *p = real_memalign(align, size);
    counted(p);
    return p;
}

char *getenv(const char *name) {
    if (strcmp(name, "EF_MALLOC_RESET") == 0) {
        __atomic_store_n(&peak_bytes, __atomic_load_n(&live_bytes, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
        __atomic_store_n(&n_big, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&allocations, 0, __ATOMIC_RELAXED);
        strcpy(report, "ok");
        return report;
    }
    if (strcmp(name, "EF_MALLOC") == 0) {
        int len = snprintf(report, sizeof(report), "%ld %ld %ld ", live_bytes, peak_bytes, allocations);
        int count = n_big < BIG_SLOTS ? n_big : BIG_SLOTS;
        for (int i = 0; i < count && len < (int)sizeof(report) - 24; i++)
            len += snprintf(report + len, sizeof(report) - len, i ? ",%ld" : "%ld", big[i]);
        return report;
    }
    /* Everything else as the C library would answer, without calling it (no dlsym needed). */
    size_t n = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}
