/*
 * vmmem.h - the paging core: an MMU and pager for emulated guest memory.
 *
 * A FramePool (vmm_pool) is host RAM: one page-aligned anonymous mapping,
 * committed up front, cut into page frames. A GuestMemory (vmm_mem) is one
 * guest-physical page array: a page table whose pages live in frames of a
 * pool, up to a frame limit, with the overflow written to a paging file.
 *
 * The core knows nothing of hypervisors: policy (who gets how many frames,
 * when a file may exist) belongs to the caller.
 *
 * This header is also the cffi cdef source: the text between the CDEF
 * markers must stay plain declarations and integer #defines.
 *
 * Every function returns VMM_OK (0) or a negative code: a VMM_E* code below,
 * or -errno for an operating-system failure (e.g. -ENOSPC from a page-out).
 * Functions never crash on bad arguments; NULL handles give VMM_EINVAL.
 *
 * Threads. Every function may be called from several threads at once, on one vmm_mem or
 * on many sharing a pool (vmm_mem_destroy excepted: no other call on that vmm_mem may run
 * or follow). A mutex inside each vmm_mem guards its state, but it is never held across
 * paging-file I/O: a page being read in or written back is marked in flight and the lock
 * is dropped for the transfer, so other threads hit, and fault on other pages, meanwhile;
 * an access to a page in flight waits for that transfer instead of issuing its own. A
 * replay holds the lock over runs of hits and lets waiting threads in every 4096
 * accesses, so counters, frame-limit changes and other threads never wait for a disk.
 *
 * Exact LRU under concurrency: accesses are ordered by when they take the lock. A hit
 * makes its page most recent then; a fault makes its page most recent when the page is
 * installed in its frame, i.e. when its I/O completes (a fault without I/O at once). An
 * access that waited for another thread's transfer of the same page is a hit, ordered
 * when it retakes the lock. With one thread nothing runs during a transfer, so this is
 * exactly the single-threaded order: same victims, same counts.
 */
#ifndef VMMEM_H
#define VMMEM_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */

#define VMM_OK 0
#define VMM_EINVAL -10001   /* bad argument (size, alignment, handle) */
#define VMM_ERANGE -10002   /* guest page or address out of range */
#define VMM_ENOFRAME -10003 /* no frame: frame limit is 0, or pool empty and nothing to evict */
#define VMM_ELIMIT -10004   /* frame limit above what the pool holds */
#define VMM_ENOMEM -10005   /* host allocation failed (metadata, mapping) */
#define VMM_EFRAMES -10006  /* drain: not enough frames to bring every page back */
#define VMM_ENODIRECT -10007 /* the paging folder's filesystem refused O_DIRECT */
#define VMM_EBUSY -10008    /* set_path: a paging file exists now */

#define VMM_BACKEND_DIRECT 0 /* O_DIRECT pread/pwrite between frame and file */
#define VMM_BACKEND_MMAP 1   /* page-in through a shared mapping of the file (unmapped and
                              * dropped from the page cache in batches); page-out by O_DIRECT
                              * pwrite, or where the filesystem refuses O_DIRECT by pwrite +
                              * sync_file_range + a page-cache drop */

#define VMM_POLICY_LRU 0     /* exact LRU, O(1) per access and per eviction */
#define VMM_POLICY_CLOCK 1   /* second chance: referenced bit, FIFO hand */

/* Latency histogram: bucket b counts samples with
 *   vmm_hist_lower_ns(b) <= ns < vmm_hist_lower_ns(b + 1).
 * 8 sub-buckets per power of two (12.5 % resolution) from 1 ns to ~2^40 ns. */
#define VMM_HIST_SUB 8
#define VMM_HIST_BUCKETS 328

typedef struct vmm_pool vmm_pool;
typedef struct vmm_mem vmm_mem;

/* The scalar counters alone: the first fields of vmm_stats, same names, same order,
 * for a read that does not copy the histograms (see vmm_mem_counters). */
