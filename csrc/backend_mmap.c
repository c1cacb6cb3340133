/*
 * backend_mmap.c - the mmap paging backend. The file is mapped shared; page-in reads through
 * the mapping, page-out writes with pwrite (not through the mapping: a store into an uncached
 * page of the mapping would first read the old block, and the mapped page would cost TLB
 * shootdowns to write back and to unmap): O_DIRECT where the filesystem has it, else
 * buffered, then sync_file_range and a page-cache drop.
 * Reads and writes run without the guest's lock, several at once: the batch of pages to unmap
 * has its own small lock (zap_lock); everything else they read is set while no I/O runs.
 */
#include "core.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older headers lack it, older kernels say EINVAL */
#endif

static int mmap_opened(vmm_mem *m)
{
    size_t bytes = (size_t)m->npages << m->pool->page_shift;
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
    if (map == MAP_FAILED)
        return -errno;
    m->mm = (mmap_state){.wfd = -1, .pidfd = -1, .map = map};
    pthread_mutex_init(&m->mm.zap_lock, NULL);
    /* No read-around: a fault must read just its page from the device, or the
     * neighbours it drags into the page cache make later page-ins a lie. */
    madvise(map, bytes, MADV_RANDOM);
    posix_fadvise(m->fd, 0, 0, POSIX_FADV_RANDOM);
    /* An empty range tells whether the kernel knows MADV_POPULATE_READ (5.14+); without it
     * page-ins read with pread, since a load could only report an error by SIGBUS. */
    m->mm.populate = madvise(map, 0, MADV_POPULATE_READ) == 0;
#ifdef SYS_pidfd_open
    m->mm.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    m->mm.zap_pid = getpid();
#endif
    /* Page-outs go by O_DIRECT where the filesystem has it: no page cache, so nothing to
     * write back, wait for or drop; where it has not, buffered pwrite + sync_file_range. */
    m->mm.wfd = open(m->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    return VMM_OK;
}

static void mmap_closing(vmm_mem *m)
{
    if (m->mm.map)
        munmap(m->mm.map, (size_t)m->npages << m->pool->page_shift);
    if (m->mm.wfd >= 0)
        close(m->mm.wfd);
    if (m->mm.pidfd >= 0)
        close(m->mm.pidfd);
    m->mm.map = NULL;
    m->mm.wfd = m->mm.pidfd = -1;
    m->mm.nzap = 0; /* unmapped with the rest; the file goes away */
    pthread_mutex_destroy(&m->mm.zap_lock);
}

/* Unmaps every page read through the mapping since the last flush, with one TLB
 * shootdown (process_madvise batches them; where it is missing, one madvise each), and
 * drops them from the page cache with one fadvise. Until then a slot read stays mapped
 * and cached, so a slot is flushed before it is read or written again (zap_if_pending). */
static void zap_flush(vmm_mem *m) /* under zap_lock */
{
    size_t ps = m->pool->page_size;
    uint32_t n = m->mm.nzap;
    if (!n)
        return;
    int done = 0;
#ifdef SYS_process_madvise
    if (m->mm.pidfd >= 0 && m->mm.zap_pid == getpid()) {
        struct iovec iov[ZAP_BATCH];
        for (uint32_t i = 0; i < n; i++) {
            iov[i].iov_base = m->mm.map + slot_offset(m, m->mm.zap[i]);
            iov[i].iov_len = ps;
        }
        done = syscall(SYS_process_madvise, m->mm.pidfd, iov, (size_t)n, MADV_DONTNEED, 0u) ==
               (long)(n * ps);
    }
#endif
    off_t lo = slot_offset(m, m->mm.zap[0]), hi = lo;
    for (uint32_t i = 0; i < n; i++) {
        off_t off = slot_offset(m, m->mm.zap[i]);
        if (!done)
            madvise(m->mm.map + off, ps, MADV_DONTNEED);
        lo = off < lo ? off : lo;
        hi = off > hi ? off : hi;
    }
    /* One drop over the batch's span: the only cached pages of the file are the ones
     * read through the mapping (page-outs bypass or drop the cache), and the kernel
     * walks only the cached pages in the range, so this costs what 32 drops did not. */
    posix_fadvise(m->fd, lo, hi - lo + (off_t)ps, POSIX_FADV_DONTNEED);
    m->mm.nzap = 0;
}

static inline void zap_if_pending(vmm_mem *m, uint32_t slot)
{
    pthread_mutex_lock(&m->mm.zap_lock);
    for (uint32_t i = 0; i < m->mm.nzap; i++)
        if (m->mm.zap[i] == slot) {
            zap_flush(m);
            break;
        }
    pthread_mutex_unlock(&m->mm.zap_lock);
}

static int mmap_write(vmm_mem *m, uint32_t slot, const uint8_t *src)
{
    size_t ps = m->pool->page_size;
    off_t off = slot_offset(m, slot);
    zap_if_pending(m, slot); /* a mapped page would be unmapped by the write, alone */
    /* The core allocates the file ahead of these writes (vmmem.c, allocate_ahead), or they
     * grow it: the mapping is only ever read at slots already written, so it never reaches
     * past the end (no SIGBUS), and a full disk is ENOSPC from the write. The frame is
     * page-aligned, so the O_DIRECT descriptor writes straight from it; without one, a
     * whole aligned page is taken by the page cache without reading the old block. */
    int rc = transfer_fd(m, m->mm.wfd >= 0 ? m->mm.wfd : m->fd, (uint8_t *)src, off, 1);
    if (rc)
        return rc;
    if (m->mm.wfd < 0) {
        /* Write the page's data to the device and wait for it (fsync/msync would also
         * force a journal commit for the file's new blocks: metadata a paging file
         * deleted after use does not need). The page is in no mapping, so write-back
         * unmaps nothing. Then drop it: the next page-in reads the device. */
        if (sync_file_range(m->fd, off, (off_t)ps,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            return -errno;
        posix_fadvise(m->fd, off, (off_t)ps, POSIX_FADV_DONTNEED);
    }
    return VMM_OK;
}

static int mmap_read(vmm_mem *m, uint32_t slot, uint8_t *dst)
{
    size_t ps = m->pool->page_size;
    off_t off = slot_offset(m, slot);
    uint8_t *src = m->mm.map + off;
    zap_if_pending(m, slot); /* still cached from its last read: it must come from the device */
    /* A load from the mapping that meets a device error raises SIGBUS, which kills the
     * process with every guest's paging file left on disk. MADV_POPULATE_READ takes the
     * same fault (filemap_fault, this one page: MADV_RANDOM) but returns the error; the copy
     * then finds the page mapped. A signal handler would instead be process-wide state in
     * a library (Python's faulthandler and ASan install their own SIGBUS handlers).
     * On any failure the slot is read again with pread, which names the error (EIO, or a
     * file cut short) as the direct backend does, or reads it if the error has passed. */
    if (!m->mm.populate || madvise(src, ps, MADV_POPULATE_READ) != 0) {
        int rc = transfer(m, dst, off, 0);
        if (rc)
            return rc;
    } else {
        memcpy(dst, src, ps);
    }
    /* Unmap it and drop it from the page cache, so the next access reads the device:
     * batched, see zap_flush. */
    pthread_mutex_lock(&m->mm.zap_lock);
    m->mm.zap[m->mm.nzap++] = slot;
    if (m->mm.nzap == ZAP_BATCH)
        zap_flush(m);
    pthread_mutex_unlock(&m->mm.zap_lock);
    return VMM_OK;
}

const backend_ops vmm_backend_mmap = {
    .name = "mmap",
    .open_flags = 0,
    .opened = mmap_opened,
    .closing = mmap_closing,
    .write = mmap_write,
    .read = mmap_read,
};
