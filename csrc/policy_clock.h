/*
 * policy_clock.h - CLOCK (second chance): a hit sets the frame's referenced bit; the hand
 * is the list's tail, and a referenced frame there loses its bit and goes to the head
 * (FIFO order otherwise), until an unreferenced one is found.
 */
#ifndef VMMEM_POLICY_CLOCK_H
#define VMMEM_POLICY_CLOCK_H

#include "core.h"

static inline __attribute__((always_inline)) void clock_touch(uint8_t *flags, uint32_t f)
{
    flags[f] |= F_REF;
}

static inline uint32_t clock_victim(vmm_mem *m)
{
    uint8_t *flags = m->pool->flags;
    for (;;) {
        uint32_t f = m->tail;
        if (!(flags[f] & F_REF))
            return f;
        flags[f] &= (uint8_t)~F_REF; /* second chance */
        list_unlink(m, f);
        list_push_head(m, f);
    }
}

#endif /* VMMEM_POLICY_CLOCK_H */
