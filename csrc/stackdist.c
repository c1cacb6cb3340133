/* Exact LRU stack distances and a write-back LRU cache's whole curve in one pass; see
 * stackdist.h. */
#include "stackdist.h"

#include <stdlib.h>
#include <string.h>

#define COLD UINT32_MAX
#define WRITTEN 1u /* the key was written at some access so far */

/* Which access positions hold a key's latest access: a bitmap, and a Fenwick tree over its
 * 64-bit words' counts (small enough to stay in the first-level cache). */
static inline void bit_add(int32_t *t, uint64_t n, uint64_t i, int32_t v)
{
    for (i++; i <= n; i += i & (~i + 1))
        t[i - 1] += v;
}

static inline uint64_t bit_prefix(const int32_t *t, uint64_t i) /* sum of [0, i) */
{
    int64_t s = 0;
    for (; i; i -= i & (~i + 1))
        s += t[i - 1];
    return (uint64_t)s;
}

/* live positions in [0, i] */
static inline uint64_t live_upto(const uint64_t *bits, const int32_t *tree, uint64_t i)
{
    uint64_t w = i >> 6, mask = ~0ull >> (63 - (i & 63));
    return bit_prefix(tree, w) + (uint64_t)__builtin_popcountll(bits[w] & mask);
}

/* writeback intervals: the key's dirty residency ends in an eviction for every cache size
 * in [lo, hi] */
static inline void add_range(int64_t *diff, uint32_t lo, uint64_t hi)
{
    if (lo <= hi) {
        diff[lo]++;
        diff[hi + 1]--;
    }
}

int sd_lru_curve(const uint32_t *keys, const uint8_t *writes, uint64_t n, uint32_t nkeys,
                 uint64_t *misses, uint64_t *fetches, uint64_t *writebacks)
{
    if (!keys || !misses || !fetches || !writebacks)
        return SD_EINVAL;
    for (uint64_t t = 0; t < n; t++)
        if (keys[t] >= nkeys)
            return SD_EINVAL;
    int rc = SD_ENOMEM;
    /* The positions span a window, not all n accesses: when the window is full the live ones
     * (one per key seen) are packed to its start, keeping their order. So it stays a few
     * times the keys in size and each access costs O(log(keys / 64)). */
    uint64_t words = ((uint64_t)nkeys + 64) / 32 + 1, cap = 64 * words;
    uint64_t *bits = calloc(words, sizeof *bits);
    int32_t *tree = calloc(words, sizeof *tree);
    uint32_t *owner = malloc(cap * sizeof *owner);            /* position -> key */
    uint64_t *last = calloc(nkeys ? nkeys : 1, sizeof *last); /* position + 1; 0: not seen */
    uint32_t *since = malloc((nkeys ? nkeys : 1) * sizeof *since);
    uint8_t *flags = calloc(nkeys ? nkeys : 1, 1);
    uint64_t *all = calloc((uint64_t)nkeys + 2, sizeof *all);   /* reuses by distance */
    uint64_t *fetch = calloc((uint64_t)nkeys + 2, sizeof *fetch); /* ... of written keys */
    int64_t *diff = calloc((uint64_t)nkeys + 2, sizeof *diff);
    if (!bits || !tree || !owner || !last || !since || !flags || !all || !fetch || !diff)
        goto out;
    uint64_t cold = 0, distinct = 0, pos = 0;
    for (uint64_t t = 0; t < n; t++) {
        uint32_t k = keys[t];
        int w = writes && writes[t];
        if (pos == cap) {
            uint64_t m = 0;
            for (uint64_t i = 0; i < cap; i++) {
                uint32_t o = owner[i];
                if (last[o] == i + 1) {
                    owner[m] = o;
                    last[o] = ++m;
                }
            }
            memset(bits, 0, words * sizeof *bits);
            memset(tree, 0, words * sizeof *tree);
            for (uint64_t i = 0; i < m; i++) {
                bits[i >> 6] |= 1ull << (i & 63);
                bit_add(tree, words, i >> 6, 1);
            }
            pos = m;
        }
        if (last[k]) {
            uint64_t s = last[k] - 1;
            /* distinct keys touched since s, this one included: its depth in the stack (every
             * live position is below pos, so those after s are the total less those up to s) */
            uint32_t d = (uint32_t)(distinct - live_upto(bits, tree, s) + 1);
            bits[s >> 6] &= ~(1ull << (s & 63));
            bit_add(tree, words, s >> 6, -1);
            all[d]++;
            if (flags[k] & WRITTEN) {
                fetch[d]++; /* a miss here (c < d) follows an eviction after the write */
                /* evicted dirty in this gap iff every access since the last write hit (c >=
                 * since[k]) and this one misses (c < d) */
                add_range(diff, since[k], (uint64_t)d - 1);
            }
            since[k] = w ? 0 : (since[k] > d ? since[k] : d);
        } else {
            cold++;
            distinct++;
            since[k] = w ? 0 : COLD;
        }
        if (w)
            flags[k] |= WRITTEN;
        bits[pos >> 6] |= 1ull << (pos & 63);
        bit_add(tree, words, pos >> 6, 1);
        owner[pos] = k;
        last[k] = ++pos;
    }
    /* The last residency: evicted before the end iff the key's final depth exceeds c. */
    for (uint32_t k = 0; k < nkeys; k++) {
        if (!(flags[k] & WRITTEN))
            continue;
        uint64_t depth = distinct - live_upto(bits, tree, last[k] - 1) + 1;
        add_range(diff, since[k], depth - 1);
    }
    uint64_t miss_sum = cold, fetch_sum = 0;
    /* c = nkeys holds every key: only the cold misses */
    for (uint64_t c = nkeys + 1; c-- > 0;) {
        misses[c] = miss_sum;
        fetches[c] = fetch_sum;
        miss_sum += all[c];
        fetch_sum += fetch[c];
    }
    int64_t run = 0;
    for (uint64_t c = 0; c <= nkeys; c++) {
        run += diff[c];
        writebacks[c] = (uint64_t)run;
    }
    rc = SD_OK;
out:
    free(bits);
    free(tree);
    free(owner);
    free(last);
    free(since);
    free(flags);
    free(all);
    free(fetch);
    free(diff);
    return rc;
}