typedef struct vmm_counters {
    uint64_t accesses;
    uint64_t hits;
    uint64_t zero_fills;
    uint64_t page_ins;
    uint64_t page_outs;
    uint64_t clean_drops;
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t releases;
    uint64_t resident;
    uint64_t frame_limit;
    uint64_t file_pages;
    uint64_t file_pages_peak;
    uint64_t file_size;
    uint64_t file_created;
    uint64_t file_deleted;
    uint64_t page_in_ns;
    uint64_t page_out_ns;
    uint64_t disk_faults;
    uint64_t fault_ns;
    uint64_t paged_out;
    uint64_t file_exists;
    uint64_t shared_faults;
    uint64_t io_overlaps;
} vmm_counters;

typedef struct vmm_stats {
    uint64_t accesses;      /* guest accesses (replay entries, pages touched by read/write) */
    uint64_t hits;          /* accesses to a resident page */
    uint64_t zero_fills;    /* faults served with a zeroed frame (untouched or released page) */
    uint64_t page_ins;      /* faults served by reading the paging file */
    uint64_t page_outs;     /* evictions that wrote a page to the paging file */
    uint64_t clean_drops;   /* evictions that dropped a clean page without I/O */
    uint64_t bytes_read;    /* paging-file bytes read */
    uint64_t bytes_written; /* paging-file bytes written */
    uint64_t releases;      /* pages given back by release() that held a frame or a copy */
    uint64_t resident;      /* pages in frames now */
    uint64_t frame_limit;   /* frames this guest may hold now */
    uint64_t file_pages;    /* pages with a copy in the paging file now */
    uint64_t file_pages_peak;  /* most pages the file ever held (since creation of the mem) */
    uint64_t file_size;     /* bytes the file occupies now (0 when it does not exist) */
    uint64_t file_created;  /* times the file was created */
    uint64_t file_deleted;  /* times the file was deleted because it became empty */
    uint64_t page_in_ns;    /* total time spent in page-in I/O */
    uint64_t page_out_ns;   /* total time spent in page-out I/O */
    uint64_t disk_faults;   /* faults that waited on the file: victim write-back and/or page-in,
                             * or (several threads) another thread's transfer or frame */
    uint64_t fault_ns;      /* total time of those faults, from the fault to the frame ready
                             * (summed over threads: each waiting thread counts its wait) */
    uint64_t paged_out;     /* pages now only in the paging file (a copy and no frame) */
    uint64_t file_exists;   /* 1 while the paging file exists, else 0 (reset_stats keeps both) */
    uint64_t shared_faults; /* accesses that found their page in flight (another thread's
                             * page-in or page-out) and waited for it; counted as hits if
                             * the page was resident after the wait, else as the fault they
                             * then took */
    uint64_t io_overlaps;   /* transfers of a page that began while another transfer of the
                             * same page was in progress: always 0 unless the core is broken
                             * (checked outside the lock; reset_stats keeps it) */
    /* 328 is VMM_HIST_BUCKETS (cffi needs the literal; vmmem.c asserts they agree) */
    uint64_t page_in_hist[328];
    uint64_t page_out_hist[328];
    uint64_t fault_hist[328]; /* what a guest waits for a fault that touches the disk */
} vmm_stats;

/* ---- frame pool ---- */
/* nframes frames of page_size bytes (a power of two >= 4096). The memory is
 * populated (MAP_POPULATE) before return, so it is really resident. */
int vmm_pool_create(uint64_t nframes, uint32_t page_size, vmm_pool **out);
void vmm_pool_destroy(vmm_pool *pool); /* only once every vmm_mem on it is destroyed */
uint64_t vmm_pool_frames(const vmm_pool *pool);
uint64_t vmm_pool_free_frames(vmm_pool *pool);
uint32_t vmm_pool_page_size(const vmm_pool *pool);

/* ---- guest memory ---- */
/* npages guest pages (< 2^32 - 1) on pool. path is the paging file to create
 * at the first page-out (O_CREAT|O_EXCL); it is copied. backend and policy
 * are VMM_BACKEND_* and VMM_POLICY_*. The frame limit starts at 0.
 * Creation is O(1): the page table and the slot metadata are address space
 * reserved without commitment (MAP_NORESERVE), so host memory is spent only on
 * the parts of them that pages touched (a 12 TiB guest fits a small host). */
int vmm_mem_create(vmm_pool *pool, uint64_t npages, const char *path,
                   int backend, int policy, vmm_mem **out);
