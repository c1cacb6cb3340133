/*
 * vmmem.c - the paging core: the frame pool, the fault path and the guest API. See vmmem.h
 * for the contract, core.h for the state.
 *
 * Layout of the state:
 *  - the pool owns the frames and, per frame, list links, the page held and
 *    flags, in three arrays (the hit path touches only the links); a frame's
 *    entries are written only by the vmm_mem that holds the frame (under that
 *    mem's lock), the free-frame stack only under the pool's lock;
 *  - a vmm_mem owns a page table as two arrays (frame + 1, file slot + 1: the
 *    hit path reads only the first), a doubly linked list of its frames (most
 *    recent at head) threaded through the pool's links, and the paging file;
 *  - the page table, the free-slot stack and a hierarchical bitmap of the pages
 *    that hold a file slot are address space reserved with MAP_NORESERVE: host
 *    memory is committed only where pages were touched, so creation is O(1)
 *    and a 12 TiB guest costs nothing until it is used.
 * The paging backends (direct, mmap) are one file each behind backend_ops (backend_*.c);
 * the eviction policies (LRU, CLOCK) are inline hooks (policy_*.h) behind policy.h.
 */
#include "core.h"
#include "policy.h"

#include <endian.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

/* The backends by VMM_BACKEND_* number. */
static const backend_ops *const BACKENDS[] = {
    [VMM_BACKEND_DIRECT] = &vmm_backend_direct,
    [VMM_BACKEND_MMAP] = &vmm_backend_mmap,
};

_Static_assert(sizeof(((vmm_stats *)0)->page_in_hist) == VMM_HIST_BUCKETS * sizeof(uint64_t),
               "vmmem.h: the histogram arrays' literal size must equal VMM_HIST_BUCKETS");
_Static_assert(sizeof(((vmm_stats *)0)->page_out_hist) == VMM_HIST_BUCKETS * sizeof(uint64_t),
               "vmmem.h: the histogram arrays' literal size must equal VMM_HIST_BUCKETS");
_Static_assert(sizeof(((vmm_stats *)0)->fault_hist) == VMM_HIST_BUCKETS * sizeof(uint64_t),
               "vmmem.h: the histogram arrays' literal size must equal VMM_HIST_BUCKETS");
/* vmm_counters is the prefix of vmm_stats, field for field. */
#define SAME_FIELD(f)                                                                          \
    _Static_assert(offsetof(vmm_counters, f) == offsetof(vmm_stats, f), "vmm_counters." #f)
SAME_FIELD(accesses);
SAME_FIELD(hits);
SAME_FIELD(zero_fills);
SAME_FIELD(page_ins);
SAME_FIELD(page_outs);
SAME_FIELD(clean_drops);
SAME_FIELD(bytes_read);
SAME_FIELD(bytes_written);
SAME_FIELD(releases);
SAME_FIELD(resident);
SAME_FIELD(frame_limit);
SAME_FIELD(file_pages);
SAME_FIELD(file_pages_peak);
SAME_FIELD(file_size);
SAME_FIELD(file_created);
SAME_FIELD(file_deleted);
SAME_FIELD(page_in_ns);
SAME_FIELD(page_out_ns);
SAME_FIELD(disk_faults);
SAME_FIELD(fault_ns);
SAME_FIELD(paged_out);
SAME_FIELD(file_exists);
SAME_FIELD(shared_faults);
SAME_FIELD(io_overlaps);
_Static_assert(sizeof(vmm_counters) == offsetof(vmm_stats, page_in_hist),
               "vmm_counters holds every scalar of vmm_stats");

/* ---------------------------------------------------------------- helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t hist_bucket(uint64_t ns)
{
    if (ns < VMM_HIST_SUB)
        return (uint32_t)ns;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(ns); /* >= 3 */
    uint32_t b = (e - 2u) * VMM_HIST_SUB + (uint32_t)((ns >> (e - 3u)) & (VMM_HIST_SUB - 1));
    return b < VMM_HIST_BUCKETS ? b : VMM_HIST_BUCKETS - 1;
}

uint64_t vmm_hist_lower_ns(uint32_t b)
{
    if (b > VMM_HIST_BUCKETS)
        b = VMM_HIST_BUCKETS;
    if (b < VMM_HIST_SUB)
        return b;
    uint32_t e = b / VMM_HIST_SUB + 2u, sub = b % VMM_HIST_SUB;
    return (uint64_t)(VMM_HIST_SUB + sub) << (e - 3u);
}

/* Address space for metadata that grows with use: zero-filled, committed page by
 * page as it is touched, never counted against the host's commit limit. */
