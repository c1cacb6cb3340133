/*
 * policy_lru.h - exact LRU: the frame list in recency order, most recent at its head.
 * A hit moves the frame to the head; the victim is the tail. O(1) both.
 * Hooks are static inline: each replay loop instantiation inlines its policy's.
 */
#ifndef VMMEM_POLICY_LRU_H
#define VMMEM_POLICY_LRU_H

#include "core.h"

/* A hit on frame f. head/tail may be the vmm_mem's or a replay loop's locals. */
static inline __attribute__((always_inline)) void lru_touch(frame_meta *meta, uint32_t f,
                                                            uint32_t *head, uint32_t *tail)
{
    if (f == *head)
        return;
    /* move to front; f is not the head, so it has a prev */
    uint32_t pv = meta[f].prev, nx = meta[f].next;
    meta[pv].next = nx;
    if (nx != NONE)
        meta[nx].prev = pv;
    else
        *tail = pv;
    meta[f].prev = NONE;
    meta[f].next = *head;
    meta[*head].prev = f;
    *head = f;
}

static inline uint32_t lru_victim(vmm_mem *m) { return m->tail; }

#endif /* VMMEM_POLICY_LRU_H */