/* Returns every frame to the pool and deletes the paging file. */
void vmm_mem_destroy(vmm_mem *mem);

/* Sets how many frames the guest may hold; lowering it evicts at once (writing back with
 * the lock dropped, one page at a time) and returns once the guest holds at most that
 * many, counting the frames that faults in flight have taken and will install.
 * If a page-out fails the limit is left at the frames still held and the
 * error is returned: no page is lost. */
int vmm_mem_set_frame_limit(vmm_mem *mem, uint64_t frames);

/* Copies n bytes at guest-physical address gpa out of / into guest memory,
 * faulting pages in as needed. */
int vmm_mem_read(vmm_mem *mem, uint64_t gpa, void *buf, uint64_t n);
int vmm_mem_write(vmm_mem *mem, uint64_t gpa, const void *buf, uint64_t n);

/* Replays n accesses to guest pages pages[i]; writes (may be NULL) flags each
 * access that writes. A write access increments the little-endian uint64 in
 * the page's first 8 bytes, so written pages carry real, checkable content.
 * *done receives how many accesses completed (all of them on VMM_OK). */
int vmm_mem_replay(vmm_mem *mem, const uint32_t *pages, const uint8_t *writes,
                   uint64_t n, uint64_t *done);
/* vmm_mem_replay, and *wait_ns (may be NULL) receives the ns this call's faults were
 * blocked on paging: their own page-outs and page-ins, waiting for another thread's
 * transfer of the same page, waiting for a frame that a fault in flight holds. It is
 * the part of fault_ns (and of disk_faults, fault_hist) that this call added: with one
 * thread, exactly the fault_ns delta. The wait of one vCPU, whatever the others do. */
int vmm_mem_replay_timed(vmm_mem *mem, const uint32_t *pages, const uint8_t *writes,
                         uint64_t n, uint64_t *done, uint64_t *wait_ns);

/* The guest gives pages [first, first + count) back: frames return to the
 * pool, file copies are discarded, no I/O. The pages read as zeros again.
 * A page in flight is released once its transfer ends.
 * Deletes the file when it becomes empty (once no transfer is in flight). */
int vmm_mem_release(vmm_mem *mem, uint64_t first, uint64_t count);

/* Empties the paging file: brings every paged-out page back into a frame and
 * forgets the file copies of resident pages (they become dirty), in page
 * order; deletes the file once it holds no page. Its cost is proportional to
 * the pages in the file, not to the guest's size (a bitmap index of the pages
 * that hold a slot finds them). Fails with VMM_EFRAMES,
 * changing nothing, when the frame limit (or the pool) cannot hold every page.
 * max_pages > 0 stops after that many pages, so a caller can let others at the
 * guest's lock between calls; the next call resumes where this one stopped.
 * *left (may be NULL) receives the pages still in the file. */
int vmm_mem_drain(vmm_mem *mem, uint64_t max_pages, uint64_t *left);

/* Fills *out with a consistent snapshot of the counters. Never waits for paging I/O
 * (at most for a run of 4096 hits of a replay). */
int vmm_mem_stats(vmm_mem *mem, vmm_stats *out);
/* The scalar counters only (no histograms): a cheap read for polling. */
int vmm_mem_counters(vmm_mem *mem, vmm_counters *out);
int vmm_mem_reset_stats(vmm_mem *mem); /* zeroes the event counters and histograms */

/* State of one page: 0 zero (untouched or released), 1 resident clean,
 * 2 resident dirty, 3 paged out. For tests and inspection; waits for a transfer of
 * the page in flight. */
int vmm_mem_page_state(vmm_mem *mem, uint64_t page, int *state);

/* Whether the paging file exists now (1) or not (0). */
int vmm_mem_file_exists(vmm_mem *mem);
/* Where the next paging file is made (copied). Only while no file exists, since
 * the pages in a file stay where they are: VMM_EBUSY otherwise. A caller gives
 * one guest paging files of different roles this way, one at a time. */
int vmm_mem_set_path(vmm_mem *mem, const char *path);

/* Lower bound in ns of histogram bucket b (b may equal VMM_HIST_BUCKETS). */
uint64_t vmm_hist_lower_ns(uint32_t b);

/* CDEF END */

#endif /* VMMEM_H */