static void *reserve(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void unreserve(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

static int bm_init(bitmap *b, uint64_t nbits)
{
    memset(b, 0, sizeof *b);
    uint64_t n = nbits, total = 0;
    do {
        n = (n + 63) / 64;
        b->words[b->levels++] = n;
        total += n;
    } while (n > 1 && b->levels < BM_LEVELS_MAX);
    b->bytes = (size_t)total * sizeof(uint64_t);
    b->mem = reserve(b->bytes);
    if (!b->mem)
        return VMM_ENOMEM;
    uint64_t *p = b->mem;
    for (int k = 0; k < b->levels; k++) {
        b->lvl[k] = p;
        p += b->words[k];
    }
    return VMM_OK;
}

static void bm_free(bitmap *b) { unreserve(b->mem, b->bytes); }

static inline void bm_set(bitmap *b, uint64_t i)
{
    for (int k = 0; k < b->levels; k++) {
        uint64_t *w = &b->lvl[k][i >> 6], was = *w;
        *w = was | (1ull << (i & 63));
        if (was)
            return;
        i >>= 6;
    }
}

static inline void bm_clear(bitmap *b, uint64_t i)
{
    for (int k = 0; k < b->levels; k++) {
        uint64_t *w = &b->lvl[k][i >> 6];
        *w &= ~(1ull << (i & 63));
        if (*w)
            return;
        i >>= 6;
    }
}

/* The first set bit at or after i, or BM_NONE. */
static uint64_t bm_next(const bitmap *b, uint64_t i)
{
    int k = 0;
    for (;;) { /* up: find a level whose word (from i on) has a bit */
        if (k == b->levels || (i >> 6) >= b->words[k])
            return BM_NONE;
        uint64_t bits = b->lvl[k][i >> 6] & (~0ull << (i & 63));
        if (bits) {
            i = (i & ~63ull) | (uint64_t)__builtin_ctzll(bits);
            break;
        }
        i = (i >> 6) + 1; /* the next word of this level: its bit in the level above */
        k++;
    }
    while (k-- > 0) /* down: the lowest set bit of each non-zero word */
        i = (i << 6) | (uint64_t)__builtin_ctzll(b->lvl[k][i]);
    return i;
}

/* ------------------------------------------------------------------ pool */

int vmm_pool_create(uint64_t nframes, uint32_t page_size, vmm_pool **out)
{
    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (nframes == 0 || nframes >= NONE || page_size < 4096 || (page_size & (page_size - 1)))
        return VMM_EINVAL;
    if (nframes > SIZE_MAX / page_size)
        return VMM_EINVAL;
    vmm_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return VMM_ENOMEM;
    pool->nframes = nframes;
    pool->page_size = page_size;
    pool->page_shift = (uint32_t)__builtin_ctz(page_size);
    pool->bytes = (size_t)nframes * page_size;
    pool->meta = calloc(nframes, sizeof *pool->meta);
    pool->page_of = calloc(nframes, sizeof *pool->page_of);
    pool->flags = calloc(nframes, sizeof *pool->flags);
    pool->free_stack = malloc(nframes * sizeof *pool->free_stack);
    /* MAP_POPULATE commits every frame now: the pool is real RAM, not a promise. */
    void *base = mmap(NULL, pool->bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (!pool->meta || !pool->page_of || !pool->flags || !pool->free_stack || base == MAP_FAILED) {
        if (base != MAP_FAILED)
            munmap(base, pool->bytes);
        free(pool->meta);
        free(pool->page_of);
        free(pool->flags);
        free(pool->free_stack);
        free(pool);
        return VMM_ENOMEM;
    }
    pool->base = base;
    pthread_mutex_init(&pool->lock, NULL);
    /* Hand out low frames first: stack top is frame 0. */
    for (uint64_t i = 0; i < nframes; i++)
        pool->free_stack[i] = (uint32_t)(nframes - 1 - i);
    pool->nfree = nframes;
    *out = pool;
    return VMM_OK;
}

void vmm_pool_destroy(vmm_pool *pool)
{
    if (!pool)
        return;
    munmap(pool->base, pool->bytes);
    pthread_mutex_destroy(&pool->lock);
    free(pool->meta);
    free(pool->page_of);
    free(pool->flags);
    free(pool->free_stack);
    free(pool);
}

uint64_t vmm_pool_frames(const vmm_pool *pool) { return pool ? pool->nframes : 0; }
uint32_t vmm_pool_page_size(const vmm_pool *pool) { return pool ? pool->page_size : 0; }

uint64_t vmm_pool_free_frames(vmm_pool *pool)
{
    if (!pool)
        return 0;
    pthread_mutex_lock(&pool->lock);
    uint64_t n = pool->nfree;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

static uint32_t pool_alloc(vmm_pool *pool)
{
    uint32_t f = NONE;
    pthread_mutex_lock(&pool->lock);
    if (pool->nfree)
        f = pool->free_stack[--pool->nfree];
    pthread_mutex_unlock(&pool->lock);
    return f;
}

static void pool_free(vmm_pool *pool, uint32_t f)
{
    pthread_mutex_lock(&pool->lock);
    pool->free_stack[pool->nfree++] = f;
    pthread_mutex_unlock(&pool->lock);
}

/* ------------------------------------------------------------------ locking */

/* The guest's lock, counting the threads that wait for it: a replay's run of hits gives the
 * lock up only when someone wants it (let_others_in). */
static void mem_lock(vmm_mem *m)
{
    if (pthread_mutex_trylock(&m->lock) != 0) {
        __atomic_fetch_add(&m->contenders, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(&m->lock);
        __atomic_fetch_sub(&m->contenders, 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&m->lock_gen, m->lock_gen + 1, __ATOMIC_RELAXED);
}

static void mem_unlock(vmm_mem *m) { pthread_mutex_unlock(&m->lock); }

/* Sleeps until a transfer ends or a held frame is installed or freed (lock dropped). A thread
 * woken here wants the lock back, so it counts as a contender from its wake-up (wake_io
 * counts it) until it has the lock: a replay then lets it in after its current run. */
static void wait_io(vmm_mem *m)
{
    uint64_t epoch = m->wake_epoch;
    m->sleepers++;
    pthread_cond_wait(&m->io_done, &m->lock);
    if (m->wake_epoch != epoch)
        __atomic_fetch_sub(&m->contenders, 1, __ATOMIC_RELAXED);
    else
        m->sleepers--; /* a spurious wake-up: wake_io did not count it */
    __atomic_store_n(&m->lock_gen, m->lock_gen + 1, __ATOMIC_RELAXED);
}

static void wake_io(vmm_mem *m)
{
    if (!m->sleepers)
        return;
    m->wake_epoch++;
    __atomic_fetch_add(&m->contenders, m->sleepers, __ATOMIC_RELAXED);
    m->sleepers = 0;
    pthread_cond_broadcast(&m->io_done);
}

/* Between two runs of a replay: if anyone waits for the lock, drop it until one of them has
 * had it (or none wants it any more), then take it back. Costs one load when nobody waits. */
static void let_others_in(vmm_mem *m)
{
    if (LIKELY(!__atomic_load_n(&m->contenders, __ATOMIC_RELAXED)))
        return;
    uint64_t gen = m->lock_gen;
    mem_unlock(m);
    while (__atomic_load_n(&m->contenders, __ATOMIC_RELAXED) &&
           __atomic_load_n(&m->lock_gen, __ATOMIC_RELAXED) == gen)
        sched_yield();
    mem_lock(m);
}

/* ---------------------------------------------------------- paging file */

static void file_delete(vmm_mem *m)
{
    if (m->fd < 0)
        return;
    m->ops->closing(m);
    /* Delete the path only while it still names the file we made: if anyone replaced it
     * (a rename, a symlink put in its place) theirs is left alone. */
    struct stat ours, now;
    if (fstat(m->fd, &ours) == 0 && lstat(m->path, &now) == 0 && ours.st_dev == now.st_dev &&
        ours.st_ino == now.st_ino)
        unlink(m->path);
    close(m->fd);
    m->fd = -1;
    m->slot_hwm = 0;
    m->nfree_slots = 0;
    m->st.file_size = 0;
    m->alloc_end = 0;
    m->alloc_off = 0;
}

static int file_create(vmm_mem *m)
{
    int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | m->ops->open_flags;
    int fd = open(m->path, flags, 0600);
    if (fd < 0) {
        /* open(O_DIRECT) on a filesystem without it fails with EINVAL, and
         * may have created the file first: O_EXCL says it is ours to remove. */
        if (errno == EINVAL && (m->ops->open_flags & O_DIRECT)) {
            unlink(m->path);
            return VMM_ENODIRECT;
        }
        return -errno;
    }
    m->fd = fd;
    int rc = m->ops->opened(m);
    if (rc) {
        close(fd);
        unlink(m->path);
        m->fd = -1;
        return rc;
    }
    m->st.file_created++;
    return VMM_OK;
}

/* Page p gives its file slot back (the copy is forgotten). */
static void slot_drop(vmm_mem *m, uint32_t p)
{
    m->free_slots[m->nfree_slots++] = m->slot1[p] - 1;
    m->slot1[p] = 0;
    bm_clear(&m->has_slot, p);
    m->st.file_pages--;
}

/* An empty file goes, but never under a transfer in flight: that one decides when it ends
 * (a page-out that succeeds leaves the file non-empty; one that fails calls this). */
static void file_delete_if_empty(vmm_mem *m)
{
    if (m->fd >= 0 && m->st.file_pages == 0 && m->io_inflight == 0) {
        file_delete(m);
        m->st.file_deleted++;
    }
}

/* After a page-out to this slot: the file now reaches at least its end. */
static void note_written(vmm_mem *m, uint32_t slot)
{
    uint64_t end = (uint64_t)slot_offset(m, slot) + m->pool->page_size;
    if (end > m->st.file_size)
        m->st.file_size = end;
}

/* Allocates the file ahead of a page-out to `slot`, ALLOC_AHEAD bytes at a time (under the
 * lock; one call per 512 page-outs). An O_DIRECT write that extends a file takes ext4's inode
 * lock exclusively, so a file growing by its writes takes its page-outs one at a time however
 * many threads fault; aligned writes into allocated blocks within the file's size take it
 * shared and run side by side (1 / 2 / 4 threads writing 4 KiB pages to a new file on this
 * project's virtio disk: 17,642 / 14,405 / 15,277 writes/s growing it, 17,539 / 25,977 /
 * 42,746 allocated ahead). Where the filesystem cannot (no fallocate, a full disk), the
 * writes grow the file as before; a full disk is then ENOSPC from the write. file_size counts
 * what is allocated: the file really occupies it. */
static void allocate_ahead(vmm_mem *m, uint32_t slot)
{
    uint64_t end = (uint64_t)slot_offset(m, slot) + m->pool->page_size;
    if (m->alloc_off || end <= m->alloc_end)
        return;
    uint64_t len = ALLOC_AHEAD;
    while (m->alloc_end + len < end)
        len += ALLOC_AHEAD;
    if (fallocate(m->fd, 0, (off_t)m->alloc_end, (off_t)len) != 0) {
        m->alloc_off = 1;
        return;
    }
    m->alloc_end += len;
    if (m->alloc_end > m->st.file_size)
        m->st.file_size = m->alloc_end;
}

/* ------------------------------------------------------------ fault path */

static inline void record_ns(uint64_t *hist, uint64_t *total, uint64_t dt)
{
    hist[hist_bucket(dt)]++;
    *total += dt;
}

/* Moves page `page` between frame f and file slot `slot` with the lock dropped: the caller
 * has marked the page busy and holds the frame, so nobody else touches either. *ns receives
 * the transfer's own time (without retaking the lock). Also checks, outside the lock and
 * independently of `busy`, that no other transfer of the same page runs meanwhile. */
static int transfer_unlocked(vmm_mem *m, uint32_t page, uint32_t slot, uint32_t f, int write,
                             uint64_t *ns)
{
    m->io_inflight++;
    mem_unlock(m);
    if (__atomic_fetch_add(&m->io_mark[page], 1, __ATOMIC_ACQ_REL))
        __atomic_fetch_add(&m->io_overlaps, 1, __ATOMIC_RELAXED);
    uint64_t t0 = now_ns();
    uint8_t *frame = frame_addr(m->pool, f);
    int rc = write ? m->ops->write(m, slot, frame) : m->ops->read(m, slot, frame);
    *ns = now_ns() - t0;
    __atomic_fetch_sub(&m->io_mark[page], 1, __ATOMIC_ACQ_REL);
    mem_lock(m);
    m->io_inflight--;
    return rc;
}

/* Page p now lives in held frame f, clean, most recently used. */
static void install(vmm_mem *m, uint32_t p, uint32_t f)
{
    m->pool->page_of[f] = p;
    m->pool->flags[f] = 0;
    list_push_head(m, f);
    m->frame1[p] = f + 1;
    m->resident++;
    m->held--;
}

/* A held frame goes back to the pool unused. */
static void drop_held(vmm_mem *m, uint32_t f)
{
    m->pool->flags[f] = 0;
    pool_free(m->pool, f);
    m->held--;
    wake_io(m);
}

/* Takes frame f (in the list) from its page q for the caller, who then holds it. A dirty
 * page is written back first, with the lock dropped and q busy; *io says whether it was.
 * On a failed write the frame goes back to q at the list's tail (where the policy took it
 * from), dirty, and nothing else changed. */
static int evict(vmm_mem *m, uint32_t f, int *io)
{
    uint8_t *flags = &m->pool->flags[f];
    uint32_t q = m->pool->page_of[f];
    list_unlink(m, f);
    m->frame1[q] = 0;
    m->resident--;
    m->held++;
    if (!(*flags & F_DIRTY)) {
        m->st.clean_drops++;
        *flags = 0;
        if (m->slot1[q])
            m->paged_out++;
        return VMM_OK;
    }
    int created = 0, new_slot = 0, rc = VMM_OK;
    uint32_t slot = 0;
    uint64_t ns = 0;
    if (m->fd < 0) {
        rc = file_create(m);
        created = rc == VMM_OK;
    }
    if (rc == VMM_OK) {
        if (m->slot1[q]) {
            slot = m->slot1[q] - 1;
        } else {
            slot = m->nfree_slots ? m->free_slots[--m->nfree_slots] : m->slot_hwm++;
            new_slot = 1;
        }
        allocate_ahead(m, slot);
        m->busy[q] = 1;
        *io = 1;
        rc = transfer_unlocked(m, q, slot, f, 1, &ns);
        m->busy[q] = 0;
    }
    if (rc) {
        if (new_slot) {
            if (slot + 1 == m->slot_hwm)
                m->slot_hwm--;
            else
                m->free_slots[m->nfree_slots++] = slot;
        }
        /* The frame goes back to its page, at the tail: with one thread, exactly as if
         * it had never left. */
        frame_meta *meta = m->pool->meta;
        meta[f].next = NONE;
        meta[f].prev = m->tail;
        if (m->tail != NONE)
            meta[m->tail].next = f;
        else
            m->head = f;
        m->tail = f;
        m->frame1[q] = f + 1;
        m->resident++;
        m->held--;
        if (m->fd >= 0 && m->st.file_pages == 0 && m->io_inflight == 0) {
            /* A file this page-out made (and nobody used since) was never really made. */
            file_delete(m);
            if (created)
                m->st.file_created--;
            else
                m->st.file_deleted++;
        }
        wake_io(m);
        return rc;
    }
    record_ns(m->st.page_out_hist, &m->st.page_out_ns, ns);
    if (new_slot) {
        m->slot1[q] = slot + 1;
        bm_set(&m->has_slot, q);
        if (++m->st.file_pages > m->st.file_pages_peak)
            m->st.file_pages_peak = m->st.file_pages;
    }
    note_written(m, slot);
    m->st.page_outs++;
    m->st.bytes_written += m->pool->page_size;
    *flags = 0;
    m->paged_out++;
    wake_io(m);
    return VMM_OK;
}

/* Reads paged-out page p (marked busy by the caller) from its slot into held frame f, with
 * the lock dropped, and installs it there: the one page-in of the fault path and of drain.
 * On failure the frame stays held by the caller and nothing changed. */
static int page_in(vmm_mem *m, uint32_t p, uint32_t f)
{
    uint64_t ns;
    int rc = transfer_unlocked(m, p, m->slot1[p] - 1, f, 0, &ns);
    if (rc)
        return rc;
    record_ns(m->st.page_in_hist, &m->st.page_in_ns, ns);
    m->st.page_ins++;
    m->st.bytes_read += m->pool->page_size;
    m->paged_out--;
    install(m, p, f);
    return VMM_OK;
}

/* Brings page p into a frame: a free one within the limit, else a victim. Called and
 * returns with the lock held; drops it around transfers and waits. If another thread
 * brought p in meanwhile, the access is a hit after all. A fault that waited on the disk
 * (its own transfers, another's transfer of p, a frame held by a transfer) adds its time
 * to *wait_ns and to the fault counters. */
static __attribute__((noinline)) int fault(vmm_mem *m, uint32_t p, uint32_t *out,
                                           uint64_t *wait_ns)
{
    uint64_t t0 = now_ns();
    int waited = 0, io = 0, shared = 0, rc = VMM_OK;
    uint32_t f;
    for (;;) {
        if (m->frame1[p]) { /* brought in by the transfer this access waited for */
            f = m->frame1[p] - 1;
            policy_touch(m->policy, m->pool->meta, m->pool->flags, f, &m->head, &m->tail);
            m->st.hits++;
            goto done;
        }
        if (m->busy[p]) {
            shared = 1;
            wait_io(m);
            waited = 1;
            continue;
        }
        f = NONE;
        if (m->resident + m->held < m->frame_limit)
            f = pool_alloc(m->pool);
        if (f != NONE) {
            m->held++;
            break;
        }
        if (m->resident)
            break;
        if (!m->held) {
            rc = VMM_ENOFRAME;
            goto out;
        }
        wait_io(m); /* every frame is held by a transfer: one will be installed */
        waited = 1;
    }
    m->busy[p] = 1;
    if (f == NONE) {
        f = policy_victim(m);
        rc = evict(m, f, &io);
        if (rc) {
            m->busy[p] = 0;
            goto out;
        }
    }
    if (m->slot1[p]) {
        io = 1;
        rc = page_in(m, p, f);
        if (rc) {
            /* The victim (if any) is already out; keep the frame for later. */
            drop_held(m, f);
            m->busy[p] = 0;
            goto out;
        }
    } else {
        memset(frame_addr(m->pool, f), 0, m->pool->page_size);
        m->st.zero_fills++;
        install(m, p, f);
    }
    m->busy[p] = 0;
    wake_io(m);
done:
    *out = f;
out:
    m->st.shared_faults += (uint64_t)shared;
    if (rc == VMM_OK && (io || waited)) {
        uint64_t dt = now_ns() - t0;
        record_ns(m->st.fault_hist, &m->st.fault_ns, dt);
        m->st.disk_faults++;
        *wait_ns += dt;
    }
    if (rc)
        wake_io(m);
    return rc;
}

static inline void bump_le64(uint8_t *b)
{
    uint64_t v;
    memcpy(&v, b, sizeof v);
    v = htole64(le64toh(v) + 1);
    memcpy(b, &v, sizeof v);
}

/* One guest access (read/write path); *frame receives the frame now holding the page. */
static inline int access_page(vmm_mem *m, uint32_t p, int write, uint32_t *frame)
{
    uint8_t *flags = m->pool->flags;
    uint32_t f1 = m->frame1[p];
    uint32_t f;
    if (LIKELY(f1)) {
        f = f1 - 1;
        m->st.hits++;
        policy_touch(m->policy, m->pool->meta, flags, f, &m->head, &m->tail);
    } else {
        uint64_t wait_ns = 0;
        int rc = fault(m, p, &f, &wait_ns);
        if (UNLIKELY(rc))
            return rc;
    }
    m->st.accesses++;
    if (write)
        flags[f] |= F_DIRTY;
    *frame = f;
    return VMM_OK;
}

/* The replay loop, one copy per policy and per presence of write flags (both are
 * constants after inlining). The list ends live in locals: stores to the frame links
 * could alias them in memory and would force a reload of each on every access. The
 * counters are not touched per access: accesses are the entries done, hits those minus
 * the faults. Everything goes back to the vmm_mem around a fault, which works on the
 * vmm_mem's own copies, and between runs of RUN_LEN accesses, where threads waiting for the
 * lock get it (the inner loop's bound is the run's end: no per-access cost). */
static inline __attribute__((always_inline)) int
replay_loop(vmm_mem *m, const uint32_t *pages, const uint8_t *writes, uint64_t n, uint64_t *done,
            uint64_t *wait_ns, const int policy, const int has_writes)
{
    frame_meta *const meta = m->pool->meta;
    uint8_t *const flags = m->pool->flags;
    const uint32_t *const frame1 = m->frame1;
    const uint64_t npages = m->npages;
    uint32_t head = m->head, tail = m->tail;
    uint64_t i = 0, flushed = 0; /* entries up to `flushed` are in m->st already */
    int rc = VMM_OK;
    while (i < n) {
        const uint64_t end = n - i > RUN_LEN ? i + RUN_LEN : n;
        for (; i < end; i++) {
            uint32_t p = pages[i], f;
            if (UNLIKELY(p >= npages)) {
                rc = VMM_ERANGE;
                goto out;
            }
            uint32_t f1 = frame1[p];
            if (LIKELY(f1)) {
                f = f1 - 1;
                policy_touch(policy, meta, flags, f, &head, &tail);
            } else {
                m->head = head;
                m->tail = tail;
                m->st.hits += i - flushed; /* every entry since the last fault was a hit */
                m->st.accesses += i - flushed;
                flushed = i + 1;
                uint32_t nf; /* its address goes to fault(), f's does not: f stays in a register */
                rc = fault(m, p, &nf, wait_ns);
                head = m->head;
                tail = m->tail;
                if (UNLIKELY(rc)) {
                    flushed = i;
                    goto out;
                }
                f = nf;
                m->st.accesses++;
            }
            if (has_writes && writes[i]) {
                flags[f] |= F_DIRTY;
                bump_le64(frame_addr(m->pool, f));
            }
        }
        if (i < n && UNLIKELY(__atomic_load_n(&m->contenders, __ATOMIC_RELAXED))) {
            m->head = head;
            m->tail = tail;
            m->st.hits += i - flushed;
            m->st.accesses += i - flushed;
            flushed = i;
            let_others_in(m);
            head = m->head;
            tail = m->tail;
        }
    }
out:
    m->head = head;
    m->tail = tail;
    m->st.hits += i - flushed;
    m->st.accesses += i - flushed;
    *done = i;
    return rc;
}

/* ------------------------------------------------------------ guest API */

static void mem_free(vmm_mem *m)
{
    unreserve(m->frame1, (size_t)m->npages * sizeof *m->frame1);
    unreserve(m->slot1, (size_t)m->npages * sizeof *m->slot1);
    unreserve(m->free_slots, (size_t)m->npages * sizeof *m->free_slots);
    unreserve(m->busy, (size_t)m->npages);
    unreserve(m->io_mark, (size_t)m->npages);
    bm_free(&m->has_slot);
    free(m->path);
    free(m);
}

int vmm_mem_create(vmm_pool *pool, uint64_t npages, const char *path, int backend, int policy,
                   vmm_mem **out)
{
    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (!pool || !path || !*path || npages == 0 || npages > MAX_GUEST_PAGES)
        return VMM_EINVAL;
    if (npages > (SIZE_MAX >> pool->page_shift))
        return VMM_EINVAL;
    if (backend < 0 || (size_t)backend >= sizeof BACKENDS / sizeof *BACKENDS ||
        !BACKENDS[backend])
        return VMM_EINVAL;
    if (!policy_known(policy))
        return VMM_EINVAL;
    vmm_mem *m = calloc(1, sizeof *m);
    if (!m)
        return VMM_ENOMEM;
    m->npages = npages;
    /* Reserved, not committed: a page of the table costs RAM once a guest page it
     * describes is touched, so creation is O(1) whatever the guest's size. */
    m->frame1 = reserve((size_t)npages * sizeof *m->frame1);
    m->slot1 = reserve((size_t)npages * sizeof *m->slot1);
    m->free_slots = reserve((size_t)npages * sizeof *m->free_slots);
    m->busy = reserve((size_t)npages);
    m->io_mark = reserve((size_t)npages);
    int bm = bm_init(&m->has_slot, npages);
    m->path = strdup(path);
    if (!m->frame1 || !m->slot1 || !m->free_slots || !m->busy || !m->io_mark || bm != VMM_OK ||
        !m->path) {
        mem_free(m);
        return VMM_ENOMEM;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->io_done, NULL);
    m->pool = pool;
    m->ops = BACKENDS[backend];
    m->policy = policy;
    m->fd = -1;
    m->head = m->tail = NONE;
    *out = m;
    return VMM_OK;
}

void vmm_mem_destroy(vmm_mem *m)
{
    if (!m)
        return;
    mem_lock(m);
    while (m->io_inflight || m->held) /* callers do not race destroy; this is a safety net */
        wait_io(m);
    frame_meta *meta = m->pool->meta;
    for (uint32_t f = m->head, next; f != NONE; f = next) {
        next = meta[f].next;
        m->pool->flags[f] = 0;
        pool_free(m->pool, f);
    }
    file_delete(m);
    mem_unlock(m);
    pthread_cond_destroy(&m->io_done);
    pthread_mutex_destroy(&m->lock);
    mem_free(m);
}

int vmm_mem_set_frame_limit(vmm_mem *m, uint64_t frames)
{
    if (!m)
        return VMM_EINVAL;
    if (frames > m->pool->nframes)
        return VMM_ELIMIT;
    mem_lock(m);
    int rc = VMM_OK;
    m->frame_limit = frames;
    /* Faults in flight hold frames they will install: they count, and when only they are
     * left over the limit, wait for them to land and evict those. */
    while (m->resident + m->held > m->frame_limit) {
        if (!m->resident) {
            wait_io(m);
            continue;
        }
        uint32_t f = policy_victim(m);
        int io = 0;
        rc = evict(m, f, &io);
        if (rc) {
            m->frame_limit = m->resident + m->held; /* nothing lost: keep what could not go */
            break;
        }
        drop_held(m, f);
    }
    mem_unlock(m);
    return rc;
}

static int copy_bytes(vmm_mem *m, uint64_t gpa, uint8_t *buf, const uint8_t *src, uint64_t n)
{
    if (!m || (n && !buf && !src))
        return VMM_EINVAL;
    uint64_t size = m->npages << m->pool->page_shift;
    if (gpa > size || n > size - gpa)
        return VMM_ERANGE;
    int rc = VMM_OK;
    mem_lock(m);
    uint64_t ps = m->pool->page_size;
    while (n) {
        uint64_t p = gpa >> m->pool->page_shift, off = gpa & (ps - 1);
        uint64_t chunk = ps - off < n ? ps - off : n;
        uint32_t f;
        rc = access_page(m, (uint32_t)p, src != NULL, &f);
        if (rc)
            break;
        if (src) {
            memcpy(frame_addr(m->pool, f) + off, src, chunk);
            src += chunk;
        } else {
            memcpy(buf, frame_addr(m->pool, f) + off, chunk);
            buf += chunk;
        }
        gpa += chunk;
        n -= chunk;
    }
    mem_unlock(m);
    return rc;
}

int vmm_mem_read(vmm_mem *m, uint64_t gpa, void *buf, uint64_t n)
{
    if (!buf && n)
        return VMM_EINVAL;
    return copy_bytes(m, gpa, buf, NULL, n);
}

int vmm_mem_write(vmm_mem *m, uint64_t gpa, const void *buf, uint64_t n)
{
    if (!buf && n)
        return VMM_EINVAL;
    static const uint8_t nothing;
    return copy_bytes(m, gpa, NULL, n ? buf : &nothing, n);
}

int vmm_mem_replay_timed(vmm_mem *m, const uint32_t *pages, const uint8_t *writes, uint64_t n,
                         uint64_t *done, uint64_t *wait_ns)
{
    uint64_t i = 0, waited = 0;
    if (done)
        *done = 0;
    if (wait_ns)
        *wait_ns = 0;
    if (!m || (n && !pages))
        return VMM_EINVAL;
    mem_lock(m);
    int rc;
#define REPLAY(policy)                                                                         \
    rc = writes ? replay_loop(m, pages, writes, n, &i, &waited, policy, 1)                    \
                : replay_loop(m, pages, NULL, n, &i, &waited, policy, 0)
    POLICY_DISPATCH(m->policy, REPLAY);
#undef REPLAY
    mem_unlock(m);
    if (done)
        *done = i;
    if (wait_ns)
        *wait_ns = waited;
    return rc;
}

int vmm_mem_replay(vmm_mem *m, const uint32_t *pages, const uint8_t *writes, uint64_t n,
                   uint64_t *done)
{
    return vmm_mem_replay_timed(m, pages, writes, n, done, NULL);
}

int vmm_mem_release(vmm_mem *m, uint64_t first, uint64_t count)
{
    if (!m)
        return VMM_EINVAL;
    if (first > m->npages || count > m->npages - first)
        return VMM_ERANGE;
    mem_lock(m);
    for (uint64_t p = first; p < first + count; p++) {
        while (m->busy[p]) /* its transfer ends first: then it has a frame or a copy */
            wait_io(m);
        if (!m->frame1[p] && !m->slot1[p])
            continue;
        if (m->frame1[p]) {
            uint32_t f = m->frame1[p] - 1;
            list_unlink(m, f);
            m->pool->flags[f] = 0;
            pool_free(m->pool, f);
            m->resident--;
            m->frame1[p] = 0;
        } else {
            m->paged_out--; /* it had a slot and no frame */
        }
        if (m->slot1[p])
            slot_drop(m, (uint32_t)p);
        m->st.releases++;
    }
    file_delete_if_empty(m);
    wake_io(m); /* frames came back: a fault waiting for one may go on */
    mem_unlock(m);
    return VMM_OK;
}

int vmm_mem_drain(vmm_mem *m, uint64_t max_pages, uint64_t *left)
{
    if (!m)
        return VMM_EINVAL;
    mem_lock(m);
    int rc = VMM_OK;
    if (m->resident + m->held + m->paged_out > m->frame_limit ||
        m->paged_out > vmm_pool_free_frames(m->pool)) {
        if (left)
            *left = m->st.file_pages;
        mem_unlock(m);
        return VMM_EFRAMES;
    }
    uint64_t done = 0, p = m->drain_cursor < m->npages ? m->drain_cursor : 0;
    int wrapped = 0;
    /* Only pages that hold a slot are visited: the bitmap's summary levels skip the
     * rest, so the cost follows the pages in the file, not the guest's size. */
    while (m->st.file_pages) {
        uint64_t q = bm_next(&m->has_slot, p);
        if (q == BM_NONE) {
            if (wrapped || p == 0)
                break; /* cannot happen while file_pages > 0 */
            wrapped = 1;
            p = 0;
            continue;
        }
        p = q;
        if (max_pages && done == max_pages)
            break; /* resume here next call: the caller lets others at the lock */
        if (m->busy[p]) { /* another thread's transfer: look again once it ends */
            wait_io(m);
            continue;
        }
        uint32_t f;
        if (m->frame1[p]) {
            f = m->frame1[p] - 1;
        } else {
            /* Other threads' faults take frames too: never past the limit. */
            f = m->resident + m->held < m->frame_limit ? pool_alloc(m->pool) : NONE;
            if (f == NONE) { /* others took the frames meanwhile */
                rc = VMM_EFRAMES;
                break;
            }
            m->held++;
            m->busy[p] = 1;
            rc = page_in(m, (uint32_t)p, f);
            m->busy[p] = 0;
            if (rc) {
                drop_held(m, f);
                break;
            }
            wake_io(m);
        }
        /* The file copy goes away, so the frame is now the only copy. */
        m->pool->flags[f] = F_DIRTY;
        slot_drop(m, (uint32_t)p);
        done++;
        p = p + 1 < m->npages ? p + 1 : 0;
    }
    m->drain_cursor = p;
    file_delete_if_empty(m);
    if (m->st.file_pages == 0)
        m->drain_cursor = 0;
    if (left)
        *left = m->st.file_pages;
    mem_unlock(m);
    return rc;
}

/* The scalars every snapshot reports beside m->st's. */
static void fill_scalars(vmm_mem *m, vmm_counters *out)
{
    out->resident = m->resident;
    out->frame_limit = m->frame_limit;
    out->paged_out = m->paged_out;
    out->file_exists = m->fd >= 0;
    out->io_overlaps = __atomic_load_n(&m->io_overlaps, __ATOMIC_RELAXED);
}

int vmm_mem_stats(vmm_mem *m, vmm_stats *out)
{
    if (!m || !out)
        return VMM_EINVAL;
    mem_lock(m);
    *out = m->st;
    fill_scalars(m, (vmm_counters *)out); /* its prefix, field for field (asserted above) */
    mem_unlock(m);
    return VMM_OK;
}

int vmm_mem_counters(vmm_mem *m, vmm_counters *out)
{
    if (!m || !out)
        return VMM_EINVAL;
    mem_lock(m);
    memcpy(out, &m->st, sizeof *out); /* the scalar prefix of vmm_stats */
    fill_scalars(m, out);
    mem_unlock(m);
    return VMM_OK;
}

int vmm_mem_reset_stats(vmm_mem *m)
{
    if (!m)
        return VMM_EINVAL;
    mem_lock(m);
    vmm_stats keep = m->st;
    memset(&m->st, 0, sizeof m->st);
    m->st.file_pages = keep.file_pages;
    m->st.file_pages_peak = keep.file_pages;
    m->st.file_size = keep.file_size;
    mem_unlock(m);
    return VMM_OK;
}

int vmm_mem_page_state(vmm_mem *m, uint64_t page, int *state)
{
    if (!m || !state)
        return VMM_EINVAL;
    if (page >= m->npages)
        return VMM_ERANGE;
    mem_lock(m);
    while (m->busy[page]) /* mid-transfer it is neither here nor there */
        wait_io(m);
    uint32_t f1 = m->frame1[page];
    if (f1)
        *state = (m->pool->flags[f1 - 1] & F_DIRTY) ? 2 : 1;
    else
        *state = m->slot1[page] ? 3 : 0;
    mem_unlock(m);
    return VMM_OK;
}

int vmm_mem_file_exists(vmm_mem *m)
{
    if (!m)
        return 0;
    mem_lock(m);
    int exists = m->fd >= 0;
    mem_unlock(m);
    return exists;
}

int vmm_mem_set_path(vmm_mem *m, const char *path)
{
    if (!m || !path || !*path)
        return VMM_EINVAL;
    char *copy = strdup(path);
    if (!copy)
        return VMM_ENOMEM;
    mem_lock(m);
    if (m->fd >= 0) {
        mem_unlock(m);
        free(copy);
        return VMM_EBUSY;
    }
    free(m->path);
    m->path = copy;
    mem_unlock(m);
    return VMM_OK;
}
