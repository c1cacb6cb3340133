/*
 * core.h - the paging core's internals, shared by vmmem.c (the pool, the fault path and
 * the guest API), the backends (backend_*.c: one file each, behind backend_ops) and the
 * eviction policies (policy_*.h: inline hooks, dispatched in policy.h). Not installed:
 * vmmem.h is the contract.
 */
#ifndef VMMEM_CORE_H
#define VMMEM_CORE_H

#define _GNU_SOURCE
#include "vmmem.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#define NONE UINT32_MAX
#define F_DIRTY 1u
#define F_REF 2u
#define MAX_GUEST_PAGES ((uint64_t)UINT32_MAX - 1) /* 12 TiB of 4 KiB pages fits */
#define BM_NONE UINT64_MAX
#define BM_LEVELS_MAX 6 /* 64^6 > 2^32 pages */
/* The mmap backend unmaps the pages it read in batches of this many: one TLB shootdown
 * per batch instead of one per page-in (every thread of the process shares the mm). */
#define ZAP_BATCH 32

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define VMM_HIDDEN __attribute__((visibility("hidden")))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define VMM_HIDDEN
#endif

typedef struct frame_meta {
    uint32_t prev, next; /* list links inside the holding mem */
} frame_meta;

struct vmm_pool {
    uint8_t *base;
    size_t bytes;
    uint64_t nframes;
    uint32_t page_size;
    uint32_t page_shift;
    frame_meta *meta;  /* per frame: list links */
    uint32_t *page_of; /* per frame: guest page held */
    uint8_t *flags;    /* per frame: F_DIRTY, F_REF */
    pthread_mutex_t lock;
    uint32_t *free_stack;
    uint64_t nfree;
};


/* A bitmap of n bits with a summary level per 64 words: level k+1 has a bit set
 * for every non-zero word of level k, so the next set bit is found in at most
 * BM_LEVELS_MAX word reads, however sparse the map. */
typedef struct bitmap {
    uint64_t *lvl[BM_LEVELS_MAX];
    uint64_t words[BM_LEVELS_MAX];
    int levels;
    uint64_t *mem; /* one reservation for every level */
    size_t bytes;
} bitmap;

typedef struct backend_ops backend_ops;

/* The mmap backend's state (backend_mmap.c sets it up when the file is made). */
typedef struct mmap_state {
    int wfd;          /* O_DIRECT descriptor for page-outs, or -1 */
    int pidfd;        /* this process, for process_madvise; or -1 */
    pid_t zap_pid;    /* the process pidfd names (a fork's child must not use it) */
    uint32_t nzap;    /* slots read through the mapping, still mapped */
    uint32_t zap[ZAP_BATCH];
    uint8_t *map;     /* the file mapped over npages pages */
    int populate;     /* the kernel has MADV_POPULATE_READ */
    pthread_mutex_t zap_lock; /* nzap and zap[]: page-ins of several threads run at once */
} mmap_state;

/* The paging file is allocated ahead of its page-outs this many bytes at a time (vmmem.c,
 * allocate_ahead). */
#define ALLOC_AHEAD (2u << 20)

/* Replays let waiting threads at the lock after this many accesses (a power of two). */
#define RUN_LEN 4096

