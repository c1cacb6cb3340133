/*
 * vmmem.c - the paging core. See vmmem.h for the contract.
 *
 * Layout of the state:
 *  - the pool owns the frames and one frame_meta per frame; a frame's meta is
 *    written only by the vmm_mem that holds the frame (under that mem's lock),
 *    the free-frame stack only under the pool's lock;
 *  - a vmm_mem owns a page table of 8-byte entries (frame + 1, file slot + 1),
 *    a doubly linked list of its frames (most recent at head) threaded through
 *    the pool's frame_meta, and the paging file.
 */
#define _GNU_SOURCE
#include "vmmem.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NONE UINT32_MAX
#define F_DIRTY 1u
#define F_REF 2u
#define MAX_GUEST_PAGES ((uint64_t)UINT32_MAX - 1)
/* The mmap backend reserves file space in chunks so a full disk shows up as
 * ENOSPC from fallocate, never as SIGBUS on a store into the mapping. */
#define MMAP_GROW_BYTES (64u << 20)

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

typedef struct frame_meta {
    uint32_t prev, next; /* list links inside the holding mem */
    uint32_t page;       /* guest page held */
    uint32_t flags;      /* F_DIRTY, F_REF */
} frame_meta;

struct vmm_pool {
    uint8_t *base;
    size_t bytes;
    uint64_t nframes;
    uint32_t page_size;
    uint32_t page_shift;
    frame_meta *meta;
    pthread_mutex_t lock;
    uint32_t *free_stack;
    uint64_t nfree;
};

typedef struct pte {
    uint32_t frame1; /* frame + 1; 0 = not resident */
    uint32_t slot1;  /* file slot + 1; 0 = no copy in the file */
} pte;

struct vmm_mem {
    pthread_mutex_t lock;
    vmm_pool *pool;
    uint64_t npages;
    pte *pt;
    char *path;
    int backend, policy;
    int fd;           /* -1 while the file does not exist */
    uint8_t *map;     /* mmap backend: the file mapped over npages pages */
    uint64_t reserved; /* mmap backend: bytes allocated in the file */
    uint32_t slot_hwm; /* slots ever handed out since the file was created */
    uint32_t *free_slots;
    uint64_t nfree_slots;
    uint32_t head, tail;
    uint64_t resident, frame_limit;
    uint64_t drain_cursor; /* where a partial drain resumes */
    vmm_stats st;
};

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