#define RESIDENT 1u
#define DIRTY 2u
#define STORED 4u
#define NIL UINT32_MAX

int sd_lru_simulate(const uint32_t *keys, const uint8_t *writes, uint64_t n, uint32_t nkeys,
                    uint32_t cache, sd_counts *out)
{
    if (!keys || !out || cache == 0)
        return SD_EINVAL;
    for (uint64_t t = 0; t < n; t++)
        if (keys[t] >= nkeys)
            return SD_EINVAL;
    uint32_t *prev = malloc((nkeys ? nkeys : 1) * sizeof *prev);
    uint32_t *next = malloc((nkeys ? nkeys : 1) * sizeof *next);
    uint8_t *st = calloc(nkeys ? nkeys : 1, 1);
    if (!prev || !next || !st) {
        free(prev);
        free(next);
        free(st);
        return SD_ENOMEM;
    }
    memset(out, 0, sizeof *out);
    uint32_t head = NIL, tail = NIL; /* most and least recently used */
    uint64_t resident = 0, stored = 0, fills = 0;
    for (uint64_t t = 0; t < n; t++) {
        uint32_t k = keys[t];
        if (st[k] & RESIDENT) {
            if (k != head) {
                next[prev[k]] = next[k];
                if (next[k] != NIL)
                    prev[next[k]] = prev[k];
                else
                    tail = prev[k];
                prev[k] = NIL;
                next[k] = head;
                prev[head] = k;
                head = k;
            }
        } else {
            out->misses++;
            if (resident == cache) {
                uint32_t v = tail;
                tail = prev[v];
                if (tail != NIL)
                    next[tail] = NIL;
                else
                    head = NIL;
                if (st[v] & DIRTY) {
                    out->writebacks++;
                    st[v] |= STORED;
                } else {
                    out->clean_drops++;
                }
                st[v] &= (uint8_t)~(RESIDENT | DIRTY);
                resident--;
                if (st[v] & STORED)
                    stored++;
            }
            if (st[k] & STORED) {
                out->fetches++;
                stored--;
            } else {
                fills++;
            }
            st[k] |= RESIDENT;
            resident++;
            prev[k] = NIL;
            next[k] = head;
            if (head != NIL)
                prev[head] = k;
            head = k;
            if (tail == NIL)
                tail = k;
        }
        if (writes && writes[t])
            st[k] |= DIRTY;
        if (stored > out->peak_stored)
            out->peak_stored = stored;
        if (out->writebacks && fills - resident > out->peak_unfilled)
            out->peak_unfilled = fills - resident;
    }
    out->stored_at_end = stored;
    out->resident_at_end = resident;
    free(prev);
    free(next);
    free(st);
    return SD_OK;
}