struct vmm_mem {
    pthread_mutex_t lock;
    pthread_cond_t io_done; /* broadcast when a transfer ends or a held frame is installed */
    vmm_pool *pool;
    uint64_t npages;
    uint32_t *frame1;  /* reserved, per page: frame + 1; 0 = not resident */
    uint32_t *slot1;   /* reserved, per page: file slot + 1; 0 = no copy in the file */
    char *path;
    const backend_ops *ops;
    int policy;
    int fd;           /* -1 while the file does not exist */
    mmap_state mm;    /* the mmap backend's own state (backend_mmap.c), while the file is open */
    uint32_t slot_hwm; /* slots ever handed out since the file was created */
    uint32_t *free_slots; /* reserved, npages entries; touched up to slot_hwm */
    uint64_t nfree_slots;
    bitmap has_slot;   /* pages whose slot1 != 0: drain walks it */
    uint32_t head;     /* most recent frame; NONE when the list is empty */
    uint64_t resident, frame_limit;
    uint32_t tail;     /* least recent: not next to head, or GCC packs the two into one
                        * vector register in the replay loop (SLP) and unpacks it per access */
    uint64_t paged_out;    /* pages with a file copy and no frame */
    uint64_t drain_cursor; /* where a partial drain resumes */
    vmm_stats st;
    /* Concurrency (see vmmem.h): everything here is under `lock` unless said otherwise. */
    uint8_t *busy;         /* reserved, per page: 1 while a page-in or page-out of it runs */
    uint64_t held;         /* frames taken by faults, drain or evictions in progress: in no
                            * list and no page table entry yet; count against the limit */
    uint32_t io_inflight;  /* transfers running with the lock dropped: the file stays */
    uint32_t sleepers;     /* threads in wait_io not yet woken */
    uint64_t wake_epoch;   /* wake_io calls that woke someone */
    uint64_t lock_gen;     /* lock acquisitions (atomic: read without the lock) */
    uint64_t contenders;   /* threads that want the lock now (atomic) */
    uint8_t *io_mark;      /* reserved, per page: transfers running (atomic, outside the lock) */
    uint64_t io_overlaps;  /* transfers that began on a page with one running (atomic) */
    uint64_t alloc_end;    /* bytes of the file allocated ahead of its page-outs (fallocate) */
    int alloc_off;         /* the filesystem refused to allocate ahead: writes grow the file */
};

/* A paging backend: how page-outs and page-ins move a frame to and from its file slot.
 * One file per backend (backend_*.c), each defining one of these by field name. */
struct backend_ops {
    const char *name;
    int open_flags;               /* added to O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC */
    int (*opened)(vmm_mem *m);    /* after the file is made: set up (0 or -errno) */
    void (*closing)(vmm_mem *m);  /* before the file is closed and deleted: tear down */
    int (*write)(vmm_mem *m, uint32_t slot, const uint8_t *src); /* one page out */
    int (*read)(vmm_mem *m, uint32_t slot, uint8_t *dst);        /* one page in */
};

/* The backends, one file each. */
extern const backend_ops vmm_backend_direct VMM_HIDDEN;
extern const backend_ops vmm_backend_mmap VMM_HIDDEN;

static inline uint8_t *frame_addr(const vmm_pool *pool, uint32_t f)
{
    return pool->base + ((size_t)f << pool->page_shift);
}

/* ------------------------------------------------------------ frame list */

static inline void list_unlink(vmm_mem *m, uint32_t f)
{
    frame_meta *meta = m->pool->meta;
    uint32_t p = meta[f].prev, n = meta[f].next;
    if (p != NONE)
        meta[p].next = n;
    else
        m->head = n;
    if (n != NONE)
        meta[n].prev = p;
    else
        m->tail = p;
}

static inline void list_push_head(vmm_mem *m, uint32_t f)
{
    frame_meta *meta = m->pool->meta;
    meta[f].prev = NONE;
    meta[f].next = m->head;
    if (m->head != NONE)
        meta[m->head].prev = f;
    else
        m->tail = f;
    m->head = f;
}

/* ------------------------------------------------- paging file, for backends */

/* One whole page between a buffer and the file (pread/pwrite), retried on EINTR and
 * short transfers. A transfer of nothing means the disk is full (write) or the file
 * is shorter than a slot we wrote, i.e. it was tampered with (read). */
static inline int transfer_fd(vmm_mem *m, int fd, uint8_t *buf, off_t off, int write)
{
    size_t ps = m->pool->page_size, done = 0;
    while (done < ps) {
        ssize_t n = write ? pwrite(fd, buf + done, ps - done, off + (off_t)done)
                          : pread(fd, buf + done, ps - done, off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return write ? -ENOSPC : -EIO;
        done += (size_t)n;
    }
    return VMM_OK;
}

static inline int transfer(vmm_mem *m, uint8_t *buf, off_t off, int write)
{
    return transfer_fd(m, m->fd, buf, off, write);
}

static inline off_t slot_offset(const vmm_mem *m, uint32_t slot)
{
    return (off_t)slot << m->pool->page_shift;
}


#endif /* VMMEM_CORE_H */
