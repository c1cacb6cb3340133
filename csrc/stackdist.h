/* Exact LRU stack distances over an access sequence (Mattson, Gecsei, Slutz and Traiger,
 * "Evaluation techniques for storage hierarchies", IBM Systems Journal 9(2), 1970), counted
 * with a Fenwick tree over access times (Bennett and Kruskal, 1975): O(n log n) for n
 * accesses, one pass for the whole miss curve.
 *
 * The cache modelled is a demand-filled, write-back LRU cache of `c` entries in front of a
 * backing store: a key enters the store only when it is evicted dirty (written since it was
 * last brought in) and stays there; a miss on a key the store holds is a fetch, any other
 * miss a fill (no read). Nothing here knows what the keys are.
 *
 * This header is also a cffi cdef source: the text between the CDEF markers. */
#ifndef STACKDIST_H
#define STACKDIST_H

#include <stdint.h>

/* CDEF BEGIN */
#define SD_OK 0
#define SD_EINVAL -1 /* a key >= nkeys, or a NULL array */
#define SD_ENOMEM -2

/* For every cache size c in 0..nkeys (arrays of nkeys + 1 entries, index c):
 *   misses[c]      accesses that miss;
 *   fetches[c]     misses on a key the store holds (it was evicted dirty before);
 *   writebacks[c]  evictions of a dirty key, up to the end of the sequence.
 * writes: one flag per access (non-zero: the access writes), or NULL for reads only. */
int sd_lru_curve(const uint32_t *keys, const uint8_t *writes, uint64_t n, uint32_t nkeys,
                 uint64_t *misses, uint64_t *fetches, uint64_t *writebacks);

typedef struct {
    uint64_t misses;
    uint64_t fetches;
    uint64_t writebacks;
    uint64_t clean_drops;    /* evictions without a write-back */
    uint64_t peak_stored;    /* most keys held only in the store, after any access */
    uint64_t peak_unfilled;  /* most (fills - resident keys) after any access, once the
                              * store holds something */
    uint64_t stored_at_end;  /* keys held only in the store at the end */
    uint64_t resident_at_end;
} sd_counts;

/* The same cache at one size, simulated access by access (O(n)): the counts above, and what
 * the curve cannot give, the peaks over time. cache must be >= 1. */
int sd_lru_simulate(const uint32_t *keys, const uint8_t *writes, uint64_t n, uint32_t nkeys,
                    uint32_t cache, sd_counts *out);
/* CDEF END */

#endif
