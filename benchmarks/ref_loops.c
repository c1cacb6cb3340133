/*
 * ref_loops.c - the yardstick for vmmem's hit path: a minimal exact LRU and a minimal CLOCK
 * over the same trace, with nothing but the policy (no stats, no range check, no locking,
 * no paging file). benchmarks/bench_hit_path.py builds it with the same compiler flags as
 * the core (vmmem._build_core.compile_args) and times both on the same trace in one run.
 */
#include <stdint.h>
#include <stdlib.h>

#define NONE UINT32_MAX

typedef struct ref_cache {
    uint32_t *pt;      /* page -> frame + 1 (0: not cached) */
    uint32_t *page_of; /* frame -> page */
    uint32_t *prev, *next;
    uint8_t *ref;
    uint32_t frames, used, head, tail, hand;
} ref_cache;

ref_cache *ref_create(uint32_t npages, uint32_t frames)
{
    ref_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pt = calloc(npages, sizeof *c->pt);
    c->page_of = calloc(frames, sizeof *c->page_of);
    c->prev = calloc(frames, sizeof *c->prev);
    c->next = calloc(frames, sizeof *c->next);
    c->ref = calloc(frames, 1);
    c->frames = frames;
    c->head = c->tail = NONE;
    return c;
}

void ref_destroy(ref_cache *c)
{
    if (!c)
        return;
    free(c->pt);
    free(c->page_of);
    free(c->prev);
    free(c->next);
    free(c->ref);
    free(c);
}

/* Exact LRU: a hit moves the frame to the head, a miss takes a free frame or the tail. */
uint64_t ref_lru(ref_cache *c, const uint32_t *trace, uint64_t n)
{
    uint32_t *pt = c->pt, *prev = c->prev, *next = c->next;
    uint32_t head = c->head, tail = c->tail;
    uint64_t hits = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t p = trace[i], f1 = pt[p], f;
        if (f1) {
            f = f1 - 1;
            hits++;
            if (f == head)
                continue;
            uint32_t pv = prev[f], nx = next[f];
            next[pv] = nx;
            if (nx != NONE)
                prev[nx] = pv;
            else
                tail = pv;
        } else {
            if (c->used < c->frames) {
                f = c->used++;
            } else {
                f = tail;
                pt[c->page_of[f]] = 0;
                tail = prev[f];
                if (tail != NONE)
                    next[tail] = NONE;
                else
                    head = NONE;
            }
            c->page_of[f] = p;
            pt[p] = f + 1;
        }
        prev[f] = NONE;
        next[f] = head;
        if (head != NONE)
            prev[head] = f;
        else
            tail = f;
        head = f;
    }
    c->head = head;
    c->tail = tail;
    return hits;
}

/* CLOCK: a hit sets the referenced bit; a miss sweeps the hand to a frame without it. */
uint64_t ref_clock(ref_cache *c, const uint32_t *trace, uint64_t n)
{
    uint32_t *pt = c->pt;
    uint8_t *ref = c->ref;
    uint64_t hits = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t p = trace[i], f1 = pt[p];
        if (f1) {
            ref[f1 - 1] = 1;
            hits++;
            continue;
        }
        uint32_t f;
        if (c->used < c->frames) {
            f = c->used++;
        } else {
            while (ref[c->hand]) {
                ref[c->hand] = 0;
                c->hand = c->hand + 1 < c->frames ? c->hand + 1 : 0;
            }
            f = c->hand;
            pt[c->page_of[f]] = 0;
            c->hand = c->hand + 1 < c->frames ? c->hand + 1 : 0;
        }
        c->page_of[f] = p;
        ref[f] = 0;
        pt[p] = f + 1;
    }
    return hits;
}