static inline uint8_t *frame_addr(const vmm_pool *pool, uint32_t f)
{
    return pool->base + ((size_t)f << pool->page_shift);
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
    pool->free_stack = malloc(nframes * sizeof *pool->free_stack);
    /* MAP_POPULATE commits every frame now: the pool is real RAM, not a promise. */
    void *base = mmap(NULL, pool->bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (!pool->meta || !pool->free_stack || base == MAP_FAILED) {
        if (base != MAP_FAILED)
            munmap(base, pool->bytes);
        free(pool->meta);
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

/* ---------------------------------------------------------- paging file */

static void file_delete(vmm_mem *m)
{
    if (m->fd < 0)
        return;
    if (m->map)
        munmap(m->map, (size_t)m->npages << m->pool->page_shift);
    close(m->fd);
    unlink(m->path);
    m->map = NULL;
    m->fd = -1;
    m->reserved = 0;
    m->slot_hwm = 0;
    m->nfree_slots = 0;
    m->st.file_size = 0;
}

static int file_create(vmm_mem *m)
{
    int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    if (m->backend == VMM_BACKEND_DIRECT)
        flags |= O_DIRECT;
    int fd = open(m->path, flags, 0600);
    if (fd < 0) {
        /* open(O_DIRECT) on a filesystem without it fails with EINVAL, and
         * may have created the file first: O_EXCL says it is ours to remove. */
        if (errno == EINVAL && m->backend == VMM_BACKEND_DIRECT) {
            unlink(m->path);
            return VMM_ENODIRECT;
        }
        return -errno;
    }
    if (m->backend == VMM_BACKEND_MMAP) {
        void *map = mmap(NULL, (size_t)m->npages << m->pool->page_shift,
                         PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            unlink(m->path);
            return -err;
        }
        /* No read-around: a fault must read just its page from the device, or the
         * neighbours it drags into the page cache make later page-ins a lie. */
        madvise(map, (size_t)m->npages << m->pool->page_shift, MADV_RANDOM);
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
        m->map = map;
    }
    m->fd = fd;
    m->st.file_created++;
    return VMM_OK;
}

/* mmap backend: make sure the bytes up to end are allocated on disk. */
static int file_reserve(vmm_mem *m, uint64_t end)
{
    if (end <= m->reserved)
        return VMM_OK;
    uint64_t limit = m->npages << m->pool->page_shift;
    uint64_t want = m->reserved + MMAP_GROW_BYTES;
    if (want < end)
        want = end;
    if (want > limit)
        want = limit;
    int err = posix_fallocate(m->fd, (off_t)m->reserved, (off_t)(want - m->reserved));
    if (err && want > end) { /* a nearly full disk may still take just this page */
        want = end;
        err = posix_fallocate(m->fd, (off_t)m->reserved, (off_t)(want - m->reserved));
    }
    if (err) {
        if (ftruncate(m->fd, (off_t)m->reserved) != 0) { /* the old size stays usable */ }
        return -err;
    }
    m->reserved = want;
    m->st.file_size = want;
    return VMM_OK;
}

/* mmap backend: drop a slot from this mapping and from the page cache, so the next
 * access to it must read the device. */
static void drop_cached(vmm_mem *m, off_t off)
{
    size_t ps = m->pool->page_size;
    madvise(m->map + off, ps, MADV_DONTNEED);
    posix_fadvise(m->fd, off, (off_t)ps, POSIX_FADV_DONTNEED);
}

/* direct backend: one whole page between a frame and the file, retried on EINTR and
 * short transfers. A transfer of nothing means the disk is full (write) or the file
 * is shorter than a slot we wrote, i.e. it was tampered with (read). */
static int direct_transfer(vmm_mem *m, uint8_t *buf, off_t off, int write)
{
    size_t ps = m->pool->page_size, done = 0;
    while (done < ps) {
        ssize_t n = write ? pwrite(m->fd, buf + done, ps - done, off + (off_t)done)
                          : pread(m->fd, buf + done, ps - done, off + (off_t)done);
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

static int file_write(vmm_mem *m, uint32_t slot, uint8_t *src)
{
    size_t ps = m->pool->page_size;
    off_t off = (off_t)slot * (off_t)ps;
    if (m->backend == VMM_BACKEND_MMAP) {
        int rc = file_reserve(m, (uint64_t)off + ps);
        if (rc)
            return rc;
        memcpy(m->map + off, src, ps);
        /* Write the page's data to the device and wait for it (msync would also
         * force a journal commit for the fallocated extent: metadata a paging file
         * deleted after use does not need). */
        if (sync_file_range(m->fd, off, (off_t)ps,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            return -errno;
        drop_cached(m, off);
        return VMM_OK;
    }
    int rc = direct_transfer(m, src, off, 1);
    if (rc)
        return rc;
    uint64_t end = (uint64_t)off + ps;
    if (end > m->st.file_size)
        m->st.file_size = end;
    return VMM_OK;
}

static int file_read(vmm_mem *m, uint32_t slot, uint8_t *dst)
{
    size_t ps = m->pool->page_size;
    off_t off = (off_t)slot * (off_t)ps;
    if (m->backend == VMM_BACKEND_MMAP) {
        memcpy(dst, m->map + off, ps); /* faults the page in from the device */
        drop_cached(m, off);
        return VMM_OK;
    }
    return direct_transfer(m, dst, off, 0);
}

static void slot_free(vmm_mem *m, uint32_t slot)
{
    m->free_slots[m->nfree_slots++] = slot;
    m->st.file_pages--;
}

static void file_delete_if_empty(vmm_mem *m)
{
    if (m->fd >= 0 && m->st.file_pages == 0) {
        file_delete(m);
        m->st.file_deleted++;
    }
}

/* ------------------------------------------------------------ fault path */

static inline void record(uint64_t *hist, uint64_t *total, uint64_t t0)
{
    uint64_t dt = now_ns() - t0;
    hist[hist_bucket(dt)]++;
    *total += dt;
}

/* Writes back frame f if needed and unhooks it from its page. The frame stays
 * with the caller. On a failed write nothing changes. */
static int evict(vmm_mem *m, uint32_t f)
{
    frame_meta *fm = &m->pool->meta[f];
    pte *e = &m->pt[fm->page];
    if (fm->flags & F_DIRTY) {
        int created = 0, new_slot = 0;
        uint32_t slot;
        if (m->fd < 0) {
            int rc = file_create(m);
            if (rc)
                return rc;
            created = 1;
        }
        if (e->slot1) {
            slot = e->slot1 - 1;
        } else {
            slot = m->nfree_slots ? m->free_slots[--m->nfree_slots] : m->slot_hwm++;
            new_slot = 1;
        }
        uint64_t t0 = now_ns();
        int rc = file_write(m, slot, frame_addr(m->pool, f));
        if (rc) {
            if (new_slot) {
                if (slot + 1 == m->slot_hwm)
                    m->slot_hwm--;
                else
                    m->free_slots[m->nfree_slots++] = slot;
            }
            if (created) {
                file_delete(m);
                m->st.file_created--;
            }
            return rc;
        }
        record(m->st.page_out_hist, &m->st.page_out_ns, t0);
        if (new_slot) {
            e->slot1 = slot + 1;
            if (++m->st.file_pages > m->st.file_pages_peak)
                m->st.file_pages_peak = m->st.file_pages;
        }
        m->st.page_outs++;
        m->st.bytes_written += m->pool->page_size;
    } else {
        m->st.clean_drops++;
    }
    list_unlink(m, f);
    e->frame1 = 0;
    fm->flags = 0;
    m->resident--;
    return VMM_OK;
}

static uint32_t pick_victim(vmm_mem *m)
{
    if (m->policy == VMM_POLICY_LRU)
        return m->tail;
    frame_meta *meta = m->pool->meta;
    for (;;) {
        uint32_t f = m->tail;
        if (!(meta[f].flags & F_REF))
            return f;
        meta[f].flags &= ~F_REF; /* second chance */
        list_unlink(m, f);
        list_push_head(m, f);
    }
}

/* Brings page p into a frame: a free one within the limit, else a victim. */
static int fault(vmm_mem *m, uint32_t p, uint32_t *out)
{
    uint64_t t0 = now_ns(), outs_before = m->st.page_outs;
    uint32_t f = NONE;
    if (m->resident < m->frame_limit)
        f = pool_alloc(m->pool);
    if (f == NONE) {
        if (m->resident == 0)
            return VMM_ENOFRAME;
        f = pick_victim(m);
        int rc = evict(m, f);
        if (rc)
            return rc;
    }
    pte *e = &m->pt[p];
    uint8_t *dst = frame_addr(m->pool, f);
    int paged_in = 0;
    if (e->slot1) {
        uint64_t t_in = now_ns();
        int rc = file_read(m, e->slot1 - 1, dst);
        if (rc) {
            /* The victim (if any) is already out; keep the frame for later. */
            pool_free(m->pool, f);
            return rc;
        }
        record(m->st.page_in_hist, &m->st.page_in_ns, t_in);
        paged_in = 1;
        m->st.page_ins++;
        m->st.bytes_read += m->pool->page_size;
    } else {
        memset(dst, 0, m->pool->page_size);
        m->st.zero_fills++;
    }
    frame_meta *fm = &m->pool->meta[f];
    fm->page = p;
    fm->flags = 0;
    list_push_head(m, f);
    e->frame1 = f + 1;
    m->resident++;
    if (paged_in || m->st.page_outs != outs_before) {
        record(m->st.fault_hist, &m->st.fault_ns, t0);
        m->st.disk_faults++;
    }
    *out = f;
    return VMM_OK;
}

static inline void bump_le64(uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    v++;
    for (int i = 0; i < 8; i++, v >>= 8)
        b[i] = (uint8_t)v;
}

/* One guest access; *frame receives the frame now holding the page. */
static inline int access_page(vmm_mem *m, uint32_t p, int write, uint32_t *frame)
{
    frame_meta *meta = m->pool->meta;
    uint32_t f1 = m->pt[p].frame1;
    uint32_t f;
    if (LIKELY(f1)) {
        f = f1 - 1;
        m->st.hits++;
        if (m->policy == VMM_POLICY_LRU) {
            if (f != m->head) {
                list_unlink(m, f);
                list_push_head(m, f);
            }
        } else {
            meta[f].flags |= F_REF;
        }
    } else {
        int rc = fault(m, p, &f);
        if (UNLIKELY(rc))
            return rc;
    }
    m->st.accesses++;
    if (write)
        meta[f].flags |= F_DIRTY;
    *frame = f;
    return VMM_OK;
}

/* ------------------------------------------------------------ guest API */

int vmm_mem_create(vmm_pool *pool, uint64_t npages, const char *path, int backend, int policy,
                   vmm_mem **out)
{
    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (!pool || !path || !*path || npages == 0 || npages > MAX_GUEST_PAGES)
        return VMM_EINVAL;
    if (backend != VMM_BACKEND_DIRECT && backend != VMM_BACKEND_MMAP)
        return VMM_EINVAL;
    if (policy != VMM_POLICY_LRU && policy != VMM_POLICY_CLOCK)
        return VMM_EINVAL;
    vmm_mem *m = calloc(1, sizeof *m);
    if (!m)
        return VMM_ENOMEM;
    /* calloc of large sizes maps zero pages lazily: a 64 GiB guest costs
     * nothing until its pages are touched. */
    m->pt = calloc(npages, sizeof *m->pt);
    m->free_slots = malloc(npages * sizeof *m->free_slots);
    m->path = strdup(path);
    if (!m->pt || !m->free_slots || !m->path) {
        free(m->pt);
        free(m->free_slots);
        free(m->path);
        free(m);
        return VMM_ENOMEM;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->pool = pool;
    m->npages = npages;
    m->backend = backend;
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
    pthread_mutex_lock(&m->lock);
    frame_meta *meta = m->pool->meta;
    for (uint32_t f = m->head, next; f != NONE; f = next) {
        next = meta[f].next;
        meta[f].flags = 0;
        pool_free(m->pool, f);
    }
    file_delete(m);
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_destroy(&m->lock);
    free(m->pt);
    free(m->free_slots);
    free(m->path);
    free(m);
}

int vmm_mem_set_frame_limit(vmm_mem *m, uint64_t frames)
{
    if (!m)
        return VMM_EINVAL;
    if (frames > m->pool->nframes)
        return VMM_ELIMIT;
    pthread_mutex_lock(&m->lock);
    int rc = VMM_OK;
    m->frame_limit = frames;
    while (m->resident > frames) {
        uint32_t f = pick_victim(m);
        rc = evict(m, f);
        if (rc) {
            m->frame_limit = m->resident; /* nothing lost: keep what could not go out */
            break;
        }
        pool_free(m->pool, f);
    }
    pthread_mutex_unlock(&m->lock);
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
    pthread_mutex_lock(&m->lock);
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
    pthread_mutex_unlock(&m->lock);
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

int vmm_mem_replay(vmm_mem *m, const uint32_t *pages, const uint8_t *writes, uint64_t n,
                   uint64_t *done)
{
    uint64_t i = 0;
    if (done)
        *done = 0;
    if (!m || (n && !pages))
        return VMM_EINVAL;
    int rc = VMM_OK;
    pthread_mutex_lock(&m->lock);
    uint64_t npages = m->npages;
    for (; i < n; i++) {
        uint32_t p = pages[i], f;
        if (UNLIKELY(p >= npages)) {
            rc = VMM_ERANGE;
            break;
        }
        int w = writes ? writes[i] != 0 : 0;
        rc = access_page(m, p, w, &f);
        if (UNLIKELY(rc))
            break;
        if (w)
            bump_le64(frame_addr(m->pool, f));
    }
    pthread_mutex_unlock(&m->lock);
    if (done)
        *done = i;
    return rc;
}

int vmm_mem_release(vmm_mem *m, uint64_t first, uint64_t count)
{
    if (!m)
        return VMM_EINVAL;
    if (first > m->npages || count > m->npages - first)
        return VMM_ERANGE;
    pthread_mutex_lock(&m->lock);
    frame_meta *meta = m->pool->meta;
    for (uint64_t p = first; p < first + count; p++) {
        pte *e = &m->pt[p];
        if (!e->frame1 && !e->slot1)
            continue;
        if (e->frame1) {
            uint32_t f = e->frame1 - 1;
            list_unlink(m, f);
            meta[f].flags = 0;
            pool_free(m->pool, f);
            m->resident--;
        }
        if (e->slot1)
            slot_free(m, e->slot1 - 1);
        e->frame1 = e->slot1 = 0;
        m->st.releases++;
    }
    file_delete_if_empty(m);
    pthread_mutex_unlock(&m->lock);
    return VMM_OK;
}

int vmm_mem_drain(vmm_mem *m, uint64_t max_pages, uint64_t *left)
{
    if (!m)
        return VMM_EINVAL;
    pthread_mutex_lock(&m->lock);
    int rc = VMM_OK;
    /* A scan of the page table: drain is rare, and a counter kept on the fault path
     * would cost every fault for it. */
    uint64_t paged_out = 0;
    for (uint64_t p = 0; p < m->npages && m->st.file_pages; p++)
        if (m->pt[p].slot1 && !m->pt[p].frame1)
            paged_out++;
    if (m->resident + paged_out > m->frame_limit || paged_out > vmm_pool_free_frames(m->pool)) {
        if (left)
            *left = m->st.file_pages;
        pthread_mutex_unlock(&m->lock);
        return VMM_EFRAMES;
    }
    frame_meta *meta = m->pool->meta;
    uint64_t done = 0, p = m->drain_cursor < m->npages ? m->drain_cursor : 0;
    for (uint64_t scanned = 0; scanned < m->npages && m->st.file_pages;
         scanned++, p = p + 1 < m->npages ? p + 1 : 0) {
        pte *e = &m->pt[p];
        if (!e->slot1)
            continue;
        if (max_pages && done == max_pages)
            break; /* resume here next call: the caller lets others at the lock */
        uint32_t f;
        if (e->frame1) {
            f = e->frame1 - 1;
        } else {
            f = pool_alloc(m->pool);
            if (f == NONE) { /* another guest took the frames meanwhile */
                rc = VMM_EFRAMES;
                break;
            }
            uint64_t t0 = now_ns();
            rc = file_read(m, e->slot1 - 1, frame_addr(m->pool, f));
            if (rc) {
                pool_free(m->pool, f);
                break;
            }
            record(m->st.page_in_hist, &m->st.page_in_ns, t0);
            m->st.page_ins++;
            m->st.bytes_read += m->pool->page_size;
            meta[f].page = (uint32_t)p;
            list_push_head(m, f);
            e->frame1 = f + 1;
            m->resident++;
        }
        /* The file copy goes away, so the frame is now the only copy. */
        meta[f].flags = F_DIRTY;
        slot_free(m, e->slot1 - 1);
        e->slot1 = 0;
        done++;
    }
    m->drain_cursor = p;
    file_delete_if_empty(m);
    if (m->st.file_pages == 0)
        m->drain_cursor = 0;
    if (left)
        *left = m->st.file_pages;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int vmm_mem_stats(vmm_mem *m, vmm_stats *out)
{
    if (!m || !out)
        return VMM_EINVAL;
    pthread_mutex_lock(&m->lock);
    *out = m->st;
    out->resident = m->resident;
    out->frame_limit = m->frame_limit;
    pthread_mutex_unlock(&m->lock);
    return VMM_OK;
}

int vmm_mem_reset_stats(vmm_mem *m)
{
    if (!m)
        return VMM_EINVAL;
    pthread_mutex_lock(&m->lock);
    vmm_stats keep = m->st;
    memset(&m->st, 0, sizeof m->st);
    m->st.file_pages = keep.file_pages;
    m->st.file_pages_peak = keep.file_pages;
    m->st.file_size = keep.file_size;
    pthread_mutex_unlock(&m->lock);
    return VMM_OK;
}

int vmm_mem_page_state(vmm_mem *m, uint64_t page, int *state)
{
    if (!m || !state)
        return VMM_EINVAL;
    if (page >= m->npages)
        return VMM_ERANGE;
    pthread_mutex_lock(&m->lock);
    pte e = m->pt[page];
    if (e.frame1)
        *state = (m->pool->meta[e.frame1 - 1].flags & F_DIRTY) ? 2 : 1;
    else
        *state = e.slot1 ? 3 : 0;
    pthread_mutex_unlock(&m->lock);
    return VMM_OK;
}

int vmm_mem_file_exists(vmm_mem *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    int exists = m->fd >= 0;
    pthread_mutex_unlock(&m->lock);
    return exists;
}
